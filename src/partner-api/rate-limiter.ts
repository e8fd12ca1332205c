import type { ReconcileState } from '../domain/types.js'
import { systemClock, type Clock } from './clock.js'

/**
 * Where a partner key's request window lives. `take` takes a slot at `now`, or takes nothing and
 * says how long to wait (ms); `pause` stops every request until `until` (a 429's Retry-After).
 */
export interface RequestWindow {
  take: (now: number) => Promise<number>
  pause: (until: number) => Promise<void>
}

/**
 * A window in this process only: enough for one process alone (the CLI without a database
 * to share, the tests of the limiter itself).
 */
export function memoryWindow (limit: number, windowMs: number): RequestWindow {
  const sent: number[] = []
  let pausedUntil = 0
  return {
    async take (now) {
      if (pausedUntil > now) return pausedUntil - now
      while (sent.length > 0 && (sent[0] as number) <= now - windowMs) sent.shift()
      if (sent.length >= limit) return Math.max((sent[sent.length - limit] as number) + windowMs - now, 1)
      sent.push(now)
      return 0
    },
    async pause (until) {
      pausedUntil = Math.max(pausedUntil, until)
    }
  }
}

/**
 * A window in the database, shared by every process and instance that uses it with the same
 * partner key: each slot is taken in one transaction (src/store/reconcile-sql.ts), so the limit
 * holds for all of them together.
 */
export function sharedWindow (state: ReconcileState, partnerKey: string, limit: number, windowMs: number): RequestWindow {
  return {
    take: (now) => state.takeRequestSlot(partnerKey, now, limit, windowMs),
    pause: (until) => state.pauseRequests(partnerKey, until)
  }
}

/**
 * A sliding-window limiter: a request goes out only when fewer than the limit went out in the
 * window before it, whatever window one looks at, never fixed one-minute buckets (two full
 * buckets back to back would put twice the limit in one minute). The window the limiter keeps
 * is longer than G2 Sentry's by `marginMs`, because G2 Sentry counts a request when it arrives
 * and the limiter when it leaves: a request that travels slowly must not land in the next window.
 */
export class RateLimiter {
  readonly #window: RequestWindow
  readonly #clock: Clock

  constructor (window: RequestWindow, clock: Clock = systemClock) {
    this.#window = window
    this.#clock = clock
  }

  /** Waits until a request may go out, and counts it. */
  async acquire (): Promise<void> {
    for (;;) {
      const wait = await this.#window.take(this.#clock.now())
      if (wait <= 0) return
      await this.#clock.sleep(wait)
    }
  }

  /** Holds every request (in every process sharing the window) for `ms`. */
  async pause (ms: number): Promise<void> {
    await this.#window.pause(this.#clock.now() + ms)
  }
}
