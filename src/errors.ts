import fastifyError from '@fastify/error'
import type { FastifyError } from 'fastify'
import { STATUS_CODES } from 'node:http'

/**
 * One of this plugin's errors: `new errors.BAD_SIGNATURE()` (or without `new`), an `Error` whose
 * `code` and `statusCode` are literal types. Declared here rather than inferred from
 * @fastify/error, whose CommonJS namespace types do not resolve under every `moduleResolution`.
 */
export interface G2SentryErrorConstructor<C extends string = string, S extends number = number> {
  new (...args: unknown[]): FastifyError & { code: C; statusCode: S }
  (...args: unknown[]): FastifyError & { code: C; statusCode: S }
  readonly prototype: FastifyError & { code: C; statusCode: S }
}

/** @fastify/error's `createError`, typed with this package's own declaration. */
function createError<C extends string, S extends number> (code: C, message: string, statusCode: S, Base?: ErrorConstructor): G2SentryErrorConstructor<C, S> {
  return fastifyError(code, message, statusCode, Base)
}

/** Every error this plugin answers or throws, with its code and HTTP status. */
export const errors = {
  INVALID_OPTION: createError('FST_G2SENTRY_INVALID_OPTION', 'fastify-g2sentry: %s', 500),
  MISSING_SIGNATURE: createError('FST_G2SENTRY_MISSING_SIGNATURE', 'The X-Signature header is missing', 401),
  BAD_SIGNATURE: createError('FST_G2SENTRY_BAD_SIGNATURE', 'The X-Signature header is not a hex HMAC-SHA256 of the body for any configured secret', 401),
  INVALID_JSON: createError('FST_G2SENTRY_INVALID_JSON', 'The body is not valid JSON: %s', 400),
  INVALID_PAYLOAD: createError('FST_G2SENTRY_INVALID_PAYLOAD', 'The body is not a G2 Sentry callback: %s', 422),
  BODY_TOO_LARGE: createError('FST_G2SENTRY_BODY_TOO_LARGE', 'The body is larger than %d bytes', 413),
  UNSUPPORTED_MEDIA_TYPE: createError('FST_G2SENTRY_UNSUPPORTED_MEDIA_TYPE', 'Callbacks must be sent as application/json', 415),
  STORAGE_UNAVAILABLE: createError('FST_G2SENTRY_STORAGE_UNAVAILABLE', 'The event could not be stored; retry later', 503),
  COMMIT_UNKNOWN: createError('FST_G2SENTRY_COMMIT_UNKNOWN', 'The connection was lost at COMMIT and whether the events were committed could not be checked: %s', 503),
  INVALID_REQUEST: createError('FST_G2SENTRY_INVALID_REQUEST', '%s', 400),
  JOB_NOT_FOUND: createError('FST_G2SENTRY_JOB_NOT_FOUND', 'Job %d has no events', 404),
  STORE_CLOSED: createError('FST_G2SENTRY_STORE_CLOSED', 'The store is closed', 503),
  QUARANTINE_ALREADY_RETRIED: createError('FST_G2SENTRY_QUARANTINE_ALREADY_RETRIED', 'Quarantined body %d was already appended to the log, as seq %d', 409),
  INVALID_EVENT: createError('FST_G2SENTRY_INVALID_EVENT', 'The event cannot be appended: %s', 500, TypeError),
  MISSING_DRIVER: createError('FST_G2SENTRY_MISSING_DRIVER', '%s', 500),
  STREAM_FULL: createError('FST_G2SENTRY_STREAM_FULL', 'The live stream already has %d clients; retry later', 503),
  READ_TOKEN_REQUIRED: createError('FST_G2SENTRY_READ_TOKEN_REQUIRED', 'This route needs the read token: Authorization: Bearer <token>', 401),
  MIGRATION_REFUSED: createError('FST_G2SENTRY_MIGRATION_REFUSED', '%s', 500),
  PARTNER_CREDENTIALS_REFUSED: createError('FST_G2SENTRY_PARTNER_CREDENTIALS_REFUSED', 'G2 Sentry refused the partner key and secret (HTTP %d at %s)', 500),
  PARTNER_API_UNAVAILABLE: createError('FST_G2SENTRY_PARTNER_API_UNAVAILABLE', 'G2 Sentry\'s Partner API gave no usable answer to %s: %s', 503),
  PARTNER_API_UNUSABLE_ANSWER: createError('FST_G2SENTRY_PARTNER_API_UNUSABLE_ANSWER', 'G2 Sentry answered %s with %s', 502),
  PARTNER_API_REDIRECTED: createError('FST_G2SENTRY_PARTNER_API_REDIRECTED', 'G2 Sentry\'s Partner API answered %s with HTTP %d, a redirect to %s; redirects are never followed (is the base URL right?)', 502),
  RECONCILE_STOPPED: createError('FST_G2SENTRY_RECONCILE_STOPPED', 'The reconciler is stopping: %s', 503),
  INVALID_LEASE: createError('FST_G2SENTRY_INVALID_LEASE', 'Invalid lease request: %s', 500),
  CONSUMER_NOT_FOUND: createError('FST_G2SENTRY_CONSUMER_NOT_FOUND', 'no consumer named %s', 404),
  FORWARD_FAILED: createError('FST_G2SENTRY_FORWARD_FAILED', 'Forwarding to %s failed: %s', 502),
  UNREACHABLE: createError('FST_G2SENTRY_UNREACHABLE', 'could not reach %s (%s): is the server running there?', 500),
  NO_LOG: createError('FST_G2SENTRY_NO_LOG', 'no g2sentry log at %s', 500),
  LOG_NOT_MIGRATED: createError('FST_G2SENTRY_LOG_NOT_MIGRATED',
    'the g2sentry log at %s is behind this version of fastify-g2sentry (not applied: %s); opened read-only, it is not migrated: start the server on it once, or run g2sentry rebuild --db on it, to migrate it', 500),
  CONSUMER_HELD: createError('FST_G2SENTRY_CONSUMER_HELD',
    'consumer %s is running: %s holds its lease until %s; stop that instance first, or use --force (a running instance then starts it again as a new consumer)', 409),
  NAMESPACE_TAKEN: createError('FST_G2SENTRY_NAMESPACE_TAKEN', 'fastify-g2sentry is already registered %s in this app: give each registration its own namespace', 500),
  DATABASE_OPEN_FAILED: createError('FST_G2SENTRY_DATABASE_OPEN_FAILED', 'could not open the PostgreSQL log at %s: %s', 500),
  REDACTION_REFUSED: createError('FST_G2SENTRY_REDACTION_REFUSED',
    'job %d was not redacted: its row %d does not verify (%s); erasing it would hide that, run g2sentry verify', 409),
  ARCHIVE_REFUSED: createError('FST_G2SENTRY_ARCHIVE_REFUSED', 'the log was not archived: %s', 409)
} as const

/**
 * The body Fastify would send for `error`. An error handler that sends the error object itself
 * hands it on to the parent scope's handler, which logs it once more: sending this body instead
 * keeps one log line per failure, the one written where the cause is known.
 */
export function errorBody (error: FastifyError): { statusCode: number; code: string; error: string; message: string } {
  const statusCode = error.statusCode ?? 500
  return { statusCode, code: error.code, error: STATUS_CODES[statusCode] ?? 'Error', message: error.message }
}
