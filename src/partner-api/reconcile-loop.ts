import type { G2SentryStore } from '../store/contract.js'
import { leasedRounds, type RoundLog } from '../leases/leased-rounds.js'
import type { Reconciler, RoundReport } from './reconciler.js'

/** The lease every reconciling process competes for: one of them asks G2 Sentry at a time. */
export const RECONCILER_LEASE = 'g2sentry-reconciler'

export interface ReconcileLoopOptions {
  reconciler: Reconciler
  store: G2SentryStore
  /** Between rounds (ms). */
  everyMs: number
  /** Jobs asked about per round. */
  budget: number
  /** How long the lease lasts unless renewed (ms); renewed every third of it. */
  leaseTtlMs: number
  log?: RoundLog
  onRound?: (report: RoundReport) => void
}

export interface ReconcileLoop {
  /** Whether this process holds the lease now. */
  readonly holding: boolean
  readonly holder: string
  /** Runs a round now if this process holds the lease (waits for one under way); undefined otherwise. */
  runNow: () => Promise<RoundReport | undefined>
  /**
   * Stops the timers, aborts the request and any wait of a round under way (it ends at once,
   * whatever the Partner API does), waits for the round to end and releases the lease.
   */
  stop: () => Promise<void>
}

/**
 * Runs reconciler rounds every `everyMs` in whichever process holds the lease
 * (src/leases/leased-rounds.ts): the first one period after start, like every other.
 */
export function startReconcileLoop (options: ReconcileLoopOptions): ReconcileLoop {
  const { reconciler, log } = options
  let stopped = false
  return leasedRounds({
    ...options,
    lease: RECONCILER_LEASE,
    name: 'reconciler',
    takenHere: 'this process reconciles with G2 Sentry now',
    takenElsewhere: 'another process reconciles',
    round: (holding) => reconciler.round(options.budget, holding).then((report) => {
      if (report.stopped !== undefined && !stopped) log?.warn({ err: report.stopped }, 'g2sentry: reconciliation round stopped early')
      options.onRound?.(report)
      return report
    }, (err: unknown) => {
      log?.error({ err }, 'g2sentry: reconciliation round failed')
      return undefined
    }),
    // Aborts the request and any wait of a round under way: it ends at once, whatever the Partner API does.
    onStop: () => {
      stopped = true
      reconciler.close()
    }
  })
}
