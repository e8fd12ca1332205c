// Another process holding the SQLite write lock (a `g2sentry rebuild`, an operator's shell) never
// freezes the receiver: with the forwarder, a consumer and the reconciler all writing in the
// background, job reads over a real socket stay fast, and a callback gets its 503 once
// `busyTimeout` has passed, not when the lock is released (docs/design.md, "Waiting for a lock").
import t from 'tap'
import Fastify from 'fastify'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import g2sentry from '../../src/index.js'
import { sqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { FakeG2Sentry } from '../../src/simulator/fake-g2sentry.js'
import { assigned, bytesOf, post, SECRET, started } from '../helpers/helpers.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { holdWriteLock } from '../helpers/lock-holder.js'
import { startReceiver } from '../helpers/receiver.js'
import { until } from '../helpers/until.js'

t.setTimeout(60_000)

const BUSY_TIMEOUT = 1500
const LOCK_HELD_MS = 4000
const FORWARD_SECRET = 'forward-secret'

t.test('a foreign write lock: reads stay under a second, a callback gets 503 after busyTimeout, everything resumes', async (t) => {
  const filename = join(t.testdir(), 'g2.db')
  const store = sqliteStore({ filename, busyTimeout: BUSY_TIMEOUT })
  const fake = await FakeG2Sentry.start()
  const receiver = await startReceiver(t, { secret: FORWARD_SECRET })
  const app = Fastify({ logger: false })
  t.teardown(async () => {
    await app.close()
    await store.close()
    await fake.close()
  })
  await app.register(g2sentry, {
    secret: SECRET,
    store,
    metrics: true,
    forward: { url: receiver.url, secret: FORWARD_SECRET, leaseTtlMs: 300, pollMs: 50 },
    reconcile: { baseUrl: fake.url, partnerKey: fake.partnerKey, partnerSecret: fake.partnerSecret, quietForMs: 1, everyMs: 100, leaseTtlMs: 300 }
  })
  let consumed = 0
  app.g2sentry.consume('audit-trail', () => { consumed++ }, { leaseTtlMs: 300, pollMs: 50 })
  const base = await app.listen({ port: 0, host: '127.0.0.1' })

  t.equal((await post(app, assigned(1, { phone: '+15550000001' }))).statusCode, 200)
  fake.setStatus(1, 'Assigned')
  await until('the forwarder and the consumer are running', () => receiver.accepted.length >= 1 && consumed >= 1)
  await until('the reconciler has asked about job 1', () => fake.requests.some((r) => r.path === '/jobs/1/status'))

  const lock = await holdWriteLock(t, filename)
  const lockedAt = performance.now()

  // A callback sent while the lock is held: its answer must come after busyTimeout, not after the lock.
  const body = bytesOf(started(1, { phone: '+15550000001' }))
  const callback = (async () => {
    const sent = performance.now()
    const response = await fetch(`${base}/callbacks/g2sentry`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-signature': signBody(body, SECRET) },
      body: new Uint8Array(body)
    })
    return { status: response.status, code: ((await response.json()) as { code?: string }).code, ms: performance.now() - sent }
  })()

  // Job reads for as long as the lock is held, one after another over the socket.
  const latencies: number[] = []
  const statuses = new Set<number>()
  while (performance.now() - lockedAt < LOCK_HELD_MS) {
    const sent = performance.now()
    const response = await fetch(`${base}/jobs/1`)
    await response.arrayBuffer()
    statuses.add(response.status)
    latencies.push(performance.now() - sent)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  const metrics = await fetch(`${base}/metrics`)
  t.equal(metrics.status, 200, '/metrics answers while the lock is held')
  const answered = await callback
  await lock.release()

  t.same([...statuses], [200], 'every GET /jobs/1 was answered 200 while the lock was held')
  const worst = Math.max(...latencies)
  t.comment(`${latencies.length} reads in ${LOCK_HELD_MS} ms, worst ${Math.round(worst)} ms; the callback answered ${answered.status} after ${Math.round(answered.ms)} ms`)
  t.ok(worst < 1000, `no job read waited a second for the lock (worst ${Math.round(worst)} ms)`)
  t.ok(latencies.length >= 40, `reads kept being answered (${latencies.length} in ${LOCK_HELD_MS} ms)`)
  t.equal(answered.status, 503, 'the callback sent while locked was answered 503, so G2 Sentry retries it')
  t.equal(answered.code, 'FST_G2SENTRY_STORAGE_UNAVAILABLE')
  t.ok(answered.ms >= BUSY_TIMEOUT - 50, `after waiting busyTimeout for the lock (${Math.round(answered.ms)} ms)`)
  t.ok(answered.ms < BUSY_TIMEOUT + 1000, `and not for the whole time the lock was held (${Math.round(answered.ms)} ms)`)

  // Once the lock is gone, the redelivery is stored and everything in the background resumes.
  const again = await post(app, body)
  t.equal(again.statusCode, 200, 'the redelivery after the lock is stored')
  t.equal(again.json<{ outcome: string }>().outcome, 'applied')
  await until('the forwarder delivered the change made after the lock', () => receiver.accepted.some((change) => change.status === 'InProgress'))
  const consumedBefore = consumed
  t.equal((await post(app, assigned(2))).statusCode, 200)
  await until('the consumer handled the next change', () => consumed > consumedBefore)
})
