import type { G2SentryStore } from '../store/contract.js'
import type { LogRow } from '../domain/types.js'
import { paged } from './paged.js'

export interface ReadLogOptions {
  /** Only this job's rows. */
  jobId?: number | undefined
  /** Start after this seq (default: from the beginning). */
  afterSeq?: number | undefined
  /** Stop after this seq (default: the end of the log). */
  toSeq?: number | undefined
  /** Rows fetched per query (default 1000). */
  pageSize?: number | undefined
}

/**
 * The event log in seq order, fetched a page at a time so memory stays flat however long the
 * log is, and no query stays open between pages.
 */
export async function * readLogStream (store: G2SentryStore, options: ReadLogOptions = {}): AsyncGenerator<LogRow> {
  const toSeq = options.toSeq ?? Number.MAX_SAFE_INTEGER
  const { jobId } = options
  const rows = paged((afterSeq: number | undefined, limit) => store.readLog({ jobId, afterSeq: afterSeq ?? options.afterSeq ?? 0, limit }),
    (row) => row.seq, options.pageSize ?? 1000)
  for await (const row of rows) {
    if (row.seq > toSeq) return
    yield row
  }
}
