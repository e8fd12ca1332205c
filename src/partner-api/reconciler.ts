// The reconciler: asks G2 Sentry's Partner API about the jobs that callbacks cannot settle and
// writes what differs into the log (docs/design.md, "Reconciliation").
import { projectEvent } from '../domain/project-status.js'
import { RECONCILED_EVENT_TYPE, type AppendResult, type ConditionalEvent, type JobEvent, type JobStatus } from '../domain/types.js'
import { type G2SentryStore, type ReconcileCandidate, type ReconcileState } from '../store/contract.js'
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
  /**
   * G2 Sentry's answer was unusable for this job (an unknown status, another job's, not JSON, a
   * 4xx, a 5xx after the retries, a redirect, too large): recorded for the job, which backs off;
   * the round goes on with the other jobs.
   */
  | 'unusable'
  /** The round stopped at this job: an error that concerns every job (credentials, the API unreachable, shutdown). */
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
  /** With `unusable`: what G2 Sentry answered, in short (e.g. `HTTP 403`). */
  answered?: string
  /** With `unusable`: the job's unusable answers in a row, this one included (not counted in a dry run). */
  failures?: number
  /** With `unusable`: when the rounds may ask about the job again (ms). */
  retryAt?: number
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
  quietForMs: number
  clock?: Clock
  log?: { info: (fields: object, message: string) => void; warn: (fields: object, message: string) => void; debug?: (fields: object, message: string) => void }
  /** Called after a `Reconciled` row committed: the plugin's post-commit path. */
  onAppend?: (result: AppendResult, event: JobEvent, receivedAt: number) => void | Promise<void>
  /** Called once per job asked about (metrics). */
  onCheck?: (check: JobCheck) => void
}

const UNUSABLE = 'FST_G2SENTRY_PARTNER_API_UNUSABLE_ANSWER'

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

  /** Aborts the request and any wait under way, at once; the round stops and no request starts after it. */
  close (): void {
    this.#options.client.close()
  }

  /** The most urgent jobs, at most `limit`: ambiguous ones, then quiet ones, oldest first. */
  async urgent (limit: number): Promise<ReconcileCandidate[]> {
    return this.#state.candidates({ now: this.#clock.now(), quietFor: this.#options.quietForMs, limit })
  }

  /** Asks about the most urgent jobs, at most `budget` of them. */
  async round (budget: number, proceed?: () => boolean): Promise<RoundReport> {
    return this.check(await this.urgent(budget), { proceed })
  }

  /**
   * Asks about each candidate in turn. An unusable answer for one job is recorded for that job
   * (which then backs off) and the round goes on; the round stops at the first error that would
   * fail every other question too (refused credentials, the API unreachable after its retries,
   * a redirected login, the client closed), and at a second job in a row answered with a 5xx
   * after the retries (that one is not recorded).
   */
  async check (candidates: readonly ReconcileCandidate[], options: { dryRun?: boolean; proceed?: () => boolean } = {}): Promise<RoundReport> {
    const checks: JobCheck[] = []
    let lastServerError = false
    for (const candidate of candidates) {
      // The loop stops a round once its lease is lost, so two processes never ask at once.
      if (options.proceed?.() === false || this.#options.client.closed) break
      try {
        const check = await this.#checkOne(candidate, options.dryRun === true)
        lastServerError = false
        checks.push(check)
        this.#options.onCheck?.(check)
      } catch (error) {
        const { code, answered, serverError } = error as { code?: string; answered: string; serverError?: boolean }
        // A 5xx for two jobs in a row is the API down, not the jobs: stop rather than make every
        // open job back off for an outage.
        if (code === UNUSABLE && !(serverError === true && lastServerError)) {
          lastServerError = serverError === true
          const check = await this.#unusable(candidate, answered, options.dryRun === true)
          checks.push(check)
          this.#options.onCheck?.(check)
          continue
        }
        const check: JobCheck = { jobId: candidate.jobId, from: candidate.status, to: null, result: 'error', reason: candidate.reason }
        checks.push(check)
        this.#options.onCheck?.(check)
        return { checks, stopped: error as Error }
      }
    }
    return { checks }
  }

  /**
   * Records an unusable answer for the job. Logged at warn once per job (its first failure in a
   * row, or when the answer changes), not once per round: a job failing for hours is one line.
   */
  async #unusable (candidate: ReconcileCandidate, answered: string, dryRun: boolean): Promise<JobCheck> {
    const { jobId, status, reason } = candidate
    const check: JobCheck = { jobId, from: status, to: null, result: 'unusable', reason, answered }
    if (dryRun) return check
    const failure = await this.#state.recordFailure(jobId, this.#clock.now(), answered)
    check.failures = failure.failures
    check.retryAt = failure.retryAt
    const fields = { jobId, answered, failures: failure.failures, retryInMs: failure.retryAt - failure.failedAt }
    if (failure.previous !== answered) this.#options.log?.warn(fields, 'g2sentry: G2 Sentry\'s answer about a job is unusable; not applied, the job is asked again later')
    else this.#options.log?.debug?.(fields, 'g2sentry: G2 Sentry\'s answer about a job is still unusable')
    return check
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
