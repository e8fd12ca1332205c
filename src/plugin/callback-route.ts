import { Type } from '@sinclair/typebox'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { decodeCallback } from '../domain/decode-callback.js'
import { errorBody, errors } from '../errors.js'
import type { G2SentryMetrics } from './metrics.js'
import type { ResolvedOptions } from './options.js'
import type { Committed } from './post-commit.js'
import { CallbackPayload } from '../domain/callback.js'
import { CallbackResponse, errorResponses, routeDocs } from './schemas.js'
import type { G2SentryStore } from '../store/contract.js'
import type { AppendResult } from '../domain/types.js'
import { verifySignature } from '../domain/verify-signature.js'

const EMPTY = Buffer.alloc(0)

/**
 * The callback route, in its own encapsulated scope: its JSON parser keeps the exact bytes
 * (read once, never parsed before the signature is checked) without touching the user's app.
 */
export async function callbackRoute (app: FastifyInstance, opts: {
  options: ResolvedOptions
  store: G2SentryStore
  metrics: G2SentryMetrics | undefined
  afterCommit: (committed: Committed, request: FastifyRequest) => void | Promise<void>
}): Promise<void> {
  const { options: { secrets, callbackPath, bodyLimit, callbackRoute, openapi }, store, metrics, afterCommit } = opts

  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'buffer', bodyLimit }, (_request, body, done) => done(null, body))

  app.setErrorHandler((error: FastifyError, request, reply) => {
    const known = translate(error, bodyLimit)
    metrics?.rejected(known.code)
    // A 503 was logged with its cause where the store failed: its body is sent as it is, so that
    // Fastify does not log it a second time.
    if (known.code === 'FST_G2SENTRY_STORAGE_UNAVAILABLE') return reply.code(503).send(errorBody(known))
    // The client went away before its body had arrived (or was cut off by requestTimeout): no
    // one reads an answer, and under a slow-client attack a stack trace per connection would
    // flood the log.
    if (known.code === 'ECONNRESET') {
      request.log.warn('g2sentry: callback aborted: the client went away before its body arrived')
      return reply.code(400).send(errorBody(known))
    }
    const statusCode = known.statusCode ?? 500
    if (statusCode >= 500) {
      request.log.error({ err: error }, 'g2sentry: callback failed')
      return reply.code(statusCode).send(known)
    }
    // A refused callback is one line without a stack (anyone on the internet can send them, and
    // a stack per request would fill the log); the route logged a signature refusal already.
    if (statusCode !== 401) request.log.warn({ code: known.code }, 'g2sentry: callback refused')
    return reply.code(statusCode).send(errorBody(known))
  })

  // A plain (callback) handler: no async function, promise chain or spread per request beyond
  // the append's own promise. Measured with `npm run bench` (docs/benchmarks.md).
  app.post(callbackPath, {
    ...callbackRoute,
    bodyLimit,
    schema: {
      ...routeDocs(openapi, 'Receive a G2 Sentry callback',
        'The exact bytes are checked against X-Signature before anything is parsed, then appended to the event log; 200 only once committed. A 401 keeps nothing; a signed body that is not a callback is quarantined (400, 422).'),
      headers: Type.Object({ 'x-signature': Type.String({ description: 'Hex HMAC-SHA256 of the raw body, keyed with the callback secret' }) }),
      body: CallbackPayload,
      response: {
        200: { ...CallbackResponse, description: 'Stored, with its outcome: applied, duplicate, stale or unsupported' },
        ...errorResponses({
          400: 'Signed, but not JSON (quarantined)',
          401: 'X-Signature missing, malformed, or not from any configured secret (nothing kept)',
          413: 'Body larger than bodyLimit',
          415: 'Not application/json',
          422: 'Signed JSON that is not a G2 Sentry callback (quarantined)',
          503: 'Could not be stored; G2 Sentry retries it'
        })
      }
    },
    // The schemas above document the route; the route checks the request itself, in the order
    // the design needs (the signature over the raw bytes first), so Fastify validates nothing.
    validatorCompiler: () => () => true,
    serializerCompiler: ({ httpStatus }) => httpStatus === '200' ? serializeResult : JSON.stringify
  }, (request: FastifyRequest, reply: FastifyReply) => {
    // Fastify skips the content-type check for an empty body without a Content-Type.
    if (request.headers['content-type'] === undefined) throw new errors.UNSUPPORTED_MEDIA_TYPE()
    const rawBody = Buffer.isBuffer(request.body) ? request.body : EMPTY
    const header = request.headers['x-signature']
    const check = verifySignature(rawBody, header, secrets)
    if (!check.valid) {
      request.log.warn({ reason: check.reason }, 'g2sentry: callback refused, bad signature')
      throw check.reason === 'missing' ? new errors.MISSING_SIGNATURE() : new errors.BAD_SIGNATURE()
    }
    metrics?.secretMatched(check.secretIndex)
    const signature = header as string
    const receivedAt = Date.now()

    const decoded = decodeCallback(rawBody)
    if (!decoded.ok) {
      store.quarantine({
        reason: decoded.reason,
        detail: decoded.detail,
        rawBody,
        signature,
        contentType: request.headers['content-type'] ?? null,
        receivedAt
      }).then(() => {
        reply.send(decoded.reason === 'invalid_json' ? new errors.INVALID_JSON(decoded.detail) : new errors.INVALID_PAYLOAD(decoded.detail))
      }, (err: unknown) => { storageFailed(request, reply, err) })
      return
    }

    const { event } = decoded
    store.append({
      jobId: event.jobId,
      eventType: event.eventType,
      jobName: event.jobName,
      jobStatus: event.jobStatus,
      guardianPhone: event.guardianPhone,
      rawBody,
      signature,
      receivedAt
    }).then((result) => {
      request.log.info({ jobId: result.jobId, seq: result.seq, outcome: result.outcome, secretIndex: check.secretIndex }, 'g2sentry: callback stored')
      // The post-commit path (metrics, feed, onEvent) answers only once `onEvent` is done.
      const pending = afterCommit({ result, event, receivedAt, source: 'callback' }, request)
      if (pending === undefined) reply.send(result)
      else pending.then(() => reply.send(result), () => reply.send(result))
    }, (err: unknown) => { storageFailed(request, reply, err) })
  })
}

/**
 * The 200 answer, written by hand: every field is an integer or one of a fixed set of names
 * (outcomes, statuses), so nothing needs escaping. Same JSON as the CallbackResponse schema gives.
 */
function serializeResult (result: AppendResult): string {
  return `{"outcome":"${result.outcome}","seq":${result.seq},"jobId":${result.jobId},"status":${result.status === null ? 'null' : `"${result.status}"`}}`
}

function storageFailed (request: FastifyRequest, reply: FastifyReply, err: unknown): void {
  request.log.error({ err }, 'g2sentry: storage failed, answering 503 so the sender retries')
  reply.send(new errors.STORAGE_UNAVAILABLE())
}

/** Fastify's own body errors, answered with this plugin's codes. */
function translate (error: FastifyError, bodyLimit: number): FastifyError {
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return new errors.BODY_TOO_LARGE(bodyLimit)
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return new errors.UNSUPPORTED_MEDIA_TYPE()
    default: return error
  }
}
