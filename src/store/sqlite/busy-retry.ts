// Waiting for another process's write lock without freezing the event loop. better-sqlite3 is
// synchronous: with SQLite's own busy timeout, a write that meets another process's lock sleeps
// on the main thread, and every request waits with it. The store's connection therefore has no
// busy timeout of its own; a write that finds the file locked fails at once with SQLITE_BUSY and
// is tried again here, after a timer, until `busyTimeout` has passed (docs/design.md, "Waiting
// for a lock").
import { setTimeout as sleep } from 'node:timers/promises'

/** SQLITE_BUSY and its extended codes: the file was locked, and nothing was written. */
export function isBusy (error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY')
}

// Like SQLite's own busy handler: short waits first, then at most this long between two tries.
const FIRST_WAIT_MS = 1
const LONGEST_WAIT_MS = 25

/**
 * Runs `work` until it does not fail with SQLITE_BUSY, or until `deadline` (a `performance.now()`
 * time) has passed, when the last SQLITE_BUSY is thrown. `work` must write nothing when it fails
 * with SQLITE_BUSY: a statement on its own or a transaction (SQLite rolls it back).
 */
export async function retryWhileBusy<T> (work: () => T | Promise<T>, deadline: number): Promise<T> {
  for (let wait = FIRST_WAIT_MS; ; wait = Math.min(wait * 2, LONGEST_WAIT_MS)) {
    try {
      return await work()
    } catch (error) {
      const left = deadline - performance.now()
      if (!isBusy(error) || left <= 0) throw error
      await sleep(Math.min(wait, left))
    }
  }
}

/**
 * `methods` with each function wrapped in `retryWhileBusy`, each call with `busyTimeout` ms from
 * its start: for a store's methods, each one a statement or a transaction.
 */
export function retryingWhileBusy<T extends object> (methods: T, busyTimeout: number): T {
  const wrapped: Record<string, unknown> = {}
  for (const [name, value] of Object.entries(methods)) {
    wrapped[name] = typeof value !== 'function'
      ? value
      : (...args: unknown[]) => retryWhileBusy(() => (value as (...a: unknown[]) => unknown).apply(methods, args), performance.now() + busyTimeout)
  }
  return wrapped as T
}
