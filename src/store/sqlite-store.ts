import Database from 'better-sqlite3'
import { join } from 'node:path'
import { projectEvent } from '../project-status.js'
import type { AppendResult, G2SentryStore, IncomingEvent, ListJobsQuery, QuarantineInput, ReadLogQuery, RebuildReport } from '../types.js'
import { loadMigrations, MIGRATIONS_ROOT, pendingMigrations, type AppliedMigration } from './migrations.js'
import { emptyReport, REPLAY_PAGE, ReplayCache, replayPage } from './replay-core.js'
import {
  contentHash, EVENT_INSERT_COLUMNS, eventParams, JOB_COLUMNS, jobParams, QUARANTINE_INSERT_COLUMNS, REPLAY_COLUMNS,
  toJob, toLogRow, toQuarantine, UPDATE_JOB_ON_CONFLICT, type ChainHead,
  type EventRow, type JobRow, type QuarantineDbRow, type ReplayRow
} from './rows.js'

export interface SqliteStoreOptions {
  /** Path of the database file, or `:memory:`. */
  filename: string
  /** `FULL` (default) flushes the WAL to disk on every commit, so an acknowledged event survives a power cut. */
  synchronous?: 'FULL' | 'NORMAL'
  /** How long a writer waits for another process's lock before the append fails (ms, default 5000). */
  busyTimeout?: number
  /** The most appends that share one transaction (default 256). */
  maxBatch?: number
  /** Job states a rebuild keeps in memory before writing the least recently used out (default 100,000). */
  replayCacheSize?: number
}

const UPSERT_JOB = `INSERT INTO jobs (${JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ${UPDATE_JOB_ON_CONFLICT}`

type Pending = { event: IncomingEvent; resolve: (result: AppendResult) => void; reject: (error: unknown) => void }

/** Opens (and migrates) a SQLite event store. */
export function sqliteStore (options: SqliteStoreOptions): G2SentryStore & { readonly db: Database.Database } {
  const db = new Database(options.filename)
  const busyTimeout = options.busyTimeout ?? 5000
  try {
    db.pragma(`busy_timeout = ${busyTimeout}`)
    enableWal(db, busyTimeout)
    db.pragma(`synchronous = ${options.synchronous ?? 'FULL'}`)
    migrate(db)
  } catch (error) {
    db.close()
    throw error
  }
  const maxBatch = options.maxBatch ?? 256

  const selectJob = db.prepare<[number], JobRow>('SELECT * FROM jobs WHERE job_id = ?')
  const upsertJob = db.prepare(UPSERT_JOB)
  const insertEvent = db.prepare(`INSERT INTO events (${EVENT_INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
  // AUTOINCREMENT records the last seq handed out, and rolls back with a failed transaction: a
  // seq missing from the log was deleted.
  const selectHead = db.prepare<[], ChainHead>(`SELECT s.seq AS seq, (SELECT hash FROM events ORDER BY seq DESC LIMIT 1) AS hash
    FROM sqlite_sequence s WHERE s.name = 'events'`)
  // The chain's head, read again at the start of every write transaction (another process may
  // have appended) and moved only once an event is fully written.
  let head: ChainHead | undefined
  const firstSameContent = db.prepare<[number, string], { seq: number }>(
    'SELECT seq FROM events WHERE job_id = ? AND content_hash = ? ORDER BY seq LIMIT 1')

  const append = (event: IncomingEvent): AppendResult => {
    const current = selectJob.get(event.jobId)
    const decision = projectEvent(current && toJob(current), event)
    const bodyHash = contentHash(event.rawBody)
    const sameAs = decision.outcome === 'duplicate' ? firstSameContent.get(event.jobId, bodyHash)?.seq ?? null : null
    const { params, next } = eventParams(event, bodyHash, head, decision.outcome, sameAs)
    insertEvent.run(params)
    if (decision.outcome !== 'unsupported') upsertJob.run(jobParams(decision.state))
    head = next
    return { outcome: decision.outcome, seq: next.seq, jobId: event.jobId, status: decision.state?.status ?? null }
  }

  // One transaction and one disk flush for every append that arrives in the same turn of the
  // event loop. A batch runs straight through; only if an event fails is it run again with a
  // savepoint per event, so that one failure fails only its own caller.
  let began = false
  const appendAll = db.transaction((batch: Pending[]) => {
    began = true
    head = selectHead.get()
    return batch.map((item) => ({ ok: true as const, result: append(item.event) }))
  })
  const appendOne = db.transaction(append)
  const appendEach = db.transaction((batch: Pending[]) => {
    head = selectHead.get()
    return batch.map((item) => {
      try {
        return { ok: true as const, result: appendOne(item.event) }
      } catch (error) {
        // Some failures (a full disk) make SQLite roll back the whole transaction, not just the
        // savepoint: every event of the batch is then undone, and none may run outside it.
        if (!db.inTransaction) throw error
        return { ok: false as const, error }
      }
    })
  })
  const appendBatch = (batch: Pending[]) => {
    began = false
    try {
      return appendAll.immediate(batch)
    } catch (error) {
      // The lock could not be had (SQLITE_BUSY after busyTimeout): the whole batch fails at once.
      if (!began) throw error
      return appendEach.immediate(batch)
    }
  }

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
      outcomes = appendBatch(batch)
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
    setImmediate(flush)
  }

  const insertQuarantine = db.prepare(`INSERT INTO quarantine (${QUARANTINE_INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)`)
  const selectJobsAfter = db.prepare<[number, number], JobRow>('SELECT * FROM jobs WHERE job_id > ? ORDER BY job_id LIMIT ?')
  const selectJobsByStatus = db.prepare<[string, number, number], JobRow>(
    'SELECT * FROM jobs WHERE status = ? AND job_id > ? ORDER BY job_id LIMIT ?')
  const selectLog = db.prepare<[number, number], EventRow>('SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?')
  const selectJobLog = db.prepare<[number, number, number], EventRow>(
    'SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?')
  const selectQuarantine = db.prepare<[number, number], QuarantineDbRow>('SELECT * FROM quarantine WHERE id > ? ORDER BY id LIMIT ?')
  const selectPendingQuarantine = db.prepare<[number, number], QuarantineDbRow>(
    'SELECT * FROM quarantine WHERE id > ? AND retried_seq IS NULL ORDER BY id LIMIT ?')
  const updateQuarantine = db.prepare('UPDATE quarantine SET retried_seq = ? WHERE id = ?')
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
      const { lastInsertRowid } = insertQuarantine.run(entry.reason, entry.detail, entry.rawBody, entry.signature,
        entry.contentType, entry.receivedAt)
      return Number(lastInsertRowid)
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
      updateQuarantine.run(seq, id)
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

/**
 * Switches a file to WAL. SQLite does not apply the busy timeout to this switch, so when another
 * process holds the lock (two instances starting on a new file) it is retried until the timeout.
 */
function enableWal (db: Database.Database, busyTimeout: number): void {
  const deadline = Date.now() + busyTimeout
  for (;;) {
    try {
      db.pragma('journal_mode = WAL')
      return
    } catch (error) {
      if ((error as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() >= deadline) throw error
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10)
    }
  }
}

function migrate (db: Database.Database): void {
  const all = loadMigrations(join(MIGRATIONS_ROOT, 'sqlite'))
  db.transaction(() => {
    db.exec(`CREATE TABLE IF NOT EXISTS g2sentry_migrations (
      version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)`)
    const applied = db.prepare<[], AppliedMigration>('SELECT version, name, checksum FROM g2sentry_migrations ORDER BY version').all()
    const record = db.prepare('INSERT INTO g2sentry_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)')
    for (const migration of pendingMigrations(all, applied)) {
      db.exec(migration.sql)
      record.run(migration.version, migration.name, migration.checksum, Date.now())
    }
  }).immediate()
}
