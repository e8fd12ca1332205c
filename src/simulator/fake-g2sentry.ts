/**
 * A fake G2 Sentry Partner API, a real HTTP server, for the tests and for trying reconciliation
 * without G2 Sentry: login, refresh, JWT-shaped tokens that expire, the job status endpoint,
 * the per-key rate limit with 429s, and faults to inject (5xx answers, slow answers, any answer
 * for chosen paths: redirects, huge bodies, unknown statuses…, and a clock apart from ours).
 * It keeps the truth about each job; the simulator and the tests change it.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { JobStatus } from '../domain/types.js'

export interface FakeG2SentryOptions {
  partnerKey?: string
  partnerSecret?: string
  /** Access token lifetime (default 15 minutes, as G2 Sentry's). */
  accessTtlMs?: number
  /** Refresh token lifetime (default 7 days). */
  refreshTtlMs?: number
  /** Requests allowed per key in any window (default 60). */
  limit?: number
  /** The window (default 60 s). */
  windowMs?: number
  port?: number
  host?: string
}

/** One request the fake received. */
export interface FakeRequest {
  at: number
  method: string
  path: string
  status: number
}

interface Hold { arrived: Promise<void>; release: () => void }

/**
 * An answer to inject: a status, headers, and a body (a value sent as JSON, a string or bytes
 * sent as they are, a function called per request, or `bytes` of filler streamed out).
 */
export interface FakeAnswer {
  status: number
  headers?: Record<string, string>
  body?: unknown
  /** Streams this many bytes of filler as the body (no content-length), stopping if the client goes. */
  bytes?: number
}

const base64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')

/** A running fake. Close it when done. */
export class FakeG2Sentry {
  readonly partnerKey: string
  readonly partnerSecret: string
  readonly requests: FakeRequest[] = []
  /** Logins and refreshes it granted. */
  readonly counts = { logins: 0, refreshes: 0 }
  #url = ''
  readonly #server: Server
  readonly #options: Required<Omit<FakeG2SentryOptions, 'port' | 'host'>>
  readonly #jobs = new Map<number, JobStatus>()
  readonly #signingKey = randomBytes(32)
  readonly #revoked = new Set<string>()
  readonly #opaque = new Map<string, { kind: 'access' | 'refresh'; exp: number }>()
  /** Arrival times of the requests it counted against the limit. */
  readonly #window: number[] = []
  #failures: Array<{ status: number; paths: RegExp }> = []
  #answers: Array<{ paths: RegExp; answer: FakeAnswer | ((path: string) => FakeAnswer); remaining: number }> = []
  /** How far the fake's clock is from this machine's (ms): its `Date` header and its tokens' `exp` follow it. */
  clockSkewMs = 0
  #delays: Array<{ ms: number; paths: RegExp }> = []
  readonly #holds = new Map<number, { arrived: () => void; released: Promise<void>; release: () => void }>()

  private constructor (options: FakeG2SentryOptions) {
    this.partnerKey = options.partnerKey ?? 'demo-partner'
    this.partnerSecret = options.partnerSecret ?? 'demo-partner-secret'
    this.#options = {
      partnerKey: this.partnerKey,
      partnerSecret: this.partnerSecret,
      accessTtlMs: options.accessTtlMs ?? 15 * 60_000,
      refreshTtlMs: options.refreshTtlMs ?? 7 * 24 * 3_600_000,
      limit: options.limit ?? 60,
      windowMs: options.windowMs ?? 60_000
    }
    this.#server = createServer((request, response) => {
      this.#handle(request, response).catch((error: unknown) => {
        response.statusCode = 500
        response.end(JSON.stringify({ message: String(error) }))
      })
    })
  }

  /** Starts a fake on `port` (default: any free port) of 127.0.0.1. */
  static async start (options: FakeG2SentryOptions = {}): Promise<FakeG2Sentry> {
    const fake = new FakeG2Sentry(options)
    await new Promise<void>((resolve, reject) => {
      fake.#server.once('error', reject)
      fake.#server.listen(options.port ?? 0, options.host ?? '127.0.0.1', resolve)
    })
    const { port } = fake.#server.address() as AddressInfo
    fake.#url = `http://${options.host ?? '127.0.0.1'}:${port}`
    return fake
  }

  /** The base URL, e.g. `http://127.0.0.1:4010`. */
  get url (): string {
    return this.#url
  }

  /** Sets a job's true status (what the status endpoint answers). */
  setStatus (jobId: number, status: JobStatus): void {
    this.#jobs.set(jobId, status)
  }

  status (jobId: number): JobStatus | undefined {
    return this.#jobs.get(jobId)
  }

  /** The next `count` requests whose path matches `paths` answer `status` (default 503). */
  failNext (count: number, status = 503, paths = /./): void {
    for (let i = 0; i < count; i++) this.#failures.push({ status, paths })
  }

  /**
   * Requests whose path matches `paths` get `answer` instead of the real one (after the rate
   * limit and any delay), `count` times (default: until `clearAnswers`). Later calls come first.
   */
  answer (paths: RegExp, answer: FakeAnswer | ((path: string) => FakeAnswer), count = Infinity): void {
    this.#answers.unshift({ paths, answer, remaining: count })
  }

  /** Removes every answer given by `answer`. */
  clearAnswers (): void {
    this.#answers = []
  }

  /** A valid access token, e.g. for an injected refresh answer without a refresh token. */
  accessToken (): string {
    const token = this.#token('access', this.#options.accessTtlMs)
    this.#issuedAccess.push(token)
    return token
  }

  /** Requests whose path matches `paths` answer after `ms`. */
  slow (ms: number, paths = /./): void {
    this.#delays.push({ ms, paths })
  }

  /**
   * Holds the next status answer for `jobId` until `release()` is called; `arrived` resolves when
   * the request is in. The answer is the status when it arrived: a slow answer, already out of date.
   */
  hold (jobId: number): Hold {
    let arrived!: () => void
    const arrivedPromise = new Promise<void>((resolve) => { arrived = resolve })
    let release!: () => void
    const released = new Promise<void>((resolve) => { release = resolve })
    this.#holds.set(jobId, { arrived, released, release })
    return { arrived: arrivedPromise, release }
  }

  /** Issue tokens that are not JWTs (no readable `exp`), as a G2 Sentry that changed its format would. */
  opaqueTokens = false

  /** Refuses every access token issued so far (the client still believes them fresh). */
  revokeAccess (): void {
    for (const token of this.#issuedAccess) this.#revoked.add(token)
  }

  readonly #issuedAccess: string[] = []

  /** Refuses every refresh token issued so far, as after a password change. */
  revokeRefreshTokens (): void {
    for (const request of this.#issuedRefresh) this.#revoked.add(request)
  }

  readonly #issuedRefresh: string[] = []

  /** The most requests that arrived within any window of `windowMs` (default: the fake's own). */
  maxInWindow (windowMs = this.#options.windowMs): number {
    const times = this.requests.map((r) => r.at).sort((a, b) => a - b)
    let most = 0
    let start = 0
    for (let end = 0; end < times.length; end++) {
      while ((times[end] as number) - (times[start] as number) >= windowMs) start++
      most = Math.max(most, end - start + 1)
    }
    return most
  }

  async close (): Promise<void> {
    for (const hold of this.#holds.values()) hold.release()
    this.#server.closeAllConnections()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  #token (kind: 'access' | 'refresh', ttl: number): string {
    if (this.opaqueTokens) {
      const token = `${kind}-${randomBytes(16).toString('hex')}`
      this.#opaque.set(token, { kind, exp: Date.now() + ttl })
      return token
    }
    const header = base64url({ alg: 'HS256', typ: 'JWT' })
    const payload = base64url({ sub: this.partnerKey, typ: kind, exp: (this.#now() + ttl) / 1000, jti: randomBytes(8).toString('hex') })
    const signature = createHmac('sha256', this.#signingKey).update(`${header}.${payload}`).digest('base64url')
    return `${header}.${payload}.${signature}`
  }

  /** Whether `token` is one of ours, of `kind`, unexpired and not revoked. */
  #valid (token: string | undefined, kind: 'access' | 'refresh'): boolean {
    if (token === undefined || this.#revoked.has(token)) return false
    const opaque = this.#opaque.get(token)
    if (opaque !== undefined) return opaque.kind === kind && opaque.exp > Date.now()
    const [header, payload, signature] = token.split('.')
    if (header === undefined || payload === undefined || signature === undefined) return false
    const expected = createHmac('sha256', this.#signingKey).update(`${header}.${payload}`).digest()
    const given = Buffer.from(signature, 'base64url')
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return false
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { typ: string; exp: number }
    return claims.typ === kind && claims.exp * 1000 > this.#now() && !this.#revoked.has(token)
  }

  #now (): number {
    return Date.now() + this.clockSkewMs
  }

  #session (response: ServerResponse): void {
    const accessToken = this.#token('access', this.#options.accessTtlMs)
    const refreshToken = this.#token('refresh', this.#options.refreshTtlMs)
    this.#issuedRefresh.push(refreshToken)
    this.#issuedAccess.push(accessToken)
    send(response, 200, { partnerKey: this.partnerKey, name: 'Demo Partner', accessToken, refreshToken })
  }

  async #handle (request: IncomingMessage, response: ServerResponse): Promise<void> {
    const at = Date.now()
    const path = (request.url ?? '/').split('?')[0] as string
    const chunks: Buffer[] = []
    for await (const chunk of request) chunks.push(chunk as Buffer)
    // On close, not finish: an answer the client gave up reading is a request all the same.
    response.once('close', () => this.requests.push({ at, method: request.method ?? '', path, status: response.statusCode }))
    if (this.clockSkewMs !== 0) response.setHeader('date', new Date(this.#now()).toUTCString())

    // 60 a minute per key, every call together; a refused request does not count.
    const { limit, windowMs } = this.#options
    while (this.#window.length > 0 && (this.#window[0] as number) <= at - windowMs) this.#window.shift()
    if (this.#window.length >= limit) {
      const retryAfter = Math.ceil(((this.#window[0] as number) + windowMs - at) / 1000)
      response.setHeader('retry-after', String(Math.max(retryAfter, 1)))
      send(response, 429, { message: 'Too many requests' })
      return
    }
    this.#window.push(at)

    const delay = this.#delays.find((d) => d.paths.test(path))
    if (delay !== undefined) {
      // Cut short when the client goes, so a closed fake leaves no timer behind.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay.ms)
        response.once('close', () => { clearTimeout(timer); resolve() })
      })
      if (response.destroyed) return
    }
    const failure = this.#failures.findIndex((f) => f.paths.test(path))
    if (failure !== -1) {
      const { status } = this.#failures.splice(failure, 1)[0] as { status: number }
      send(response, status, { message: 'Injected failure' })
      return
    }
    const injected = this.#answers.find((a) => a.remaining > 0 && a.paths.test(path))
    if (injected !== undefined) {
      injected.remaining--
      await answerWith(response, typeof injected.answer === 'function' ? injected.answer(path) : injected.answer)
      return
    }

    if (request.method === 'POST' && path === '/access/login') {
      let body: { partnerKey?: unknown; partnerSecret?: unknown } = {}
      try { body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof body } catch {}
      if (body.partnerKey !== this.partnerKey || body.partnerSecret !== this.partnerSecret) {
        send(response, 401, { message: 'Invalid partner key or secret' })
        return
      }
      this.counts.logins++
      this.#session(response)
      return
    }
    if (request.method === 'GET' && path === '/access/refresh') {
      const token = request.headers.refreshtoken
      if (!this.#valid(typeof token === 'string' ? token : undefined, 'refresh')) {
        send(response, 401, { message: 'Invalid refresh token' })
        return
      }
      this.counts.refreshes++
      this.#session(response)
      return
    }
    const status = /^\/jobs\/(\d+)\/status$/.exec(path)
    if (request.method === 'GET' && status !== null) {
      const bearer = /^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1]
      if (!this.#valid(bearer, 'access')) {
        send(response, 401, { message: 'Unauthorized' })
        return
      }
      const jobId = Number(status[1])
      // The answer is the status when the request arrived, however long it then takes to travel.
      const truth = this.#jobs.get(jobId)
      const hold = this.#holds.get(jobId)
      if (hold !== undefined) {
        hold.arrived()
        await hold.released
        this.#holds.delete(jobId)
      }
      if (truth === undefined) send(response, 404, { message: 'Job not found' })
      else send(response, 200, { jobId, status: truth })
      return
    }
    send(response, 404, { message: 'Not found' })
  }
}

async function answerWith (response: ServerResponse, answer: FakeAnswer): Promise<void> {
  response.statusCode = answer.status
  for (const [name, value] of Object.entries(answer.headers ?? {})) response.setHeader(name, value)
  if (answer.bytes !== undefined) {
    const chunk = Buffer.alloc(64 * 1024, 0x20)
    let left = answer.bytes
    while (left > 0 && !response.destroyed) {
      const part = left >= chunk.length ? chunk : chunk.subarray(0, left)
      left -= part.length
      if (!response.write(part)) await new Promise((resolve) => { response.once('drain', resolve); response.once('close', resolve) })
    }
    response.end()
    return
  }
  const body = typeof answer.body === 'function' ? (answer.body as () => unknown)() : answer.body
  if (body === undefined) response.end()
  else if (typeof body === 'string' || Buffer.isBuffer(body)) response.end(body)
  else {
    if (!response.hasHeader('content-type')) response.setHeader('content-type', 'application/json')
    response.end(JSON.stringify(body))
  }
}

function send (response: ServerResponse, status: number, body: unknown): void {
  response.statusCode = status
  response.setHeader('content-type', 'application/json')
  response.end(JSON.stringify(body))
}
