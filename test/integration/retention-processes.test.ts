// Retention in several processes on one log: the example server run twice on one SQLite file (and
// twice on one PostgreSQL schema) with G2SENTRY_REDACT_AFTER_MS. One erases at a time; when it is
// SIGKILLed, the other takes the lease over within its ttl and one renewal, and erases.
import t, { type Test } from 'tap'
import { Agent } from 'node:http'
import { signBody } from '../../src/domain/verify-signature.js'
import { DEVELOPMENT_SECRET } from '../../src/simulator/simulate.js'
import { assigned, completed } from '../helpers/helpers.js'
import { freePort, listening, send, startServer, type ExampleServer } from '../helpers/example-process.js'
import { onSqliteAndPostgres } from '../helpers/pg.js'
import { until } from '../helpers/until.js'

t.setTimeout(120_000)

// Long enough that a busy machine (tests running in parallel) still renews in time.
const LEASE_MS = 4000
const REDACT_AFTER_MS = 300

const holds = (server: ExampleServer) => server.logs.some((l) => l.msg === 'g2sentry: this process erases expired personal data now')

async function behaviour (t: Test, database: string): Promise<void> {
  const env = { G2SENTRY_DB: database, G2SENTRY_REDACT_AFTER_MS: String(REDACT_AFTER_MS), G2SENTRY_RETENTION_EVERY_MS: '100', G2SENTRY_RETENTION_LEASE_MS: String(LEASE_MS) }
  const servers = [startServer(t, { port: await freePort(), env, name: 'A' }), startServer(t, { port: await freePort(), env, name: 'B' })]
  await Promise.all(servers.map((s) => listening(s)))
  const agent = new Agent({ keepAlive: true })
  t.teardown(() => agent.destroy())

  const deliver = async (to: ExampleServer, payload: object) => {
    const body = Buffer.from(JSON.stringify(payload))
    const reply = await send(agent, to.port, 'POST', '/callbacks/g2sentry', body, { 'content-type': 'application/json', 'x-signature': signBody(body, DEVELOPMENT_SECRET) })
    t.equal(reply.status, 200)
  }
  const erased = async (server: ExampleServer, jobId: number) => {
    const reply = await send(agent, server.port, 'GET', `/jobs/${jobId}/events`)
    const { events } = JSON.parse(reply.text) as { events: Array<{ redacted: boolean }> }
    return events.length > 0 && events.every((event) => event.redacted)
  }

  await until('one holder', () => servers.some(holds))
  const [holder, other] = (holds(servers[0] as ExampleServer) ? servers : [...servers].reverse()) as [ExampleServer, ExampleServer]
  await deliver(other, assigned(1, { phone: '+15550100001' }))
  await deliver(other, completed(1))
  await until('job 1 erased', () => erased(other, 1))
  t.equal(servers.filter(holds).length, 1, 'one process erases at a time')

  holder.child.kill('SIGKILL')
  await holder.exited
  const killedAt = Date.now()
  await deliver(other, assigned(2, { phone: '+15550100002' }))
  await deliver(other, completed(2))
  await until('the other process to take over', () => holds(other))
  const tookOver = Date.now() - killedAt
  t.ok(tookOver <= LEASE_MS + LEASE_MS / 3 + 3000, `taken over ${tookOver} ms after the SIGKILL (lease ${LEASE_MS} ms, renewed every ${Math.floor(LEASE_MS / 3)} ms)`)
  await until('job 2 erased by the survivor', () => erased(other, 2))
  t.pass('the survivor erased job 2')
  const job = await send(agent, other.port, 'GET', '/jobs/2')
  t.match(JSON.parse(job.text), { jobId: 2, status: 'Completed', guardianPhone: null }, 'its status kept')
}

await onSqliteAndPostgres({ sqlite: 'two processes on one SQLite file', postgres: 'two processes on one PostgreSQL schema' }, behaviour, 'shared.db')
