import type { LogReader } from './log-reads.js'
import { isPostgresUrl, postgresTarget } from './database-url.js'
import { sqliteLogReader } from './sqlite/sqlite-log-reader.js'

export type { LogReader, LogReads } from './log-reads.js'

/**
 * Whether `database` (as `openStore` takes it) names a log that another connection can open:
 * a file or a PostgreSQL database, not SQLite's in-memory (`:memory:`) or temporary (`''`)
 * databases, which only the connection that made them can see. (better-sqlite3 takes no URI
 * filenames: `file::memory:` is a file of that name.)
 */
export const canReopen = (database: string): boolean => isPostgresUrl(database) || (database !== '' && database !== ':memory:')

/**
 * Opens the log at `database` read-only: a SQLite file, or a `postgres://` URL where a `schema`
 * query parameter names the schema (as `openStore`). It must be an up-to-date g2sentry log.
 */
export async function openLogReader (database: string): Promise<LogReader> {
  if (!isPostgresUrl(database)) return sqliteLogReader(database)
  const { connectionString, schema } = postgresTarget(database)
  // Loaded only for PostgreSQL, so a thread that reads a SQLite file loads less.
  const { postgresLogReader } = await import('./postgres/postgres-log-reader.js')
  return postgresLogReader(connectionString, schema)
}
