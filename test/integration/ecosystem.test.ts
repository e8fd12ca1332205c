// The plugin registered beside the @fastify plugins people use, over real HTTP: what each of them
// does to our routes, and what our routes let them do.
import t, { type Test } from 'tap'
import Fastify from 'fastify'
import cors from '@fastify/cors'
import rateLimit from '@fastify/rate-limit'
import swagger from '@fastify/swagger'
import g2sentry, { type G2SentryOptions } from '../../src/index.js'
import { assigned, memoryStream, post, SECRET } from '../helpers/helpers.js'

t.test('@fastify/cors: a page on another origin can read the live stream', async (t) => {
  const app = Fastify({ logger: false })
  await app.register(cors, { origin: 'https://dashboard.example', exposedHeaders: ['x-request-source'] })
  await app.register(g2sentry, { secret: SECRET, database: ':memory:' })
  app.addHook('onRequest', async (_request, reply) => { reply.header('x-request-source', 'g2') })
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())

  const aborted = new AbortController()
  const stream = await fetch(`${base}/jobs/stream`, { headers: { origin: 'https://dashboard.example' }, signal: aborted.signal })
  t.equal(stream.status, 200)
  t.match(stream.headers.get('content-type'), /^text\/event-stream/)
  t.equal(stream.headers.get('access-control-allow-origin'), 'https://dashboard.example', 'the CORS header reaches the browser')
  t.equal(stream.headers.get('access-control-expose-headers'), 'x-request-source')
  t.equal(stream.headers.get('x-request-source'), 'g2', 'and so does a header any other hook set')
  aborted.abort()
  await stream.body?.cancel().catch(() => {})

  const job = await fetch(`${base}/jobs/1`, { headers: { origin: 'https://dashboard.example' } })
  t.equal(job.headers.get('access-control-allow-origin'), 'https://dashboard.example', 'as on the other job routes')
})

t.test('@fastify/rate-limit registered globally: the callback route can be exempted, and take a log level', async (t) => {
  const log = memoryStream()
  const app = Fastify({ logger: { level: 'info', stream: log.stream } })
  await app.register(rateLimit, { global: true, max: 2, timeWindow: 60_000 })
  await app.register(g2sentry, { secret: SECRET, database: ':memory:', callbackRoute: { config: { rateLimit: false }, logLevel: 'warn' } })
  t.teardown(() => app.close())
  const answers = []
  for (let job = 1; job <= 5; job++) answers.push((await post(app, assigned(job))).statusCode)
  t.same(answers, [200, 200, 200, 200, 200], 'every delivery from G2 Sentry is stored, past the limit')
  const reads = []
  for (let i = 0; i < 3; i++) reads.push((await app.inject('/jobs/1')).statusCode)
  t.same(reads, [200, 200, 429], 'while the job routes stay limited')
  const infoAboutCallbacks = log.lines.map((line) => JSON.parse(line) as { level: number; req?: { url?: string } })
    .filter((line) => line.level === 30 && line.req?.url === '/callbacks/g2sentry')
  t.same(infoAboutCallbacks, [], 'logLevel warn: no info line for each callback')
})

t.test('callbackRoute must be an object', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await t.rejects(async () => { await app.register(g2sentry, { secret: SECRET, database: ':memory:', callbackRoute: 'no' as never }) },
    { code: 'FST_G2SENTRY_INVALID_OPTION', message: /callbackRoute must be an object/ })
})

interface Operation {
  tags?: string[]
  summary?: string
  parameters?: Array<{ in: string; name: string; required?: boolean }>
  requestBody?: { content: Record<string, { schema: { properties?: Record<string, unknown>; required?: string[] } }> }
  responses: Record<string, { description?: string; content?: Record<string, unknown> }>
}

async function openApiDocument (t: Test, options: Partial<G2SentryOptions> = {}): Promise<Record<string, Record<string, Operation>>> {
  const app = Fastify({ logger: false })
  await app.register(swagger, { openapi: { info: { title: 'app', version: '1' } } })
  await app.register(g2sentry, { secret: SECRET, database: ':memory:', metrics: true, ...options })
  t.teardown(() => app.close())
  await app.ready()
  return (app.swagger() as { paths?: Record<string, Record<string, Operation>> }).paths ?? {}
}

t.test('@fastify/swagger: every route documented, the callback route in full', async (t) => {
  const paths = await openApiDocument(t)
  t.same(Object.keys(paths).sort(), ['/callbacks/g2sentry', '/jobs/', '/jobs/stream', '/jobs/{jobId}', '/jobs/{jobId}/events', '/metrics'])
  for (const [path, methods] of Object.entries(paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      t.same(operation.tags, ['g2sentry'], `${method} ${path} is tagged`)
      t.ok(operation.summary !== undefined && operation.summary !== '', `${method} ${path} has a summary`)
    }
  }
  const callback = paths['/callbacks/g2sentry']?.post as Operation
  const body = callback.requestBody?.content['application/json']?.schema
  t.same(Object.keys(body?.properties ?? {}).sort(), ['eventType', 'guardianPhone', 'jobId', 'jobName', 'jobStatus'], 'the request body is the callback payload')
  t.same(body?.required?.sort(), ['eventType', 'jobId', 'jobName', 'jobStatus'])
  t.match(callback.parameters, [{ in: 'header', name: 'x-signature', required: true }], 'the X-Signature header')
  t.same(Object.keys(callback.responses).sort(), ['200', '400', '401', '413', '415', '422', '503'], 'every status it answers')
  for (const status of ['400', '401', '413', '415', '422', '503']) {
    t.match(callback.responses[status], { description: /\w/, content: { 'application/json': { schema: { properties: { code: {}, message: {}, statusCode: {}, error: {} } } } } }, `${status} has the error shape`)
  }
  const stream = paths['/jobs/stream']?.get as Operation
  t.ok(stream.responses['200']?.content?.['text/event-stream'] !== undefined, 'the stream is text/event-stream')
  t.ok(paths['/metrics']?.get?.responses['200']?.content?.['text/plain'] !== undefined, 'the metrics are text/plain')
})

t.test('@fastify/swagger: openapi.tags and openapi.hide', async (t) => {
  const tagged = await openApiDocument(t, { openapi: { tags: ['partners'] } })
  t.same(tagged['/jobs/{jobId}']?.get?.tags, ['partners'])
  const hidden = await openApiDocument(t, { openapi: { hide: true } })
  t.same(Object.keys(hidden), [], 'no route of the plugin in the document')
})

t.test('documented, the routes answer as before', async (t) => {
  const app = Fastify({ logger: false })
  await app.register(g2sentry, { secret: SECRET, database: ':memory:', metrics: true })
  t.teardown(() => app.close())
  const stored = await post(app, assigned(1))
  t.equal(stored.body, '{"outcome":"applied","seq":1,"jobId":1,"status":"Assigned"}')
  const refused = await post(app, assigned(1), { secret: 'wrong' })
  t.same(refused.json(), { statusCode: 401, code: 'FST_G2SENTRY_BAD_SIGNATURE', error: 'Unauthorized', message: 'The X-Signature header is not a hex HMAC-SHA256 of the body for any configured secret' })
  const metrics = await app.inject('/metrics')
  t.match(metrics.body, /^# HELP/, 'the metrics text is sent as it is')
  t.equal((await app.inject('/jobs/x')).statusCode, 400)
})
