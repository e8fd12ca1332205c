/**
 * The live stream as a client sees it: a Server-Sent Events reader over node:http (the SSE text
 * parsed as the WHATWG spec says), a listening app, signed deliveries over HTTP, and what the
 * stream owes a client according to the log.
 */
import type { Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type ClientRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { G2SentryStore } from '../../src/store/contract.js'
import type { AppendResult, JobStatus, LogRow } from '../../src/domain/types.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { buildApp, CALLBACK_PATH, SECRET, type BuildOptions, type CallbackPayload } from './helpers.js'
import { readWholeLog } from './store-contract.js'

export interface SseEvent { id: string | undefined; event: string; data: string }

export interface Change { seq: number; jobId: number; eventType: string; status: JobStatus; jobName: string; receivedAt: string }

/**
 * A Server-Sent Events reader over node:http: dispatches an event at each blank line that ends
 * a block with data, ignores comments, as EventSource does. Closed in teardown.
 */
export class SseClient {
  readonly events: SseEvent[] = []
  /** Everything the server sent, as text. */
  text = ''
  statusCode = 0
  headers: IncomingHttpHeaders = {}
  /** Resolves when the server ends the response (or the connection closes). */
  readonly ended: Promise<void>
  #endedResolve!: () => void
  #request: ClientRequest | undefined
  #response: IncomingMessage | undefined
  #pending = ''
  #block: { id: string | undefined; event: string; data: string[] } = { id: undefined, event: 'message', data: [] }

  constructor () {
    this.ended = new Promise((resolve) => { this.#endedResolve = resolve })
  }

  /**
   * Opens the stream; resolves once the response headers arrived (the body keeps coming).
   * `paused`: a client that never reads: nothing is read from the socket until `resume()`, so
   * the kernel's buffers fill and the server's writes stop being accepted.
   */
  static open (t: Test, url: string, headers: Record<string, string> = {}, options: { paused?: boolean } = {}): Promise<SseClient> {
    const client = new SseClient()
    t.teardown(() => client.close())
    return new Promise((resolve, reject) => {
      const req = httpRequest(url, { headers: { accept: 'text/event-stream', ...headers }, agent: false })
      client.#request = req
      req.once('error', (error) => { client.#endedResolve(); reject(error) })
      req.once('response', (res) => {
        client.statusCode = res.statusCode ?? 0
        client.headers = res.headers
        client.#response = res
        res.setEncoding('utf8')
        if (options.paused === true) res.pause()
        else res.on('data', (chunk: string) => client.#receive(chunk))
        res.once('end', () => client.#endedResolve())
        res.once('close', () => client.#endedResolve())
        res.once('error', () => client.#endedResolve())
        resolve(client)
      })
      req.end()
    })
  }

  /** The client's port: the server's socket for this client has it as its remotePort. */
  get localPort (): number | undefined {
    return this.#request?.socket?.localPort
  }

  /** Starts reading a stream opened `paused`. */
  resume (): void {
    this.#response?.on('data', (chunk: string) => this.#receive(chunk)).resume()
  }

  #receive (chunk: string): void {
    this.text += chunk
    this.#pending += chunk
    const lines = this.#pending.split(/\r\n|\r|\n/)
    this.#pending = lines.pop() ?? ''
    for (const line of lines) {
      if (line === '') {
        if (this.#block.data.length > 0) this.events.push({ id: this.#block.id, event: this.#block.event, data: this.#block.data.join('\n') })
        this.#block = { id: undefined, event: 'message', data: [] }
        continue
      }
      if (line.startsWith(':')) continue
      const colon = line.indexOf(':')
      const field = colon === -1 ? line : line.slice(0, colon)
      let value = colon === -1 ? '' : line.slice(colon + 1)
      if (value.startsWith(' ')) value = value.slice(1)
      if (field === 'id') this.#block.id = value
      else if (field === 'event') this.#block.event = value
      else if (field === 'data') this.#block.data.push(value)
    }
  }

  /** The events' ids as numbers. */
  get ids (): number[] {
    return this.events.map((event) => Number(event.id))
  }

  /** The `job` events' data. */
  get changes (): Change[] {
    return this.events.filter((event) => event.event === 'job').map((event) => JSON.parse(event.data) as Change)
  }

  /** Waits until an event with id `seq` arrived; fails after `ms`. */
  async until (seq: number, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms
    while (!this.ids.includes(seq)) {
      if (Date.now() > deadline) throw new Error(`event ${seq} did not arrive within ${ms} ms; got ${JSON.stringify(this.ids)}`)
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  }

  /** The whole body of a response that is not a stream. */
  async body (): Promise<string> {
    await this.ended
    return this.text
  }

  close (): void {
    this.#request?.destroy()
  }
}

export async function listen (app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
}

/** A listening app on a fresh SQLite file (closed in teardown), and its base URL. */
export async function server (t: Test, options: BuildOptions = {}): Promise<{ app: FastifyInstance; base: string }> {
  const app = await buildApp(t, options)
  return { app, base: await listen(app) }
}

export interface Delivered extends AppendResult { httpStatus: number }

/** Signs and POSTs one callback over HTTP. */
export async function deliver (base: string, payload: CallbackPayload): Promise<Delivered> {
  const body = JSON.stringify(payload)
  const response = await fetch(base + CALLBACK_PATH, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-signature': signBody(body, SECRET) },
    body
  })
  const answer = await response.json() as AppendResult
  return { ...answer, httpStatus: response.status }
}

export const asChange = (row: LogRow): Change => ({
  seq: row.seq,
  jobId: row.jobId,
  eventType: row.eventType,
  status: row.jobStatus,
  jobName: row.jobName,
  receivedAt: new Date(row.receivedAt).toISOString()
})

/** What the stream owes a client: the applied rows of the log after `after`, of one job if asked. */
export async function appliedChanges (store: G2SentryStore, after = 0, jobId?: number): Promise<Change[]> {
  const rows = await readWholeLog(store, jobId, 500)
  return rows.filter((row) => row.seq > after && row.outcome === 'applied').map(asChange)
}
