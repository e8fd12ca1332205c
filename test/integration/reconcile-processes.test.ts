// Several processes on one log: the example server run twice on one SQLite file (and twice on one
// PostgreSQL schema), reconciling against the fake G2 Sentry. One reconciles at a time; when it
// is SIGKILLed, the other takes over within the lease's ttl and one renewal.
import t, { type Test } from 'tap'
import { Agent } from 'node:http'
import { signBody } from '../../src/domain/verify-signature.js'
import { DEVELOPMENT_SECRET } from '../../src/simulator/simulate.js'
import { assigned } from '../helpers/helpers.js'
import { freePort, listening, send, startServer, type ExampleServer } from '../helpers/example-process.js'
import { startFake } from '../helpers/reconciler.js'
import { onSqliteAndPostgres } from '../helpers/pg.js'

t.setTimeout(120_000)

// Long enough that a busy machine (tests running in parallel) still renews in time.
const LEASE_MS = 4000
const EVERY_MS = 200

const acquired = (server: ExampleServer) => server.logs.some((l) => l.msg === 'g2sentry: this process reconciles with G2 Sentry now')

async function waitFor (what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<number> {
  const started = Date.now()
  while (!(await check())) {
    if (Date.now() - started > ms) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return Date.now() - started
}

async function behaviour (t: Test, database: string): Promise<void> {
  const fake = await startFake(t)
  const env = {
    G2SENTRY_DB: database,
    G2SENTRY_API_URL: fake.url,
    G2SENTRY_PARTNER_KEY: fake.partnerKey,
    G2SENTRY_PARTNER_SECRET: fake.partnerSecret,
    G2SENTRY_RECONCILE_QUIET_MS: '1',
    G2SENTRY_RECONCILE_EVERY_MS: String(EVERY_MS),
    G2SENTRY_RECONCILE_LEASE_MS: String(LEASE_MS)
  }
  const servers = [startServer(t, { port: await freePort(), env, name: 'A' }), startServer(t, { port: await freePort(), env, name: 'B' })]
  await Promise.all(servers.map((s) => listening(s)))
  const agent = new Agent({ keepAlive: true })
  t.teardown(() => agent.destroy())
  const [a] = servers as [ExampleServer, ExampleServer]

  const deliver = async (payload: object, to: ExampleServer = a) => {
    const body = Buffer.from(JSON.stringify(payload))
    const reply = await send(agent, to.port, 'POST', '/callbacks/g2sentry', body, { 'content-type': 'application/json', 'x-signature': signBody(body, DEVELOPMENT_SECRET) })
    t.equal(reply.status, 200)
  }
  const status = async (server: ExampleServer, jobId: number) => {
    const reply = await send(agent, server.port, 'GET', `/jobs/${jobId}`)
    return reply.status === 200 ? (JSON.parse(reply.text) as { status: string }).status : undefined
  }

  await deliver(assigned(1))
  await deliver(assigned(2))
  fake.setStatus(1, 'Canceled')
  fake.setStatus(2, 'Assigned')
  await waitFor('job 1 to be reconciled', async () => await status(a, 1) === 'Canceled')
  await waitFor('one holder', () => servers.some(acquired))
  // Several rounds later, still only one process has ever held the lease.
  await new Promise((resolve) => setTimeout(resolve, 5 * EVERY_MS))
  const holders = servers.filter(acquired)
  t.equal(holders.length, 1, 'one process reconciles at a time')
  const holder = holders[0] as ExampleServer
  const other = servers.find((s) => s !== holder) as ExampleServer
  t.equal(fake.requests.filter((r) => r.path === '/access/login').length, 1, 'only the holder logged in to the Partner API')

  holder.child.kill('SIGKILL')
  await holder.exited
  const killedAt = Date.now()
  fake.setStatus(2, 'Canceled')
  await waitFor('the other process to take over', () => acquired(other))
  const tookOver = Date.now() - killedAt
  t.ok(tookOver < 60_000, 'within a minute')
  t.ok(tookOver <= LEASE_MS + LEASE_MS / 3 + 3000, `taken over ${tookOver} ms after the SIGKILL (lease ${LEASE_MS} ms, renewed every ${Math.floor(LEASE_MS / 3)} ms)`)
  await waitFor('job 2 to be reconciled by the survivor', async () => await status(other, 2) === 'Canceled')
  t.pass('the survivor reconciled job 2')

  // Job 3 stays open, so each round asks about it (quietFor 1 ms, a round every 200 ms): soon the
  // rate, not the rounds, sets the pace. The window lives in the database, so the requests of
  // the dead holder still count for the survivor.
  await deliver(assigned(3), other)
  fake.setStatus(3, 'Assigned')
  await waitFor('50 requests', () => fake.requests.length >= 50, 40_000)
  await new Promise((resolve) => setTimeout(resolve, 3000))
  t.equal(fake.requests.filter((r) => r.status === 429).length, 0, 'never a 429')
  t.ok(fake.maxInWindow(60_000) <= 50, `at most 50 requests in any 60 s, from both processes together (saw ${fake.maxInWindow(60_000)})`)
}

await onSqliteAndPostgres({ sqlite: 'two processes on one SQLite file', postgres: 'two processes on one PostgreSQL schema' }, behaviour, 'shared.db')
