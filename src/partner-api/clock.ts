import { setTimeout as sleep } from 'node:timers/promises'

/** Time as the Partner API client and the reconciler see it; tests may give their own. */
export interface Clock {
  now: () => number
  sleep: (ms: number) => Promise<void>
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => sleep(ms)
}
