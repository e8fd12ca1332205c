import createError from '@fastify/error'

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
  INVALID_REQUEST: createError('FST_G2SENTRY_INVALID_REQUEST', '%s', 400),
  JOB_NOT_FOUND: createError('FST_G2SENTRY_JOB_NOT_FOUND', 'Job %d has no events', 404),
  MIGRATION_REFUSED: createError('FST_G2SENTRY_MIGRATION_REFUSED', '%s', 500),
  PARTNER_CREDENTIALS_REFUSED: createError('FST_G2SENTRY_PARTNER_CREDENTIALS_REFUSED', 'G2 Sentry refused the partner key and secret (HTTP %d at %s)', 500),
  PARTNER_API_UNAVAILABLE: createError('FST_G2SENTRY_PARTNER_API_UNAVAILABLE', 'G2 Sentry\'s Partner API did not answer %s: %s', 503),
  INVALID_LEASE: createError('FST_G2SENTRY_INVALID_LEASE', 'Invalid lease request: %s', 500)
} as const
