// app.g2sentry.health(): for an orchestrator's probes and @fastify/under-pressure's healthCheck.
import t from 'tap'
import Fastify from 'fastify'
import underPressure from '@fastify/under-pressure'
import { join } from 'node:path'
import g2sentry from '../../src/index.js'
import { assigned, buildApp, post, SECRET } from '../helpers/helpers.js'
import { holdWriteLock } from '../helpers/lock-holder.js'
import { until } from '../helpers/until.js'

t.test('a healthy store: ok, the head, and each consumer\'s lag', async (t) => {
  const app = await buildApp(t)
  let handled = 0
  app.g2sentry.consume('slow', () => { handled++ }, { pollMs: 20 })
  for (let job = 1; job <= 3; job++) t.equal((await post(app, assigned(job))).statusCode, 200)
  await until('the consumer caught up', () => handled === 3)
  await until('its checkpoint is saved', async () => (await app.g2sentry.health()).consumers[0]?.lag === 0)
  const report = await app.g2sentry.health()
  t.match(report, { ok: true, store: { ok: true }, writes: { ok: true }, head: 3, reconciler: undefined })
  t.same(report.consumers, [{ name: 'slow', checkpoint: 3, lag: 0, parked: 0, runningHere: true }])
})

t.test('another process holding the write lock: not ok within the timeout, reads still ok', async (t) => {
  const filename = join(t.testdir(), 'g2.db')
  const app = await buildApp(t, { database: filename })
  const lock = await holdWriteLock(t, filename)
  const started = performance.now()
  const report = await app.g2sentry.health({ timeoutMs: 200 })
  const took = performance.now() - started
  t.match(report, { ok: false, store: { ok: true }, writes: { ok: false, error: /no answer within 200 ms/ } })
  t.ok(took < 1000, `answered within its timeout (${Math.round(took)} ms)`)
  await lock.release()
  t.match(await app.g2sentry.health(), { ok: true, writes: { ok: true } }, 'ok again once the lock is gone')
})

t.test('@fastify/under-pressure: healthCheck answers 503 while the store takes no writes', async (t) => {
  const filename = join(t.testdir(), 'g2.db')
  const app = Fastify({ logger: false })
  await app.register(g2sentry, { secret: SECRET, database: filename })
  await app.register(underPressure, {
    healthCheck: async (fastify) => (await fastify.g2sentry.health({ timeoutMs: 200 })).ok,
    healthCheckInterval: 100,
    exposeStatusRoute: '/ready'
  })
  t.teardown(() => app.close())
  await app.ready()
  t.equal((await app.inject('/ready')).statusCode, 200, 'ready')
  const lock = await holdWriteLock(t, filename)
  await until('the probe sees the lock', async () => (await app.inject('/ready')).statusCode === 503, 5000)
  await lock.release()
  await until('ready again', async () => (await app.inject('/ready')).statusCode === 200, 5000)
})
