import type { LogRow } from '../domain/types.js'
import type { ChainHead } from './rows.js'

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
