import type { G2SentryStore } from '../types.js'
import { postgresStore } from './postgres-store.js'
import { sqliteStore } from './sqlite-store.js'

const POSTGRES_URL = /^postgres(ql)?:\/\//

/** True when `database` names a PostgreSQL database rather than a SQLite file. */
export const isPostgresUrl = (database: string): boolean => POSTGRES_URL.test(database)

/** Opens the store a `database` option names: a `postgres://` URL, or a SQLite file path. */
export async function openStore (database: string): Promise<G2SentryStore> {
  return isPostgresUrl(database) ? postgresStore({ connectionString: database }) : sqliteStore({ filename: database })
}
