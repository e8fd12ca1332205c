import type { AppendResult, IncomingEvent, QuarantineInput } from '../../domain/types.js'
import type { G2SentryStore, ListJobsQuery, ReadLogQuery } from '../contract.js'
import { errors } from '../../errors.js'
import { commitListeners } from '../commit-listeners.js'
import { groupCommit } from '../group-commit.js'
import { isBusy, retryingWhileBusy, retryWhileBusy } from './busy-retry.js'
import { sqliteConsumers } from './sqlite-consumers.js'
import { sqliteLifecycle } from './sqlite-lifecycle.js'
import { sqliteRetention } from './sqlite-retention.js'
import { sqliteArchive } from './sqlite-archive.js'
import { ACQUIRE_LEASE, checkLeaseRequest, LIST_LEASES, RELEASE_LEASE, SELECT_LEASE, toGrant, toLease, type LeaseDbRow } from '../leases.js'
import { toJob, toLogRow, toQuarantine, type ChainHead, type EventRow, type JobRow, type QuarantineDbRow } from '../rows.js'
import { sqliteRebuild } from './rebuild/rebuild.js'
import { openReadOnly } from './sqlite-read-only.js'
import { sqliteReconcileState } from './sqlite-reconcile.js'
import { HEAD_SQL, openConnection } from './sqlite-connection.js'
import { createWriter } from './sqlite-writer.js'
import type { ConnectionSettings } from './settings.js'
import { registerConnection } from './connection-of.js'

export interface SqliteStoreOptions extends ConnectionSettings {
  /** Path of the database file, or `:memory:`. */
  filename: string
  /** The most appends that share one transaction (default 256). */
  maxBatch?: number
  /**
   * Job states a rebuild keeps in memory before writing the least recently used out (default
   * 100,000), all its threads together.
   */
  replayCacheSize?: number
  /**
   * Threads a rebuild replays the log on, each the log rows of its share of the jobs (at most
   * 16). By default one per core, at most four, on a log of 50,000 events or more, else one.
   * An in-memory database is always replayed on one.
   */
  replayThreads?: number
  /**
   * Open an existing log for reading only: the file is opened read-only, and nothing is created
   * or migrated (see sqlite-read-only.ts for what is refused).
   */
  readOnly?: boolean
  /**
   * Open only a file that already holds a g2sentry log (else `FST_G2SENTRY_NO_LOG`), never
   * creating one or the tables in another program's database; a log that is behind is migrated.
   */
  existingLog?: boolean
}

/** A SQLite store: the whole contract, reconciliation included. */
export type SqliteStore = G2SentryStore & Required<Pick<G2SentryStore, 'appendIf' | 'reconcileState'>>

/** Opens (and, unless `readOnly`, migrates) a SQLite event store. */
export function sqliteStore (options: SqliteStoreOptions): SqliteStore {
  const readOnly = options.readOnly === true
  const db = readOnly ? openReadOnly(options.filename, options) : openConnection(options.filename, options, true, options.existingLog === true)
  const writer = createWriter(db)
  const busyTimeout = options.busyTimeout ?? 5000
  // Opened and migrated with SQLite's busy timeout (nothing is served yet); from now on a locked
  // file is waited for on a timer, off the event loop (busy-retry.ts). A read-only store serves
  // one command and keeps SQLite's own wait.
  if (!readOnly) db.pragma('busy_timeout = 0')
  const retrying = <T extends object>(methods: T): T => readOnly ? methods : retryingWhileBusy(methods, busyTimeout)

  // Group commit (src/store/group-commit.ts): one transaction and one disk flush per batch.
  const listeners = commitListeners()
  let closed = false
  const commitBatch = (events: IncomingEvent[]) => {
    const started = process.hrtime.bigint()
    const outcomes = writer.appendBatch(events)
    listeners.batchCommitted(events.length, started)
    return outcomes
  }
  // A batch waits for the lock at most busyTimeout from when its oldest append was queued.
  const queue = groupCommit(options.maxBatch ?? 256, (events, _release, queuedAt) => {
    try {
      return commitBatch(events)
    } catch (error) {
      if (readOnly || !isBusy(error)) throw error
      return retryWhileBusy(() => commitBatch(events), queuedAt + busyTimeout)
    }
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

  const rebuild = sqliteRebuild(db, { ...options, head: () => selectHead.get() })

  // Each of these is one statement or one transaction: safe to try again after SQLITE_BUSY.
  const waitingForLocks = retrying({
    async quarantine (entry: QuarantineInput) {
      return writer.quarantine(entry)
    },
    async getJob (jobId: number) {
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
    async listQuarantine ({ afterId, limit, pending }: Parameters<G2SentryStore['listQuarantine']>[0]) {
      return (pending === true ? selectPendingQuarantine : selectQuarantine).all(afterId ?? 0, limit).map(toQuarantine)
    },
    async resolveQuarantine (id: number, seq: number) {
      writer.resolveQuarantine(id, seq)
    },
    async quarantineSize () {
      return (countPendingQuarantine.get() as { n: number }).n
    },
    async chainHead () {
      return selectHead.get()
    },
    async acquireLease (name: string, holder: string, ttlMs: number) {
      checkLeaseRequest(name, holder, ttlMs)
      return toGrant(acquireTx.immediate(name, holder, ttlMs), holder)
    },
    async releaseLease (name: string, holder: string) {
      checkLeaseRequest(name, holder)
      return releaseLease.run({ name, holder, now: Date.now() }).changes > 0
    },
    async listLeases () {
      return listLeases.all({ now: Date.now() }).map(toLease)
    },
    ...sqliteConsumers(db),
    ...sqliteLifecycle(db),
    ...sqliteRetention(db),
    async rebuild (rebuildOptions?: { dryRun?: boolean }) {
      return rebuild(rebuildOptions?.dryRun === true)
    }
  })

  return registerConnection({
    append (event) {
      if (closed) return Promise.reject(new errors.STORE_CLOSED())
      // An IncomingEvent has no ifLastSeq, so it is never superseded.
      return queue.append(event) as Promise<AppendResult>
    },
    appendIf (event) {
      if (closed) return Promise.reject(new errors.STORE_CLOSED())
      return queue.append(event)
    },
    reconcileState: retrying(sqliteReconcileState(db)),
    // Retried a statement at a time, within the method: its deletion runs in many transactions.
    ...sqliteArchive(db, readOnly ? undefined : (work) => retryWhileBusy(work, performance.now() + busyTimeout)),
    ...waitingForLocks,
    onCommit: listeners.onCommit,
    async close () {
      closed = true
      // Every append accepted before close is committed (or rejected) before the file closes.
      await queue.drain()
      db.close()
    }
  }, db)
}
