import type { RouteShorthandOptions } from 'fastify'

/**
 * Route options a user may put on the plugin's routes (the callback route, the job routes, the
 * metrics route): hooks such as `onRequest` for authentication, `config` for other plugins (e.g.
 * `{ rateLimit: false }` for @fastify/rate-limit), `logLevel`.
 */
export type G2SentryRouteOptions = Pick<RouteShorthandOptions,
  'onRequest' | 'preParsing' | 'preValidation' | 'preHandler' | 'preSerialization' | 'onSend' | 'onResponse' |
  'onError' | 'onTimeout' | 'config' | 'logLevel' | 'constraints'>
