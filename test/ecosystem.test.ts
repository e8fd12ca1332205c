// The plugin registered beside the @fastify plugins people use, over real HTTP: what each of them
// does to our routes, and what our routes let them do.
import t from 'tap'
import Fastify from 'fastify'
import cors from '@fastify/cors'
import rateLimit from '@fastify/rate-limit'
import g2sentry from '../src/index.js'
import { assigned, memoryStream, post, SECRET } from './helpers.js'

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
