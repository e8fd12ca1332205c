import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { G2SentryStore } from '../domain/types.js'
import type { Reconciler, RoundReport } from './reconciler.js'

/** The lease every reconciling process competes for: one of them asks G2 Sentry at a time. */
export const RECONCILER_LEASE = 'g2sentry-reconciler'

export interface ReconcileLoopOptions {
  reconciler: Reconciler
  store: G2SentryStore
  /** Between rounds (ms). */
  every: number
  /** Jobs asked about per round. */
  budget: number
  /** How long the lease lasts unless renewed (ms); renewed every third of it. */
  leaseTtl: number
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
 * Runs reconciler rounds every `every` ms in whichever process holds the lease. The lease is
 * renewed every third of its ttl, on its own timer, so a long round keeps it; a process that
 * dies stops renewing and another takes over within the ttl and one renewal period.
 */
export function startReconcileLoop (options: ReconcileLoopOptions): ReconcileLoop {
  const { reconciler, store, every, budget, leaseTtl, log } = options
  const holder = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`
  let holding = false
  let stopped = false
  let running: Promise<RoundReport | undefined> | undefined
  // The first round comes one period after start, like every other.
  let lastRoundAt = Date.now()

  const renew = async (): Promise<void> => {
    try {
      const grant = await store.acquireLease(RECONCILER_LEASE, holder, leaseTtl)
      if (grant.held !== holding) log?.info({ holder, held: grant.held, by: grant.holder }, grant.held ? 'g2sentry: this process reconciles with G2 Sentry now' : 'g2sentry: another process reconciles')
      holding = grant.held && !stopped
    } catch (err) {
      // Without a renewal the lease may lapse: stop asking rather than risk two processes asking.
      holding = false
      log?.error({ err }, 'g2sentry: the reconciler lease could not be renewed')
    }
  }

  const round = (): Promise<RoundReport | undefined> => {
    if (running !== undefined) return running
    if (!holding || stopped) return Promise.resolve(undefined)
    lastRoundAt = Date.now()
    running = reconciler.round(budget, () => holding && !stopped).then((report) => {
      if (report.stopped !== undefined && !stopped) log?.warn({ err: report.stopped }, 'g2sentry: reconciliation round stopped early')
      options.onRound?.(report)
      return report
    }, (err: unknown) => {
      log?.error({ err }, 'g2sentry: reconciliation round failed')
      return undefined
    }).finally(() => { running = undefined })
    return running
  }

  let renewing: Promise<void> | undefined
  const renewOnce = (): Promise<void> => {
    renewing ??= renew().finally(() => { renewing = undefined })
    return renewing
  }
  const tick = async (): Promise<void> => {
    await renewOnce()
    if (holding && Date.now() - lastRoundAt >= every) void round()
  }
  const period = Math.max(Math.min(Math.floor(leaseTtl / 3), every), 10)
  const timer = setInterval(() => { void tick() }, period)
  timer.unref()
  void tick()

  return {
    get holding () { return holding },
    holder,
    async runNow () {
      await running
      await renewOnce()
      return round()
    },
    async stop () {
      stopped = true
      clearInterval(timer)
      reconciler.close()
      await renewing
      await running
      if (holding) {
        holding = false
        await store.releaseLease(RECONCILER_LEASE, holder).catch(() => false)
      }
    }
  }
}
