import type { G2SentryStore } from '../store/contract.js'
import { leaseHolder } from '../leases/lease-holder.js'
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
  log?: { info: (fields: object, message: string) => void; warn: (fields: object, message: string) => void; error: (fields: object, message: string) => void }
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
 * Runs reconciler rounds every `everyMs` in whichever process holds the lease. The lease is
 * renewed every third of its ttl, on its own timer, so a long round keeps it; a process that
 * dies stops renewing and another takes over within the ttl and one renewal period.
 */
export function startReconcileLoop (options: ReconcileLoopOptions): ReconcileLoop {
  const { reconciler, store, everyMs, budget, leaseTtlMs, log } = options
  let stopped = false
  let running: Promise<RoundReport | undefined> | undefined
  // The first round comes one period after start, like every other.
  let lastRoundAt = Date.now()
  // The holder last said to reconcile, so that each change of hands is logged once.
  let announced: string | undefined
  const lease = leaseHolder({
    store,
    name: RECONCILER_LEASE,
    ttlMs: leaseTtlMs,
    onLost: () => {
      announced = undefined
      log?.info({ holder: lease.holder }, 'g2sentry: this process no longer holds the reconciler lease')
    },
    onTaken: (grant) => {
      if (announced === grant.holder) return
      announced = grant.holder
      log?.info({ holder: lease.holder, by: grant.holder }, 'g2sentry: another process reconciles')
    },
    // Without a renewal the lease lapses at its time: no two processes ever ask at once.
    onError: (err) => log?.error({ err }, 'g2sentry: the reconciler lease could not be renewed')
  })
  const holding = (): boolean => !stopped && lease.holding

  const round = (): Promise<RoundReport | undefined> => {
    if (running !== undefined) return running
    if (!holding()) return Promise.resolve(undefined)
    lastRoundAt = Date.now()
    running = reconciler.round(budget, holding).then((report) => {
      if (report.stopped !== undefined && !stopped) log?.warn({ err: report.stopped }, 'g2sentry: reconciliation round stopped early')
      options.onRound?.(report)
      return report
    }, (err: unknown) => {
      log?.error({ err }, 'g2sentry: reconciliation round failed')
      return undefined
    }).finally(() => { running = undefined })
    return running
  }

  let acquiring: Promise<void> | undefined
  const acquireOnce = (): Promise<void> => {
    acquiring ??= (async () => {
      if (stopped || lease.holding) return
      try {
        if (await lease.acquire() && announced !== lease.holder) {
          announced = lease.holder
          log?.info({ holder: lease.holder }, 'g2sentry: this process reconciles with G2 Sentry now')
        }
      } catch (err) {
        log?.error({ err }, 'g2sentry: the reconciler lease could not be taken')
      }
    })().finally(() => { acquiring = undefined })
    return acquiring
  }
  const tick = async (): Promise<void> => {
    await acquireOnce()
    if (holding() && Date.now() - lastRoundAt >= everyMs) void round()
  }
  const period = Math.max(Math.min(Math.floor(leaseTtlMs / 3), everyMs), 10)
  const timer = setInterval(() => { void tick() }, period)
  timer.unref()
  void tick()

  return {
    get holding () { return holding() },
    holder: lease.holder,
    async runNow () {
      await running
      await acquireOnce()
      return round()
    },
    async stop () {
      stopped = true
      clearInterval(timer)
      reconciler.close()
      await acquiring
      await running
      await lease.release().catch(() => {})
    }
  }
}
