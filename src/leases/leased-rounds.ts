// Background work done in rounds by whichever process holds a lease (the reconciler, retention):
// the lease taken and renewed (lease-holder.ts), a round every `everyMs` while it is held, each
// change of hands logged once, and a stop that waits for the round under way and releases it.
import type { G2SentryStore } from '../store/contract.js'
import { leaseHolder } from './lease-holder.js'

export interface RoundLog {
  info: (fields: object, message: string) => void
  warn: (fields: object, message: string) => void
  error: (fields: object, message: string) => void
}

export interface LeasedRoundsOptions<R> {
  store: Pick<G2SentryStore, 'acquireLease' | 'releaseLease'>
  lease: string
  /** How long the lease lasts unless renewed (ms); renewed every third of it. */
  leaseTtlMs: number
  /** Between rounds (ms). */
  everyMs: number
  /** `period` (default): the first round one period after start, like every other; `start`: at once. */
  firstRound?: 'start' | 'period'
  /** One round; `holding` turns false once the lease is lost or the work is stopping. */
  round: (holding: () => boolean) => Promise<R>
  /** What the work is called in its log lines: `reconciler`, `retention`. */
  name: string
  /** Said once each time this process takes the lease, e.g. `this process reconciles with G2 Sentry now`. */
  takenHere: string
  /** Said once per other holder, e.g. `another process reconciles`. */
  takenElsewhere: string
  log?: RoundLog | undefined
  /** Called first when stopping, to abort what a round is waiting for. */
  onStop?: () => void
}

export interface LeasedRounds<R> {
  /** Whether this process holds the lease now. */
  readonly holding: boolean
  readonly holder: string
  /** Runs a round now if this process holds the lease (waits for one under way); undefined otherwise. */
  runNow: () => Promise<R | undefined>
  /** Stops the timers, waits for the round under way to end and releases the lease. */
  stop: () => Promise<void>
}

/**
 * Runs `round` every `everyMs` in whichever process holds the lease. The lease is renewed every
 * third of its ttl, on its own timer, so a long round keeps it; a process that dies stops
 * renewing and another takes over within the ttl and one renewal period. A round that throws is
 * logged and the next one comes as usual.
 */
export function leasedRounds<R> (options: LeasedRoundsOptions<R>): LeasedRounds<R> {
  const { store, everyMs, leaseTtlMs, log, name } = options
  let stopped = false
  let running: Promise<R | undefined> | undefined
  let lastRoundAt = options.firstRound === 'start' ? 0 : Date.now()
  // The holder last said to do the work, so that each change of hands is logged once.
  let announced: string | undefined
  const lease = leaseHolder({
    store,
    name: options.lease,
    ttlMs: leaseTtlMs,
    onLost: () => {
      announced = undefined
      log?.info({ holder: lease.holder }, `g2sentry: this process no longer holds the ${name} lease`)
    },
    onTaken: (grant) => {
      if (announced === grant.holder) return
      announced = grant.holder
      log?.info({ holder: lease.holder, by: grant.holder }, `g2sentry: ${options.takenElsewhere}`)
    },
    // Without a renewal the lease lapses at its time: no two processes ever hold it at once.
    onError: (err) => log?.error({ err }, `g2sentry: the ${name} lease could not be renewed`)
  })
  const holding = (): boolean => !stopped && lease.holding

  const round = (): Promise<R | undefined> => {
    if (running !== undefined) return running
    if (!holding()) return Promise.resolve(undefined)
    lastRoundAt = Date.now()
    running = options.round(holding).catch((err: unknown) => {
      log?.error({ err }, `g2sentry: ${name} round failed`)
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
          log?.info({ holder: lease.holder }, `g2sentry: ${options.takenHere}`)
        }
      } catch (err) {
        log?.error({ err }, `g2sentry: the ${name} lease could not be taken`)
      }
    })().finally(() => { acquiring = undefined })
    return acquiring
  }
  const tick = async (): Promise<void> => {
    await acquireOnce()
    if (holding() && Date.now() - lastRoundAt >= everyMs) void round()
  }
  const timer = setInterval(() => { void tick() }, Math.max(Math.min(Math.floor(leaseTtlMs / 3), everyMs), 10))
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
      options.onStop?.()
      await acquiring
      await running
      await lease.release().catch(() => {})
    }
  }
}
