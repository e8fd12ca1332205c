// Commit announcements between instances on one PostgreSQL database: after each committed batch
// an instance NOTIFYs a channel named after the schema with the log's last seq, and every
// instance LISTENing there (on one connection of its own) wakes its live feed and consumers.
// A notification is a hint, never the data: readers read the shared log from where they are.
import { createHash, randomBytes } from 'node:crypto'

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

/** How a LISTEN connection checks that notifications reach it (see `commitListener`). */
export interface ListenProbe {
  /** Sends `payload` on the channel from a connection other than the listening one. */
  send: (payload: string) => Promise<unknown>
  /** Told once when the probe never arrived. */
  notCarried: () => void
}

/** How long a LISTEN connection waits for its probe before concluding notifications do not reach it. */
export const PROBE_MS = 3000
const PROBE = /^probe /

/**
 * LISTENs on `channel` while anyone watches, on a connection of its own that is opened for the
 * first watcher, reconnected (with a growing delay, up to 5 s) when it breaks, and closed with
 * the last. Watchers get the announced seq, or undefined after a reconnect (something may have
 * been missed: read the log).
 *
 * A connection pooler in transaction mode accepts LISTEN and then hands the server session to
 * others: nothing ever arrives. So once listening, `probe` sends a notification from another
 * connection (the store's pool); when it has not arrived within PROBE_MS, `notCarried` is told
 * and the listener stops for good, leaving the watchers to their poll.
 */
export function commitListener (newClient: () => NotifyClient, channel: string, probe?: ListenProbe): {
  watch: (listener: (lastSeq: number | undefined) => void) => () => void
  close: () => Promise<void>
} {
  const watchers = new Set<(lastSeq: number | undefined) => void>()
  let client: NotifyClient | undefined
  let retry: NodeJS.Timeout | undefined
  let failures = 0
  let closed = false
  // Whether a probe arrived once on this URL (later connections skip it); stopped when none did.
  let carried = false
  let stopped = false

  const tell = (seq: number | undefined): void => {
    for (const watcher of watchers) {
      try { watcher(seq) } catch {}
    }
  }

  async function open (): Promise<void> {
    if (closed || stopped || watchers.size === 0 || client !== undefined) return
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
    const token = `probe ${randomBytes(8).toString('hex')}`
    let probed: (() => void) | undefined
    current.on('notification', (message: { channel: string; payload?: string }) => {
      if (message.channel !== channel) return
      if (PROBE.test(message.payload ?? '')) {
        if (message.payload === token) probed?.()
        return
      }
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
      return
    }
    if (probe === undefined || carried) return
    const arrived = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), PROBE_MS).unref()
      probed = () => {
        clearTimeout(timer)
        resolve(true)
      }
      probe.send(token).catch(() => {})
    })
    if (arrived) carried = true
    else if (client === current && !closed) {
      stopped = true
      client = undefined
      current.end().catch(() => {})
      probe.notCarried()
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
