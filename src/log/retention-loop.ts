// Retention (docs/design.md, "Retention"): in whichever process holds the lease, every `everyMs`,
// the personal data of terminal jobs that ended more than `personalDataMs` ago is erased, a batch
// of jobs per redaction. The lease keeps the work in one process; it is not what keeps it correct:
// each redaction is one transaction under the chain head's lock, and a second one over the same
// jobs finds nothing left to erase.
import type { FastifyBaseLogger } from 'fastify'
import type { Registry } from 'prom-client'
import { errors } from '../errors.js'
import { leasedRounds, type LeasedRounds, type RoundLog } from '../leases/leased-rounds.js'
import type { ResolvedRetentionOptions } from '../plugin/options.js'
import type { G2SentryStore, LogLifecycle, RedactionResult, RetentionCandidate } from '../store/contract.js'
import { retentionMetrics } from './retention-metrics.js'

/** The lease every retaining process competes for. */
export const RETENTION_LEASE = 'g2sentry:retention'

const REFUSED = 'FST_G2SENTRY_REDACTION_REFUSED'

export interface RetentionLoopOptions {
  store: Pick<G2SentryStore, 'acquireLease' | 'releaseLease'> & Pick<LogLifecycle, 'retentionCandidates' | 'redact'>
  personalDataMs: number
  everyMs: number
  batchJobs: number
  leaseTtlMs: number
  log?: RoundLog | undefined
  /** A redaction committed (or found nothing left). */
  onRedacted?: (result: RedactionResult) => void
  /** A job was refused: one of its rows does not verify. */
  onRefused?: (jobId: number) => void
}

/** What one round did. */
export interface RetentionRound {
  /** Jobs erased, and their rows. */
  jobs: number[]
  rows: number
  /** Jobs skipped because a row of theirs does not verify. */
  refused: number[]
}

/** `stop` lets the redaction under way commit, ends the round there and releases the lease. */
export type RetentionLoop = LeasedRounds<RetentionRound>

const isRefusal = (err: unknown): boolean => (err as { code?: unknown } | null)?.code === REFUSED

export function startRetentionLoop (options: RetentionLoopOptions): RetentionLoop {
  const { store, personalDataMs, everyMs, batchJobs, leaseTtlMs, log } = options
  // Refused jobs, with the time of the change they were refused at: tried again only once the
  // job changes, so that one bad job is logged once, not every round.
  const refused = new Map<number, number>()

  /** Erases `due` in one redaction; when one of them is refused, each alone, so the others still go. */
  const erase = async (due: RetentionCandidate[], at: number, report: RetentionRound, holding: () => boolean): Promise<void> => {
    try {
      const result = await store.redact({ jobIds: due.map((c) => c.jobId), reason: 'retention', by: 'retention', at })
      report.jobs.push(...result.jobs)
      report.rows += result.rows
      options.onRedacted?.(result)
    } catch (err) {
      if (!isRefusal(err)) throw err
      if (due.length > 1) {
        for (const candidate of due) if (holding()) await erase([candidate], at, report, holding)
        return
      }
      const [{ jobId, updatedAt }] = due as [RetentionCandidate]
      refused.set(jobId, updatedAt)
      report.refused.push(jobId)
      options.onRefused?.(jobId)
      // The message names the job, the row and what does not verify: never a body or a phone.
      log?.warn({ jobId, code: REFUSED, reason: (err as Error).message }, 'g2sentry: retention skipped a job whose rows do not verify; run g2sentry verify')
    }
  }

  /** One round: every page of candidates, while the lease is held and the app is not closing. */
  const walk = async (holding: () => boolean): Promise<RetentionRound> => {
    const now = Date.now()
    const report: RetentionRound = { jobs: [], rows: 0, refused: [] }
    let after: RetentionCandidate | undefined
    while (holding()) {
      const page = await store.retentionCandidates({ before: now - personalDataMs, after, limit: batchJobs })
      const due = page.filter((c) => refused.get(c.jobId) !== c.updatedAt)
      if (due.length > 0) await erase(due, now, report, holding)
      // Past refused jobs too: the next page starts after this one, whatever became of it.
      after = page.at(-1)
      if (page.length < batchJobs) break
    }
    return report
  }

  return leasedRounds({
    store,
    lease: RETENTION_LEASE,
    leaseTtlMs,
    everyMs,
    firstRound: 'start',
    name: 'retention',
    takenHere: 'this process erases expired personal data now',
    takenElsewhere: 'another process erases expired personal data',
    log,
    round: async (holding) => {
      const report = await walk(holding)
      if (report.jobs.length > 0) log?.info({ jobs: report.jobs.length, rows: report.rows }, 'g2sentry: retention erased expired personal data')
      return report
    }
  })
}

/** The plugin's retention: its metrics (when the plugin serves metrics) and the loop under the lease. */
export function startRetention (store: G2SentryStore, options: ResolvedRetentionOptions, deps: {
  log: FastifyBaseLogger
  registry: Registry | undefined
  /** The metrics' name prefix (`g2sentry`, or `g2sentry_<namespace>`). */
  metricPrefix: string
}): RetentionLoop {
  const { retentionCandidates, redact } = store
  // resolveOptions checked a store given as an option; the built-in stores have both.
  if (retentionCandidates === undefined || redact === undefined) throw new errors.INVALID_OPTION('retention needs a store with the lifecycle role (redact, retentionCandidates)')
  const lifecycle = { retentionCandidates: retentionCandidates.bind(store), redact: redact.bind(store) }
  const metrics = deps.registry === undefined ? undefined : retentionMetrics(deps.registry, lifecycle, deps.metricPrefix)
  return startRetentionLoop({
    ...options,
    store: { acquireLease: store.acquireLease.bind(store), releaseLease: store.releaseLease.bind(store), ...lifecycle },
    log: deps.log,
    onRedacted: (result) => metrics?.redacted(result.rows),
    onRefused: () => metrics?.refused()
  })
}
