// A client of G2 Sentry's Partner API (login, refresh, job status) on Node's fetch, within the
// partner key's rate limit. See docs/design.md, "Reconciliation".
import { setMaxListeners } from 'node:events'
import { errors } from '../errors.js'
import { systemClock, type Clock } from './clock.js'
import { memoryWindow, RateLimiter, type RequestWindow } from './rate-limiter.js'
import { judgeStatusAnswer, type StatusAnswer } from '../domain/status-answer.js'

/** G2 Sentry's documented lifetimes, used when a token's `exp` cannot be read. */
export const ACCESS_TOKEN_TTL_MS = 15 * 60_000
export const REFRESH_TOKEN_TTL_MS = 7 * 24 * 3_600_000
/** The longest pause a 429's Retry-After can impose (15 minutes): a longer one is cut to this. */
export const MAX_RETRY_AFTER_MS = 15 * 60_000
/** The most bytes read of any answer (16 KiB): past it the request is aborted and the answer unusable. */
export const MAX_ANSWER_BYTES = 16 * 1024

/** How a request ended, as the `result` label of the request metric. */
export type RequestResult = 'ok' | 'not_found' | 'unauthorized' | 'rate_limited' | 'server_error' | 'client_error' | 'redirect' | 'too_large' | 'timeout' | 'network_error' | 'aborted'
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
  /** The longest pause a Retry-After may impose (default and most: `MAX_RETRY_AFTER_MS`). */
  maxRetryAfterMs?: number
  /** The most bytes read of an answer (default `MAX_ANSWER_BYTES`). */
  maxAnswerBytes?: number
  clock?: Clock
  log?: ClientLogger
  /** Called once per HTTP request sent, with how it ended (metrics). */
  onRequest?: (endpoint: Endpoint, result: RequestResult) => void
}

/** The answer to a status request: the job's status and the exact bytes G2 Sentry sent, or that it does not know the job. */
export type StatusResult = { found: true; answer: StatusAnswer; body: Buffer } | { found: false }

interface Tokens { access: string; accessExpires: number; refresh: string; refreshExpires: number }
interface Answer {
  status: number
  /** Undefined when the answer was larger than the limit (not read further). */
  body: Buffer | undefined
  retryAfter: string | null
  location: string | null
  date: string | null
  /** 5xx answers that came before this one (all attempts failed when it is itself a 5xx). */
  attempts: number
}

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

/** How far apart (ms) the local clock and an answer's `Date` header may be before the header is believed. */
export const CLOCK_TOLERANCE_MS = 5_000

/**
 * How long a token lives from now, judged by G2 Sentry's clock: its `exp` less the answer's
 * `Date` header when the local clock is more than `CLOCK_TOLERANCE_MS` away from that header
 * (less a second more, the header's resolution), else less the local time. The documented
 * `fallback` when `exp` is unreadable or the result is not positive, so a skewed clock never
 * makes every token look spent.
 */
export function tokenLifetime (token: string, serverDate: string | null, localNow: number, fallback: number): number {
  const exp = tokenExpiry(token)
  const server = serverDate === null ? NaN : Date.parse(serverDate)
  const skewed = !Number.isNaN(server) && Math.abs(localNow - server) > CLOCK_TOLERANCE_MS
  const lifetime = exp === undefined ? NaN : skewed ? exp - server - 1000 : exp - localNow
  return Number.isFinite(lifetime) && lifetime > 0 ? lifetime : fallback
}

/** Retry-After in ms: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function retryAfterMs (value: string | null, now: number): number | undefined {
  if (value === null || value.trim() === '') return undefined
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(at - now, 0)
}

/** The origin a redirect pointed to (never its path or query, which may carry anything). */
function originOf (location: string | null, base: string): string {
  if (location === null) return 'nowhere (no Location header)'
  try {
    return new URL(location, base).origin
  } catch {
    return 'an unreadable Location'
  }
}

/**
 * Reads at most `max` bytes of a body; undefined (and the request aborted) past that, so a huge
 * answer is never held in memory.
 */
async function readBounded (response: Response, max: number, abort: AbortController): Promise<Buffer | undefined> {
  const declared = Number(response.headers.get('content-length') ?? NaN)
  if (declared > max || response.body === null) {
    abort.abort()
    return response.body === null ? Buffer.alloc(0) : undefined
  }
  const chunks: Uint8Array[] = []
  let size = 0
  const reader = response.body.getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > max) {
      abort.abort()
      return undefined
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks)
}

/**
 * Logs in with the partner key and secret, refreshes the access token shortly before it expires
 * (its lifetime judged by G2 Sentry's clock; 15 minutes when unreadable) and logs in again when
 * the refresh token is refused or the refresh gives nothing usable. Every request, login and
 * refresh included, first takes a slot of the rate limiter; a 429 pauses every request for its
 * Retry-After (at most `MAX_RETRY_AFTER_MS`); 5xx answers, timeouts and network errors are
 * retried with jittered exponential backoff. Redirects are never followed, answers are read up
 * to `MAX_ANSWER_BYTES`, and `close()` aborts every request and wait at once.
 */
export class PartnerApiClient {
  readonly #options: Required<Pick<PartnerApiClientOptions, 'timeoutMs' | 'retries' | 'backoffMs' | 'maxAnswerBytes'>> & PartnerApiClientOptions
  readonly #base: string
  readonly #clock: Clock
  readonly #limiter: RateLimiter
  readonly #defaultRetryAfter: number
  readonly #maxRetryAfter: number
  readonly #closing = new AbortController()
  #tokens: Tokens | undefined
  #authenticating: Promise<Tokens> | undefined
  /** How many logins and refreshes this client made. */
  readonly counts = { logins: 0, refreshes: 0 }

  constructor (options: PartnerApiClientOptions) {
    const windowMs = options.windowMs ?? 60_000
    const limit = options.requestsPerMinute ?? 50
    this.#options = { timeoutMs: 10_000, retries: 3, backoffMs: 500, maxAnswerBytes: MAX_ANSWER_BYTES, ...options }
    this.#base = options.baseUrl.replace(/\/+$/, '')
    this.#clock = options.clock ?? systemClock
    this.#limiter = new RateLimiter(options.window ?? memoryWindow(limit, windowMs), this.#clock)
    this.#defaultRetryAfter = options.defaultRetryAfterMs ?? windowMs / 10
    this.#maxRetryAfter = Math.min(options.maxRetryAfterMs ?? MAX_RETRY_AFTER_MS, MAX_RETRY_AFTER_MS)
    // Every request and wait listens to it (AbortSignal.any keeps weak links): not a leak.
    setMaxListeners(0, this.#closing.signal)
  }

  /** Aborts every request and wait under way; every call after it fails with RECONCILE_STOPPED. */
  close (): void {
    this.#closing.abort(new errors.RECONCILE_STOPPED('the Partner API client was closed'))
  }

  /** Whether `close()` was called. */
  get closed (): boolean {
    return this.#closing.signal.aborted
  }

  /**
   * The job's status at G2 Sentry. Throws PARTNER_API_UNUSABLE_ANSWER when G2 Sentry answered
   * something unusable for this job (an unknown status, another job's, not JSON, a 4xx, a 5xx
   * after the retries, a redirect, an answer too large): the other jobs may still be asked.
   * Throws PARTNER_CREDENTIALS_REFUSED, PARTNER_API_UNAVAILABLE, PARTNER_API_REDIRECTED or
   * RECONCILE_STOPPED for what concerns every job.
   */
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
    if (answer.status === 401) throw new errors.PARTNER_API_UNAVAILABLE(path, 'HTTP 401 with a new access token')
    // `answered` is what the reconciler records for the job: built here, never from a token.
    const unusable = (what: string) => Object.assign(new errors.PARTNER_API_UNUSABLE_ANSWER(path, what), { answered: what })
    if (answer.status >= 300 && answer.status < 400) throw unusable(`HTTP ${answer.status}, a redirect to ${originOf(answer.location, this.#base)} (not followed)`)
    if (answer.status >= 500) throw Object.assign(unusable(`HTTP ${answer.status} after ${answer.attempts} attempts`), { serverError: true })
    if (answer.status !== 200) throw unusable(`HTTP ${answer.status}`)
    if (answer.body === undefined) throw unusable(`HTTP 200 and an answer over ${this.#options.maxAnswerBytes} bytes (not read further)`)
    const judged = judgeStatusAnswer(answer.body, jobId)
    if ('problem' in judged) throw unusable(`HTTP 200 and ${judged.problem}`)
    return { found: true, answer: judged.answer, body: answer.body }
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
      const tokens = answer.status === 200 ? this.#tokensFrom(answer) : undefined
      if (typeof tokens === 'object') {
        this.counts.refreshes++
        return tokens
      }
      // Whatever the refresh gave, a login may still work: never wait for the refresh token to
      // expire. The login is the only request this costs; if it fails too the round stops.
      const refused = answer.status === 400 || answer.status === 401 || answer.status === 403
      const what = answer.status >= 300 && answer.status < 400
        ? `HTTP ${answer.status}, a redirect to ${originOf(answer.location, this.#base)} (not followed)`
        : answer.status === 200 ? `HTTP 200 and ${tokens ?? 'no tokens'}` : `HTTP ${answer.status}`
      this.#options.log?.warn({ endpoint: 'refresh', answered: what }, refused
        ? 'g2sentry: the Partner API refused the refresh token; logging in again'
        : 'g2sentry: the Partner API did not refresh the tokens; logging in again')
    }
    const { partnerKey, partnerSecret } = this.#options
    const path = '/access/login'
    const answer = await this.#send('login', 'POST', path, { 'content-type': 'application/json' }, JSON.stringify({ partnerKey, partnerSecret }))
    if (answer.status === 400 || answer.status === 401 || answer.status === 403) throw new errors.PARTNER_CREDENTIALS_REFUSED(answer.status, path)
    if (answer.status >= 300 && answer.status < 400) throw new errors.PARTNER_API_REDIRECTED(path, answer.status, originOf(answer.location, this.#base))
    if (answer.status !== 200) throw new errors.PARTNER_API_UNAVAILABLE(path, `HTTP ${answer.status}`)
    const tokens = this.#tokensFrom(answer)
    if (typeof tokens === 'string') throw new errors.PARTNER_API_UNAVAILABLE(path, `HTTP 200 and ${tokens}`)
    this.counts.logins++
    return tokens
  }

  /** The tokens of a login or refresh answer, or what is wrong with it. */
  #tokensFrom (answer: Answer): Tokens | string {
    if (answer.body === undefined) return `an answer over ${this.#options.maxAnswerBytes} bytes`
    let body: { accessToken?: unknown; refreshToken?: unknown }
    try {
      body = JSON.parse(answer.body.toString('utf8')) as typeof body
    } catch {
      return 'a body that is not JSON'
    }
    const { accessToken, refreshToken } = body ?? {}
    if (typeof accessToken !== 'string' || typeof refreshToken !== 'string' || accessToken === '' || refreshToken === '') {
      return 'no accessToken and refreshToken'
    }
    const now = this.#clock.now()
    const tokens = {
      access: accessToken,
      accessExpires: now + tokenLifetime(accessToken, answer.date, now, ACCESS_TOKEN_TTL_MS),
      refresh: refreshToken,
      refreshExpires: now + tokenLifetime(refreshToken, answer.date, now, REFRESH_TOKEN_TTL_MS)
    }
    this.#issued.set(tokens, now)
    return tokens
  }

  /**
   * One request through the limiter, with its retries: 429 pauses every request and tries again;
   * 5xx, timeouts and network errors back off with full jitter. Any other answer is returned,
   * and so is the last 5xx once the retries are spent; timeouts and network errors past them throw.
   */
  async #send (endpoint: Endpoint, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
    const { timeoutMs, retries, backoffMs, log, onRequest, maxAnswerBytes } = this.#options
    const closing = this.#closing.signal
    let failures = 0
    let limited = 0
    for (;;) {
      const settle = await this.#limiter.acquire(timeoutMs, closing, (waitMs) => {
        log?.warn({ endpoint, waitMs }, 'g2sentry: waiting for the Partner API\'s rate limit')
      }).catch((error: unknown) => { throw this.#stopped(error) })
      let result: RequestResult
      let answer: Answer | undefined
      let failed = ''
      const abort = new AbortController()
      try {
        const response = await fetch(this.#base + path, {
          method, headers, body, redirect: 'manual', signal: AbortSignal.any([AbortSignal.timeout(timeoutMs), closing, abort.signal])
        })
        const read = await readBounded(response, maxAnswerBytes, abort)
        const h = response.headers
        answer = { status: response.status, body: read, retryAfter: h.get('retry-after'), location: h.get('location'), date: h.get('date'), attempts: failures + 1 }
        result = read === undefined ? 'too_large' : resultOf(response.status)
      } catch (error) {
        result = closing.aborted ? 'aborted' : (error as Error).name === 'TimeoutError' ? 'timeout' : 'network_error'
        const cause = (error as { cause?: { code?: unknown } }).cause?.code
        failed = result === 'timeout' ? `no answer within ${timeoutMs} ms (timeout)` : `a network error${typeof cause === 'string' ? ` (${cause})` : ''}`
      }
      await settle()
      onRequest?.(endpoint, result)
      if (closing.aborted) throw this.#stopped(closing.reason)
      if (answer !== undefined && result === 'rate_limited') {
        // Past the limit all the same (another app on the key, or a clock apart): everyone waits,
        // but never longer than MAX_RETRY_AFTER_MS, whatever the header says.
        const asked = retryAfterMs(answer.retryAfter, this.#clock.now()) ?? this.#defaultRetryAfter
        const wait = Math.min(asked, this.#maxRetryAfter)
        log?.warn({ endpoint, waitMs: wait, retryAfter: answer.retryAfter }, 'g2sentry: the Partner API answered 429; pausing every request')
        await this.#limiter.pause(wait)
        if (++limited > retries + 3) throw new errors.PARTNER_API_UNAVAILABLE(path, 'still rate limited')
        continue
      }
      if (answer !== undefined && (result !== 'server_error' || failures >= retries)) return answer
      if (++failures > retries) throw new errors.PARTNER_API_UNAVAILABLE(path, `${failed}, ${failures} attempts`)
      const wait = Math.floor(Math.random() * backoffMs * 2 ** (failures - 1))
      log?.warn({ endpoint, result, status: answer?.status, attempt: failures, waitMs: wait }, 'g2sentry: Partner API request failed; backing off')
      await this.#clock.sleep(wait, closing).catch((error: unknown) => { throw this.#stopped(error) })
    }
  }

  /** The error to throw once closed (the abort reason), or `error` itself. */
  #stopped (error: unknown): unknown {
    return this.#closing.signal.aborted ? this.#closing.signal.reason : error
  }
}

function resultOf (status: number): RequestResult {
  if (status >= 200 && status < 300) return 'ok'
  if (status >= 300 && status < 400) return 'redirect'
  if (status === 404) return 'not_found'
  if (status === 401 || status === 403) return 'unauthorized'
  if (status === 429) return 'rate_limited'
  if (status >= 500) return 'server_error'
  return 'client_error'
}
