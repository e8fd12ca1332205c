import { availableParallelism } from 'node:os'
import { debuglog } from 'node:util'
import type { AppendResult, IncomingEvent, QuarantineInput } from '../../domain/types.js'
import type { G2SentryStore, ListJobsQuery, ReadLogQuery, RebuildReport } from '../contract.js'
import { errors } from '../../errors.js'
import { commitListeners } from '../commit-listeners.js'
import { groupCommit } from '../group-commit.js'
import { isBusy, retryingWhileBusy, retryWhileBusy } from './busy-retry.js'
import { sqliteConsumers } from './sqlite-consumers.js'
import { ACQUIRE_LEASE, checkLeaseRequest, LIST_LEASES, RELEASE_LEASE, SELECT_LEASE, toGrant, toLease, type LeaseDbRow } from '../leases.js'
import { REPLAY_CACHE } from '../replay-core.js'
import { JOB_COLUMNS, toJob, toLogRow, toQuarantine, type ChainHead, type EventRow, type JobRow, type QuarantineDbRow } from '../rows.js'
import { MAX_THREADS } from './replay-protocol.js'
import { lastRebuild, ReplayWorkers } from './replay-threads.js'
import { rebuiltTable, replacedRows, replayShare, splitShares, type Share, type ShareReport } from './sqlite-replay.js'
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

const debug = debuglog('g2sentry')

/** A log this long or longer is rebuilt on several threads unless `replayThreads` says otherwise. */
const THREADED_FROM = 50_000

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
    listeners.committed(events.length, started)
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

  // The file as SQLite opened it, absolute: the workers must open the same one, wherever the
  // process's working directory has moved since.
  const file = (db.pragma('database_list') as Array<{ name: string; file: string }>).find((d) => d.name === 'main')?.file ?? options.filename

  /** The shares of the jobs a rebuild replays, each on a thread of its own. */
  const sharesFor = (): Share[] => {
    // Another thread cannot open an in-memory database.
    if (db.memory) return splitShares(1, 0)
    // The length of the log as far as seq tells (rows deleted by hand aside).
    const { seq: events } = selectHead.get() ?? { seq: 0 }
    if (options.replayThreads !== undefined) return splitShares(Math.max(1, Math.min(MAX_THREADS, Math.floor(options.replayThreads))), events)
    // Starting a worker costs tens of milliseconds: worth it only on a long log.
    return splitShares(events < THREADED_FROM ? 1 : Math.min(availableParallelism(), 4), events)
  }

  const rebuild = (dryRun: boolean): RebuildReport => {
    // The cache's bound holds for all the threads together.
    const capacityOf = (parts: number) => Math.max(1, Math.floor((options.replayCacheSize ?? REPLAY_CACHE) / parts))
    let shares = sharesFor()
    const workers = shares.length > 1 ? ReplayWorkers.start(file, shares, capacityOf(shares.length), options.busyTimeout ?? 5000, dryRun) : undefined
    if (workers === undefined) shares = splitShares(1, 0)
    const capacity = capacityOf(shares.length)
    try {
      // A dry run takes no lock, so its threads' snapshots agree only if they are taken close together.
      if (dryRun) workers?.waitReady()
      // A rebuild takes the write lock so no append slips in between the replay and the swap.
      return dryRun ? rebuildTx.deferred(true, shares, capacity, workers) : rebuildTx.immediate(false, shares, capacity, workers)
    } finally {
      workers?.close()
    }
  }

  /**
   * Replays every share of the jobs, the first here and the others on `workers` (or here, for a
   * share whose worker could not replay it from this transaction's snapshot), then puts the
   * shares' reports together and, unless `dryRun`, writes the rebuilt rows of the differing jobs.
   */
  const replayShares = (dryRun: boolean, shares: Share[], capacity: number, workers: ReplayWorkers | undefined): RebuildReport => {
    workers?.begin(() => db.prepare('SELECT count(*) FROM main.sqlite_master').get())
    const started = performance.now()
    const reports = [replayShare(db, shares[0] as Share, capacity, () => workers?.poll())]
    debug('rebuild: share 0 replayed in %d ms', Math.round(performance.now() - started))
    const here = [shares[0] as Share]
    const fromWorkers = workers?.reports() ?? []
    lastRebuild.threads = shares.length
    lastRebuild.onWorkers = fromWorkers.filter((report) => report !== undefined).length
    debug('rebuild: %d shares, %d of them replayed on worker threads', shares.length, lastRebuild.onWorkers)
    for (const share of shares.slice(1)) {
      const report = fromWorkers[share.part - 1]
      if (report === undefined) here.push(share)
      reports.push(report ?? replayShare(db, share, capacity))
    }
    const differing = reports.flatMap((r) => r.differing).sort((a, b) => a < b ? -1 : a > b ? 1 : 0)
    if (!dryRun && differing.length > 0) {
      const remove = db.prepare('DELETE FROM main.jobs WHERE job_id = ?')
      for (const jobId of differing) remove.run(jobId)
      // Once the differing rows are gone, the rebuilt rows missing from the projection are theirs.
      for (const share of here) db.exec(`INSERT INTO main.jobs ${replacedRows(share)}`)
      const insert = db.prepare(`INSERT INTO main.jobs (${JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
      for (const share of shares) {
        if (!here.includes(share) && (reports[share.part] as ShareReport).differing.length > 0) {
          workers?.rows(share.part, (rows) => { for (const row of rows) insert.run(row) })
        }
      }
    }
    for (const share of here) db.exec(`DROP TABLE ${rebuiltTable(share)}`)
    return {
      events: reports.reduce((n, r) => n + r.events, 0),
      jobs: reports.reduce((n, r) => n + r.jobs, 0),
      outcomeMismatches: reports.flatMap((r) => r.outcomeMismatches).sort((a, b) => a.seq - b.seq),
      differingJobs: differing.map(Number)
    }
  }
  const rebuildTx = db.transaction(replayShares)

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
