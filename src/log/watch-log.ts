import type { G2SentryStore } from '../store/contract.js'

/**
 * Calls `listener` whenever the log may have grown: at once after each commit of this process
 * (`store.onCommit`), on each commit of another instance the store announces (`store.watchCommits`,
 * PostgreSQL's LISTEN/NOTIFY), and every `pollMs` as a safety net for what neither reports
 * (another process on a SQLite file, a lost notification). The listener only learns that it
 * should read the log; it must never throw into the store's commit path, so its errors are
 * handed to `onError`. Returns the function that stops watching.
 */
export function watchLog (store: G2SentryStore, listener: () => void, options: { pollMs: number; onError?: (error: unknown) => void }): () => void {
  const call = (): void => {
    try {
      listener()
    } catch (error) {
      try { options.onError?.(error) } catch {}
    }
  }
  const stops = [store.onCommit?.(call), store.watchCommits?.(call)]
  const timer = setInterval(call, options.pollMs).unref()
  return () => {
    clearInterval(timer)
    for (const stop of stops) stop?.()
  }
}
