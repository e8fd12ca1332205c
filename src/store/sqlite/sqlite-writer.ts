// The write side of the SQLite store: a connection's settings, and the group commit that appends
// a batch of events in one transaction (src/store/group-commit.ts gathers the batches).
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { projectEvent } from '../../domain/project-status.js'
import type { AppendResult, ConditionalEvent, IncomingEvent, JobState, QuarantineInput, SupersededResult } from '../../domain/types.js'
import { errors } from '../../errors.js'
import type { BatchOutcome } from '../group-commit.js'
import { loadMigrations, MIGRATIONS_ROOT, pendingMigrations, type AppliedMigration } from '../migrations.js'
import {
  appendResult, contentHash, EVENT_INSERT_COLUMNS, eventParams, JOB_COLUMNS, jobParams, QUARANTINE_INSERT_COLUMNS, toJob,
  UPDATE_JOB_ON_CONFLICT, type ChainHead, type JobRow
} from '../rows.js'

export interface ConnectionSettings {
  /** `FULL` (default) flushes the WAL to disk on every commit, so an acknowledged event survives a power cut. */
  synchronous?: 'FULL' | 'NORMAL' | undefined
  /** How long a writer waits for another connection's lock before the append fails (ms, default 5000). */
  busyTimeout?: number | undefined
}

export const UPSERT_JOB = `INSERT INTO jobs (${JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ${UPDATE_JOB_ON_CONFLICT}`

/**
 * Opens a connection with the store's settings: WAL, the busy timeout, `synchronous`; with
 * `migrate`, brings the schema up to date first.
 */
export function openConnection (filename: string, settings: ConnectionSettings, migrate = false): Database.Database {
  const db = new Database(filename)
  const busyTimeout = settings.busyTimeout ?? 5000
  try {
    db.pragma(`busy_timeout = ${busyTimeout}`)
    enableWal(db, busyTimeout)
    db.pragma(`synchronous = ${settings.synchronous ?? 'FULL'}`)
    if (migrate) migrateSchema(db)
  } catch (error) {
    db.close()
    throw error
  }
  return db
}

export interface SqliteWriter {
  /**
   * Appends `events` in one `BEGIN IMMEDIATE … COMMIT`, in order. Throws when the batch failed
   * as a whole (the lock could not be had, or SQLite rolled the whole transaction back);
   * otherwise each event has its own outcome, and one failing event fails only itself.
   */
  appendBatch (events: readonly IncomingEvent[]): BatchOutcome[]
  quarantine (entry: QuarantineInput): number
  resolveQuarantine (id: number, seq: number): void
}

// Rows per multi-row INSERT: a batch is written in chunks of these sizes (largest first), so
// at most a dozen statements are ever prepared and a batch of n takes at most log2(n) + 1 of them.
const CHUNKS = [256, 128, 64, 32, 16, 8, 4, 2, 1]
const EVENT_WIDTH = 15
const JOB_WIDTH = 9

/** The group commit over `db`, a connection opened with `openConnection`. */
export function createWriter (db: Database.Database): SqliteWriter {
  const selectJob = db.prepare<[number], JobRow>('SELECT * FROM jobs WHERE job_id = ?')
  const upsertJob = db.prepare(UPSERT_JOB)
  const insertEvent = db.prepare(`INSERT INTO events (${EVENT_INSERT_COLUMNS}) VALUES ${placeholders(EVENT_WIDTH)}`)
  const lastSeqOf = db.prepare<[number], { seq: number | null }>('SELECT max(seq) AS seq FROM events WHERE job_id = ?')
  const selectHead = db.prepare<[], ChainHead>(HEAD_SQL)
  const firstSameContent = db.prepare<[number, string], { seq: number }>(
    'SELECT seq FROM events WHERE job_id = ? AND content_hash = ? ORDER BY seq LIMIT 1')
  const insertQuarantine = db.prepare(`INSERT INTO quarantine (${QUARANTINE_INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)`)
  const updateQuarantine = db.prepare('UPDATE quarantine SET retried_seq = ? WHERE id = ?')
  const retriedSeqOf = db.prepare<[number], { retried_seq: number | null }>('SELECT retried_seq FROM quarantine WHERE id = ?')
  /** A quarantined body already retried fails its append (the write lock is held: nobody else can mark it meanwhile). */
  const claimQuarantined = (id: number): void => {
    const retried = retriedSeqOf.get(id)?.retried_seq ?? null
    if (retried !== null) throw new errors.QUARANTINE_ALREADY_RETRIED(id, retried)
  }
  const insertEvents = multiRow(db, `INSERT INTO events (${EVENT_INSERT_COLUMNS}) VALUES`, '', EVENT_WIDTH)
  const upsertJobs = multiRow(db, `INSERT INTO jobs (${JOB_COLUMNS}) VALUES`, UPDATE_JOB_ON_CONFLICT, JOB_WIDTH)

  // No job states are kept between batches: each batch reads its jobs' rows inside its own
  // write transaction, so another connection's commit or a rebuild is always seen. A cache
  // checked against `PRAGMA data_version` was measured and removed (docs/design.md, "Decisions").

  // The chain's head, read again at the start of every write transaction (another connection may
  // have appended) and moved only once an event is fully written.
  let head: ChainHead | undefined
  // Whether the batch's transaction began (its lock was had) before it failed.
  let began = false

  /** One event, written at once: the fallback when a batch failed, one savepoint per event. */
  const append = (event: IncomingEvent): AppendResult | SupersededResult => {
    const superseded = supersededBy(event, lastSeqOf.get(event.jobId)?.seq ?? 0)
    if (superseded !== undefined) return superseded
    if (event.quarantineId !== undefined) claimQuarantined(event.quarantineId)
    const current = selectJob.get(event.jobId)
    const decision = projectEvent(current && toJob(current), event)
    const bodyHash = contentHash(event.rawBody)
    const sameAs = decision.outcome === 'duplicate' ? firstSameContent.get(event.jobId, bodyHash)?.seq ?? null : null
    const { params, next } = eventParams(event, bodyHash, head, decision.outcome, sameAs)
    insertEvent.run(params)
    if (decision.outcome !== 'unsupported') upsertJob.run(jobParams(decision.state as JobState))
    if (event.quarantineId !== undefined) updateQuarantine.run(next.seq, event.quarantineId)
    head = next
    return appendResult(decision, next.seq, event.jobId)
  }

  /**
   * A batch straight through: the projection runs in memory on the jobs' states (read from the
   * table once per batch), then one multi-row insert writes the events and one upsert the last
   * state of each job the batch touched.
   */
  const appendAll = db.transaction((events: readonly IncomingEvent[]) => {
    began = true
    head = selectHead.get()
    const states = new Map<number, JobState | undefined>()
    const touched = new Set<number>()
    // The first row of each job with each body in this batch, for a redelivery within it.
    const firstInBatch = new Map<string, number>()
    const rows: unknown[] = []
    const outcomes: BatchOutcome[] = []
    // The last seq of each job this batch wrote to, for a conditional append after it.
    const lastInBatch = new Map<number, number>()
    for (const event of events) {
      const { jobId } = event
      if ((event as Partial<ConditionalEvent>).ifLastSeq !== undefined) {
        const superseded = supersededBy(event, lastInBatch.get(jobId) ?? lastSeqOf.get(jobId)?.seq ?? 0)
        if (superseded !== undefined) {
          outcomes.push({ ok: true, result: superseded })
          continue
        }
      }
      if (event.quarantineId !== undefined) claimQuarantined(event.quarantineId)
      let current: JobState | undefined
      if (states.has(jobId)) current = states.get(jobId)
      else {
        const row = selectJob.get(jobId)
        current = row && toJob(row)
      }
      const decision = projectEvent(current, event)
      const bodyHash = contentHash(event.rawBody)
      let sameAs: number | null = null
      if (decision.outcome === 'duplicate') {
        sameAs = firstSameContent.get(jobId, bodyHash)?.seq ?? firstInBatch.get(`${jobId} ${bodyHash}`) ?? null
      }
      const { params, next } = eventParams(event, bodyHash, head, decision.outcome, sameAs)
      if (sameAs === null) {
        const key = `${jobId} ${bodyHash}`
        if (!firstInBatch.has(key)) firstInBatch.set(key, next.seq)
      }
      for (const param of params) rows.push(param)
      // An unsupported event leaves the state as it was (and unwritten).
      states.set(jobId, decision.state)
      if (decision.outcome !== 'unsupported') touched.add(jobId)
      if (event.quarantineId !== undefined) updateQuarantine.run(next.seq, event.quarantineId)
      head = next
      lastInBatch.set(jobId, next.seq)
      outcomes.push({ ok: true, result: appendResult(decision, next.seq, jobId) })
    }
    insertEvents(rows)
    const jobs: unknown[] = []
    for (const jobId of touched) for (const param of jobParams(states.get(jobId) as JobState)) jobs.push(param)
    upsertJobs(jobs)
    return outcomes
  })
  const appendOne = db.transaction(append)
  const appendEach = db.transaction((events: readonly IncomingEvent[]): BatchOutcome[] => {
    head = selectHead.get()
    return events.map((event) => {
      try {
        return { ok: true as const, result: appendOne(event) }
      } catch (error) {
        // Some failures (a full disk) make SQLite roll back the whole transaction, not just the
        // savepoint: every event of the batch is then undone, and none may run outside it.
        if (!db.inTransaction) throw error
        return { ok: false as const, error }
      }
    })
  })

  return {
    appendBatch (events) {
      began = false
      try {
        return appendAll.immediate(events)
      } catch (error) {
        // The lock could not be had (SQLITE_BUSY after busyTimeout): the whole batch fails at once.
        if (!began) throw error
        // Only if an event fails is the batch run again with a savepoint per event, so that one
        // failure fails only its own caller.
        return appendEach.immediate(events)
      }
    },
    quarantine (entry) {
      const { lastInsertRowid } = insertQuarantine.run(entry.reason, entry.detail, entry.rawBody, entry.signature,
        entry.contentType, entry.receivedAt)
      return Number(lastInsertRowid)
    },
    resolveQuarantine (id, seq) {
      updateQuarantine.run(seq, id)
    }
  }
}

/**
 * A conditional append (`ifLastSeq`, the reconciler's) whose job's log grew since the caller
 * looked: it is reported, and nothing is written.
 */
function supersededBy (event: IncomingEvent, lastSeq: number): SupersededResult | undefined {
  const { ifLastSeq } = event as Partial<ConditionalEvent>
  return ifLastSeq === undefined || ifLastSeq === lastSeq ? undefined : { outcome: 'superseded', jobId: event.jobId, lastSeq }
}

const placeholders = (width: number) => `(${Array(width).fill('?').join(', ')})`

/**
 * `values` (rows of `width` values, flattened) written with as few multi-row statements as the
 * CHUNKS sizes allow, each prepared once.
 */
function multiRow (db: Database.Database, head: string, tail: string, width: number): (values: unknown[]) => void {
  const statements = new Map<number, Database.Statement>()
  const statement = (rows: number) => {
    let prepared = statements.get(rows)
    if (prepared === undefined) {
      prepared = db.prepare(`${head} ${Array(rows).fill(placeholders(width)).join(', ')} ${tail}`)
      statements.set(rows, prepared)
    }
    return prepared
  }
  return (values) => {
    let at = 0
    for (const size of CHUNKS) {
      while ((values.length - at) / width >= size) {
        statement(size).run(at === 0 && values.length === size * width ? values : values.slice(at, at + size * width))
        at += size * width
      }
    }
  }
}

// AUTOINCREMENT records the last seq handed out, and rolls back with a failed transaction: a seq
// missing from the log was deleted.
export const HEAD_SQL = `SELECT s.seq AS seq, (SELECT hash FROM events ORDER BY seq DESC LIMIT 1) AS hash
  FROM sqlite_sequence s WHERE s.name = 'events'`

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

function migrateSchema (db: Database.Database): void {
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
