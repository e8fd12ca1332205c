import type { ReconcileState } from '../store/contract.js'
import { systemClock, type Clock } from './clock.js'

/**
 * Where a partner key's request window lives. `take` takes a slot at `now`, held from
 * `heldUntil`, or takes nothing and says how long to wait (ms); `settle` moves a slot held from
 * `heldUntil` to `at`; `pause` stops every request until `until` (a 429's Retry-After).
 */
export interface RequestWindow {
  take: (now: number, heldUntil: number) => Promise<number>
  settle: (heldUntil: number, at: number) => Promise<void>
  pause: (until: number) => Promise<void>
}

/**
 * A window in this process only: enough for one process alone (the CLI without a database
 * to share, the tests of the limiter itself). With `others`, the send times other processes
 * hold since a time count too, read and never written (the dry run of `g2sentry reconcile`).
 */
export function memoryWindow (limit: number, windowMs: number, others?: (since: number) => Promise<number[]>): RequestWindow {
  let held: number[] = []
  let pausedUntil = 0
  return {
    async take (now, heldUntil) {
      if (pausedUntil > now) return pausedUntil - now
      held = held.filter((at) => at > now - windowMs)
      const times = others === undefined ? held : [...held, ...await others(now - windowMs + 1)]
      times.sort((a, b) => a - b)
      if (times.length >= limit) return Math.max((times[times.length - limit] as number) + windowMs - now, 1)
      held.push(heldUntil)
      return 0
    },
    async settle (heldUntil, at) {
      const i = held.indexOf(heldUntil)
      if (i !== -1) held[i] = at
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
    take: (now, heldUntil) => state.takeRequestSlot(partnerKey, now, limit, windowMs, heldUntil),
    settle: (heldUntil, at) => state.settleRequest(partnerKey, heldUntil, at),
    pause: (until) => state.pauseRequests(partnerKey, until)
  }
}

/** A wait for a slot at least this long (ms) is reported (`onLongWait`). */
const LONG_WAIT_MS = 5_000

/**
 * A sliding-window limiter: a request goes out only when fewer than the limit are held in the
 * window before it, whatever window one looks at, never fixed one-minute buckets (two full
 * buckets back to back would put twice the limit in one minute). G2 Sentry counts a request when
 * it arrives, which is some time between its sending and its answer: so a request holds its slot
 * from the latest it can arrive (sent + timeout) until its answer comes, and then from the
 * answer's time. However slowly requests travel, no window of G2 Sentry's then holds more than
 * the limit.
 */
export class RateLimiter {
  readonly #window: RequestWindow
  readonly #clock: Clock

  constructor (window: RequestWindow, clock: Clock = systemClock) {
    this.#window = window
    this.#clock = clock
  }

  /**
   * Waits until a request that may take up to `timeoutMs` may go out, and counts it; call the
   * returned function once its answer (or its failure) came.
   */
  async acquire (timeoutMs: number, signal?: AbortSignal, onLongWait?: (ms: number) => void): Promise<() => Promise<void>> {
    for (;;) {
      signal?.throwIfAborted()
      const now = this.#clock.now()
      const heldUntil = now + timeoutMs
      const wait = await this.#window.take(now, heldUntil)
      if (wait <= 0) return () => this.#window.settle(heldUntil, this.#clock.now())
      // Said once per long wait, so a run that waits for a pause does not look stuck.
      if (wait >= LONG_WAIT_MS) onLongWait?.(wait)
      await this.#clock.sleep(wait, signal)
    }
  }

  /** Holds every request (in every process sharing the window) for `ms`. */
  async pause (ms: number): Promise<void> {
    await this.#window.pause(this.#clock.now() + ms)
  }
}
