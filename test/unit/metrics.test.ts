// The Prometheus endpoint (issue item 4): off by default, served in prom-client's text format when
// asked for, counting real deliveries and refusals through the real callback route, with the
// quarantine size read from the store and the group commit's batch sizes and latencies.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { Counter, Registry } from 'prom-client'
import g2sentry from '../../src/index.js'
import type { G2SentryOptions } from '../../src/plugin/options.js'
import { sqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { signBody } from '../../src/domain/verify-signature.js'
import type { IncomingEvent, JobStatus } from '../../src/domain/types.js'
import { assigned, buildApp, bytesOf, completed, post, SECRET, started, withdrawn, type CallbackPayload } from '../helpers/helpers.js'

interface Sample { name: string; labels: Record<string, string>; value: number }

/** The samples of a Prometheus text exposition (comments and blank lines left out). */
function parseExposition (text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (match === null) throw new Error(`not a sample line: ${JSON.stringify(line)}`)
    const labels: Record<string, string> = {}
    for (const [, key, value] of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[key as string] = (value as string).replace(/\\(.)/g, (_, c: string) => c === 'n' ? '\n' : c)
    }
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) })
  }
  return samples
}

/** The value of one sample, or undefined when the exposition has no such sample. */
function value (samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.keys(labels).length === Object.keys(s.labels).length &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  if (found.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${found.length} samples`)
  return found[0]?.value
}

/** Every sample of one metric name, as `labels → value`, labels written `k=v,k=v`. */
function byLabels (samples: Sample[], name: string): Record<string, number> {
  const out: Record<string, number> = {}
  for (const s of samples.filter((s) => s.name === name)) {
    out[Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(',')] = s.value
  }
  return out
}

async function scrape (app: FastifyInstance, url = '/metrics', headers: Record<string, string> = {}): Promise<{ statusCode: number; contentType: string | undefined; text: string; samples: Sample[] }> {
  const res = await app.inject({ method: 'GET', url, headers })
  const text = res.body
  return {
    statusCode: res.statusCode,
    contentType: res.headers['content-type'] as string | undefined,
    text,
    samples: res.statusCode === 200 ? parseExposition(text) : []
  }
}

const JOB_EVENT_TYPES = ['JobAssigned', 'JobStarted', 'JobCompleted', 'JobWithdrawed']

/** A payload as the store receives it after the route verified it: its exact bytes, signed. */
function incoming (payload: CallbackPayload): IncomingEvent {
  const rawBody = bytesOf(payload)
  return { ...payload, jobStatus: payload.jobStatus as JobStatus, rawBody, signature: signBody(rawBody, SECRET), receivedAt: Date.now() }
}

t.test('metrics are off by default: /metrics is not a route', async (t) => {
  const app = await buildApp(t)
  const res = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(res.statusCode, 404)
  t.match(res.json(), { message: 'Route GET:/metrics not found' }, 'Fastify\'s own 404: no such route')
  const off = await buildApp(t, { metrics: false })
  t.equal((await off.inject({ method: 'GET', url: '/metrics' })).statusCode, 404, 'metrics: false leaves it out too')
})

t.test('metrics: true serves the Prometheus text format, with every metric declared before any delivery', async (t) => {
  const app = await buildApp(t, { metrics: true })
  const { statusCode, contentType, text, samples } = await scrape(app)
  t.equal(statusCode, 200)
  t.equal(contentType, new Registry().contentType, 'the content type is prom-client\'s (text/plain; version=0.0.4)')
  t.match(contentType, /^text\/plain; version=0\.0\.4/)
  for (const [name, type] of [
    ['g2sentry_deliveries_total', 'counter'],
    ['g2sentry_rejections_total', 'counter'],
    ['g2sentry_secret_matches_total', 'counter'],
    ['g2sentry_quarantine_size', 'gauge'],
    ['g2sentry_commit_batch_size', 'histogram'],
    ['g2sentry_commit_duration_seconds', 'histogram']
  ]) {
    t.match(text, new RegExp(`^# HELP ${name} \\S`, 'm'), `${name} has a HELP line`)
    t.match(text, new RegExp(`^# TYPE ${name} ${type}$`, 'm'), `${name} is a ${type}`)
  }
  t.equal(value(samples, 'g2sentry_quarantine_size'), 0, 'the quarantine is empty')
  t.equal(value(samples, 'g2sentry_commit_batch_size_count'), 0, 'no batch committed yet')
  t.equal(value(samples, 'g2sentry_commit_duration_seconds_count'), 0)
  t.same(byLabels(samples, 'g2sentry_deliveries_total'), {}, 'no delivery counted yet')
  t.same(byLabels(samples, 'g2sentry_rejections_total'), {}, 'no refusal counted yet')
  t.notOk(samples.some((s) => s.name.startsWith('process_') || s.name.startsWith('nodejs_')),
    'the plugin\'s own registry holds only its metrics (no default process metrics)')
})

t.test('deliveries by outcome and refusals by reason are counted exactly', async (t) => {
  const dir = t.testdir()
  const filename = join(dir, 'g2.db')
  // A store of our own with a short busy timeout, so that a lock held by another connection
  // turns into a 503 quickly. The plugin does not close a store it did not open.
  const store = sqliteStore({ filename, busyTimeout: 50 })
  t.teardown(() => store.close())
  const app = await buildApp(t, { store, metrics: true, bodyLimit: 1024 })

  const send = async (label: string, payload: unknown, options: Parameters<typeof post>[2] = {}, expected: number) => {
    const res = await post(app, payload, options)
    t.equal(res.statusCode, expected, `${label}: ${expected}`)
    return res
  }

  // Four applied, two duplicates, two stale, one unsupported.
  await send('assigned 1', assigned(1, { phone: '+12345678901' }), {}, 200)
  await send('assigned 1 again', assigned(1, { phone: '+12345678901' }), {}, 200)
  await send('started 1', started(1), {}, 200)
  await send('started 1 again', started(1), {}, 200)
  await send('assigned 1 late', assigned(1), {}, 200)
  await send('completed 1', completed(1), {}, 200)
  await send('withdrawn 1 late', withdrawn(1), {}, 200)
  await send('assigned 2', assigned(2), {}, 200)
  await send('rated 3', { jobId: 3, eventType: 'JobGuardianRate', jobName: 'Front desk', jobStatus: 'New' }, {}, 200)
  const outcomes = (await app.g2sentry.store.readLog({ limit: 100 })).map((row) => row.outcome)
  t.same(outcomes, ['applied', 'duplicate', 'applied', 'duplicate', 'stale', 'applied', 'stale', 'applied', 'unsupported'],
    'the log holds the outcomes the metrics must count')

  // Refusals: two without a signature, three with a wrong one, one of each of the others.
  await send('no signature', assigned(5), { signature: null }, 401)
  await send('no signature, empty body', '', { signature: null }, 401)
  await send('wrong signature', assigned(5), { secret: 'not-the-secret' }, 401)
  await send('malformed signature', assigned(5), { signature: 'zz' }, 401)
  await send('signature for other bytes', assigned(5), { signature: signBody(bytesOf(assigned(6)), SECRET) }, 401)
  await send('invalid JSON', '{"jobId": 5,', {}, 400)
  await send('invalid payload', { jobId: 'five', eventType: 'JobAssigned', jobName: 'x', jobStatus: 'Assigned' }, {}, 422)
  await send('invalid payload (bad status)', { jobId: 5, eventType: 'JobAssigned', jobName: 'x', jobStatus: 'Paused' }, {}, 422)
  await send('too large', { ...assigned(5), padding: 'x'.repeat(2000) }, {}, 413)
  await send('wrong content type', assigned(5), { contentType: 'text/plain' }, 415)
  await send('no content type', assigned(5), { contentType: null }, 415)

  // Another connection holds the write lock: the append cannot begin within 50 ms.
  const holder = new Database(filename)
  t.teardown(() => { if (holder.open) holder.close() })
  holder.exec('BEGIN IMMEDIATE')
  await send('storage unavailable', assigned(7), {}, 503)
  await send('storage unavailable again', started(7), {}, 503)
  holder.exec('ROLLBACK')
  holder.close()
  await send('after the lock', assigned(7), {}, 200)

  const { samples, text } = await scrape(app)
  t.same(byLabels(samples, 'g2sentry_deliveries_total'), {
    'outcome=applied': 5,
    'outcome=duplicate': 2,
    'outcome=stale': 2,
    'outcome=unsupported': 1
  }, 'deliveries by outcome: exactly those committed, none of the refused ones')
  t.same(byLabels(samples, 'g2sentry_rejections_total'), {
    'reason=missing_signature': 2,
    'reason=bad_signature': 3,
    'reason=invalid_json': 1,
    'reason=invalid_payload': 2,
    'reason=body_too_large': 1,
    'reason=unsupported_media_type': 2,
    'reason=storage_unavailable': 2
  }, 'refusals by reason')
  // Every body with a valid signature matched secret 0: the ten committed, the three
  // quarantined and the two the locked store refused.
  t.same(byLabels(samples, 'g2sentry_secret_matches_total'), { 'secret=0': 15 }, 'valid signatures by secret position')
  t.equal(value(samples, 'g2sentry_quarantine_size'), 3, 'three signed bodies are in quarantine')
  t.equal((await app.g2sentry.store.listQuarantine({ limit: 100 })).length, 3, 'as the store says')

  // Appends that arrive one after another commit one per batch.
  t.equal(value(samples, 'g2sentry_commit_batch_size_count'), 10, 'one batch per sequential committed append')
  t.equal(value(samples, 'g2sentry_commit_batch_size_sum'), 10, 'the batch sizes add up to the appends committed')
  t.equal(value(samples, 'g2sentry_commit_batch_size_bucket', { le: '1' }), 10, 'every one of them a batch of 1')
  t.equal(value(samples, 'g2sentry_commit_duration_seconds_count'), 10, 'one latency per committed batch (the refused ones are not committed)')
  const seconds = value(samples, 'g2sentry_commit_duration_seconds_sum') as number
  t.ok(seconds > 0 && seconds < 10, `the commit latencies add up to ${seconds} s`)
  t.equal(value(samples, 'g2sentry_commit_duration_seconds_bucket', { le: '+Inf' }), 10)
  t.notMatch(text, /12345678901/, 'no phone number in the metrics')
})

t.test('concurrent deliveries share a commit, and the batch size histogram shows it', async (t) => {
  const app = await buildApp(t, { metrics: true })
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => post(app, assigned(100 + i))))
  t.ok(answers.every((res) => res.statusCode === 200), '20 deliveries answered 200')
  const { samples } = await scrape(app)
  t.equal(value(samples, 'g2sentry_commit_batch_size_sum'), 20, 'the batch sizes add up to 20 appends')
  const batches = value(samples, 'g2sentry_commit_batch_size_count') as number
  t.ok(batches >= 1 && batches <= 20, `${batches} batches`)
  t.equal(value(samples, 'g2sentry_commit_duration_seconds_count'), batches, 'one latency per batch')
  t.equal(value(samples, 'g2sentry_deliveries_total', { outcome: 'applied' }), 20)
  t.comment(`20 concurrent injected deliveries committed in ${batches} batch(es)`)
})

t.test('during a rotation, the secret that matched is counted by its position, never named', async (t) => {
  const NEW = 'rotation-NEW-s3cr3t-4f1d'
  const OLD = 'rotation-OLD-s3cr3t-9c2e'
  const app = await buildApp(t, { secret: [NEW, OLD], metrics: true })
  for (const jobId of [1, 2, 3]) t.equal((await post(app, assigned(jobId), { secret: NEW })).statusCode, 200)
  for (const jobId of [4, 5]) t.equal((await post(app, assigned(jobId), { secret: OLD })).statusCode, 200)
  t.equal((await post(app, '{oops', { secret: OLD })).statusCode, 400, 'a quarantined body signed with the old secret')
  t.equal((await post(app, assigned(6), { secret: 'neither' })).statusCode, 401)

  const { samples, text } = await scrape(app)
  t.same(byLabels(samples, 'g2sentry_secret_matches_total'), { 'secret=0': 3, 'secret=1': 3 },
    'secret 0 (the new one) matched 3 times, secret 1 (the old one) 3 times')
  t.equal(value(samples, 'g2sentry_rejections_total', { reason: 'bad_signature' }), 1)
  t.notOk(text.includes(NEW), 'the new secret never appears in the metrics')
  t.notOk(text.includes(OLD), 'the old secret never appears in the metrics')
  t.notOk(/s3cr3t|rotation-/.test(text), 'nor any part of either')
})

t.test('the quarantine gauge is read from the store at each scrape', async (t) => {
  const app = await buildApp(t, { metrics: true })
  t.equal(value((await scrape(app)).samples, 'g2sentry_quarantine_size'), 0)
  await post(app, 'not json')
  await post(app, { jobId: 1 })
  t.equal(value((await scrape(app)).samples, 'g2sentry_quarantine_size'), 2, 'two quarantined bodies')
  // Retrying a quarantined body (what the CLI does) takes it out of the pending count.
  const [first] = await app.g2sentry.store.listQuarantine({ limit: 1 })
  const result = await app.g2sentry.store.append(incoming(assigned(9)))
  await app.g2sentry.store.resolveQuarantine(first?.id as number, result.seq)
  t.equal(value((await scrape(app)).samples, 'g2sentry_quarantine_size'), 1, 'a resolved body no longer counts')
})

t.test('metrics.path and an onRequest hook move and protect the endpoint', async (t) => {
  const TOKEN = 'Bearer scrape-token'
  const calls: string[] = []
  const onRequest = async (request: FastifyRequest, reply: FastifyReply) => {
    calls.push(request.url)
    if (request.headers.authorization !== TOKEN) await reply.code(401).send({ error: 'unauthorized' })
  }
  const app = await buildApp(t, { metrics: { path: '/internal/metrics', onRequest } })
  await post(app, assigned(1))

  t.equal((await scrape(app, '/metrics')).statusCode, 404, 'nothing at the default path')
  const refused = await scrape(app, '/internal/metrics')
  t.equal(refused.statusCode, 401, 'without the token: refused by the hook')
  t.notMatch(refused.text, /g2sentry_/, 'and no metric leaks')
  const allowed = await scrape(app, '/internal/metrics', { authorization: TOKEN })
  t.equal(allowed.statusCode, 200, 'with the token: served')
  t.equal(value(allowed.samples, 'g2sentry_deliveries_total', { outcome: 'applied' }), 1)
  t.same(calls, ['/internal/metrics', '/internal/metrics'], 'the hook ran for the metrics route only, not for the callback')
  t.equal((await post(app, assigned(2))).statusCode, 200, 'callbacks are not behind the metrics hook')
})

t.test('metrics follow the plugin\'s prefix', async (t) => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(g2sentry, { prefix: '/g2', secret: SECRET, database: join(t.testdir(), 'g2.db'), metrics: true })
  await app.ready()
  t.equal((await app.inject({ method: 'GET', url: '/g2/metrics' })).statusCode, 200, 'served under the prefix')
  t.equal((await app.inject({ method: 'GET', url: '/metrics' })).statusCode, 404)
})

t.test('metrics.registry puts the metrics in the app\'s own prom-client registry', async (t) => {
  const registry = new Registry()
  const mine = new Counter({ name: 'my_app_requests_total', help: 'The app\'s own counter', registers: [registry] })
  mine.inc(7)
  const app = await buildApp(t, { metrics: { registry } })
  await post(app, assigned(1))
  await post(app, assigned(1))
  await post(app, 'nope', { signature: null })

  const own = parseExposition(await registry.metrics())
  t.equal(value(own, 'g2sentry_deliveries_total', { outcome: 'applied' }), 1, 'the registry holds the plugin\'s counters')
  t.equal(value(own, 'g2sentry_deliveries_total', { outcome: 'duplicate' }), 1)
  t.equal(value(own, 'g2sentry_rejections_total', { reason: 'missing_signature' }), 1)
  t.equal(value(own, 'my_app_requests_total'), 7, 'beside the app\'s own metrics')

  const served = await scrape(app)
  t.equal(served.statusCode, 200, '/metrics serves that registry')
  t.equal(value(served.samples, 'my_app_requests_total'), 7, 'the app\'s metrics included')
  t.equal(value(served.samples, 'g2sentry_deliveries_total', { outcome: 'applied' }), 1)
})

t.test('two apps in one process each count their own deliveries', async (t) => {
  const first = await buildApp(t, { metrics: true, database: join(t.testdir(), 'one.db') })
  const second = await buildApp(t, { metrics: true, database: join(t.testdir(), 'two.db') })
  await post(first, assigned(1))
  await post(first, assigned(2))
  await post(second, assigned(1))
  t.equal(value((await scrape(first)).samples, 'g2sentry_deliveries_total', { outcome: 'applied' }), 2)
  t.equal(value((await scrape(second)).samples, 'g2sentry_deliveries_total', { outcome: 'applied' }), 1)
})

t.test('closing the app stops observing a store the app did not open', async (t) => {
  const store = sqliteStore({ filename: join(t.testdir(), 'g2.db') })
  t.teardown(() => store.close())
  const registry = new Registry()
  const app = Fastify({ logger: false })
  await app.register(g2sentry, { secret: SECRET, store, metrics: { registry } })
  await post(app, assigned(1))
  await app.close()
  await store.append(incoming(assigned(2)))
  const samples = parseExposition(await registry.metrics())
  t.equal(value(samples, 'g2sentry_commit_batch_size_count'), 1, 'the append after close was not observed')
})

async function refuses (t: Test, metrics: unknown, message: string): Promise<void> {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  app.register(g2sentry, { secret: SECRET, database: join(t.testdir(), 'never.db'), metrics } as G2SentryOptions)
  await t.rejects(async () => { await app.ready() },
    { code: 'FST_G2SENTRY_INVALID_OPTION', statusCode: 500, message: `fastify-g2sentry: ${message}` }, String(JSON.stringify(metrics) ?? metrics))
}

t.test('invalid metrics options make ready() reject', async (t) => {
  const SHAPE = 'metrics must be true, false or an object of options'
  await refuses(t, 'yes', SHAPE)
  await refuses(t, 1, SHAPE)
  await refuses(t, null, SHAPE)
  await refuses(t, { path: 'metrics' }, 'metrics.path must be a path starting with "/"')
  await refuses(t, { path: '' }, 'metrics.path must be a path starting with "/"')
  await refuses(t, { path: 42 }, 'metrics.path must be a path starting with "/"')
  await refuses(t, { registry: {} }, 'metrics.registry must be a prom-client Registry')
  await refuses(t, { registry: 'default' }, 'metrics.registry must be a prom-client Registry')
})

t.test('deliveries are labelled by outcome only: no job id or event type in any label', async (t) => {
  // Job ids or event types as labels would make a series per job (unbounded cardinality).
  const app = await buildApp(t, { metrics: true })
  for (let jobId = 1; jobId <= 5; jobId++) await post(app, assigned(jobId))
  const { samples } = await scrape(app)
  const series = samples.filter((s) => s.name === 'g2sentry_deliveries_total')
  t.same(series.map((s) => Object.keys(s.labels)), [['outcome']], 'one series, labelled by outcome only')
  t.notOk(samples.some((s) => Object.values(s.labels).some((v) => JOB_EVENT_TYPES.includes(v))), 'no event type in any label')
})
