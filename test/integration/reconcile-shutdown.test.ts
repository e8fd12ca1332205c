// SIGTERM to the example server (a real child process) while its reconciler waits on G2 Sentry:
// an answer that never comes, or a 429 asking for an hour. The server exits within 5 s either way.
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { Agent } from 'node:http'
import { signBody } from '../../src/domain/verify-signature.js'
import { DEVELOPMENT_SECRET } from '../../src/simulator/simulate.js'
import type { FakeG2Sentry } from '../../src/simulator/fake-g2sentry.js'
import { assigned } from '../helpers/helpers.js'
import { freePort, listening, send, startServer, stop, type ExampleServer } from '../helpers/example-process.js'
import { startFake } from '../helpers/reconciler.js'
import { until } from '../helpers/until.js'

t.setTimeout(120_000)

async function reconcilingServer (t: Test, fake: FakeG2Sentry): Promise<ExampleServer> {
  const server = startServer(t, {
    port: await freePort(),
    env: {
      G2SENTRY_DB: join(t.testdir(), 'g2.db'),
      G2SENTRY_API_URL: fake.url,
      G2SENTRY_PARTNER_KEY: fake.partnerKey,
      G2SENTRY_PARTNER_SECRET: fake.partnerSecret,
      G2SENTRY_RECONCILE_QUIET_MS: '1',
      G2SENTRY_RECONCILE_EVERY_MS: '200'
    }
  })
  await listening(server)
  const agent = new Agent()
  t.teardown(() => agent.destroy())
  const body = Buffer.from(JSON.stringify(assigned(1)))
  const reply = await send(agent, server.port, 'POST', '/callbacks/g2sentry', body, { 'content-type': 'application/json', 'x-signature': signBody(body, DEVELOPMENT_SECRET) })
  t.equal(reply.status, 200)
  return server
}

async function stopsWithin5s (t: Test, server: ExampleServer): Promise<void> {
  const started = Date.now()
  const exit = await stop(server, 5000)
  t.not(exit, 'timeout', `exited ${Date.now() - started} ms after SIGTERM`)
  t.match(exit, { code: 0 }, 'a clean exit')
}

t.test('SIGTERM while a status answer never comes', async (t) => {
  const fake = await startFake(t)
  fake.setStatus(1, 'Canceled')
  const held = fake.hold(1)
  const server = await reconcilingServer(t, fake)
  await held.arrived
  await stopsWithin5s(t, server)
  const after = fake.requests.length
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(fake.requests.length, after, 'no request after the exit')
})

t.test('SIGTERM during an hour\'s Retry-After', async (t) => {
  const fake = await startFake(t)
  fake.setStatus(1, 'Canceled')
  fake.answer(/^\/jobs\/1\/status$/, { status: 429, headers: { 'retry-after': '3600' } })
  const server = await reconcilingServer(t, fake)
  await until('a 429', () => fake.requests.some((r) => r.status === 429))
  await stopsWithin5s(t, server)
})
