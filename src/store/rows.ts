import { hash, randomFillSync } from 'node:crypto'
// Table and column names, and the mapping between rows and the store's types, shared by every
// SQL backend: the SQLite and PostgreSQL schemas use the same names.
import type { AppendResult, IncomingEvent, JobState, JobStatus, LogRow, Outcome, QuarantineRow, RowOutcome, RowSource } from '../domain/types.js'
import type { Decision } from '../domain/project-status.js'
import type { CheckpointJob } from './contract.js'
import { bodyCommitment, CHAIN_VERSION, GENESIS, rowHash } from './chain.js'

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
  outcome: RowOutcome
  same_as: number | null
  prev_hash: string | null
  hash: string | null
  source: RowSource
  chain_version: number
  salt: Buffer | null
  redacted_by: number | null
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
  redacted_by: number | null
}

/** The columns of `jobs`, in table order, matching `jobParams`. */
export const JOB_COLUMNS = 'job_id, job_name, status, guardian_phone, last_event_type, version, event_count, created_at, updated_at'

/** How an upsert of a projection row updates an existing one (every column but the id and createdAt). */
export const UPDATE_JOB_ON_CONFLICT = `ON CONFLICT (job_id) DO UPDATE SET job_name = excluded.job_name, status = excluded.status,
  guardian_phone = excluded.guardian_phone, last_event_type = excluded.last_event_type,
  version = excluded.version, event_count = excluded.event_count, updated_at = excluded.updated_at`

/** The columns of `events` an append writes, matching the values `eventParams` gives. */
export const EVENT_INSERT_COLUMNS = 'seq, job_id, event_type, job_status, job_name, guardian_phone, raw_body, signature, content_hash, received_at, outcome, same_as, prev_hash, hash, source, chain_version, salt'
/** How many values `eventParams` gives per row. */
export const EVENT_WIDTH = 17

/** The columns a replay reads, in the order of a `ReplayTuple`. */
export const REPLAY_COLUMNS = 'seq, job_id, event_type, job_status, job_name, guardian_phone, received_at, outcome, source'
/**
 * A log row as a replay reads it: REPLAY_COLUMNS as an array. Both drivers read arrays
 * (better-sqlite3's `raw()`, pg's `rowMode: 'array'`) faster than an object per row.
 */
export type ReplayTuple = [
  seq: number, jobId: number, eventType: string, jobStatus: JobStatus, jobName: string,
  guardianPhone: string | null, receivedAt: number, outcome: RowOutcome, source: RowSource
]

/** The columns of a whole log row, in the order `fromColumns` reads them. */
export const LOG_COLUMNS = 'seq, job_id, event_type, job_status, job_name, guardian_phone, raw_body, signature, content_hash, received_at, outcome, same_as, prev_hash, hash, source, chain_version, salt, redacted_by'

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

/** A row of `checkpoint_jobs`: a projection row and how many of the job's rows the archives hold. */
export type CheckpointJobRow = JobRow & { archived: number; last_seq: number }

export const toCheckpointJob = (row: CheckpointJobRow): CheckpointJob => ({ ...toJob(row), archived: row.archived, lastSeq: row.last_seq })

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
  hash: row.hash,
  chainVersion: row.chain_version,
  salt: row.salt,
  redactedBy: row.redacted_by
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
  outcome: values[10] as RowOutcome,
  sameAs: values[11] as number | null,
  prevHash: values[12] as string | null,
  hash: values[13] as string | null,
  source: values[14] as RowSource,
  chainVersion: values[15] as number,
  salt: values[16] as Buffer | null,
  redactedBy: (values[17] ?? null) as number | null
})

export const toQuarantine = (row: QuarantineDbRow): QuarantineRow => ({
  id: row.id,
  reason: row.reason,
  detail: row.detail,
  rawBody: row.raw_body,
  signature: row.signature,
  contentType: row.content_type,
  receivedAt: row.received_at,
  retriedSeq: row.retried_seq,
  redactedBy: row.redacted_by ?? null
})

/** The SHA-256 of a raw body, stored with each row so a repeat can name the first row with the same bytes. */
export const contentHash = (rawBody: Buffer): string => hash('sha256', rawBody, 'hex')

/** The chain's head: the last seq handed out and the hash the next row links to. */
export interface ChainHead { seq: number; hash: string | null }

// Salts drawn from one buffer of random bytes refilled as it runs out: one call into the
// random source for every 1024 rows rather than one per row.
const SALT_BYTES = 32
const saltPool = Buffer.alloc(SALT_BYTES * 1024)
let saltAt = saltPool.length

/** A new row's secret salt: 32 random bytes of its own (a copy, safe to keep). */
export function newSalt (): Buffer {
  if (saltAt === saltPool.length) {
    randomFillSync(saltPool)
    saltAt = 0
  }
  const salt = Buffer.from(saltPool.subarray(saltAt, saltAt + SALT_BYTES))
  saltAt += SALT_BYTES
  return salt
}

/**
 * The values of one `events` row, in EVENT_INSERT_COLUMNS order, for an event appended after
 * `head` with the outcome the projection gave it, in the chain's current version with a new
 * salt. Returns the row's new head too.
 */
export function eventParams (
  event: IncomingEvent, head: ChainHead | undefined, outcome: Outcome, sameAs: number | null
): { params: unknown[]; next: ChainHead } {
  const seq = (head?.seq ?? 0) + 1
  // After rows from before the chain (no hash), the chain starts again from genesis.
  const prevHash = head?.hash ?? GENESIS
  const source = event.source ?? 'callback'
  const salt = newSalt()
  const committed = bodyCommitment(salt, event.signature, event.rawBody)
  const hash = rowHash(prevHash, {
    seq,
    receivedAt: event.receivedAt,
    signature: event.signature,
    contentHash: committed,
    outcome,
    sameAs,
    source,
    chainVersion: CHAIN_VERSION,
    jobId: event.jobId,
    eventType: event.eventType,
    jobStatus: event.jobStatus,
    jobName: event.jobName
  })
  return {
    params: [seq, event.jobId, event.eventType, event.jobStatus, event.jobName, event.guardianPhone ?? null, event.rawBody,
      event.signature, committed, event.receivedAt, outcome, sameAs, prevHash, hash, source, CHAIN_VERSION, salt],
    next: { seq, hash }
  }
}

/** The event type of each kind of record row. */
export const RECORD_EVENT_TYPES = { redaction: 'Redaction', checkpoint: 'Checkpoint' } as const

/**
 * The values of a record row (a redaction or a checkpoint) appended after `head`: job id 0, the
 * record as JSON for its body, no signature and no salt, its body's SHA-256 as its content hash.
 */
export function recordParams (
  kind: 'redaction' | 'checkpoint', record: unknown, receivedAt: number, head: ChainHead | undefined
): { params: unknown[]; next: ChainHead } {
  const seq = (head?.seq ?? 0) + 1
  const prevHash = head?.hash ?? GENESIS
  const body = Buffer.from(JSON.stringify(record))
  const bodyHash = contentHash(body)
  const eventType = RECORD_EVENT_TYPES[kind]
  const hash = rowHash(prevHash, {
    seq,
    receivedAt,
    signature: '',
    contentHash: bodyHash,
    outcome: 'recorded',
    sameAs: null,
    source: kind,
    chainVersion: CHAIN_VERSION,
    jobId: 0,
    eventType,
    jobStatus: '',
    jobName: ''
  })
  return {
    params: [seq, 0, eventType, '', '', null, body, '', bodyHash, receivedAt, 'recorded', null, prevHash, hash, kind, CHAIN_VERSION, null],
    next: { seq, hash }
  }
}

/** What an append reports once committed: the event's outcome, its seq, and the job's status after it. */
export const appendResult = (decision: Decision, seq: number, jobId: number): AppendResult =>
  ({ outcome: decision.outcome, seq, jobId, status: decision.state?.status ?? null })
