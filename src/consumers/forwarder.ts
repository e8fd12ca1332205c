// The forwarder: a consumer that POSTs each projection change to the user's URL, signed the way
// G2 Sentry signs its callbacks, one at a time in seq order, until the receiver answers 2xx.
import type { JobChange } from '../domain/job-change.js'
import { signBody } from '../domain/verify-signature.js'
import { Webhook } from 'standardwebhooks'
import { errors } from '../errors.js'
import { resolveConsumerOptions, type ConsumerHandler, type ConsumerOptions } from './consumer.js'

export interface ForwardOptions extends Omit<ConsumerOptions<'changes'>, 'deliver'> {
  /** Where each change is POSTed (http or https). */
  url: string
  /** The key of the `X-Signature` HMAC-SHA256 over the body; never logged. */
  secret: string
  /** The consumer's name (default `forwarder`): its checkpoint, lease and metrics go by it. */
  name?: string
  /** How long one attempt may take, in ms (default 10000). */
  timeoutMs?: number
  /**
   * How requests are signed: `x-signature` (default), the hex HMAC-SHA256 of the body in
   * `X-Signature`, as G2 Sentry signs its callbacks; or `standard-webhooks`, the Standard
   * Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`; `secret` then is a
   * `whsec_…` key), which ready-made verifiers check, with a replay window.
   */
  signing?: 'x-signature' | 'standard-webhooks'
}

/** The URL without credentials, query or fragment: what logs and errors may show. */
export function redactUrl (url: string): string {
  try {
    const parsed = new URL(url)
    return `${parsed.origin}${parsed.pathname}`
  } catch {
    return '(invalid URL)'
  }
}

/** Checks the forwarder's own options (FST_G2SENTRY_INVALID_OPTION); the consumer checks the rest. */
export function checkForwardOptions (options: ForwardOptions): void {
  const fail = (message: string): never => { throw new errors.INVALID_OPTION(`forward.${message}`) }
  if (typeof options !== 'object' || options === null) throw new errors.INVALID_OPTION('forward must be an object with url and secret')
  let url: URL | undefined
  try {
    url = new URL(options.url)
  } catch {}
  if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) fail('url must be an http:// or https:// URL')
  if (typeof options.secret !== 'string' || options.secret === '') fail('secret must be a non-empty string')
  if (options.timeoutMs !== undefined && !(Number.isSafeInteger(options.timeoutMs) && options.timeoutMs > 0)) fail('timeoutMs must be a positive integer')
  if (options.signing !== undefined && options.signing !== 'x-signature' && options.signing !== 'standard-webhooks') fail('signing must be "x-signature" or "standard-webhooks"')
  if (options.signing === 'standard-webhooks') {
    try {
      new Webhook(options.secret)
    } catch {
      fail('secret must be a Standard Webhooks key (whsec_ followed by base64) when signing is "standard-webhooks"')
    }
  }
  const { url: _url, secret: _secret, timeoutMs: _timeout, signing: _signing, name, ...consumerOptions } = options
  resolveConsumerOptions(name ?? 'forwarder', forwardHandler, consumerOptions)
}

/** What the forwarder fetches, and what may never appear in a log line or a stored error. */
interface Target {
  /** The URL without `user:password@` (fetch refuses credentials in a URL). */
  href: string
  /** `Basic <base64(user:password)>` when the URL carried credentials. */
  authorization: string | undefined
  /** The password, the query string and each query value, as written and decoded, longest first. */
  secrets: string[]
}

function targetOf (url: string): Target {
  const parsed = new URL(url)
  const decode = (text: string): string => {
    try {
      return decodeURIComponent(text)
    } catch {
      return text
    }
  }
  const user = decode(parsed.username)
  const password = decode(parsed.password)
  const authorization = parsed.username === '' && parsed.password === ''
    ? undefined
    : `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
  const secrets = [parsed.password, password, parsed.search, parsed.search.slice(1), ...[...parsed.searchParams.values()].flatMap((value) => [value, encodeURIComponent(value)])]
  if (authorization !== undefined) secrets.push(authorization.slice(6))
  parsed.username = ''
  parsed.password = ''
  return { href: parsed.href, authorization, secrets: [...new Set(secrets.filter((text) => text.length > 0))].sort((a, b) => b.length - a.length) }
}

/**
 * The handler that POSTs one change as JSON `{ seq, jobId, eventType, status, jobName, receivedAt }`
 * with `X-Signature` = hex HMAC-SHA256 of the body; anything but a 2xx within `timeoutMs` throws,
 * so the consumer retries it. Credentials in the URL (`https://user:password@host/path`) are sent
 * as `Authorization: Basic`; the error it throws names the URL without credentials or query.
 */
export function forwardHandler (options: Pick<ForwardOptions, 'url' | 'secret' | 'timeoutMs' | 'signing'>): ConsumerHandler<'changes'> {
  const { secret } = options
  const webhook = options.signing === 'standard-webhooks' ? new Webhook(secret) : undefined
  // The same id on every attempt at a change, so a receiver can drop a redelivery.
  const signatureHeaders = (body: Buffer, consumer: string, seq: number): Record<string, string> => {
    if (webhook === undefined) return { 'x-signature': signBody(body, secret) }
    const id = `${consumer}-${seq}`
    const at = new Date()
    return { 'webhook-id': id, 'webhook-timestamp': String(Math.floor(at.getTime() / 1000)), 'webhook-signature': webhook.sign(id, at, body) }
  }
  const timeoutMs = options.timeoutMs ?? 10_000
  const target = targetOf(options.url)
  const where = redactUrl(options.url)
  // An error from fetch can quote the URL it was given (its query string included): each secret
  // part is cut out of whatever reason is kept, logged or stored.
  const scrub = (text: string): string => target.secrets.reduce((kept, part) => kept.split(part).join('[redacted]'), text)
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (target.authorization !== undefined) headers.authorization = target.authorization
  return async (change: JobChange, { signal, consumer }) => {
    const body = Buffer.from(JSON.stringify({
      seq: change.seq,
      jobId: change.jobId,
      eventType: change.eventType,
      status: change.status,
      jobName: change.jobName,
      receivedAt: change.receivedAt
    }))
    let response: Response
    try {
      response = await fetch(target.href, {
        method: 'POST',
        headers: { ...headers, ...signatureHeaders(body, consumer, change.seq) },
        body,
        signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
        redirect: 'manual'
      })
    } catch (error) {
      const failure = error as Error & { cause?: { code?: string; message?: string } }
      const reason = failure.name === 'TimeoutError'
        ? `no answer within ${timeoutMs} ms`
        : failure.cause?.code ?? failure.cause?.message ?? failure.message
      throw new errors.FORWARD_FAILED(where, scrub(reason))
    }
    // Read the answer so the connection can be reused.
    await response.arrayBuffer().catch(() => {})
    if (response.status < 200 || response.status > 299) throw new errors.FORWARD_FAILED(where, `HTTP ${response.status}`)
  }
}
