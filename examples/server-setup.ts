// What the example server sets up around the plugin, kept apart so that the tests build a server
// exactly this way (with shorter timeouts): timeouts that cut off slow clients, a read token for
// the routes that show jobs, and request log lines that never show that token.
// In your own app, import from 'fastify-g2sentry' instead of '../src/index.js'.
import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyHttpOptions, FastifyRequest, onRequestHookHandler } from 'fastify'
import type { Server } from 'node:http'
import { errors } from '../src/index.js'

export interface Timeouts {
  /** The whole request (headers and body) must have arrived within this many ms, else 408 and the connection is closed. */
  requestTimeout: number
  /** A connection on which nothing moves for this many ms is closed (the live stream sends a comment every 15 s). */
  connectionTimeout: number
  /** How often Node looks for requests past `requestTimeout`, in ms. */
  checkEvery: number
}

/** The example server's: a trickling body is cut off within 25 s, a silent connection after 60 s. */
export const TIMEOUTS: Timeouts = { requestTimeout: 20_000, connectionTimeout: 60_000, checkEvery: 5_000 }

/**
 * Fastify server options with these timeouts. `requestTimeout` is also given to Node's server as
 * it is created (`http`): on Node 20.20 with Fastify 5.12, Fastify's option alone (set on the
 * server after it is created) never cut off a body sent a byte a second.
 */
export function timeoutOptions ({ requestTimeout, connectionTimeout, checkEvery }: Timeouts = TIMEOUTS): FastifyHttpOptions<Server> {
  return { requestTimeout, connectionTimeout, http: { requestTimeout, connectionsCheckingInterval: checkEvery } }
}

const sha256 = (text: string) => createHash('sha256').update(text).digest()

/** The query string of a request target, as written (without the `?`); '' when it has none. */
const queryOf = (url: string): string => {
  const at = url.indexOf('?')
  return at === -1 ? '' : url.slice(at + 1)
}

/** A query parameter's name as a server decodes it (`%74oken` and `to%6Ben` are both `token`). */
function decodedName (part: string): string {
  const name = part.split('=', 1)[0] as string
  try {
    return decodeURIComponent(name.replace(/\+/g, ' '))
  } catch {
    return name
  }
}

/**
 * An `onRequest` hook that lets a request through only with `Authorization: Bearer <token>`,
 * or, on the paths in `queryTokenPaths` (the live stream: EventSource cannot send headers),
 * with `?token=<token>`, its name and value decoded whatever their percent-encoding (and only
 * when it is given once). Compared in constant time (both sides hashed to the same length).
 */
export function requireReadToken (token: string, options: { queryTokenPaths?: readonly string[] } = {}): onRequestHookHandler {
  const expected = sha256(token)
  const queryTokenPaths = new Set(options.queryTokenPaths ?? [])
  return async (request: FastifyRequest) => {
    const header = request.headers.authorization
    let given = typeof header === 'string' && /^Bearer /i.test(header) ? header.slice(7).trim() : undefined
    if (given === undefined && queryTokenPaths.has(request.routeOptions.url ?? '')) {
      // Read from the URL itself, the way withoutToken reads it, not from whatever query parser the app set.
      const values = new URLSearchParams(queryOf(request.url)).getAll('token')
      if (values.length === 1) given = values[0]
    }
    if (given === undefined || !timingSafeEqual(sha256(given), expected)) throw new errors.READ_TOKEN_REQUIRED()
  }
}

/**
 * `url` with the value of every query parameter whose decoded name is `token` (in any case,
 * however percent-encoded: `?%74oken=`, `?to%6Ben=`) replaced by `[redacted]`.
 */
export function withoutToken (url: string): string {
  const query = queryOf(url)
  if (query === '') return url
  const parts = query.split('&').map((part) => decodedName(part).toLowerCase() === 'token'
    ? `${part.split('=', 1)[0] as string}=[redacted]`
    : part)
  return `${url.slice(0, url.length - query.length)}${parts.join('&')}`
}

/** Fastify's request log fields, with the read token taken out of the URL. */
export function requestLogFields (request: FastifyRequest): Record<string, unknown> {
  return {
    method: request.method,
    url: withoutToken(request.url),
    host: request.host,
    remoteAddress: request.ip,
    remotePort: request.socket?.remotePort
  }
}

/** A variable of the example server's environment that cannot be used: its message is one line naming it. */
export class EnvironmentError extends Error {}

const isSet = (value: string | undefined): value is string => value !== undefined && value !== ''

/**
 * The whole number in the variable `name` of `env`, from `min` to `max`; `fallback` when it is
 * unset or empty. Throws `EnvironmentError` naming the variable.
 */
export function integerVariable<F extends number | undefined> (env: NodeJS.ProcessEnv, name: string, fallback: F,
  { min = 1, max = Number.MAX_SAFE_INTEGER }: { min?: number; max?: number } = {}): number | F {
  const value = env[name]
  if (!isSet(value)) return fallback
  const n = Number(value)
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `from ${min} to ${max}`
    throw new EnvironmentError(`${name} must be a whole number ${range}, got "${value.slice(0, 40)}"`)
  }
  return n
}

/**
 * The http(s) URL in the variable `name` of `env`, undefined when it is unset or empty. Throws
 * `EnvironmentError` naming the variable, never quoting its value (a URL can carry a password).
 */
export function urlVariable (env: NodeJS.ProcessEnv, name: string, example: string): string | undefined {
  const value = env[name]
  if (!isSet(value)) return undefined
  let url: URL | undefined
  try {
    url = new URL(value)
  } catch {}
  // `127.0.0.1:3100` parses, as a URL of the scheme "127.0.0.1:".
  if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') {
    throw new EnvironmentError(`${name} must be an http:// or https:// URL, e.g. ${example}`)
  }
  return value
}
