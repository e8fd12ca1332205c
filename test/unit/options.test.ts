// The plugin's options, checked once at registration (like @fastify/jwt's test/options.test.js),
// its defaults, its decorator, and what it opens and closes.
import t from 'tap'
import { sqliteConnection } from '../../src/store/sqlite/connection-of.js'
import type { Test } from 'tap'
import Fastify from 'fastify'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import g2sentry from '../../src/index.js'
import type { G2SentryOptions } from '../../src/plugin/options.js'
import type { G2SentryStore } from '../../src/store/contract.js'
import { sqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { assigned, buildApp, bytesOf, completed, logRows, post, SECRET, started, withdrawn } from '../helpers/helpers.js'

const PHONE = '+12345678901'

/** Registers the plugin with options that must be refused, and checks how. */
async function refuses (t: Test, options: unknown, message: string): Promise<void> {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  app.register(g2sentry, options as G2SentryOptions)
  await t.rejects(async () => { await app.ready() }, { code: 'FST_G2SENTRY_INVALID_OPTION', statusCode: 500, message: `fastify-g2sentry: ${message}` })
}

t.test('invalid options make ready() reject with a precise message', async (t) => {
  const database = join(t.testdir(), 'never-opened.db')
  const SECRET_REQUIRED = 'secret is required: a string, or an array of strings during a rotation'
  const SECRET_EMPTY = 'every secret must be a non-empty string'
  const PATH = (name: string) => `${name} must be a path starting with "/"`
  const BODY_LIMIT = 'bodyLimit must be a positive integer (bytes)'
  const cases: Array<[string, unknown, string]> = [
    ['secret missing', { database }, SECRET_REQUIRED],
    ['no options at all', undefined, SECRET_REQUIRED],
    ['secret ""', { secret: '', database }, SECRET_EMPTY],
    ['secret []', { secret: [], database }, SECRET_REQUIRED],
    ['secret ["a", ""]', { secret: ['a', ''], database }, SECRET_EMPTY],
    ['secret ["a", 42]', { secret: ['a', 42], database }, SECRET_EMPTY],
    ['secret 42', { secret: 42, database }, SECRET_REQUIRED],
    ['secret null', { secret: null, database }, SECRET_REQUIRED],
    ['secret a Buffer', { secret: Buffer.from('k'), database }, SECRET_REQUIRED],
    ['database ""', { secret: SECRET, database: '' }, 'database must be a SQLite file path, ":memory:" or a postgres:// URL'],
    ['database 42', { secret: SECRET, database: 42 }, 'database must be a SQLite file path, ":memory:" or a postgres:// URL'],
    ['both database and store', { secret: SECRET, database, store: {} }, 'give either database or store, not both'],
    ['store missing every method', { secret: SECRET, store: {} },
      'store does not implement what the options need (missing eventLog: append, eventLog: readLog, eventLog: chainHead, eventLog: rebuild, eventLog: close, projection: getJob, projection: listJobs, quarantine: quarantine, quarantine: listQuarantine, quarantine: resolveQuarantine, quarantine: quarantineSize)'],
    ['store missing some methods', { secret: SECRET, store: { append: async () => {}, quarantine: async () => 1, getJob: 'no', listJobs: async () => [], readLog: async () => [], listQuarantine: async () => [], rebuild: async () => ({}) } },
      'store does not implement what the options need (missing eventLog: chainHead, eventLog: close, projection: getJob, quarantine: resolveQuarantine, quarantine: quarantineSize)'],
    ['store null', { secret: SECRET, store: null },
      'store does not implement what the options need (missing eventLog: append, eventLog: readLog, eventLog: chainHead, eventLog: rebuild, eventLog: close, projection: getJob, projection: listJobs, quarantine: quarantine, quarantine: listQuarantine, quarantine: resolveQuarantine, quarantine: quarantineSize)'],
    ['callbackPath "no-slash"', { secret: SECRET, database, callbackPath: 'no-slash' }, PATH('callbackPath')],
    ['callbackPath ""', { secret: SECRET, database, callbackPath: '' }, PATH('callbackPath')],
    ['callbackPath 42', { secret: SECRET, database, callbackPath: 42 }, PATH('callbackPath')],
    ['bodyLimit 0', { secret: SECRET, database, bodyLimit: 0 }, BODY_LIMIT],
    ['bodyLimit -1', { secret: SECRET, database, bodyLimit: -1 }, BODY_LIMIT],
    ['bodyLimit 1.5', { secret: SECRET, database, bodyLimit: 1.5 }, BODY_LIMIT],
    ['bodyLimit "1024"', { secret: SECRET, database, bodyLimit: '1024' }, BODY_LIMIT],
    ['bodyLimit Infinity', { secret: SECRET, database, bodyLimit: Infinity }, BODY_LIMIT],
    ['bodyLimit NaN', { secret: SECRET, database, bodyLimit: NaN }, BODY_LIMIT],
    ['jobRoutes "yes"', { secret: SECRET, database, jobRoutes: 'yes' }, 'jobRoutes must be true, false or an object of route options'],
    ['jobRoutes null', { secret: SECRET, database, jobRoutes: null }, 'jobRoutes must be true, false or an object of route options'],
    ['jobRoutes.prefix "jobs"', { secret: SECRET, database, jobRoutes: { prefix: 'jobs' } }, PATH('jobRoutes.prefix')],
    ['onEvent "x"', { secret: SECRET, database, onEvent: 'x' }, 'onEvent must be a function'],
    ['retention true', { secret: SECRET, database, retention: true }, 'retention must be an object: { personalDataMs, everyMs, batchJobs, leaseTtlMs }'],
    ['retention {}', { secret: SECRET, database, retention: {} }, 'retention.personalDataMs is required: how long a job\'s personal data is kept once it ended (ms)'],
    ['retention.personalDataMs 0', { secret: SECRET, database, retention: { personalDataMs: 0 } }, 'retention.personalDataMs must be a positive integer'],
    ['retention.personalDataMs "30d"', { secret: SECRET, database, retention: { personalDataMs: '30d' } }, 'retention.personalDataMs must be a positive integer'],
    ['retention.everyMs 1.5', { secret: SECRET, database, retention: { personalDataMs: 1, everyMs: 1.5 } }, 'retention.everyMs must be a positive integer'],
    ['retention.batchJobs 10001', { secret: SECRET, database, retention: { personalDataMs: 1, batchJobs: 10_001 } }, 'retention.batchJobs must be a positive integer up to 10000'],
    ['retention.leaseTtlMs -1', { secret: SECRET, database, retention: { personalDataMs: 1, leaseTtlMs: -1 } }, 'retention.leaseTtlMs must be a positive integer']
  ]
  for (const [name, options, message] of cases) {
    t.test(name, (t) => refuses(t, options, message))
  }
  t.notOk(existsSync(database), 'no database was opened for refused options')
})

t.test('the refusal also reaches an awaited register()', async (t) => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await t.rejects(async () => { await app.register(g2sentry, { secret: '' }) },
    { code: 'FST_G2SENTRY_INVALID_OPTION', message: 'fastify-g2sentry: every secret must be a non-empty string' })
})

t.test('valid edge values are accepted', async (t) => {
  const cases: Array<[string, Partial<G2SentryOptions>]> = [
    ['a one-element rotation list', { secret: ['only'] }],
    ['bodyLimit 1', { bodyLimit: 1 }],
    ['callbackPath "/"', { callbackPath: '/' }],
    ['jobRoutes {}', { jobRoutes: {} }],
    ['jobRoutes true', { jobRoutes: true }],
    ['jobRoutes false', { jobRoutes: false }]
  ]
  for (const [name, options] of cases) {
    t.test(name, async (t) => {
      const app = await buildApp(t, options)
      t.ok(app.hasDecorator('g2sentry'))
    })
  }
})

t.test('the secret array is copied at registration', async (t) => {
  const secrets = ['first']
  const app = await buildApp(t, { secret: secrets })
  secrets.push('added-later')
  secrets[0] = 'changed'
  t.equal((await post(app, assigned(1), { secret: 'first' })).statusCode, 200)
  t.equal((await post(app, assigned(2), { secret: 'added-later' })).statusCode, 401)
})

t.test('default database ./g2sentry.db, in the working directory', async (t) => {
  const dir = t.testdir()
  const cwd = process.cwd()
  process.chdir(dir)
  t.teardown(() => process.chdir(cwd))
  const app = await buildApp(t, { database: undefined, store: undefined })
  t.equal((await post(app, assigned(1))).statusCode, 200)
  await app.close()
  t.ok(existsSync(join(dir, 'g2sentry.db')), 'the file is ./g2sentry.db')

  const reopened = sqliteStore({ filename: join(dir, 'g2sentry.db') })
  t.teardown(() => reopened.close())
  t.match(await reopened.getJob(1), { jobId: 1, status: 'Assigned' }, 'and holds the event')
})

t.test('database ":memory:" works', async (t) => {
  const dir = t.testdir()
  const app = await buildApp(t, { database: ':memory:' })
  t.same((await post(app, assigned(1, { phone: PHONE }))).json(), { outcome: 'applied', seq: 1, jobId: 1, status: 'Assigned' })
  t.same((await post(app, assigned(1, { phone: PHONE }))).json(), { outcome: 'duplicate', seq: 2, jobId: 1, status: 'Assigned' })
  t.match((await app.inject('/jobs/1')).json(), { jobId: 1, status: 'Assigned', guardianPhone: PHONE, eventCount: 2 })
  t.equal((await logRows(app)).length, 2)
  t.notOk(existsSync(join(dir, ':memory:')), 'no file named ":memory:"')
})

t.test('the g2sentry decorator', async (t) => {
  const app = await buildApp(t)
  t.same(Object.keys(app.g2sentry).sort(), ['audit', 'checkProjection', 'consume', 'consumers', 'exportLog', 'health', 'readLog', 'rebuild', 'reconcile', 'redact', 'retryQuarantine', 'store'])
  await post(app, assigned(1, { phone: PHONE }))
  await post(app, assigned(1, { phone: PHONE }))
  await post(app, started(2))
  await post(app, assigned(2))
  await post(app, completed(1))

  t.test('store is the store in use', async (t) => {
    t.match(await app.g2sentry.store.getJob(1), { jobId: 1, status: 'Completed', version: 2, eventCount: 3 })
    t.equal(typeof app.g2sentry.store.append, 'function')
  })

  t.test('readLog streams the log in seq order', async (t) => {
    const all = []
    for await (const row of app.g2sentry.readLog()) all.push([row.seq, row.jobId, row.outcome])
    t.same(all, [[1, 1, 'applied'], [2, 1, 'duplicate'], [3, 2, 'applied'], [4, 2, 'stale'], [5, 1, 'applied']])

    const paged = []
    for await (const row of app.g2sentry.readLog({ pageSize: 2 })) paged.push(row.seq)
    t.same(paged, [1, 2, 3, 4, 5], 'whatever the page size')

    const job2 = []
    for await (const row of app.g2sentry.readLog({ jobId: 2 })) job2.push(row.seq)
    t.same(job2, [3, 4], 'one job')

    const window = []
    for await (const row of app.g2sentry.readLog({ afterSeq: 1, toSeq: 3 })) window.push(row.seq)
    t.same(window, [2, 3], 'a window of seqs')

    const first = await app.g2sentry.readLog().next()
    t.ok(first.value !== undefined && first.value.rawBody.equals(bytesOf(assigned(1, { phone: PHONE }))), 'rows hold the raw bytes')
  })

  t.test('verify and rebuild agree with the live projection', async (t) => {
    const verified = await app.g2sentry.checkProjection()
    t.same(verified, { events: 5, jobs: 2, outcomeMismatches: [], differingJobs: [] })
    const before = await app.inject('/jobs/1')
    const rebuilt = await app.g2sentry.rebuild()
    t.same(rebuilt, { events: 5, jobs: 2, outcomeMismatches: [], differingJobs: [] })
    t.same((await app.inject('/jobs/1')).json(), before.json(), 'the projection is unchanged by a rebuild')
  })
})

t.test('a store the plugin opened is closed with the app', async (t) => {
  const app = Fastify({ logger: false })
  app.register(g2sentry, { secret: SECRET, database: join(t.testdir(), 'g2.db') })
  await app.ready()
  const { store } = app.g2sentry
  await app.close()
  const payload = assigned(1)
  const rawBody = bytesOf(payload)
  await t.rejects(store.append({ ...payload, jobStatus: 'Assigned', rawBody, signature: signBody(rawBody, SECRET), receivedAt: Date.now() }),
    'append rejects after close')
  await t.rejects(store.getJob(1), 'reads reject too')
})

t.test('a store given by the user is not closed by the plugin', async (t) => {
  const store = sqliteStore({ filename: join(t.testdir(), 'g2.db') })
  t.teardown(() => store.close())
  const app = Fastify({ logger: false })
  app.register(g2sentry, { secret: SECRET, store })
  await app.ready()
  t.equal(app.g2sentry.store, store, 'the decorator exposes the given store')
  t.equal((await post(app, assigned(1))).statusCode, 200)
  await app.close()

  t.ok(sqliteConnection(store).open, 'the database connection is still open')
  const payload = started(1)
  const rawBody = bytesOf(payload)
  const result = await store.append({ ...payload, jobStatus: 'InProgress', rawBody, signature: signBody(rawBody, SECRET), receivedAt: Date.now() })
  t.same(result, { outcome: 'applied', seq: 2, jobId: 1, status: 'InProgress' }, 'and still appends')
})

t.test('a restart on the same file keeps the state', async (t) => {
  const database = join(t.testdir(), 'g2.db')
  const first = Fastify({ logger: false })
  first.register(g2sentry, { secret: SECRET, database })
  await first.ready()
  for (const payload of [assigned(1, { phone: PHONE }), assigned(2), assigned(1, { phone: PHONE }), started(1), withdrawn(2)]) {
    t.equal((await post(first, payload)).statusCode, 200)
  }
  const before = await Promise.all(['/jobs/1', '/jobs/2', '/jobs/1/events', '/jobs'].map(async (url) => (await first.inject(url)).json()))
  await first.close()

  const second = await buildApp(t, { database })
  const after = await Promise.all(['/jobs/1', '/jobs/2', '/jobs/1/events', '/jobs'].map(async (url) => (await second.inject(url)).json()))
  t.same(after, before, 'the same projection and log after the restart')
  t.match(after[0], { jobId: 1, status: 'InProgress', guardianPhone: PHONE, version: 2, eventCount: 3 })

  const next = await post(second, completed(1))
  t.same(next.json(), { outcome: 'applied', seq: 6, jobId: 1, status: 'Completed' }, 'the seq continues')
  const redelivery = await post(second, started(1))
  t.same(redelivery.json(), { outcome: 'stale', seq: 7, jobId: 1, status: 'Completed' })
  t.same(await second.g2sentry.checkProjection(), { events: 7, jobs: 2, outcomeMismatches: [], differingJobs: [] })
})

t.test('two registrations without a namespace on one app are refused, not silently shared', async (t) => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  app.register(g2sentry, { secret: SECRET, database: join(t.testdir(), 'a.db') })
  app.register(g2sentry, { secret: SECRET, database: join(t.testdir(), 'b.db') })
  await t.rejects(async () => { await app.ready() }, { code: 'FST_G2SENTRY_NAMESPACE_TAKEN' })
})

t.test('a custom store is checked for what the enabled features need, naming each missing method', async (t) => {
  const store = sqliteStore({ filename: ':memory:' })
  t.teardown(() => store.close())
  const { deleteConsumer: _deleteConsumer, ...withoutDelete } = store
  // As a store written in JavaScript would come: the types would not let it through.
  const partial = (methods: object) => methods as G2SentryStore
  await t.resolves(buildApp(t, { store: partial(withoutDelete) }), 'enough for callbacks and the job routes')
  await t.rejects(buildApp(t, { store: partial(withoutDelete), forward: { url: 'http://127.0.0.1:9/', secret: 's' } }),
    { code: 'FST_G2SENTRY_INVALID_OPTION', message: /missing consumers: deleteConsumer\)$/ }, 'forward needs every consumer method')
  const { appendIf: _appendIf, reconcileState: _state, ...withoutReconciler } = store
  await t.rejects(buildApp(t, { store: partial(withoutReconciler), reconcile: { baseUrl: 'http://127.0.0.1:9', partnerKey: 'k', partnerSecret: 's' } }),
    { code: 'FST_G2SENTRY_INVALID_OPTION', message: /missing reconciler: appendIf, reconciler: reconcileState\)$/ }, 'reconcile needs its role')
  const { retentionCandidates: _candidates, ...withoutRetention } = store
  await t.resolves(buildApp(t, { store: partial(withoutRetention) }), 'retention off: no lifecycle needed')
  await t.rejects(buildApp(t, { store: partial(withoutRetention), retention: { personalDataMs: 1000 } }),
    { code: 'FST_G2SENTRY_INVALID_OPTION', message: /missing lifecycle: retentionCandidates\)$/ }, 'retention needs the lifecycle role')
})
