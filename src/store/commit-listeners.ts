/** Called after each committed batch of appends, with its size and how long it took (seconds). */
export type CommitListener = (batchSize: number, seconds: number) => void

/** The `onCommit` listeners of a store, and how the store tells them about a commit. */
export interface CommitListeners {
  /** `G2SentryStore.onCommit`: adds `listener`, returns its unsubscribe. */
  onCommit: (listener: CommitListener) => () => void
  /**
   * Tells every listener that a batch of `batchSize` appends, begun at `started` (hrtime), committed.
   * A listener that throws is reported as a process warning (`FST_G2SENTRY_COMMIT_LISTENER_FAILED`).
   */
  batchCommitted: (batchSize: number, started: bigint) => void
}

/** A store's set of `onCommit` listeners. */
export function commitListeners (): CommitListeners {
  const listeners = new Set<CommitListener>()
  return {
    onCommit (listener) {
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    },
    batchCommitted (batchSize, started) {
      if (listeners.size === 0) return
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      for (const listener of listeners) {
        // The batch is committed whatever a listener does: its error must not reach the appends,
        // which would answer 503 (and a retry) for rows that are in the log.
        try {
          listener(batchSize, seconds)
        } catch (error) {
          process.emitWarning(`an onCommit listener threw: ${error instanceof Error ? error.message : String(error)}`,
            { code: 'FST_G2SENTRY_COMMIT_LISTENER_FAILED', detail: error instanceof Error ? error.stack : undefined })
        }
      }
    }
  }
}
