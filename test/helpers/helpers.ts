/**
 * Shared helpers for the plugin's HTTP tests: an app on a real SQLite file in the test's
 * directory and a delivery signed over its exact bytes; the payloads are the fixtures
 * (test/helpers/fixtures.ts), re-exported here.
 */
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import type { Test } from 'tap'
import g2sentry from '../../src/index.js'
import type { G2SentryOptions } from '../../src/plugin/options.js'
import type { LogRow, QuarantineRow } from '../../src/domain/types.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { bytesOf, SECRET } from './fixtures.js'

export * from './fixtures.js'

export const CALLBACK_PATH = '/callbacks/g2sentry'

export interface BuildOptions extends Partial<G2SentryOptions> {
  /** Where Fastify's logger writes (every level, from trace up); no logger when absent. */
  logStream?: Writable
}

/**
 * A ready Fastify app with the plugin registered with `secret: 'test-secret'` on a fresh SQLite
 * file in `t.testdir()`, unless the options say otherwise; closed when the test ends.
 * Giving `store` (or `database`) leaves the default database out.
 */
export async function buildApp (t: Test, options: BuildOptions = {}): Promise<FastifyInstance> {
  const { logStream, ...pluginOptions } = options
  const app = logStream === undefined
    ? Fastify({ logger: false })
    : Fastify({ logger: { level: 'trace', stream: logStream } })
  const defaults: Partial<G2SentryOptions> = { secret: SECRET }
  if (!('database' in pluginOptions) && !('store' in pluginOptions)) defaults.database = join(t.testdir(), 'g2.db')
  app.register(g2sentry, { ...defaults, ...pluginOptions } as G2SentryOptions)
  t.teardown(() => app.close())
  await app.ready()
  return app
}

/** Every line written to it, kept in memory for log assertions. */
export function memoryStream (): { stream: Writable; lines: string[] } {
  const lines: string[] = []
  let partial = ''
  const stream = new Writable({
    write (chunk: Buffer | string, _encoding, callback) {
      const parts = (partial + chunk.toString()).split('\n')
      partial = parts.pop() ?? ''
      lines.push(...parts.filter((line) => line.length > 0))
      callback()
    }
  })
  return { stream, lines }
}

export interface PostOptions {
  /** Sign with this secret instead of `test-secret`. */
  secret?: string
  /** Send this `X-Signature` verbatim instead of the computed one; `null` sends no header. */
  signature?: string | null
  /** Default `application/json`; `null` sends no Content-Type. */
  contentType?: string | null
  /** Extra headers. */
  headers?: Record<string, string | string[]>
  /** Default `/callbacks/g2sentry`. */
  url?: string
}

/** POSTs a callback whose `X-Signature` is the HMAC of exactly the bytes sent. */
export async function post (app: FastifyInstance, payload: unknown, options: PostOptions = {}): Promise<LightMyRequestResponse> {
  const body = bytesOf(payload)
  const headers: Record<string, string | string[]> = {}
  const contentType = options.contentType === undefined ? 'application/json' : options.contentType
  if (contentType !== null) headers['content-type'] = contentType
  const signature = options.signature === undefined ? signBody(body, options.secret ?? SECRET) : options.signature
  if (signature !== null) headers['x-signature'] = signature
  return app.inject({
    method: 'POST',
    url: options.url ?? CALLBACK_PATH,
    headers: { ...headers, ...options.headers },
    payload: body
  })
}

/** The whole event log, in seq order. */
export function logRows (app: FastifyInstance): Promise<LogRow[]> {
  return app.g2sentry.store.readLog({ limit: 100 })
}

/** Every quarantined delivery, in order. */
export function quarantineRows (app: FastifyInstance): Promise<QuarantineRow[]> {
  return app.g2sentry.store.listQuarantine({ limit: 100 })
}
