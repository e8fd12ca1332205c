// The forwarder through the plugin (real callbacks through the callback route, a real HTTP
// receiver that checks the signature): every applied change, in seq order, signed, retried
// through 500s, a receiver that is down for a while and one that hangs; plus the plugin's
// consume(), its option checks, its metrics and onEvent staying best-effort.
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { Webhook } from 'standardwebhooks'
import type { JobChange } from '../../src/domain/job-change.js'
import { assigned, buildApp, completed, memoryStream, post, started, withdrawn } from '../helpers/helpers.js'
import { distinctInOrder, startReceiver } from '../helpers/receiver.js'
import { until } from '../helpers/until.js'

const FORWARD_SECRET = 'forward-secret-never-logged'

/** Posts a few lifecycles; returns the seqs of the applied changes, in order. */
async function traffic (app: FastifyInstance, jobs: number[]): Promise<number[]> {
  const applied: number[] = []
  for (const jobId of jobs) {
    for (const payload of [assigned(jobId), withdrawn(jobId), assigned(jobId), assigned(jobId), started(jobId), completed(jobId)]) {
      const response = await post(app, payload)
      if (response.statusCode !== 200) throw new Error(`callback answered ${response.statusCode}`)
      const result = response.json<{ outcome: string; seq: number }>()
      if (result.outcome === 'applied') applied.push(result.seq)
    }
  }
  return applied
}

t.test('every applied change reaches the receiver once, in seq order, signed, through 500s and an outage', async (t) => {
  // One attempt in three fails.
  const receiver = await startReceiver(t, { secret: FORWARD_SECRET, fail: (n) => n % 3 === 0 })
  const { stream, lines } = memoryStream()
  const app = await buildApp(t, {
    logStream: stream,
    metrics: true,
    forward: { url: receiver.url, secret: FORWARD_SECRET, minBackoffMs: 10, maxBackoffMs: 200, timeoutMs: 2000 }
  })
  const first = await traffic(app, [1, 2, 3])
  // Checked on the first request, so that an unsigned or wrongly signed one fails at once, not
  // only when the changes never arrive.
  await until('the first request', () => receiver.attempts() >= 1)
  t.equal(receiver.badSignatures(), 0, 'the first request carries a valid X-Signature')
  await until('the first changes forwarded', () => distinctInOrder(receiver.accepted).distinct.length === first.length)

  await receiver.down()
  const during = await traffic(app, [4, 5])
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.equal(receiver.accepted.length, first.length, 'nothing arrives while the receiver is down')
  await receiver.up()
  const after = await traffic(app, [6])
  const all = [...first, ...during, ...after]
  await until('every change forwarded', () => receiver.accepted.length >= all.length)

  t.same(receiver.accepted.map((c) => c.seq), all, 'each applied change exactly once, in seq order')
  t.equal(receiver.badSignatures(), 0, 'every request was signed with the secret')
  const change = receiver.accepted[0] as JobChange
  t.same(Object.keys(change), ['seq', 'jobId', 'eventType', 'status', 'jobName', 'receivedAt'], 'the stream\'s shape')
  t.same({ ...change, receivedAt: '' }, { seq: 1, jobId: 1, eventType: 'JobAssigned', status: 'Assigned', jobName: 'Open House at 123 Main St', receivedAt: '' })
  t.ok(receiver.attempts() > all.length, 'some attempts failed and were retried')

  const warnings = lines.filter((line) => line.includes('consumer handler failed'))
  t.ok(warnings.length > 0, 'failures are logged as warnings')
  t.notOk(lines.some((line) => line.includes(FORWARD_SECRET)), 'the secret is never logged')

  // The checkpoint is saved a moment after the last handler resolved.
  await until('the checkpoint saved at the last applied seq',
    async () => (await app.g2sentry.store.listConsumers()).find((c) => c.name === 'forwarder')?.checkpoint === all[all.length - 1])
  const metrics = (await app.inject('/metrics')).body
  t.match(metrics, new RegExp(`g2sentry_consumer_checkpoint\\{consumer="forwarder"\\} ${all[all.length - 1]}`), 'the checkpoint is at the last applied seq')
  t.match(metrics, /g2sentry_consumer_lag\{consumer="forwarder"\} 0/, 'no lag')
  t.match(metrics, /g2sentry_consumer_parked\{consumer="forwarder"\} 0/)
  t.match(metrics, /g2sentry_consumer_handler_failures_total\{consumer="forwarder"\} [1-9]/, 'failures counted')
})

t.test('an attempt that gets no answer within timeoutMs is retried', async (t) => {
  const receiver = await startReceiver(t, { secret: FORWARD_SECRET, hang: (n) => n === 1 })
  const app = await buildApp(t, { forward: { url: receiver.url, secret: FORWARD_SECRET, minBackoffMs: 10, timeoutMs: 300 } })
  await post(app, assigned(1))
  await until('the change forwarded after the hung attempt', () => receiver.accepted.length === 1)
  t.equal(receiver.attempts(), 2, 'the hung attempt, then one that succeeded')
})

t.test('app.g2sentry.consume: a handler of the user\'s, closed with the app, one name once per instance', async (t) => {
  const app = await buildApp(t)
  const seen: number[] = []
  const consumer = app.g2sentry.consume('mailer', (change) => { seen.push(change.seq) }, { pollMs: 60_000 })
  t.equal(app.g2sentry.consumers.get('mailer'), consumer)
  t.throws(() => app.g2sentry.consume('mailer', () => {}), { code: 'FST_G2SENTRY_INVALID_OPTION', message: /already running/ })
  t.throws(() => app.g2sentry.consume('bad name', () => {}), { code: 'FST_G2SENTRY_INVALID_OPTION' })
  await post(app, assigned(1))
  await post(app, started(1))
  await until('both changes handled', () => seen.length === 2)
  const rows: number[] = []
  app.g2sentry.consume<'rows'>('auditor', (row) => { rows.push(row.seq) }, { deliver: 'rows' })
  await post(app, started(1))
  await until('every row handled', () => rows.length === 3)
  t.same(seen, [1, 2], 'the duplicate is not a change')
  await app.close()
  t.equal(consumer.status().active, false, 'closed with the app')
})

t.test('the forward option is checked at registration', async (t) => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['not an object', 'http://x', /forward must be an object/],
    ['no url', { secret: 's' }, /forward.url must be an http/],
    ['a file url', { url: 'file:///etc/passwd', secret: 's' }, /forward.url must be an http/],
    ['no secret', { url: 'http://127.0.0.1:1/' }, /forward.secret must be a non-empty string/],
    ['a bad timeout', { url: 'http://127.0.0.1:1/', secret: 's', timeoutMs: -1 }, /forward.timeoutMs/],
    ['a bad backoff cap', { url: 'http://127.0.0.1:1/', secret: 's', maxBackoffMs: Number('x') }, /maxBackoffMs must be a positive integer/],
    ['a bad name', { url: 'http://127.0.0.1:1/', secret: 's', name: 'a b' }, /consumer name/]
  ]
  for (const [what, forward, message] of cases) {
    await t.rejects(buildApp(t, { database: join(t.testdir(), `${what.replace(/ /g, '-')}.db`), forward: forward as never }),
      { code: 'FST_G2SENTRY_INVALID_OPTION', message }, what)
  }
})

t.test('onEvent stays best-effort: a failing onEvent loses nothing a consumer gets', async (t) => {
  const seen: number[] = []
  const app = await buildApp(t, { onEvent: () => { throw new Error('onEvent broke') } })
  app.g2sentry.consume('safe', (change) => { seen.push(change.seq) })
  const response = await post(app, assigned(1))
  t.equal(response.statusCode, 200, 'the delivery is acknowledged all the same')
  await until('the consumer got it', () => seen.length === 1)
})

t.test('signing standard-webhooks: a receiver verifying with the standardwebhooks package gets every change, with one id per change across retries', async (t) => {
  const key = `whsec_${Buffer.from('a-standard-webhooks-key-32-bytes').toString('base64')}`
  const verifier = new Webhook(key)
  const seen: Array<{ id: string; seq: number; verified: boolean }> = []
  let requests = 0
  const server = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      let verified = true
      try {
        verifier.verify(body, request.headers as Record<string, string>)
      } catch {
        verified = false
      }
      seen.push({ id: String(request.headers['webhook-id']), seq: (JSON.parse(body) as JobChange).seq, verified })
      // The first attempt at each change fails: its retry must carry the same id.
      response.writeHead(++requests % 2 === 1 ? 500 : 204).end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`
  const app = await buildApp(t, { forward: { url, secret: key, signing: 'standard-webhooks', minBackoffMs: 10, maxBackoffMs: 50 } })
  const applied = await traffic(app, [1])
  await until('every change accepted', () => seen.length >= applied.length * 2)
  t.ok(seen.every((request) => request.verified), 'every request verifies with the standardwebhooks package')
  t.same([...new Set(seen.map((request) => request.seq))], applied, 'each change, in seq order')
  for (const seq of applied) {
    const ids = new Set(seen.filter((request) => request.seq === seq).map((request) => request.id))
    t.equal(ids.size, 1, `seq ${seq}: the retry carries the first attempt's webhook-id`)
  }
  t.equal(new Set(seen.map((request) => request.id)).size, applied.length, 'and each change its own id')
})

t.test('signing standard-webhooks needs a whsec_ key', async (t) => {
  await t.rejects(buildApp(t, { forward: { url: 'http://127.0.0.1:9/', secret: 'not base64 !', signing: 'standard-webhooks' } }),
    { code: 'FST_G2SENTRY_INVALID_OPTION', message: /Standard Webhooks key/ })
  await t.rejects(buildApp(t, { forward: { url: 'http://127.0.0.1:9/', secret: 's', signing: 'hmac' as never } }),
    { code: 'FST_G2SENTRY_INVALID_OPTION', message: /signing must be/ })
})
