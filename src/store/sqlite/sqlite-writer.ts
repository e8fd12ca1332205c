// The write side of the SQLite store: the group commit that appends a batch of events in one
// transaction (src/store/group-commit.ts gathers the batches), over a connection from
// sqlite-connection.ts.
import type Database from 'better-sqlite3'
import type { AppendResult, IncomingEvent, QuarantineInput, SupersededResult } from '../../domain/types.js'
import { errors } from '../../errors.js'
import { planBatch, type PlanReads } from '../batch-plan.js'
import type { BatchOutcome } from '../group-commit.js'
import { HEAD_SQL } from './sqlite-connection.js'
import {
  EVENT_INSERT_COLUMNS, EVENT_WIDTH, JOB_COLUMNS, jobParams, QUARANTINE_INSERT_COLUMNS, toJob,
  UPDATE_JOB_ON_CONFLICT, type ChainHead, type JobRow
} from '../rows.js'

export const UPSERT_JOB = `INSERT INTO jobs (${JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ${UPDATE_JOB_ON_CONFLICT}`

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
const JOB_WIDTH = 9

/** The group commit over `db`, a connection opened with `openConnection`. */
export function createWriter (db: Database.Database): SqliteWriter {
  const selectJob = db.prepare<[number], JobRow>('SELECT * FROM jobs WHERE job_id = ?')
  const upsertJob = db.prepare(UPSERT_JOB)
  const insertEvent = db.prepare(`INSERT INTO events (${EVENT_INSERT_COLUMNS}) VALUES ${placeholders(EVENT_WIDTH)}`)
  // Once every row of the job is archived, its last row is the one the checkpoint kept.
  const lastSeqOf = db.prepare<[number, number], { seq: number | null }>(`SELECT coalesce((SELECT max(seq) FROM events WHERE job_id = ?),
    (SELECT last_seq FROM checkpoint_jobs WHERE job_id = ?)) AS seq`)
  const selectHead = db.prepare<[], ChainHead>(HEAD_SQL)
  // By the bytes: a version 2 row's content hash is salted, so equal bodies have different ones.
  const firstSameContent = db.prepare<[number, Buffer], { seq: number }>(
    'SELECT seq FROM events WHERE job_id = ? AND raw_body = ? ORDER BY seq LIMIT 1')
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

  /** What a plan reads, from this connection, inside the write transaction. */
  const reads: PlanReads = {
    state: (jobId) => {
      const row = selectJob.get(jobId)
      return row && toJob(row)
    },
    lastSeq: (jobId) => lastSeqOf.get(jobId, jobId)?.seq ?? 0,
    firstSameContent: (jobId, rawBody) => firstSameContent.get(jobId, rawBody)?.seq ?? null
  }

  /** One event, written at once: the fallback when a batch failed, one savepoint per event. */
  const append = (event: IncomingEvent): AppendResult | SupersededResult => {
    if (event.quarantineId !== undefined) claimQuarantined(event.quarantineId)
    const plan = planBatch([event], head, reads)
    for (const row of plan.rows) insertEvent.run(row)
    for (const job of plan.jobs) upsertJob.run(jobParams(job))
    for (const { id, seq } of plan.retried) updateQuarantine.run(seq, id)
    head = plan.head
    return plan.results[0] as AppendResult | SupersededResult
  }

  /**
   * A batch straight through: planned in memory on the jobs' states (each read once), then one
   * multi-row insert writes the events and one upsert the last state of each job it changed.
   */
  const appendAll = db.transaction((events: readonly IncomingEvent[]) => {
    began = true
    const claimed = new Set<number>()
    for (const { quarantineId: id } of events) {
      if (id === undefined) continue
      // The same body twice in one batch (two retries at once): the one-event path fails the second.
      if (claimed.has(id)) throw new Error(`quarantined body ${id} twice in one batch`)
      claimed.add(id)
      claimQuarantined(id)
    }
    const plan = planBatch(events, selectHead.get(), reads)
    // Flattened by hand: Array#flat costs more than the rest of the plan.
    const values: unknown[] = []
    for (const row of plan.rows) for (const value of row) values.push(value)
    insertEvents(values)
    const jobs: unknown[] = []
    for (const job of plan.jobs) for (const value of jobParams(job)) jobs.push(value)
    upsertJobs(jobs)
    for (const { id, seq } of plan.retried) updateQuarantine.run(seq, id)
    head = plan.head
    return plan.results.map((result): BatchOutcome => ({ ok: true, result }))
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
