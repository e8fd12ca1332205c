import type { CallbackPayload } from './callback.js'
import type { JobStatus } from './job-status.js'

/** A job's status at G2 Sentry, as the callback's `jobStatus` reports it. */
export { JOB_STATUSES, type JobStatus } from './job-status.js'

/** The event types G2 Sentry pushes as callbacks today; any other is logged as `unsupported`. */
export const SUPPORTED_EVENT_TYPES = ['JobAssigned', 'JobStarted', 'JobCompleted', 'JobWithdrawed'] as const
export type SupportedEventType = (typeof SUPPORTED_EVENT_TYPES)[number]

/** What the log records for one delivery. */
export type Outcome = 'applied' | 'duplicate' | 'stale' | 'unsupported'

/**
 * Where a log row came from: a signed `callback`, or an answer of G2 Sentry's Partner API that
 * the reconciler wrote (`api`, event type `Reconciled`, no signature).
 */
export type EventSource = 'callback' | 'api'

/**
 * Where a log row came from: an event (`callback`, `api`), or a record of an act on the log
 * itself: a `redaction` (personal data erased) or an archive's `checkpoint`. A record's job id is
 * 0, its outcome `recorded`, its raw body the record as JSON (src/log/records.ts).
 */
export type RowSource = EventSource | 'redaction' | 'checkpoint'

/** What the log records for a row: an event's outcome, or `recorded` for a redaction or a checkpoint. */
export type RowOutcome = Outcome | 'recorded'

/** The event type of a row the reconciler appends; a callback of this type is `unsupported`. */
export const RECONCILED_EVENT_TYPE = 'Reconciled'

/** The fields of a callback body that the projection reads: the callback's one shape (src/domain/callback.ts). */
export type JobEvent = CallbackPayload

/** The projected state of one job: the row behind `GET /jobs/:jobId`. */
export interface JobState {
  jobId: number
  jobName: string
  status: JobStatus
  guardianPhone: string | null
  lastEventType: string
  /** Number of events that changed the projection. */
  version: number
  /** Number of deliveries logged for the job (applied, duplicate and stale). */
  eventCount: number
  /** Milliseconds since the epoch, from the log's received-at times. */
  createdAt: number
  updatedAt: number
}

/** A verified event as it enters the store. */
export interface IncomingEvent extends JobEvent {
  rawBody: Buffer
  signature: string
  receivedAt: number
  /** Default `callback`. */
  source?: EventSource | undefined
  /**
   * The quarantined body this event is a retry of: the append marks it retried (with the seq it
   * became) in the same transaction, and fails with FST_G2SENTRY_QUARANTINE_ALREADY_RETRIED,
   * writing nothing, when it is marked already (another process retried it first).
   */
  quarantineId?: number | undefined
}

/**
 * An event appended only if its job's log has not grown since `ifLastSeq` (the seq of the job's
 * last row as the caller saw it; 0 for a job with no rows): how a slow answer of the Partner API
 * loses to a callback that landed while it was on its way.
 */
export interface ConditionalEvent extends IncomingEvent {
  ifLastSeq: number
}

/** What `appendIf` reports when the job's log grew since `ifLastSeq`: nothing was written. */
export interface SupersededResult {
  outcome: 'superseded'
  jobId: number
  /** The job's last seq now. */
  lastSeq: number
}

/** One row of the event log. */
export interface LogRow {
  seq: number
  jobId: number
  eventType: string
  jobStatus: JobStatus
  jobName: string
  guardianPhone: string | null
  rawBody: Buffer
  signature: string
  contentHash: string
  receivedAt: number
  source: RowSource
  outcome: RowOutcome
  /** For a duplicate: the first earlier row of the same job with the same body. */
  sameAs: number | null
  /** The previous row's hash ('' for the first row); null for rows written before the chain existed. */
  prevHash: string | null
  /** This row's hash, chained to the previous one (src/store/chain.ts). */
  hash: string | null
  /** How `hash` is computed: 1 before erasure existed, 2 since (src/store/chain.ts). */
  chainVersion: number
  /** Version 2 callback and API rows: the secret salt of `contentHash`, until erasure deletes it. */
  salt: Buffer | null
  /**
   * The seq of the redaction record that erased this row's personal data: its raw body, its
   * signature, its salt (and for version 1 its body hash) are gone, and its phone is a
   * placeholder (`[redacted 1]`); null for a row that was not redacted.
   */
  redactedBy: number | null
}

/** What an append reports to the caller, after it committed. */
export interface AppendResult {
  outcome: Outcome
  seq: number
  jobId: number
  /** The job's status after the event; null when the job has no projection (an unsupported first event). */
  status: JobStatus | null
}

export type QuarantineReason = 'invalid_json' | 'invalid_payload'

export interface QuarantineInput {
  reason: QuarantineReason
  detail: string
  rawBody: Buffer
  signature: string
  contentType: string | null
  receivedAt: number
}

export interface QuarantineRow extends QuarantineInput {
  id: number
  /** The log row a retry appended it as; null while it is still quarantined. */
  retriedSeq: number | null
  /** The seq of the redaction record that erased its body (src/log/redaction.ts); null when it was not. */
  redactedBy: number | null
}
