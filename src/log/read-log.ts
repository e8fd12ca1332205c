import type { G2SentryStore, LogRow } from '../domain/types.js'

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
  const limit = options.pageSize ?? 1000
  const toSeq = options.toSeq ?? Number.MAX_SAFE_INTEGER
  let afterSeq = options.afterSeq ?? 0
  for (;;) {
    const page = await store.readLog({ jobId: options.jobId, afterSeq, limit })
    for (const row of page) {
      if (row.seq > toSeq) return
      yield row
    }
    if (page.length < limit) return
    afterSeq = (page[page.length - 1] as LogRow).seq
  }
}
