/**
 * A fake G2 Sentry Partner API, a real HTTP server, for the tests and for trying reconciliation
 * without G2 Sentry: login, refresh, JWT-shaped tokens that expire, the job status endpoint,
 * the per-key rate limit with 429s, and faults to inject (5xx answers, slow answers).
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
    const payload = base64url({ sub: this.partnerKey, typ: kind, exp: (Date.now() + ttl) / 1000, jti: randomBytes(8).toString('hex') })
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
    return claims.typ === kind && claims.exp * 1000 > Date.now() && !this.#revoked.has(token)
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
    response.on('finish', () => this.requests.push({ at, method: request.method ?? '', path, status: response.statusCode }))

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
    if (delay !== undefined) await new Promise((resolve) => setTimeout(resolve, delay.ms))
    const failure = this.#failures.findIndex((f) => f.paths.test(path))
    if (failure !== -1) {
      const { status } = this.#failures.splice(failure, 1)[0] as { status: number }
      send(response, status, { message: 'Injected failure' })
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

function send (response: ServerResponse, status: number, body: unknown): void {
  response.statusCode = status
  response.setHeader('content-type', 'application/json')
  response.end(JSON.stringify(body))
}
