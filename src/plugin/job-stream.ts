import type { FastifyInstance, FastifyReply } from 'fastify'
import { Type } from '@sinclair/typebox'
import type { ChangeFeed, JobChange } from './change-feed.js'
import type { JobRouteOptions } from './options.js'
import { readLogStream } from '../log/read-log.js'
import type { G2SentryStore, LogRow } from '../domain/types.js'

const HEARTBEAT_MS = 15_000

const StreamQuerystring = Type.Object({
  jobId: Type.Optional(Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }))
})

const LastEventId = /^\d{1,16}$/

const fromLog = (row: LogRow): JobChange => ({
  seq: row.seq,
  jobId: row.jobId,
  eventType: row.eventType,
  status: row.jobStatus,
  jobName: row.jobName,
  receivedAt: new Date(row.receivedAt).toISOString()
})

const message = (change: JobChange) => `id: ${change.seq}\nevent: job\ndata: ${JSON.stringify(change)}\n\n`

/**
 * `GET /jobs/stream`: Server-Sent Events, one per projection change this instance commits, with
 * `id:` = seq. A client that reconnects with `Last-Event-ID` first gets the changes it missed,
 * read from the log, then the live ones, none twice.
 */
export function jobStream (app: FastifyInstance, opts: { store: G2SentryStore; feed: ChangeFeed; routeOptions: JobRouteOptions }): void {
  const { store, feed, routeOptions } = opts
  const open = new Set<FastifyReply>()
  // Long-lived responses would hold app.close() open: end them when the server closes.
  app.addHook('preClose', async () => { for (const reply of open) reply.raw.end() })

  app.get<{ Querystring: { jobId?: number } }>('/stream', {
    ...routeOptions,
    schema: { querystring: StreamQuerystring }
  }, async (request, reply) => {
    const { jobId } = request.query
    const lastHeader = request.headers['last-event-id']
    const last = typeof lastHeader === 'string' && LastEventId.test(lastHeader) ? Number(lastHeader) : undefined

    reply.hijack()
    const raw = reply.raw
    raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no'
    })
    raw.write('retry: 2000\n\n')
    open.add(reply)

    // Live changes are held back until the catch-up from the log is written, then sent in order.
    let sent = last ?? 0
    let caughtUp = false
    const held: JobChange[] = []
    const send = (change: JobChange) => {
      if (change.seq <= sent || (jobId !== undefined && change.jobId !== jobId)) return
      sent = change.seq
      raw.write(message(change))
    }
    const unsubscribe = feed.subscribe((change) => { if (caughtUp) send(change); else held.push(change) })
    const heartbeat = setInterval(() => raw.write(': keep-alive\n\n'), HEARTBEAT_MS).unref()
    const closed = new Promise<void>((resolve) => raw.once('close', resolve))
    void closed.then(() => {
      clearInterval(heartbeat)
      unsubscribe()
      open.delete(reply)
    })

    try {
      if (last !== undefined) {
        for await (const row of readLogStream(store, { jobId, afterSeq: last })) {
          if (raw.destroyed) break
          if (row.outcome === 'applied') send(fromLog(row))
        }
      }
    } catch (err) {
      request.log.error({ err }, 'g2sentry: the live stream could not read the log')
      raw.end()
      return
    }
    caughtUp = true
    for (const change of held.splice(0)) send(change)
    await closed
  })
}
