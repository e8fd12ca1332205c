// The storage contract, by role: every store implements the event log, the projection reads and
// the quarantine; consumers need leases and checkpoints as well, the reconciler conditional
// appends and its state. Every method is asynchronous so that a networked backend can implement
// it; both built-in stores pass the same contract tests (test/helpers/store-contract.ts).
import type { AppendResult, ConditionalEvent, IncomingEvent, JobState, JobStatus, LogRow, Outcome, QuarantineInput, RowOutcome, QuarantineRow, SupersededResult } from '../domain/types.js'
import type { CheckpointRecord } from '../log/records.js'

export interface ListJobsQuery {
  status?: JobStatus | undefined
  limit: number
  /** Return jobs with a jobId greater than this one. */
  after?: number | undefined
}

export interface ReadLogQuery {
  jobId?: number | undefined
  /** Return rows with a seq greater than this one. */
  afterSeq?: number | undefined
  limit: number
}

/** What a rebuild or a verification found. */
export interface RebuildReport {
  events: number
  jobs: number
  /** Log rows whose recomputed outcome differs from the one given live. */
  outcomeMismatches: Array<{ seq: number; stored: RowOutcome; replayed: Outcome }>
  /** Jobs whose stored projection differs from the rebuilt one. */
  differingJobs: number[]
}

/** What an attempt to take or renew a lease found. */
export interface LeaseGrant {
  /** True when the caller holds the lease now (it was free, expired, or already the caller's). */
  held: boolean
  /** Who holds the lease: the caller when `held`, otherwise the other holder. */
  holder: string
  /** The fencing token: grows by one every time the holder changes, never when a holder renews. */
  token: number
  /** When the lease ends unless renewed: ms since the epoch, on the database's clock. */
  expiresAt: number
}

/** A lease as stored, for listings. */
export interface LeaseRow {
  name: string
  holder: string
  token: number
  /** When the current holder took it (ms since the epoch, the database's clock). */
  acquiredAt: number
  expiresAt: number
  /** True while the lease has not expired (on the database's clock). */
  live: boolean
}

/**
 * A lease as a fenced write names it: the write happens only while `holder` still has the lease
 * with this `token` (nobody took it over meanwhile).
 */
export interface LeaseFence {
  lease: string
  holder: string
  token: number
}

/** Where a durable consumer stands in the log. */
export interface ConsumerCheckpoint {
  name: string
  /** The last seq the consumer is done with (0 before the first row). */
  checkpoint: number
  createdAt: number
  updatedAt: number
}

/** A consumer, as listed: its checkpoint and how many rows it parked. */
export interface ConsumerSummary extends ConsumerCheckpoint {
  parked: number
}

/** A row a consumer gave up on after its attempts ran out. */
export interface ParkedRow {
  consumer: string
  seq: number
  /** The row's job and event type, from the log. */
  jobId: number | null
  eventType: string | null
  attempts: number
  /** The handler's last error message. */
  error: string
  parkedAt: number
  /** True once a retry was asked for and the consumer has not run it yet. */
  retryRequested: boolean
}

/** What `deleteConsumer` found and did. */
export interface ConsumerDeletion {
  /** False when no consumer has that name: nothing was done. */
  found: boolean
  /** True when its checkpoint and parked rows were removed. */
  deleted: boolean
  /** How many parked rows were removed with it. */
  parked: number
  /** The instance whose lease on it was live (then it is deleted only when forced), else null. */
  holder: string | null
  /** When that live lease ends unless renewed (ms since the epoch, the database's clock), else null. */
  expiresAt: number | null
}

/** A failure to record against a parked row: how many attempts it had in all, and the last error. */
export interface ParkFailure {
  attempts: number
  error: string
}

/** The event log: appends (each with its projection update, in one committed transaction), reads in seq order, the chain head, a rebuild, and closing. */
export interface EventLog {
  /** Appends one event and updates the projection in one committed transaction. */
  append(event: IncomingEvent): Promise<AppendResult>
  readLog(query: ReadLogQuery): Promise<LogRow[]>
  /** The last seq handed out and the hash the next row links to; undefined before the first append. */
  chainHead(): Promise<{ seq: number; hash: string | null } | undefined>
  /** Recomputes the projection from the log; with `dryRun` only compares it with the stored one. */
  rebuild(options?: { dryRun?: boolean }): Promise<RebuildReport>
  /** Calls `listener` after each committed batch of appends (size, seconds); returns an unsubscribe. Optional. */
  onCommit?(listener: (batchSize: number, seconds: number) => void): () => void
  /**
   * Calls `listener` with the log's last seq after each commit of any instance sharing the
   * database, as the backend announces it (PostgreSQL: LISTEN/NOTIFY), or with undefined after
   * the announcements were interrupted and some may have been missed; returns an unsubscribe.
   * Optional: a backend without it is polled.
   */
  watchCommits?(listener: (lastSeq: number | undefined) => void): () => void
  close(): Promise<void>
}

/** The projection: each job's current state. */
export interface ProjectionReads {
  getJob(jobId: number): Promise<JobState | undefined>
  listJobs(query: ListJobsQuery): Promise<JobState[]>
}

/** Signed bodies that could not be read, kept apart from the log until a retry appends them. */
export interface QuarantineStore {
  quarantine(entry: QuarantineInput): Promise<number>
  /** Quarantined bodies by id; `pending` leaves out those a retry already appended. */
  listQuarantine(query: { afterId?: number | undefined; limit: number; pending?: boolean | undefined }): Promise<QuarantineRow[]>
  /** Records that quarantined body `id` was appended to the log as `seq`. */
  resolveQuarantine(id: number, seq: number): Promise<void>
  /** How many quarantined bodies are still pending. */
  quarantineSize(): Promise<number>
}

/** Leases: one holder at a time for work that must run in one process (consumers, the reconciler). */
export interface LeaseStore {
  /**
   * Takes the lease `name` for `holder` for `ttlMs` when it is free, expired or released, or
   * renews it when `holder` already has it. Expiry is judged on the database's clock (PostgreSQL's
   * `now`, the host's clock for a SQLite file), so holders on several hosts agree. `holder` must
   * be unique to one running instance (e.g. host, pid and a random part).
   */
  acquireLease(name: string, holder: string, ttlMs: number): Promise<LeaseGrant>
  /** Ends `holder`'s lease at once so another may take it; false when `holder` did not have it. */
  releaseLease(name: string, holder: string): Promise<boolean>
  /** Every lease, by name. */
  listLeases(): Promise<LeaseRow[]>
}

/** Durable consumers' checkpoints and parked rows, fenced by their leases. */
export interface ConsumerStore {
  /**
   * The consumer `name`'s checkpoint; a consumer seen for the first time is created at seq 0
   * (`beginning`) or at the log's last seq (`now`).
   */
  openConsumer(name: string, start: 'beginning' | 'now'): Promise<ConsumerCheckpoint>
  /**
   * Moves the consumer's checkpoint to `seq`, and with `park` records row `park.seq` as parked,
   * in one transaction fenced by `fence`: false (and nothing written) when the lease was lost.
   */
  saveCheckpoint(name: string, seq: number, fence: LeaseFence, park?: { seq: number } & ParkFailure): Promise<boolean>
  /**
   * Sets a checkpoint by hand (to replay a range, or to skip one); false for an unknown consumer.
   * It also raises the token of the consumer's lease `lease`, so a running holder's next fenced
   * write fails and it starts again from the new checkpoint.
   */
  resetConsumer(name: string, seq: number, lease: string): Promise<boolean>
  listConsumers(): Promise<ConsumerSummary[]>
  /**
   * Removes the consumer `name`'s checkpoint and parked rows, in one transaction, unless its lease
   * `lease` is live (a running instance holds it): then nothing is removed, unless `force`, which
   * also raises the lease's token so that holder's next fenced write fails (it then starts again,
   * as a new consumer, from its `start` option). A lease that is not live is removed with it.
   */
  deleteConsumer(name: string, lease: string, options?: { force?: boolean }): Promise<ConsumerDeletion>
  /** Parked rows in (consumer, seq) order; `retryRequested` keeps only those (not) asked to be retried. */
  listParked(query: { consumer?: string | undefined; afterSeq?: number | undefined; limit: number; retryRequested?: boolean | undefined }): Promise<ParkedRow[]>
  /** Asks for parked rows of `consumer` (all, or those in `seqs`) to be handed to its handler again; returns how many. */
  retryParked(consumer: string, seqs?: readonly number[]): Promise<number>
  /**
   * After a retried parked row ran, fenced by `fence`: removes it when it succeeded, or records the
   * new `failure` and parks it again. False when the lease was lost.
   */
  resolveParked(consumer: string, seq: number, fence: LeaseFence, failure?: ParkFailure): Promise<boolean>
}

/** What the reconciler needs: conditional appends and its shared state. */
export interface ReconcilerStore {
  /**
   * Appends `event` as `append` does, only if the job's last seq is still `event.ifLastSeq`;
   * otherwise writes nothing and reports `superseded`. Required by the reconciler.
   */
  appendIf?(event: ConditionalEvent): Promise<AppendResult | SupersededResult>
  /** The reconciler's queries and state (src/partner-api/); required by the reconciler. */
  reconcileState?: ReconcileState
}

/** What `redact` is asked to do. */
export interface RedactRequest {
  /** The jobs whose personal data to erase: every log row, the projection row and quarantined bodies of each. */
  jobIds: readonly number[]
  /** Why, kept in the redaction record: never personal data. */
  reason?: string | null | undefined
  /** `request` (default): asked for by an operator; `retention`: the retention option's background work. */
  by?: 'request' | 'retention' | undefined
  /** The record's time (ms); default now. */
  at?: number | undefined
  /**
   * Once committed: `plain` (PostgreSQL) runs VACUUM on the tables it changed, so the row
   * versions that held the data are removed now rather than whenever autovacuum comes, though
   * their bytes stay in the pages' free space until reused; `full` rewrites the files (SQLite:
   * VACUUM; PostgreSQL: VACUUM FULL, which locks each table while it is copied), so that no byte
   * of the erased data is left in them, old free space of a log written before this version
   * included. SQLite overwrites the bytes it frees as it goes: `plain` does nothing more there.
   * Default: nothing (retention leaves it to autovacuum); `app.g2sentry.redact` and `g2sentry
   * redact` default to `plain`.
   */
  vacuum?: 'plain' | 'full' | undefined
}

/** What a redaction did. */
export interface RedactionResult {
  /** The seq of the redaction record; null when nothing was left to erase, and then nothing was written. */
  recordSeq: number | null
  /** The jobs that had rows to erase. */
  jobs: number[]
  /** How many log rows were erased. */
  rows: number
  /** How many of them were written before chain version 2: their hash still commits to their body (docs/design.md). */
  version1Rows: number
  /** How many quarantined bodies were erased. */
  quarantined: number
}

/** A terminal job that still holds personal data, for retention. */
export interface RetentionCandidate {
  jobId: number
  /** When its last applied row was received (ms): the projection's `updatedAt`, for a terminal job when it ended. */
  updatedAt: number
}

/**
 * The log's lifecycle (docs/design.md, "Personal data, erasure and archiving"): erasure, and the
 * reads verify needs to check it.
 */
export interface LogLifecycle {
  /**
   * Erases the personal data of `jobIds` in one write transaction: each unerased row's body,
   * signature and salt (a version 1 row's body hash too), its phone replaced by a placeholder;
   * the projection's phone; quarantined bodies naming the job. Appends one redaction record
   * naming every row. Refuses, writing nothing, when a row to erase does not verify
   * (FST_G2SENTRY_REDACTION_REFUSED): erasure must not hide a tampered row.
   */
  redact(request: RedactRequest): Promise<RedactionResult>
  /**
   * Terminal jobs (Completed, Canceled) whose last applied row was received before `before` (a
   * redelivery counted as duplicate or stale does not move it) and that still have a callback or
   * API row to erase, by (updatedAt, jobId), after `after`, at most `limit`.
   */
  retentionCandidates(query: { before: number; after?: RetentionCandidate | undefined; limit: number }): Promise<RetentionCandidate[]>
  /** The rows the redaction record `seq` erased (those still in the log), in seq order. */
  redactedBy(seq: number): Promise<LogRow[]>
  /** Record rows of one kind, in seq order, after `afterSeq`. */
  readRecords(query: { source: 'redaction' | 'checkpoint'; afterSeq?: number | undefined; limit: number }): Promise<LogRow[]>
  /** How many rows are erased. */
  countRedacted(): Promise<number>
}

/** A job's state in the projection kept at the latest checkpoint, with how many of its rows the archives hold. */
export interface CheckpointJob extends JobState {
  archived: number
  /** The seq of the job's last archived row (0 when none). */
  lastSeq: number
}

/** The latest checkpoint row: its seq and its record. */
export interface LatestCheckpoint {
  seq: number
  record: CheckpointRecord
}

/** What `checkpoint` is asked to write, once the archive file is on disk. */
export interface CheckpointRequest {
  record: CheckpointRecord
  /** The projection as of `record.through`, every job, with its archived rows counted so far. */
  jobs: readonly CheckpointJob[]
  /** The record's time (ms). */
  at: number
  /** The latest checkpoint's `through` when the archive began (0 for none): another archive since refuses. */
  after: number
  /** The chain head's seq when the archive read its rows: a redaction appended since refuses (the file holds what it erased). */
  readAt: number
}

/** How the space of the deleted rows was given back. */
export interface SpaceReport {
  /**
   * SQLite: `incremental` (the file's free pages were returned to the file system), `kept` (the
   * file was made without auto_vacuum: its free pages stay in it for new rows; one VACUUM
   * converts it); PostgreSQL: `vacuum` (plain VACUUM: the space is reusable, not returned).
   */
  method: 'incremental' | 'kept' | 'vacuum'
  /** SQLite: pages returned to the file system; null on PostgreSQL. */
  pagesFreed: number | null
}

/**
 * Archiving (docs/design.md, "Archiving"): the checkpoint that vouches for an archive file, the
 * deletion of the archived rows, and the reads that let verify, rebuild and the routes start at
 * the checkpoint.
 */
export interface LogArchive {
  /** The latest checkpoint row, or undefined when the log was never archived. */
  latestCheckpoint(): Promise<LatestCheckpoint | undefined>
  /** The projection as of the latest checkpoint (`checkpoint_jobs`), by job id. */
  checkpointJobs(): Promise<CheckpointJob[]>
  /**
   * Appends the checkpoint record to the chain and replaces `checkpoint_jobs` with `jobs`, in one
   * write transaction under the chain head's lock; refuses (FST_G2SENTRY_ARCHIVE_REFUSED),
   * writing nothing, when another checkpoint or a redaction was appended since the archive began.
   */
  checkpoint(request: CheckpointRequest): Promise<{ seq: number }>
  /**
   * Deletes the rows up to `through` (the latest checkpoint's), `batchSize` seqs per transaction
   * (default: 1,000 on SQLite, 5,000 on PostgreSQL), letting appends commit between batches;
   * returns how many.
   */
  deleteArchived(through: number, options?: { batchSize?: number | undefined }): Promise<number>
  /** Gives back the space of deleted rows as the backend can (see `SpaceReport`). */
  reclaimSpace(): Promise<SpaceReport>
  /** How many of the job's rows the archives hold (0 when none). */
  archivedEvents(jobId: number): Promise<number>
}

/**
 * A whole store: what the plugin opens from `database`, or takes as `store`. The consumer and
 * reconciler roles are needed only when those features run; registration names what is missing.
 */
export interface G2SentryStore extends EventLog, ProjectionReads, QuarantineStore, LeaseStore, ConsumerStore, Partial<ReconcilerStore>, Partial<LogLifecycle>, Partial<LogArchive> {}

/** The methods each role needs, for checking a custom store at registration. */
export const STORE_ROLES = {
  eventLog: ['append', 'readLog', 'chainHead', 'rebuild', 'close'],
  projection: ['getJob', 'listJobs'],
  quarantine: ['quarantine', 'listQuarantine', 'resolveQuarantine', 'quarantineSize'],
  leases: ['acquireLease', 'releaseLease', 'listLeases'],
  consumers: ['openConsumer', 'saveCheckpoint', 'resetConsumer', 'listConsumers', 'deleteConsumer', 'listParked', 'retryParked', 'resolveParked'],
  reconciler: ['appendIf'],
  lifecycle: ['redact', 'retentionCandidates', 'redactedBy', 'readRecords', 'countRedacted'],
  archive: ['latestCheckpoint', 'checkpointJobs', 'checkpoint', 'deleteArchived', 'reclaimSpace', 'archivedEvents']
} as const satisfies Record<string, ReadonlyArray<keyof G2SentryStore>>

/** A job the reconciler may ask G2 Sentry about, with what it knows of it now. */
export interface ReconcileCandidate {
  jobId: number
  status: JobStatus
  /** The seq of the job's last log row. */
  lastSeq: number
  /** When the job's last row was received (ms). */
  lastEventAt: number
  /** When the reconciler last had an answer for it (ms), or null. */
  checkedAt: number | null
  /** `ambiguous`: its history cannot be decided from callbacks; `quiet`: no news for a while; `requested`: named by the caller. */
  reason: 'ambiguous' | 'quiet' | 'requested'
}

export interface CandidateQuery {
  now: number
  /** A job is quiet when it had no event and no check for this long (ms). */
  quietFor: number
  limit: number
  /** Every non-terminal job, quiet or not (the CLI), instead of the ambiguous and the quiet ones. */
  allOpen?: boolean | undefined
  /** Only these jobs, terminal or not (the CLI's --job). */
  jobIds?: readonly number[] | undefined
  /** Jobs with an id greater than this one (paging with `allOpen`). */
  afterJobId?: number | undefined
}

/**
 * What the reconciler keeps in the database, so that every process and instance shares it: when
 * each job was last checked, and each partner key's request window (src/partner-api/rate-limiter.ts).
 */
export interface ReconcileState {
  /** Jobs to ask about, most urgent first: ambiguous ones, then quiet ones, oldest first. Never terminal ones unless named. */
  candidates(query: CandidateQuery): Promise<ReconcileCandidate[]>
  /** Records that the reconciler had an answer for `jobId` at `checkedAt`, covering the log up to `checkedSeq`. */
  recordCheck(jobId: number, checkedAt: number, checkedSeq: number): Promise<void>
  /**
   * The age (ms) of the open job that has gone longest without an event or a check, at `now`;
   * null when no job is open.
   */
  oldestUnchecked(now: number): Promise<number | null>
  /**
   * Takes a request slot for `key` at `now` if fewer than `limit` slots are held in the last
   * `windowMs` and no pause is on; otherwise takes nothing and returns how long to wait (ms).
   * The slot is held from `heldUntil` (default `now`): the latest the request can reach G2 Sentry
   * (its send time plus its timeout), until `settleRequest` moves it to when its answer came.
   * Atomic across processes.
   */
  takeRequestSlot(key: string, now: number, limit: number, windowMs: number, heldUntil?: number): Promise<number>
  /** Moves one of `key`'s slots held from `heldUntil` to `at`: the request's answer came then, so it arrived before. */
  settleRequest(key: string, heldUntil: number, at: number): Promise<void>
  /** Stops every request for `key` until `until` (a 429's Retry-After), in every process. */
  pauseRequests(key: string, until: number): Promise<void>
  /** The send times (ms) of the requests in `key`'s window, oldest first (for tests and metrics). */
  requestTimes(key: string, since: number): Promise<number[]>
  /**
   * Records that G2 Sentry's answer about `jobId` was unusable (`answer`: a short description,
   * at most 300 characters, never a body or a token): one more failure in a row, and the job is
   * not a candidate of the rounds again before `retryAt` (exponential backoff). `recordCheck`
   * clears it.
   */
  recordFailure(jobId: number, failedAt: number, answer: string): Promise<JobFailure>
  /** The jobs whose last answer was unusable, most recent failure first, at most `limit`. */
  failures(limit: number): Promise<JobFailure[]>
  /** How many jobs' last answer was unusable. */
  failingJobs(): Promise<number>
}

/** A job whose status answers from G2 Sentry were unusable, `failures` times in a row. */
export interface JobFailure {
  jobId: number
  failures: number
  firstFailedAt: number
  failedAt: number
  /** Not asked again by the rounds before this time (ms). */
  retryAt: number
  /** What G2 Sentry answered, in short (e.g. `HTTP 403`, `HTTP 200 and an unknown status "Expired"`). */
  answer: string
  /** The description recorded before this one, when `recordFailure` returned it (undefined for the first failure). */
  previous?: string | undefined
}

/** The methods of `roles` that `store` lacks, e.g. `['consumers: deleteConsumer']`. */
export function missingMethods (store: unknown, roles: ReadonlyArray<keyof typeof STORE_ROLES>): string[] {
  const methods = store as Record<string, unknown> | null | undefined
  return roles.flatMap((role) => STORE_ROLES[role].filter((name) => typeof methods?.[name] !== 'function').map((name) => `${role}: ${name}`))
}
