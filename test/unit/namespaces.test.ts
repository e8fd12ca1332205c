// Several registrations in one app (two G2 Sentry accounts, or two tenants): each under its own
// namespace, prefix, secrets and database, with metrics that share one registry.
import t from 'tap'
import Fastify from 'fastify'
import { Registry } from 'prom-client'
import { join } from 'node:path'
import g2sentry, { type G2SentryDecorator } from '../../src/index.js'
import { assigned, post } from '../helpers/helpers.js'

declare module '../../src/index.js' {
  interface G2SentryNamespaces {
    tenantA: G2SentryDecorator
    tenantB: G2SentryDecorator
  }
}

t.test('two tenants: their own routes, secrets, logs and metrics in one registry', async (t) => {
  const dir = t.testdir()
  const registry = new Registry()
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(g2sentry, { namespace: 'tenantA', prefix: '/a', secret: 'secret-a', database: join(dir, 'a.db'), metrics: { registry } })
  await app.register(g2sentry, { namespace: 'tenantB', prefix: '/b', secret: 'secret-b', database: join(dir, 'b.db'), metrics: { registry } })
  await app.ready()

  t.equal((await post(app, assigned(1), { url: '/a/callbacks/g2sentry', secret: 'secret-a' })).statusCode, 200, 'tenant A takes its own callbacks')
  t.equal((await post(app, assigned(1), { url: '/b/callbacks/g2sentry', secret: 'secret-a' })).statusCode, 401, 'tenant B refuses A\'s secret')
  t.equal((await post(app, assigned(2), { url: '/b/callbacks/g2sentry', secret: 'secret-b' })).statusCode, 200)
  t.equal((await post(app, assigned(2), { url: '/a/callbacks/g2sentry', secret: 'secret-b' })).statusCode, 401, 'and A refuses B\'s')

  t.equal((await app.inject('/a/jobs/1')).statusCode, 200)
  t.equal((await app.inject('/b/jobs/1')).statusCode, 404, 'each reads its own log')
  t.match(await app.g2sentry.tenantA.store.getJob(1), { status: 'Assigned' })
  t.equal(await app.g2sentry.tenantB.store.getJob(1), undefined)
  t.match(await app.g2sentry.tenantB.store.getJob(2), { status: 'Assigned' })

  const text = await registry.metrics()
  t.match(text, /g2sentry_tenantA_deliveries_total\{outcome="applied"\} 1/, 'tenant A\'s metrics')
  t.match(text, /g2sentry_tenantB_deliveries_total\{outcome="applied"\} 1/, 'tenant B\'s, in the same registry')
  t.match((await app.inject('/a/metrics')).body, /g2sentry_tenantA_rejections_total/)
})

t.test('a default registration beside a namespaced one', async (t) => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(g2sentry, { secret: 'secret-main', database: ':memory:' })
  await app.register(g2sentry, { namespace: 'tenantA', prefix: '/a', secret: 'secret-a', database: ':memory:' })
  await app.ready()
  t.equal((await post(app, assigned(3), { secret: 'secret-main' })).statusCode, 200)
  t.match(await app.g2sentry.store.getJob(3), { status: 'Assigned' }, 'fastify.g2sentry is the default registration')
  t.equal(await app.g2sentry.tenantA.store.getJob(3), undefined, 'fastify.g2sentry.tenantA the named one')
})

for (const [name, first, second, message] of [
  ['the same namespace twice', { namespace: 'tenantA', prefix: '/a' }, { namespace: 'tenantA', prefix: '/b' }, /already registered with namespace tenantA/],
  ['twice without a namespace', {}, { prefix: '/b' }, /already registered without a namespace/]
] as const) {
  t.test(`${name}: FST_G2SENTRY_NAMESPACE_TAKEN`, async (t) => {
    const app = Fastify({ logger: false })
    t.teardown(() => app.close())
    await app.register(g2sentry, { secret: 's', database: ':memory:', ...first })
    await t.rejects(async () => { await app.register(g2sentry, { secret: 's', database: ':memory:', ...second }) },
      { code: 'FST_G2SENTRY_NAMESPACE_TAKEN', message })
  })
}

t.test('a namespace must be a name, and not one of the API\'s members', async (t) => {
  for (const [namespace, message] of [['store', /is a member of fastify.g2sentry/], ['tenant-a', /a letter followed by/], ['', /a letter followed by/]] as const) {
    const app = Fastify({ logger: false })
    t.teardown(() => app.close())
    await t.rejects(async () => { await app.register(g2sentry, { secret: 's', database: ':memory:', namespace }) },
      { code: 'FST_G2SENTRY_INVALID_OPTION', message }, JSON.stringify(namespace))
  }
})
