// The plugin registered beside the @fastify plugins people use, over real HTTP: what each of them
// does to our routes, and what our routes let them do.
import t from 'tap'
import Fastify from 'fastify'
import cors from '@fastify/cors'
import g2sentry from '../src/index.js'
import { SECRET } from './helpers.js'

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
