// A client of G2 Sentry's Partner API (login, refresh, job status) on Node's fetch, within the
// partner key's rate limit. See docs/design.md, "Reconciliation".
import { errors } from '../errors.js'
import { systemClock, type Clock } from './clock.js'
import { memoryWindow, RateLimiter, type RequestWindow } from './rate-limiter.js'
import { readStatusAnswer, type StatusAnswer } from './status-answer.js'

/** G2 Sentry's documented lifetimes, used when a token's `exp` cannot be read. */
export const ACCESS_TOKEN_TTL_MS = 15 * 60_000
export const REFRESH_TOKEN_TTL_MS = 7 * 24 * 3_600_000

/** How a request ended, as the `result` label of the request metric. */
export type RequestResult = 'ok' | 'not_found' | 'unauthorized' | 'rate_limited' | 'server_error' | 'client_error' | 'timeout' | 'network_error'
export type Endpoint = 'login' | 'refresh' | 'status'

/** What the client may log: never a secret or a token, only endpoints, statuses and waits. */
export interface ClientLogger {
  warn: (fields: Record<string, unknown>, message: string) => void
  debug?: (fields: Record<string, unknown>, message: string) => void
}

export interface PartnerApiClientOptions {
  /** e.g. `https://partner-api-demo.g2sentry.com`. */
  baseUrl: string
  partnerKey: string
  partnerSecret: string
  /** The most requests in any window (default 50 of G2 Sentry's 60 a minute, leaving room for the app's own calls). */
  requestsPerMinute?: number
  /** Where the window is kept (default: in this process); `sharedWindow` keeps it in the database. */
  window?: RequestWindow
  /** The window's length (default 60 s, G2 Sentry's); tests shorten it. */
  windowMs?: number
  /** How long one request may take (default 10 s). */
  timeoutMs?: number
  /** Attempts after a 5xx, a timeout or a network error (default 3 more), with jittered exponential backoff. */
  retries?: number
  /** The first backoff (default 500 ms), doubled each time, each wait a random part of it. */
  backoffMs?: number
  /** Pause after a 429 without a usable Retry-After (default a tenth of the window). */
  defaultRetryAfterMs?: number
  clock?: Clock
  log?: ClientLogger
  /** Called once per HTTP request sent, with how it ended (metrics). */
  onRequest?: (endpoint: Endpoint, result: RequestResult) => void
}

/** The answer to a status request: the job's status and the exact bytes G2 Sentry sent, or that it does not know the job. */
export type StatusResult = { found: true; answer: StatusAnswer; body: Buffer } | { found: false }

interface Tokens { access: string; accessExpires: number; refresh: string; refreshExpires: number }
interface Answer { status: number; body: Buffer; retryAfter: string | null }

/** The `exp` of a JWT, in ms; undefined when the token is not a readable JWT. Its signature is G2 Sentry's business. */
export function tokenExpiry (token: string): number | undefined {
  const payload = token.split('.')[1]
  if (payload === undefined) return undefined
  try {
    const { exp } = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { exp?: unknown }
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined
  } catch {
    return undefined
  }
}

/** Retry-After in ms: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function retryAfterMs (value: string | null, now: number): number | undefined {
  if (value === null || value.trim() === '') return undefined
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(at - now, 0)
}

/**
 * Logs in with the partner key and secret, refreshes the access token shortly before its `exp`
 * (read from the JWT; 15 minutes when unreadable) and logs in again only when the refresh token
 * is refused. Every request, login and refresh included, first takes a slot of the rate limiter;
 * a 429 pauses every request for its Retry-After; 5xx answers, timeouts and network errors are
 * retried with jittered exponential backoff.
 */
export class PartnerApiClient {
  readonly #options: Required<Pick<PartnerApiClientOptions, 'timeoutMs' | 'retries' | 'backoffMs'>> & PartnerApiClientOptions
  readonly #base: string
  readonly #clock: Clock
  readonly #limiter: RateLimiter
  readonly #defaultRetryAfter: number
  #tokens: Tokens | undefined
  #authenticating: Promise<Tokens> | undefined
  /** How many logins and refreshes this client made. */
  readonly counts = { logins: 0, refreshes: 0 }

  constructor (options: PartnerApiClientOptions) {
    const windowMs = options.windowMs ?? 60_000
    const limit = options.requestsPerMinute ?? 50
    this.#options = { timeoutMs: 10_000, retries: 3, backoffMs: 500, ...options }
    this.#base = options.baseUrl.replace(/\/+$/, '')
    this.#clock = options.clock ?? systemClock
    this.#limiter = new RateLimiter(options.window ?? memoryWindow(limit, windowMs), this.#clock)
    this.#defaultRetryAfter = options.defaultRetryAfterMs ?? windowMs / 10
  }

  /** The job's status at G2 Sentry. Throws PARTNER_CREDENTIALS_REFUSED or PARTNER_API_UNAVAILABLE. */
  async jobStatus (jobId: number): Promise<StatusResult> {
    const path = `/jobs/${encodeURIComponent(String(jobId))}/status`
    let tokens = await this.#session()
    let answer = await this.#send('status', 'GET', path, { authorization: `Bearer ${tokens.access}` })
    if (answer.status === 401) {
      // "401 responses are your signal to refresh."
      tokens = await this.#session(tokens)
      answer = await this.#send('status', 'GET', path, { authorization: `Bearer ${tokens.access}` })
    }
    if (answer.status === 404) return { found: false }
    if (answer.status !== 200) throw new errors.PARTNER_API_UNAVAILABLE(path, `HTTP ${answer.status}`)
    const parsed = readStatusAnswer(answer.body)
    if (parsed === undefined || parsed.jobId !== jobId) throw new errors.PARTNER_API_UNAVAILABLE(path, 'the answer is not a status of that job')
    return { found: true, answer: parsed, body: answer.body }
  }

  /**
   * Valid tokens: the current ones while the access token is fresh, else refreshed, else a new
   * login. `stale`: tokens G2 Sentry just refused, to be replaced even if they look fresh.
   * One login or refresh at a time, shared by every caller waiting for it.
   */
  async #session (stale?: Tokens): Promise<Tokens> {
    for (;;) {
      if (this.#authenticating !== undefined) {
        await this.#authenticating.catch(() => {})
        if (this.#tokens !== undefined && this.#tokens !== stale && this.#fresh(this.#tokens)) return this.#tokens
      }
      const current = this.#tokens
      if (current !== undefined && current !== stale && this.#fresh(current)) return current
      if (this.#authenticating !== undefined) continue
      this.#authenticating = this.#renew(current).finally(() => { this.#authenticating = undefined })
      this.#tokens = await this.#authenticating
      return this.#tokens
    }
  }

  /** Fresh until a tenth of its life (at most 30 s) before it expires, so it never expires on the way. */
  #fresh (tokens: Tokens): boolean {
    return this.#clock.now() < tokens.accessExpires - Math.min(30_000, (tokens.accessExpires - this.#issuedAt(tokens)) / 10)
  }

  readonly #issued = new WeakMap<Tokens, number>()
  #issuedAt (tokens: Tokens): number {
    return this.#issued.get(tokens) ?? this.#clock.now()
  }

  async #renew (current: Tokens | undefined): Promise<Tokens> {
    if (current !== undefined && this.#clock.now() < current.refreshExpires) {
      const answer = await this.#send('refresh', 'GET', '/access/refresh', { refreshtoken: current.refresh })
      if (answer.status === 200) {
        this.counts.refreshes++
        return this.#tokensFrom(answer, '/access/refresh')
      }
      if (answer.status !== 400 && answer.status !== 401 && answer.status !== 403) {
        throw new errors.PARTNER_API_UNAVAILABLE('/access/refresh', `HTTP ${answer.status}`)
      }
      this.#options.log?.warn({ status: answer.status }, 'g2sentry: the Partner API refused the refresh token; logging in again')
    }
    const { partnerKey, partnerSecret } = this.#options
    const answer = await this.#send('login', 'POST', '/access/login', { 'content-type': 'application/json' }, JSON.stringify({ partnerKey, partnerSecret }))
    if (answer.status === 400 || answer.status === 401 || answer.status === 403) throw new errors.PARTNER_CREDENTIALS_REFUSED(answer.status, '/access/login')
    if (answer.status !== 200) throw new errors.PARTNER_API_UNAVAILABLE('/access/login', `HTTP ${answer.status}`)
    this.counts.logins++
    return this.#tokensFrom(answer, '/access/login')
  }

  #tokensFrom (answer: Answer, path: string): Tokens {
    let body: { accessToken?: unknown; refreshToken?: unknown }
    try {
      body = JSON.parse(answer.body.toString('utf8')) as typeof body
    } catch {
      throw new errors.PARTNER_API_UNAVAILABLE(path, 'the answer is not JSON')
    }
    const { accessToken, refreshToken } = body ?? {}
    if (typeof accessToken !== 'string' || typeof refreshToken !== 'string' || accessToken === '' || refreshToken === '') {
      throw new errors.PARTNER_API_UNAVAILABLE(path, 'the answer has no accessToken and refreshToken')
    }
    const now = this.#clock.now()
    const tokens = {
      access: accessToken,
      accessExpires: tokenExpiry(accessToken) ?? now + ACCESS_TOKEN_TTL_MS,
      refresh: refreshToken,
      refreshExpires: tokenExpiry(refreshToken) ?? now + REFRESH_TOKEN_TTL_MS
    }
    this.#issued.set(tokens, now)
    return tokens
  }

  /**
   * One request through the limiter, with its retries: 429 pauses every request and tries again;
   * 5xx, timeouts and network errors back off with full jitter. Any other answer is returned.
   */
  async #send (endpoint: Endpoint, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
    const { timeoutMs, retries, backoffMs, log, onRequest } = this.#options
    let failures = 0
    let limited = 0
    for (;;) {
      const settle = await this.#limiter.acquire(timeoutMs)
      let result: RequestResult
      let answer: Answer | undefined
      try {
        const response = await fetch(this.#base + path, { method, headers, body, signal: AbortSignal.timeout(timeoutMs) })
        answer = { status: response.status, body: Buffer.from(await response.arrayBuffer()), retryAfter: response.headers.get('retry-after') }
        result = resultOf(response.status)
      } catch (error) {
        result = (error as Error).name === 'TimeoutError' ? 'timeout' : 'network_error'
      }
      await settle()
      onRequest?.(endpoint, result)
      if (answer !== undefined && result === 'rate_limited') {
        // Past the limit all the same (another app on the key, or a clock apart): everyone waits.
        const wait = retryAfterMs(answer.retryAfter, this.#clock.now()) ?? this.#defaultRetryAfter
        log?.warn({ endpoint, waitMs: wait }, 'g2sentry: the Partner API answered 429; pausing every request')
        await this.#limiter.pause(wait)
        if (++limited > retries + 3) throw new errors.PARTNER_API_UNAVAILABLE(path, 'still rate limited')
        continue
      }
      if (answer !== undefined && result !== 'server_error') return answer
      if (++failures > retries) throw new errors.PARTNER_API_UNAVAILABLE(path, answer === undefined ? result : `HTTP ${answer.status}`)
      const wait = Math.floor(Math.random() * backoffMs * 2 ** (failures - 1))
      log?.warn({ endpoint, result, status: answer?.status, attempt: failures, waitMs: wait }, 'g2sentry: Partner API request failed; backing off')
      await this.#clock.sleep(wait)
    }
  }
}

function resultOf (status: number): RequestResult {
  if (status >= 200 && status < 300) return 'ok'
  if (status === 404) return 'not_found'
  if (status === 401 || status === 403) return 'unauthorized'
  if (status === 429) return 'rate_limited'
  if (status >= 500) return 'server_error'
  return 'client_error'
}
