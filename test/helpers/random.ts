/**
 * Seeded randomness for the tests. The generator is `mulberry32` from src/simulator/schedules.ts; this is
 * the shuffle that draws from it (or any `Rng`), so a failing run can be replayed from its seed.
 */
import type { Rng } from '../../src/simulator/schedules.js'

/** A shuffled copy of `items` (Fisher–Yates), drawing from `rng`; `items` is left as it is. */
export function shuffle<T> (items: readonly T[], rng: Rng): T[] {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1))
    ;[out[i], out[j]] = [out[j] as T, out[i] as T]
  }
  return out
}
