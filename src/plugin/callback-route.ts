import type { FastifyError, FastifyInstance, FastifyRequest } from 'fastify'
import { decodeCallback } from '../domain/decode-callback.js'
import { errorBody, errors } from '../errors.js'
import type { G2SentryMetrics } from './metrics.js'
import type { ResolvedOptions } from './options.js'
import type { Committed } from './post-commit.js'
import { CallbackResponse } from './schemas.js'
import type { G2SentryStore } from '../domain/types.js'
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
  committed: (committed: Committed, request: FastifyRequest) => Promise<void>
}): Promise<void> {
  const { options: { secrets, callbackPath, bodyLimit }, store, metrics, committed } = opts

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
    if (known.statusCode === undefined || known.statusCode >= 500) request.log.error({ err: error }, 'g2sentry: callback failed')
    reply.code(known.statusCode ?? 500).send(known)
  })

  app.post(callbackPath, {
    bodyLimit,
    schema: { response: { 200: CallbackResponse } }
  }, async (request: FastifyRequest) => {
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
      await store.quarantine({
        reason: decoded.reason,
        detail: decoded.detail,
        rawBody,
        signature,
        contentType: request.headers['content-type'] ?? null,
        receivedAt
      }).catch(storageFailed(request))
      throw decoded.reason === 'invalid_json' ? new errors.INVALID_JSON(decoded.detail) : new errors.INVALID_PAYLOAD(decoded.detail)
    }

    const result = await store.append({ ...decoded.event, rawBody, signature, receivedAt }).catch(storageFailed(request))
    request.log.info({ jobId: result.jobId, seq: result.seq, outcome: result.outcome, secretIndex: check.secretIndex }, 'g2sentry: callback stored')
    await committed({ result, event: decoded.event, receivedAt, source: 'callback' }, request)
    return result
  })
}

function storageFailed (request: FastifyRequest) {
  return (err: unknown): never => {
    request.log.error({ err }, 'g2sentry: storage failed, answering 503 so the sender retries')
    throw new errors.STORAGE_UNAVAILABLE()
  }
}

/** Fastify's own body errors, answered with this plugin's codes. */
function translate (error: FastifyError, bodyLimit: number): FastifyError {
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return new errors.BODY_TOO_LARGE(bodyLimit)
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return new errors.UNSUPPORTED_MEDIA_TYPE()
    default: return error
  }
}
