import { setTimeout as sleep } from 'node:timers/promises'

/** The longest delay setTimeout accepts (ms); a longer one fires at once, after a warning. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** Time as the Partner API client and the reconciler see it; tests may give their own. */
export interface Clock {
  now: () => number
  /** Sleeps `ms`, rejecting with an AbortError as soon as `signal` aborts. */
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>
}

export const systemClock: Clock = {
  now: () => Date.now(),
  // Clamped: an overflowing delay would fire at once and turn a long wait into a busy loop.
  sleep: (ms, signal) => sleep(Math.min(Math.max(ms, 0), MAX_TIMER_MS), undefined, signal === undefined ? undefined : { signal })
}
