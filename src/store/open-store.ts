import type { G2SentryStore } from '../domain/types.js'
import { postgresStore } from './postgres/postgres-store.js'
import { sqliteStore } from './sqlite/sqlite-store.js'

const POSTGRES_URL = /^postgres(ql)?:\/\//

/** True when `database` names a PostgreSQL database rather than a SQLite file. */
export const isPostgresUrl = (database: string): boolean => POSTGRES_URL.test(database)

/**
 * Opens the store a `database` option names: a SQLite file path, or a `postgres://` URL, where
 * a `schema` query parameter names the schema that holds the tables (default `public`).
 */
export async function openStore (database: string): Promise<G2SentryStore> {
  if (!isPostgresUrl(database)) return sqliteStore({ filename: database })
  const url = new URL(database)
  const schema = url.searchParams.get('schema') ?? undefined
  url.searchParams.delete('schema')
  return postgresStore({ connectionString: url.href, schema })
}
