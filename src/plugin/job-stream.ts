import type { FastifyInstance } from 'fastify'
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { Type } from '@sinclair/typebox'
import { errors } from '../errors.js'
import { changeOfRow, type JobChange } from '../domain/job-change.js'
import type { ChangeFeed } from './change-feed.js'
import type { G2SentryRouteOptions, StreamLimits } from './options.js'
import { errorResponses, JobIdString, routeDocs, textResponse, toJobId, type OpenApiOptions } from './schemas.js'
import type { G2SentryStore } from '../store/contract.js'

const HEARTBEAT_MS = 15_000
/** Rows read from the log per page of a catch-up: about 2 ms of work on the event loop here. */
const PAGE_SIZE = 100
/** A catch-up reads pages for at most this long before it hands the event loop on. */
const TURN_MS = 5

const StreamQuerystring = Type.Object({ jobId: Type.Optional(JobIdString) })

const LastEventId = /^\d{1,16}$/

const message = (change: JobChange) => `id: ${change.seq}\nevent: job\ndata: ${JSON.stringify(change)}\n\n`

/**
 * What one client has not read yet, bounded. It writes while the socket accepts; once a write
 * returns false it keeps the next messages until 'drain', and cuts the client off when what it
 * keeps plus what the socket still buffers passes `maxBuffered` bytes. The client then
 * reconnects with Last-Event-ID and catches up from the log, which costs the server nothing
 * while the client is slow.
 */
class Outbox {
  readonly #raw: ServerResponse
  readonly #maxBuffered: number
  #kept: string[] = []
  #keptBytes = 0
  #waiting: Promise<void> | undefined

  constructor (raw: ServerResponse, maxBuffered: number) {
    this.#raw = raw
    this.#maxBuffered = maxBuffered
  }

  /** Resolves when the socket accepts writes again (at once when it does), or is gone. */
  get writable (): Promise<void> {
    return this.#waiting ?? Promise.resolve()
  }

  send (text: string): void {
    const raw = this.#raw
    if (raw.destroyed) return
    if (this.#waiting === undefined) {
      if (!raw.write(text)) this.#waitForDrain()
      return
    }
    this.#kept.push(text)
    this.#keptBytes += Buffer.byteLength(text)
    if (this.#keptBytes + raw.writableLength > this.#maxBuffered) {
      this.#kept = []
      this.#keptBytes = 0
      raw.destroy()
    }
  }

  #waitForDrain (): void {
    const raw = this.#raw
    this.#waiting = new Promise<void>((resolve) => {
      const done = () => {
        raw.off('drain', done)
        raw.off('close', done)
        this.#waiting = undefined
        const kept = this.#kept.join('')
        this.#kept = []
        this.#keptBytes = 0
        if (kept !== '' && !raw.destroyed && !raw.write(kept)) this.#waitForDrain()
        resolve()
      }
      raw.on('drain', done)
      raw.on('close', done)
    })
  }
}

/**
 * Turns of the event loop handed out one at a time: catch-ups that run at once take turns, one
 * page per turn of the event loop, so however many there are, other requests wait at most one
 * page between two of theirs. (An immediate queued while immediates run waits for the next turn.)
 */
function turnTaker (): () => Promise<void> {
  let last: Promise<void> = Promise.resolve()
  return () => {
    last = last.then(() => nextTurn())
    return last
  }
}

/**
 * `GET /jobs/stream`: Server-Sent Events, one per projection change this instance commits, with
 * `id:` = seq. A client that reconnects with `Last-Event-ID` first gets the changes it missed,
 * read from the log a page at a time (waiting for the socket between writes, yielding between
 * pages), then the live ones, none twice, in seq order. A `Last-Event-ID` beyond the end of the
 * log, or at or before the latest archive's checkpoint (those rows are gone), gets `event: reset`
 * (id: the last seq) and then the live changes.
 */
export function jobStream (app: FastifyInstance, opts: {
  store: G2SentryStore
  feed: ChangeFeed
  routeOptions: G2SentryRouteOptions
  limits: StreamLimits
  openapi: OpenApiOptions
}): void {
  const { store, feed, routeOptions, limits, openapi } = opts
  const open = new Set<ServerResponse>()
  const nextPage = turnTaker()
  // Long-lived responses would hold app.close() open: end them when the server closes.
  app.addHook('preClose', async () => { for (const raw of open) raw.end() })

  app.get<{ Querystring: { jobId?: string } }>('/stream', {
    ...routeOptions,
    schema: {
      ...routeDocs(openapi, 'Each change, live (Server-Sent Events)',
        'One `job` event per projection change, id = seq; reconnect with Last-Event-ID to get what was missed from the log.'),
      querystring: StreamQuerystring,
      response: {
        200: textResponse('text/event-stream', 'Server-Sent Events: event job, data a change as JSON'),
        ...errorResponses({ 400: 'jobId is not a positive integer', 503: 'The stream already has maxClients clients' })
      }
    }
  }, async (request, reply) => {
    const jobId = request.query.jobId === undefined ? undefined : toJobId(request.query.jobId)
    if (open.size >= limits.maxClients) {
      reply.header('retry-after', '10')
      throw new errors.STREAM_FULL(limits.maxClients)
    }
    const lastHeader = request.headers['last-event-id']
    const last = typeof lastHeader === 'string' && LastEventId.test(lastHeader) ? Number(lastHeader) : undefined

    reply.hijack()
    const raw = reply.raw
    // A hijacked reply sends none of the headers hooks set (CORS, rate limit, request id): copy them.
    raw.writeHead(200, {
      ...reply.getHeaders() as OutgoingHttpHeaders,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no'
    })
    raw.write('retry: 2000\n\n')
    open.add(raw)
    const outbox = new Outbox(raw, limits.maxBuffered)

    // `position`: the last seq this client has been given or has passed over. While it catches
    // up, live changes only raise `newest`: they are in the log (published after the commit),
    // so the loop reads on until it has passed them, and only then do live changes flow.
    let position = last ?? 0
    let catchingUp = last !== undefined
    let newest = 0
    const unsubscribe = feed.subscribe((change) => {
      if (change.seq <= position || (jobId !== undefined && change.jobId !== jobId)) return
      if (catchingUp) {
        newest = Math.max(newest, change.seq)
        return
      }
      position = change.seq
      outbox.send(message(change))
    })
    const heartbeat = setInterval(() => outbox.send(': keep-alive\n\n'), HEARTBEAT_MS).unref()
    const closed = new Promise<void>((resolve) => raw.once('close', resolve))
    void closed.then(() => {
      clearInterval(heartbeat)
      unsubscribe()
      open.delete(raw)
    })

    try {
      if (last !== undefined) {
        const head = (await store.chainHead())?.seq ?? 0
        // Rows up to the latest checkpoint are in an archive file: what the client missed cannot be replayed.
        const archived = (await store.latestCheckpoint?.())?.record.through
        if (last > head || (archived !== undefined && last <= archived)) {
          // The log was reset or restored, or archived past the client: its id means nothing here any more.
          position = head
          outbox.send(`id: ${head}\nevent: reset\ndata: ${JSON.stringify({ lastEventId: last, lastSeq: head })}\n\n`)
        }
      }
      let turnStarted = -Infinity
      while (catchingUp && !raw.destroyed) {
        if (performance.now() - turnStarted >= TURN_MS) {
          await nextPage()
          turnStarted = performance.now()
        }
        const page = await store.readLog({ jobId, afterSeq: position, limit: PAGE_SIZE })
        for (const row of page) {
          await outbox.writable
          if (raw.destroyed) break
          position = row.seq
          const change = changeOfRow(row)
          if (change !== undefined) outbox.send(message(change))
        }
        if (page.length < PAGE_SIZE && newest <= position) catchingUp = false
      }
    } catch (err) {
      request.log.error({ err }, 'g2sentry: the live stream could not read the log')
      raw.end()
      return
    }
    await closed
  })
}
