// The forwarder: a consumer that POSTs each projection change to the user's URL, signed the way
// G2 Sentry signs its callbacks, one at a time in seq order, until the receiver answers 2xx.
import type { JobChange } from '../plugin/change-feed.js'
import { signBody } from '../domain/verify-signature.js'
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
  const { url: _url, secret: _secret, timeoutMs: _timeout, name, ...consumerOptions } = options
  resolveConsumerOptions(name ?? 'forwarder', forwardHandler, consumerOptions)
}

/**
 * The handler that POSTs one change as JSON `{ seq, jobId, eventType, status, jobName, receivedAt }`
 * with `X-Signature` = hex HMAC-SHA256 of the body; anything but a 2xx within `timeoutMs` throws,
 * so the consumer retries it.
 */
export function forwardHandler (options: Pick<ForwardOptions, 'url' | 'secret' | 'timeoutMs'>): ConsumerHandler<'changes'> {
  const { url, secret } = options
  const timeoutMs = options.timeoutMs ?? 10_000
  const where = redactUrl(url)
  return async (change: JobChange, { signal }) => {
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
      response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-signature': signBody(body, secret) },
        body,
        signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
        redirect: 'manual'
      })
    } catch (error) {
      const failure = error as Error & { cause?: { code?: string; message?: string } }
      const reason = failure.name === 'TimeoutError'
        ? `no answer within ${timeoutMs} ms`
        : failure.cause?.code ?? failure.cause?.message ?? failure.message
      throw new errors.FORWARD_FAILED(where, reason)
    }
    // Read the answer so the connection can be reused.
    await response.arrayBuffer().catch(() => {})
    if (response.status < 200 || response.status > 299) throw new errors.FORWARD_FAILED(where, `HTTP ${response.status}`)
  }
}
