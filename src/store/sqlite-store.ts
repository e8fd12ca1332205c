import type Database from 'better-sqlite3'
import type { AppendResult, G2SentryStore, IncomingEvent, ListJobsQuery, QuarantineInput, ReadLogQuery, RebuildReport } from '../types.js'
import { emptyReport, REPLAY_PAGE, ReplayCache, replayPage } from './replay-core.js'
import {
  jobParams, REPLAY_COLUMNS, toJob, toLogRow, toQuarantine, type ChainHead,
  type EventRow, type JobRow, type QuarantineDbRow, type ReplayRow
} from './rows.js'
import { createWriter, HEAD_SQL, openConnection, UPSERT_JOB, type ConnectionSettings } from './sqlite-writer.js'

export interface SqliteStoreOptions extends ConnectionSettings {
  /** Path of the database file, or `:memory:`. */
  filename: string
  /** The most appends that share one transaction (default 256). */
  maxBatch?: number
  /** Job states a rebuild keeps in memory before writing the least recently used out (default 100,000). */
  replayCacheSize?: number
}

type Pending = { event: IncomingEvent; resolve: (result: AppendResult) => void; reject: (error: unknown) => void }

/** Opens (and migrates) a SQLite event store. */
export function sqliteStore (options: SqliteStoreOptions): G2SentryStore & { readonly db: Database.Database } {
  const db = openConnection(options.filename, options, true)
  const writer = createWriter(db)
  const maxBatch = options.maxBatch ?? 256

  // One transaction and one disk flush for the appends of two turns of the event loop, up to
  // maxBatch: the turn that brought the first append, and one more, so that requests the kernel
  // received while those handlers ran join the batch. Measured with `npm run bench`: about 25%
  // more appends per commit and 7-11% more requests/s than closing after one turn, at 10 and 50
  // connections; when idle it delays a commit by one turn of the loop.
  const commitListeners = new Set<(batchSize: number, seconds: number) => void>()
  let pending: Pending[] = []
  let scheduled = false
  let closed = false

  function flush (): void {
    scheduled = false
    if (pending.length === 0) return
    const batch = pending.length <= maxBatch ? pending : pending.slice(0, maxBatch)
    pending = pending.length <= maxBatch ? [] : pending.slice(maxBatch)
    if (pending.length > 0) schedule()
    let outcomes
    const started = process.hrtime.bigint()
    try {
      outcomes = writer.appendBatch(batch.map((item) => item.event))
    } catch (error) {
      for (const item of batch) item.reject(error)
      return
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    for (const listener of commitListeners) listener(batch.length, seconds)
    outcomes.forEach((outcome, i) => {
      const item = batch[i] as Pending
      if (outcome.ok) item.resolve(outcome.result)
      else item.reject(outcome.error)
    })
  }

  function schedule (): void {
    if (scheduled) return
    scheduled = true
    setImmediate(() => {
      if (pending.length >= maxBatch) flush()
      else setImmediate(flush)
    })
  }

  const selectJob = db.prepare<[number], JobRow>('SELECT * FROM jobs WHERE job_id = ?')
  const selectHead = db.prepare<[], ChainHead>(HEAD_SQL)
  const selectJobsAfter = db.prepare<[number, number], JobRow>('SELECT * FROM jobs WHERE job_id > ? ORDER BY job_id LIMIT ?')
  const selectJobsByStatus = db.prepare<[string, number, number], JobRow>(
    'SELECT * FROM jobs WHERE status = ? AND job_id > ? ORDER BY job_id LIMIT ?')
  const selectLog = db.prepare<[number, number], EventRow>('SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?')
  const selectJobLog = db.prepare<[number, number, number], EventRow>(
    'SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?')
  const selectQuarantine = db.prepare<[number, number], QuarantineDbRow>('SELECT * FROM quarantine WHERE id > ? ORDER BY id LIMIT ?')
  const selectPendingQuarantine = db.prepare<[number, number], QuarantineDbRow>(
    'SELECT * FROM quarantine WHERE id > ? AND retried_seq IS NULL ORDER BY id LIMIT ?')
  const countPendingQuarantine = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM quarantine WHERE retried_seq IS NULL')

  const rebuild = (dryRun: boolean): RebuildReport => {
    // The same definition as the projection table, so rows compare column for column.
    const { sql } = db.prepare<[], { sql: string }>("SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = 'jobs'").get() as { sql: string }
    db.exec('DROP TABLE IF EXISTS temp.rebuilt_jobs')
    db.exec(sql.replace(/^CREATE TABLE jobs/, 'CREATE TEMP TABLE rebuilt_jobs'))
    const readRebuilt = db.prepare<[number], JobRow>('SELECT * FROM temp.rebuilt_jobs WHERE job_id = ?')
    const writeRebuilt = db.prepare(UPSERT_JOB.replace('INSERT INTO jobs', 'INSERT INTO temp.rebuilt_jobs'))
    const readPage = db.prepare<[number, number], ReplayRow>(`SELECT ${REPLAY_COLUMNS} FROM main.events WHERE seq > ? ORDER BY seq LIMIT ?`)
    const cache = new ReplayCache(options.replayCacheSize)
    const report = emptyReport()
    for (let after = 0; ;) {
      const page = readPage.all(after, REPLAY_PAGE)
      if (page.length === 0) break
      for (const jobId of cache.toLoad(page)) {
        const stored = readRebuilt.get(jobId)
        if (stored !== undefined) cache.states.set(jobId, toJob(stored))
      }
      replayPage(page, cache, report)
      for (const job of cache.evict()) writeRebuilt.run(jobParams(job))
      after = (page[page.length - 1] as ReplayRow).seq
    }
    for (const job of cache.states.values()) writeRebuilt.run(jobParams(job))
    report.jobs = (db.prepare('SELECT count(*) AS n FROM temp.rebuilt_jobs').get() as { n: number }).n
    // Compound selects group left to right, so each difference needs its own subquery.
    report.differingJobs = db.prepare<[], { job_id: number }>(`SELECT job_id FROM (
        SELECT job_id FROM (SELECT * FROM main.jobs EXCEPT SELECT * FROM temp.rebuilt_jobs)
        UNION
        SELECT job_id FROM (SELECT * FROM temp.rebuilt_jobs EXCEPT SELECT * FROM main.jobs))
      ORDER BY job_id`).all().map((row) => row.job_id)
    if (!dryRun) db.exec('DELETE FROM main.jobs; INSERT INTO main.jobs SELECT * FROM temp.rebuilt_jobs')
    db.exec('DROP TABLE temp.rebuilt_jobs')
    return report
  }
  const rebuildTx = db.transaction(rebuild)

  return {
    db,
    append (event) {
      if (closed) return Promise.reject(new Error('The store is closed'))
      return new Promise<AppendResult>((resolve, reject) => {
        pending.push({ event, resolve, reject })
        schedule()
      })
    },
    async quarantine (entry: QuarantineInput) {
      return writer.quarantine(entry)
    },
    async getJob (jobId) {
      const row = selectJob.get(jobId)
      return row && toJob(row)
    },
    async listJobs (query: ListJobsQuery) {
      const rows = query.status === undefined
        ? selectJobsAfter.all(query.after ?? 0, query.limit)
        : selectJobsByStatus.all(query.status, query.after ?? 0, query.limit)
      return rows.map(toJob)
    },
    async readLog (query: ReadLogQuery) {
      const rows = query.jobId === undefined
        ? selectLog.all(query.afterSeq ?? 0, query.limit)
        : selectJobLog.all(query.jobId, query.afterSeq ?? 0, query.limit)
      return rows.map(toLogRow)
    },
    async listQuarantine ({ afterId, limit, pending }) {
      return (pending === true ? selectPendingQuarantine : selectQuarantine).all(afterId ?? 0, limit).map(toQuarantine)
    },
    async resolveQuarantine (id, seq) {
      writer.resolveQuarantine(id, seq)
    },
    async quarantineSize () {
      return (countPendingQuarantine.get() as { n: number }).n
    },
    async chainHead () {
      return selectHead.get()
    },
    onCommit (listener) {
      commitListeners.add(listener)
      return () => { commitListeners.delete(listener) }
    },
    async rebuild (options) {
      const dryRun = options?.dryRun === true
      // A rebuild takes the write lock so no append slips in between the replay and the swap.
      return dryRun ? rebuildTx.deferred(true) : rebuildTx.immediate(false)
    },
    async close () {
      closed = true
      // Every append accepted before close is committed (or rejected) before the file closes.
      while (pending.length > 0) flush()
      db.close()
    }
  }
}
