import type { G2SentryStore } from './contract.js'
import { isPostgresUrl, postgresTarget } from './database-url.js'
import { sqliteStore } from './sqlite/sqlite-store.js'

export { isPostgresUrl } from './database-url.js'

export interface OpenStoreOptions {
  /**
   * Open an existing, up-to-date log for reading only: nothing is created or migrated, and a
   * database without a g2sentry log is refused (`FST_G2SENTRY_NO_LOG`), as is a log that this
   * version would migrate (`FST_G2SENTRY_LOG_NOT_MIGRATED`).
   */
  readOnly?: boolean
  /**
   * Open, for writing, only a database that already holds a g2sentry log: another program's
   * SQLite file or a misspelled `?schema=` is refused (`FST_G2SENTRY_NO_LOG`) and nothing is
   * created in it; a log that this version would migrate is migrated.
   */
  existingLog?: boolean
}

/**
 * Opens the store a `database` option names: a SQLite file path, or a `postgres://` URL, where
 * a `schema` query parameter names the schema that holds the tables (default `public`).
 */
export async function openStore (database: string, options: OpenStoreOptions = {}): Promise<G2SentryStore> {
  const readOnly = options.readOnly === true
  const existingLog = options.existingLog === true
  if (!isPostgresUrl(database)) return sqliteStore({ filename: database, readOnly, existingLog })
  // Loaded only for PostgreSQL, so a command on a SQLite file starts faster.
  const { postgresStore } = await import('./postgres/postgres-store.js')
  return postgresStore({ ...postgresTarget(database), readOnly, existingLog })
}
