// Commit announcements between instances on one PostgreSQL database: after each committed batch
// an instance NOTIFYs a channel named after the schema with the log's last seq, and every
// instance LISTENing there (on one connection of its own) wakes its live feed and consumers.
// A notification is a hint, never the data: readers read the shared log from where they are.
import { createHash } from 'node:crypto'

/** The part of `pg` these functions use. */
export interface NotifyClient {
  query: (text: string, values?: unknown[]) => Promise<unknown>
  connect: () => Promise<void>
  end: () => Promise<void>
  on: (event: string, listener: (...args: any[]) => void) => unknown
}

/** The channel of a schema's commits: readable when it fits PostgreSQL's 63 bytes, hashed when not. */
export function commitChannel (schema: string): string {
  const plain = `g2sentry_commits_${schema}`
  return plain.length <= 63 ? plain : `g2sentry_commits_${createHash('sha256').update(schema).digest('hex').slice(0, 40)}`
}

/**
 * Announces commits with `pg_notify`, outside the append's transaction so the write path does
 * not wait for it: at most one in flight, then one more with the latest seq. A lost
 * announcement (the process died right after the commit) is covered by the readers' poll.
 */
export function commitAnnouncer (query: (text: string, values: unknown[]) => Promise<unknown>, channel: string): (lastSeq: number) => void {
  let sending = false
  let next: number | undefined
  const send = (seq: number): void => {
    sending = true
    query('SELECT pg_notify($1, $2)', [channel, String(seq)]).catch(() => {}).finally(() => {
      sending = false
      if (next !== undefined) {
        const latest = next
        next = undefined
        send(latest)
      }
    })
  }
  return (lastSeq) => {
    if (sending) next = Math.max(next ?? 0, lastSeq)
    else send(lastSeq)
  }
}

/**
 * LISTENs on `channel` while anyone watches, on a connection of its own that is opened for the
 * first watcher, reconnected (with a growing delay, up to 5 s) when it breaks, and closed with
 * the last. Watchers get the announced seq, or undefined after a reconnect (something may have
 * been missed: read the log).
 */
export function commitListener (newClient: () => NotifyClient, channel: string): {
  watch: (listener: (lastSeq: number | undefined) => void) => () => void
  close: () => Promise<void>
} {
  const watchers = new Set<(lastSeq: number | undefined) => void>()
  let client: NotifyClient | undefined
  let retry: NodeJS.Timeout | undefined
  let failures = 0
  let closed = false

  const tell = (seq: number | undefined): void => {
    for (const watcher of watchers) {
      try { watcher(seq) } catch {}
    }
  }

  async function open (): Promise<void> {
    if (closed || watchers.size === 0 || client !== undefined) return
    const current = newClient()
    client = current
    const broken = (): void => {
      if (client !== current) return
      client = undefined
      current.end().catch(() => {})
      if (closed || watchers.size === 0) return
      retry = setTimeout(() => { void open() }, Math.min(5000, 100 * 2 ** failures++)).unref()
    }
    current.on('error', broken)
    current.on('end', broken)
    current.on('notification', (message: { channel: string; payload?: string }) => {
      if (message.channel !== channel) return
      const seq = Number(message.payload)
      tell(Number.isSafeInteger(seq) ? seq : undefined)
    })
    try {
      await current.connect()
      await current.query(`LISTEN "${channel}"`)
      failures = 0
      // Commits made while this connection was not listening were not announced to us.
      tell(undefined)
    } catch {
      broken()
    }
  }

  return {
    watch (listener) {
      watchers.add(listener)
      void open()
      return () => {
        watchers.delete(listener)
        if (watchers.size === 0 && client !== undefined) {
          const current = client
          client = undefined
          current.end().catch(() => {})
        }
      }
    },
    async close () {
      closed = true
      clearTimeout(retry)
      watchers.clear()
      const current = client
      client = undefined
      await current?.end().catch(() => {})
    }
  }
}
