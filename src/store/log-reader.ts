import type { LogRow } from '../domain/types.js'
import { isPostgresUrl, postgresTarget } from './database-url.js'
import type { ChainHead } from './rows.js'
import { sqliteLogReader } from './sqlite/sqlite-log-reader.js'

/** Reads of the event log by seq range, for a thread that checks part of the log on its own connection. */
export interface LogReads {
  /** Up to `limit` rows with a seq above `after` (and at most `upTo`, when given), in seq order. */
  page (after: number, upTo: number | undefined, limit: number): Promise<LogRow[]>
  /** The chain head, as `G2SentryStore.chainHead` gives it. */
  head (): Promise<ChainHead | undefined>
}

/** A read-only connection to a log, opened from where the log is rather than from a store. */
export interface LogReader extends LogReads {
  /** Runs `work` with reads that all see one snapshot of the log, whatever is appended meanwhile. */
  snapshot<T> (work: (reads: LogReads) => Promise<T>): Promise<T>
  close (): Promise<void>
}

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
