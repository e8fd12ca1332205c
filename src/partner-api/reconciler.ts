// The reconciler: asks G2 Sentry's Partner API about the jobs that callbacks cannot settle and
// writes what differs into the log (docs/design.md, "Reconciliation").
import { projectEvent } from '../domain/project-status.js'
import {
  RECONCILED_EVENT_TYPE, type AppendResult, type ConditionalEvent, type G2SentryStore, type JobEvent, type JobStatus,
  type ReconcileCandidate, type ReconcileState
} from '../domain/types.js'
import { errors } from '../errors.js'
import { systemClock, type Clock } from './clock.js'
import type { PartnerApiClient } from './client.js'

/** What asking about one job came to. */
export type CheckResult =
  /** G2 Sentry agrees with the projection: nothing appended. */
  | 'equal'
  /** A `Reconciled` row was appended (or, in a dry run, would be). */
  | 'reconciled'
  /** G2 Sentry's status is one the rules table calls stale: logged and counted, not appended. */
  | 'conflict'
  /** A row for the job was appended while the answer was on its way: nothing appended, asked again next round. */
  | 'superseded'
  /** G2 Sentry does not know the job. */
  | 'not_found'
  /** The Partner API did not answer (after its retries). */
  | 'error'

export interface JobCheck {
  jobId: number
  /** The projection's status when asked. */
  from: JobStatus
  /** G2 Sentry's status; null when it gave none. */
  to: JobStatus | null
  result: CheckResult
  /** The appended row's seq. */
  seq?: number
  reason: ReconcileCandidate['reason']
}

/** A round's checks, and why it stopped early, if it did. */
export interface RoundReport {
  checks: JobCheck[]
  /** Set when the round stopped before its last candidate (credentials refused, API unavailable). */
  stopped?: Error
}

export interface ReconcilerOptions {
  store: G2SentryStore
  client: PartnerApiClient
  /** A job with no event and no check for this long is asked about (ms). */
  quietFor: number
  clock?: Clock
  log?: { info: (fields: object, message: string) => void; warn: (fields: object, message: string) => void }
  /** Called after a `Reconciled` row committed: the plugin's post-commit path. */
  onAppend?: (result: AppendResult, event: JobEvent, receivedAt: number) => void | Promise<void>
  /** Called once per job asked about (metrics). */
  onCheck?: (check: JobCheck) => void
}

/** The store's reconciler parts, or a clear error when a custom store lacks them. */
export function reconcilingStore (store: G2SentryStore): { state: ReconcileState; appendIf: NonNullable<G2SentryStore['appendIf']> } {
  if (store.reconcileState === undefined || typeof store.appendIf !== 'function') {
    throw new errors.INVALID_OPTION('reconcile needs a store with appendIf and reconcileState (both built-in stores have them)')
  }
  return { state: store.reconcileState, appendIf: store.appendIf.bind(store) }
}

/**
 * Asks G2 Sentry about jobs and appends what differs. A `Reconciled` row goes through the same
 * projection as a callback (src/domain/project-status.ts), carries the API's answer as its body
 * and is appended only if no row for the job was appended since the question was sent.
 */
export class Reconciler {
  readonly #options: ReconcilerOptions
  readonly #state: ReconcileState
  readonly #appendIf: NonNullable<G2SentryStore['appendIf']>
  readonly #clock: Clock

  constructor (options: ReconcilerOptions) {
    this.#options = options
    const { state, appendIf } = reconcilingStore(options.store)
    this.#state = state
    this.#appendIf = appendIf
    this.#clock = options.clock ?? systemClock
  }

  /** The most urgent jobs, at most `limit`: ambiguous ones, then quiet ones, oldest first. */
  async urgent (limit: number): Promise<ReconcileCandidate[]> {
    return this.#state.candidates({ now: this.#clock.now(), quietFor: this.#options.quietFor, limit })
  }

  /** Asks about the most urgent jobs, at most `budget` of them. */
  async round (budget: number, proceed?: () => boolean): Promise<RoundReport> {
    return this.check(await this.urgent(budget), { proceed })
  }

  /**
   * Asks about each candidate in turn. Stops at the first error that would fail every other
   * question too (refused credentials, the API unavailable after its retries).
   */
  async check (candidates: readonly ReconcileCandidate[], options: { dryRun?: boolean; proceed?: () => boolean } = {}): Promise<RoundReport> {
    const checks: JobCheck[] = []
    for (const candidate of candidates) {
      // The loop stops a round once its lease is lost, so two processes never ask at once.
      if (options.proceed?.() === false) break
      try {
        const check = await this.#checkOne(candidate, options.dryRun === true)
        checks.push(check)
        this.#options.onCheck?.(check)
      } catch (error) {
        const check: JobCheck = { jobId: candidate.jobId, from: candidate.status, to: null, result: 'error', reason: candidate.reason }
        checks.push(check)
        this.#options.onCheck?.(check)
        return { checks, stopped: error as Error }
      }
    }
    return { checks }
  }

  async #checkOne (candidate: ReconcileCandidate, dryRun: boolean): Promise<JobCheck> {
    const { jobId, lastSeq, reason } = candidate
    const job = await this.#options.store.getJob(jobId)
    const from = job?.status ?? candidate.status
    const answer = await this.#options.client.jobStatus(jobId)
    const now = this.#clock.now()
    const record = async (seq: number) => { if (!dryRun) await this.#state.recordCheck(jobId, now, seq) }
    if (!answer.found) {
      await record(lastSeq)
      return { jobId, from, to: null, result: 'not_found', reason }
    }
    const to = answer.answer.status
    if (job === undefined || to === job.status) {
      await record(lastSeq)
      return { jobId, from, to, result: 'equal', reason }
    }
    const event: ConditionalEvent = {
      jobId,
      eventType: RECONCILED_EVENT_TYPE,
      jobName: job.jobName,
      jobStatus: to,
      rawBody: answer.body,
      signature: '',
      receivedAt: now,
      source: 'api',
      ifLastSeq: lastSeq
    }
    const decision = projectEvent(job, event)
    if (decision.outcome !== 'applied') {
      // The table would not apply it (the job moved past that status): a disagreement for a person.
      this.#options.log?.warn({ jobId, projected: from, partnerApi: to }, 'g2sentry: G2 Sentry reports a status the projection has moved past; not applied')
      await record(lastSeq)
      return { jobId, from, to, result: 'conflict', reason }
    }
    if (dryRun) return { jobId, from, to, result: 'reconciled', reason }
    const result = await this.#appendIf(event)
    if (result.outcome === 'superseded') {
      this.#options.log?.info({ jobId, lastSeq: result.lastSeq, askedAt: lastSeq }, 'g2sentry: a newer row arrived while G2 Sentry answered; asking again next round')
      return { jobId, from, to, result: 'superseded', reason }
    }
    await record(result.seq)
    this.#options.log?.info({ jobId, from, to, seq: result.seq }, 'g2sentry: job reconciled with G2 Sentry')
    await this.#options.onAppend?.(result, { jobId, eventType: RECONCILED_EVENT_TYPE, jobName: job.jobName, jobStatus: to }, now)
    return { jobId, from, to, result: 'reconciled', seq: result.seq, reason }
  }
}
