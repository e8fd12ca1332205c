import { hash } from 'node:crypto'
// Table and column names, and the mapping between rows and the store's types, shared by every
// SQL backend: the SQLite and PostgreSQL schemas use the same names.
import type { AppendResult, EventSource, IncomingEvent, JobState, JobStatus, LogRow, Outcome, QuarantineRow } from '../domain/types.js'
import type { Decision } from '../domain/project-status.js'
import { GENESIS, rowHash } from './chain.js'

export interface JobRow {
  job_id: number
  job_name: string
  status: JobStatus
  guardian_phone: string | null
  last_event_type: string
  version: number
  event_count: number
  created_at: number
  updated_at: number
}

export interface EventRow {
  seq: number
  job_id: number
  event_type: string
  job_status: JobStatus
  job_name: string
  guardian_phone: string | null
  raw_body: Buffer
  signature: string
  content_hash: string
  received_at: number
  outcome: Outcome
  same_as: number | null
  prev_hash: string | null
  hash: string | null
  source: EventSource
}

export interface QuarantineDbRow {
  id: number
  reason: QuarantineRow['reason']
  detail: string
  raw_body: Buffer
  signature: string
  content_type: string | null
  received_at: number
  retried_seq: number | null
}

/** The columns of `jobs`, in table order, matching `jobParams`. */
export const JOB_COLUMNS = 'job_id, job_name, status, guardian_phone, last_event_type, version, event_count, created_at, updated_at'

/** How an upsert of a projection row updates an existing one (every column but the id and createdAt). */
export const UPDATE_JOB_ON_CONFLICT = `ON CONFLICT (job_id) DO UPDATE SET job_name = excluded.job_name, status = excluded.status,
  guardian_phone = excluded.guardian_phone, last_event_type = excluded.last_event_type,
  version = excluded.version, event_count = excluded.event_count, updated_at = excluded.updated_at`

/** The columns of `events` an append writes, matching the values `eventParams` gives. */
export const EVENT_INSERT_COLUMNS = 'seq, job_id, event_type, job_status, job_name, guardian_phone, raw_body, signature, content_hash, received_at, outcome, same_as, prev_hash, hash, source'

/** The columns a replay reads, in the order of a `ReplayTuple`. */
export const REPLAY_COLUMNS = 'seq, job_id, event_type, job_status, job_name, guardian_phone, received_at, outcome, source'
/**
 * A log row as a replay reads it: REPLAY_COLUMNS as an array. Both drivers read arrays
 * (better-sqlite3's `raw()`, pg's `rowMode: 'array'`) faster than an object per row.
 */
export type ReplayTuple = [
  seq: number, jobId: number, eventType: string, jobStatus: JobStatus, jobName: string,
  guardianPhone: string | null, receivedAt: number, outcome: Outcome, source: EventSource
]

/** The columns of a whole log row, in the order `fromColumns` reads them. */
export const LOG_COLUMNS = 'seq, job_id, event_type, job_status, job_name, guardian_phone, raw_body, signature, content_hash, received_at, outcome, same_as, prev_hash, hash, source'

export const QUARANTINE_INSERT_COLUMNS = 'reason, detail, raw_body, signature, content_type, received_at'

export const toJob = (row: JobRow): JobState => ({
  jobId: row.job_id,
  jobName: row.job_name,
  status: row.status,
  guardianPhone: row.guardian_phone,
  lastEventType: row.last_event_type,
  version: row.version,
  eventCount: row.event_count,
  createdAt: row.created_at,
  updatedAt: row.updated_at
})

export const jobParams = (job: JobState) => [
  job.jobId, job.jobName, job.status, job.guardianPhone, job.lastEventType,
  job.version, job.eventCount, job.createdAt, job.updatedAt
]

export const toLogRow = (row: EventRow): LogRow => ({
  seq: row.seq,
  jobId: row.job_id,
  eventType: row.event_type,
  jobStatus: row.job_status,
  jobName: row.job_name,
  guardianPhone: row.guardian_phone,
  rawBody: row.raw_body,
  signature: row.signature,
  contentHash: row.content_hash,
  receivedAt: row.received_at,
  source: row.source,
  outcome: row.outcome,
  sameAs: row.same_as,
  prevHash: row.prev_hash,
  hash: row.hash
})

/**
 * A log row read as an array of LOG_COLUMNS (better-sqlite3's `raw`, pg's `rowMode: 'array'`):
 * verify reads every row of the log, and arrays skip building an object keyed by column name.
 */
export const fromColumns = (values: unknown[]): LogRow => ({
  seq: values[0] as number,
  jobId: values[1] as number,
  eventType: values[2] as string,
  jobStatus: values[3] as JobStatus,
  jobName: values[4] as string,
  guardianPhone: values[5] as string | null,
  rawBody: values[6] as Buffer,
  signature: values[7] as string,
  contentHash: values[8] as string,
  receivedAt: values[9] as number,
  outcome: values[10] as Outcome,
  sameAs: values[11] as number | null,
  prevHash: values[12] as string | null,
  hash: values[13] as string | null,
  source: values[14] as EventSource
})

export const toQuarantine = (row: QuarantineDbRow): QuarantineRow => ({
  id: row.id,
  reason: row.reason,
  detail: row.detail,
  rawBody: row.raw_body,
  signature: row.signature,
  contentType: row.content_type,
  receivedAt: row.received_at,
  retriedSeq: row.retried_seq
})

/** The SHA-256 of a raw body, stored with each row so a repeat can name the first row with the same bytes. */
export const contentHash = (rawBody: Buffer): string => hash('sha256', rawBody, 'hex')

/** The chain's head: the last seq handed out and the hash the next row links to. */
export interface ChainHead { seq: number; hash: string | null }

/**
 * The values of one `events` row, in EVENT_INSERT_COLUMNS order, for an event appended after
 * `head` with the outcome the projection gave it. Returns the row's new head too.
 */
export function eventParams (
  event: IncomingEvent, bodyHash: string, head: ChainHead | undefined, outcome: Outcome, sameAs: number | null
): { params: unknown[]; next: ChainHead } {
  const seq = (head?.seq ?? 0) + 1
  // After rows from before the chain (no hash), the chain starts again from genesis.
  const prevHash = head?.hash ?? GENESIS
  const source = event.source ?? 'callback'
  const hash = rowHash(prevHash, { seq, receivedAt: event.receivedAt, signature: event.signature, contentHash: bodyHash, outcome, sameAs, source })
  return {
    params: [seq, event.jobId, event.eventType, event.jobStatus, event.jobName, event.guardianPhone ?? null, event.rawBody,
      event.signature, bodyHash, event.receivedAt, outcome, sameAs, prevHash, hash, source],
    next: { seq, hash }
  }
}

/** What an append reports once committed: the event's outcome, its seq, and the job's status after it. */
export const appendResult = (decision: Decision, seq: number, jobId: number): AppendResult =>
  ({ outcome: decision.outcome, seq, jobId, status: decision.state?.status ?? null })
