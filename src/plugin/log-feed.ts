import type { G2SentryStore } from '../store/contract.js'
import { watchLog } from '../log/watch-log.js'
import { changeOfRow } from '../domain/job-change.js'
import type { ChangeFeed } from './change-feed.js'

const PAGE = 500

/**
 * Feeds `feed` from the log: every instance's changes (another process on the SQLite file,
 * another instance on PostgreSQL), in seq order, each once. It reads on every commit the store
 * reports and every `pollMs`. While nobody subscribes it only follows the log's head, so a new
 * subscriber gets the changes made after it subscribed.
 */
export function feedFromLog (feed: ChangeFeed, store: G2SentryStore, options: { pollMs: number; onError: (error: unknown) => void }): () => void {
  let cursor: number | undefined
  let reading = false
  let again = false
  let stopped = false

  async function read (): Promise<void> {
    if (cursor === undefined || feed.subscribers === 0) {
      cursor = (await store.chainHead())?.seq ?? 0
      return
    }
    for (;;) {
      const rows = await store.readLog({ afterSeq: cursor, limit: PAGE })
      for (const row of rows) {
        if (stopped) return
        cursor = row.seq
        const change = changeOfRow(row)
        if (change !== undefined) feed.emit(change)
      }
      if (rows.length < PAGE) return
    }
  }

  function pump (): void {
    if (reading) {
      again = true
      return
    }
    reading = true
    again = false
    read().catch(options.onError).finally(() => {
      reading = false
      if (again && !stopped) pump()
    })
  }

  feed.drawFrom(pump)
  const stop = watchLog(store, pump, options)
  pump()
  return () => {
    stopped = true
    stop()
  }
}
