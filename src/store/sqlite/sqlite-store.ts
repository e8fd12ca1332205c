import type Database from 'better-sqlite3'
import type { AppendResult, G2SentryStore, ListJobsQuery, QuarantineInput, ReadLogQuery, RebuildReport } from '../../domain/types.js'
import { errors } from '../../errors.js'
import { commitListeners } from '../commit-listeners.js'
import { groupCommit } from '../group-commit.js'
import { sqliteConsumers } from './sqlite-consumers.js'
import { ACQUIRE_LEASE, checkLeaseRequest, LIST_LEASES, RELEASE_LEASE, SELECT_LEASE, toGrant, toLease, type LeaseDbRow } from '../leases.js'
import { emptyReport, REPLAY_PAGE, ReplayCache, replayPage } from '../replay-core.js'
import {
  jobParams, REPLAY_COLUMNS, toJob, toLogRow, toQuarantine, type ChainHead,
  type EventRow, type JobRow, type QuarantineDbRow, type ReplayRow
} from '../rows.js'
import { openReadOnly } from './sqlite-read-only.js'
import { sqliteReconcileState } from './sqlite-reconcile.js'
import { createWriter, HEAD_SQL, openConnection, UPSERT_JOB, type ConnectionSettings } from './sqlite-writer.js'

export interface SqliteStoreOptions extends ConnectionSettings {
  /** Path of the database file, or `:memory:`. */
  filename: string
  /** The most appends that share one transaction (default 256). */
  maxBatch?: number
  /** Job states a rebuild keeps in memory before writing the least recently used out (default 100,000). */
  replayCacheSize?: number
  /**
   * Open an existing log for reading only: the file is opened read-only, and nothing is created
   * or migrated (see sqlite-read-only.ts for what is refused).
   */
  readOnly?: boolean
}

/** Opens (and, unless `readOnly`, migrates) a SQLite event store. */
export function sqliteStore (options: SqliteStoreOptions): G2SentryStore & Required<Pick<G2SentryStore, 'appendIf' | 'reconcileState'>> & { readonly db: Database.Database } {
  const db = options.readOnly === true ? openReadOnly(options.filename, options) : openConnection(options.filename, options, true)
  const writer = createWriter(db)

  // Group commit (src/store/group-commit.ts): one transaction and one disk flush per batch.
  const listeners = commitListeners()
  let closed = false
  const queue = groupCommit(options.maxBatch ?? 256, (events) => {
    const started = process.hrtime.bigint()
    const outcomes = writer.appendBatch(events)
    listeners.committed(events.length, started)
    return outcomes
  })

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

  // Leases live on this host's clock: every process sharing the file shares the clock.
  const acquireLease = db.prepare<{ name: string; holder: string; now: number; ttl: number }, LeaseDbRow>(ACQUIRE_LEASE)
  const selectLease = db.prepare<{ name: string }, LeaseDbRow>(SELECT_LEASE)
  const releaseLease = db.prepare<{ name: string; holder: string; now: number }>(RELEASE_LEASE)
  const listLeases = db.prepare<{ now: number }, LeaseDbRow>(LIST_LEASES)
  const acquireTx = db.transaction((name: string, holder: string, ttl: number) =>
    acquireLease.get({ name, holder, now: Date.now(), ttl }) ?? selectLease.get({ name }) as LeaseDbRow)

  const rebuild = (dryRun: boolean): RebuildReport => {
    writer.forget()
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
      if (closed) return Promise.reject(new errors.STORE_CLOSED())
      // An IncomingEvent has no ifLastSeq, so it is never superseded.
      return queue.append(event) as Promise<AppendResult>
    },
    appendIf (event) {
      if (closed) return Promise.reject(new errors.STORE_CLOSED())
      return queue.append(event)
    },
    reconcileState: sqliteReconcileState(db),
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
    async acquireLease (name, holder, ttlMs) {
      checkLeaseRequest(name, holder, ttlMs)
      return toGrant(acquireTx.immediate(name, holder, ttlMs), holder)
    },
    async releaseLease (name, holder) {
      checkLeaseRequest(name, holder)
      return releaseLease.run({ name, holder, now: Date.now() }).changes > 0
    },
    async listLeases () {
      return listLeases.all({ now: Date.now() }).map(toLease)
    },
    ...sqliteConsumers(db),
    onCommit: listeners.onCommit,
    async rebuild (options) {
      const dryRun = options?.dryRun === true
      // A rebuild takes the write lock so no append slips in between the replay and the swap.
      return dryRun ? rebuildTx.deferred(true) : rebuildTx.immediate(false)
    },
    async close () {
      closed = true
      // Every append accepted before close is committed (or rejected) before the file closes.
      await queue.drain()
      db.close()
    }
  }
}
