// The example server as a newcomer runs it (`npm start`: tsx examples/server.ts; the first test
// exactly so, the others under tap's TypeScript loader, see ts-loader.ts) in a child process,
// configured by environment variables, driven by the real simulator CLI entry
// (bin/g2sentry.js → dist/cli/bin.js, built by `npm test` before tap runs).
import t from 'tap'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { holdWriteLock } from '../helpers/lock-holder.js'
import { exitWithin, freePort, listening, simulate, startServer, stop } from '../helpers/example-process.js'

/** The simulator's per-delivery lines ("job N EventType ... → STATUS ..."). */
const deliveryLines = (stdout: string) => stdout.split('\n').filter((line) => /^job \d+ /.test(line))

async function getJson (url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url)
  return { status: response.status, body: await response.json() as Record<string, unknown> }
}

t.test('a newcomer runs the example server and the simulator', async (t) => {
  const dir = t.testdir()
  const database = join(dir, 'data', 'g2.db')
  t.notOk(existsSync(join(dir, 'data')), 'the data directory does not exist yet')
  const port = await freePort()
  const env = { G2SENTRY_DB: database }

  const server = startServer(t, { port, env, newcomer: true })
  await listening(server)
  t.ok(existsSync(database), 'the server created the data directory and the database')
  const warning = server.logs.find((line) => line.level === 40 && /DEVELOPMENT secret/.test(line.msg))
  t.ok(warning, 'a warning says the DEVELOPMENT secret is in use')
  t.match(warning?.msg, /G2SENTRY_CALLBACK_SECRET is not set/, 'and names the variable to set')

  const sim = await simulate(port)
  t.equal(sim.code, 0, 'the simulator exits 0')
  t.match(sim.stdout, /signing with the development secret/, 'it says it signs with the development secret')
  const delivered = deliveryLines(sim.stdout)
  t.equal(delivered.length, 11, 'one line per simulated delivery')
  t.ok(delivered.every((line) => line.includes('→ 200 ')), 'every delivery was answered 200')
  for (const outcome of ['applied', 'duplicate', 'stale', 'unsupported']) {
    t.ok(delivered.some((line) => line.includes(`→ 200 ${outcome} `)), `the output shows ${outcome}`)
  }
  t.match(delivered[2], /job 101 JobStarted .*→ 200 duplicate \(seq 3, status InProgress\)/, 'the redelivery is a duplicate')
  t.match(delivered[4], /job 101 JobAssigned .*→ 200 stale \(seq 5, status Completed\)/, 'the late assignment is stale')
  t.match(delivered[10], /job 104 JobGuardianRate .*→ 200 unsupported \(seq 11, status null\)/, 'the unknown event type is unsupported')

  const job101 = await getJson(server.url('/jobs/101'))
  t.equal(job101.status, 200)
  t.match(job101.body, { jobId: 101, status: 'Completed', guardianPhone: null, lastEventType: 'JobCompleted', eventCount: 5 },
    'job 101 is Completed and its phone is gone')
  t.type(job101.body.version, 'number')

  const job102 = await getJson(server.url('/jobs/102'))
  t.equal(job102.status, 200)
  t.match(job102.body, { jobId: 102, status: 'InProgress', guardianPhone: '+19876543210' }, 'job 102 is InProgress: the overtaken assignment did not move it back')

  const job103 = await getJson(server.url('/jobs/103'))
  t.equal(job103.status, 200)
  t.match(job103.body, { jobId: 103, status: 'Assigned', guardianPhone: null }, 'job 103 is Assigned again after the withdrawal, with no phone yet')

  const job104 = await getJson(server.url('/jobs/104'))
  t.equal(job104.status, 404, 'job 104 (only an unsupported event) is not a job')
  t.match(job104.body, { statusCode: 404, code: 'FST_G2SENTRY_JOB_NOT_FOUND' })

  const events101 = await getJson(server.url('/jobs/101/events'))
  t.equal(events101.status, 200)
  const events = events101.body.events as Array<{ seq: number; eventType: string; outcome: string; receivedAt: string }>
  t.equal(events101.body.jobId, 101)
  t.same(events.map((e) => [e.seq, e.eventType, e.outcome]), [
    [1, 'JobAssigned', 'applied'],
    [2, 'JobStarted', 'applied'],
    [3, 'JobStarted', 'duplicate'],
    [4, 'JobCompleted', 'applied'],
    [5, 'JobAssigned', 'stale']
  ], 'job 101\'s events, in seq order, with their outcomes')
  t.ok(events.every((e) => new Date(e.receivedAt).toISOString() === e.receivedAt), 'receivedAt is ISO 8601')

  t.ok(server.logs.some((line) => line.msg === 'job status changed' && line.jobId === 101 && line.status === 'Completed'),
    'the example\'s onEvent logged the change to Completed')

  const generated = await simulate(port, ['--seed', '7', '--jobs', '25', '--first-job', '1001'])
  t.equal(generated.code, 0, 'a generated schedule (redeliveries, reordering, withdrawals) converges: exit 0')
  t.match(generated.stdout, /^seed 7: \d+ deliveries for 25 jobs → \d+ applied/m, 'it says what the deliveries got')
  t.match(generated.stdout, /^25 of 25 jobs show their true status$/m, 'and that every job shows its true status')

  const stopped = await stop(server)
  t.same(stopped, { code: 0, signal: null }, 'SIGTERM closes the server cleanly with exit code 0')
  t.ok(server.logs.some((line) => line.msg === 'closing' && line.signal === 'SIGTERM'), 'it logged that it was closing')

  const again = startServer(t, { port, env })
  await listening(again)
  const restarted = await getJson(again.url('/jobs/101'))
  t.equal(restarted.status, 200)
  t.equal(restarted.body.status, 'Completed', 'after a restart on the same file, job 101 is still Completed')
  t.equal(restarted.body.version, job101.body.version, 'with the same version')
  t.same(restarted.body, job101.body, 'and exactly the same view')
  t.notOk(again.logs.some((line) => /error/i.test(line.msg) || line.level >= 50), 'the restart logged no error')
  t.same(await stop(again), { code: 0, signal: null }, 'the restarted server also stops with exit code 0')
})

t.test('in production without a secret the server refuses to start', async (t) => {
  const dir = t.testdir()
  const port = await freePort()
  const server = startServer(t, { port, env: { NODE_ENV: 'production', G2SENTRY_DB: join(dir, 'data', 'g2.db') } })
  const exit = await exitWithin(server, 10_000)
  t.not(exit, 'timeout', 'it exits quickly')
  if (exit !== 'timeout') {
    t.not(exit.code, 0, 'with a non-zero exit code')
    t.equal(exit.signal, null, 'by itself, not killed')
  }
  t.notOk(server.logs.some((line) => line.msg.startsWith('Server listening')), 'it never listened')
  t.ok(server.logs.some((line) => line.level === 60 && /G2SENTRY_CALLBACK_SECRET is not set/.test(line.msg)),
    'a fatal log line says why')
  t.notOk(server.logs.some((line) => /DEVELOPMENT secret/.test(line.msg)), 'it never fell back to the development secret')
  await t.rejects(fetch(`http://127.0.0.1:${port}/jobs/1`), 'nothing answers on the port')
})

t.test('the simulator pointed at the server instead of its callback URL says so', async (t) => {
  const port = await freePort()
  const server = startServer(t, { port, env: { G2SENTRY_DB: join(t.testdir(), 'g2.db') } })
  await listening(server)
  for (const args of [[], ['--seed', '3', '--jobs', '2']]) {
    const run = await simulate(port, ['--url', `http://127.0.0.1:${port}`, ...args])
    t.equal(run.code, 1, `simulate ${args.join(' ')} exits 1`)
    t.match(run.stdout, `http://127.0.0.1:${port} answered 404: --url takes the callback URL itself`, 'and tells what --url takes')
  }
})

t.test('a configured secret: the development secret is refused, the configured one accepted', async (t) => {
  const SECRET = 's3cr3t-value-xyz'
  const dir = t.testdir()
  const port = await freePort()
  const server = startServer(t, { port, env: { G2SENTRY_DB: join(dir, 'g2.db'), G2SENTRY_CALLBACK_SECRET: SECRET } })
  await listening(server)
  t.notOk(server.logs.some((line) => /DEVELOPMENT secret/.test(line.msg)), 'no development-secret warning when a secret is set')

  const unsigned = await simulate(port)
  t.equal(unsigned.code, 1, 'the simulator without a secret exits 1')
  const refused = deliveryLines(unsigned.stdout)
  t.equal(refused.length, 11)
  t.ok(refused.every((line) => line.includes('→ 401 ')), 'every delivery was answered 401')
  t.ok(refused.every((line) => line.includes('FST_G2SENTRY_')), 'with the plugin\'s error code')

  const jobsAfterRefusal = await getJson(server.url('/jobs/101'))
  t.equal(jobsAfterRefusal.status, 404, 'a refused delivery stored nothing')

  const signed = await simulate(port, ['--secret', SECRET])
  t.equal(signed.code, 0, 'with --secret the simulator exits 0')
  t.notMatch(signed.stdout, /development secret/)
  const accepted = deliveryLines(signed.stdout)
  t.equal(accepted.length, 11)
  t.ok(accepted.every((line) => line.includes('→ 200 ')), 'every delivery was answered 200')
  t.match((await getJson(server.url('/jobs/101'))).body, { status: 'Completed' })

  t.same(await stop(server), { code: 0, signal: null })
  t.ok(server.logs.some((line) => line.msg === 'g2sentry: callback refused, bad signature'), 'the refusals were logged')
  t.notOk(server.output().includes(SECRET), 'the secret never appears in the server\'s output')
  t.notOk(unsigned.stdout.includes(SECRET) || signed.stdout.includes(SECRET) || signed.stderr.includes(SECRET),
    'nor in the simulator\'s')
})

t.test('during a rotation both the new and the previous secret are accepted', async (t) => {
  const NEW = 'new-s3cr3t-value-xyz'
  const OLD = 'old-s3cr3t-value-xyz'
  const dir = t.testdir()
  const port = await freePort()
  const server = startServer(t, {
    port,
    env: {
      G2SENTRY_DB: join(dir, 'g2.db'),
      G2SENTRY_CALLBACK_SECRET: NEW,
      G2SENTRY_CALLBACK_SECRET_PREVIOUS: OLD
    }
  })
  await listening(server)

  const [old, current, wrong] = await Promise.all([
    simulate(port, ['--secret', OLD, '--first-job', '201']),
    simulate(port, ['--secret', NEW, '--first-job', '301']),
    simulate(port, ['--secret', 'not-either-secret', '--first-job', '401'])
  ])
  t.equal(old.code, 0, '--secret <previous> is accepted')
  t.ok(deliveryLines(old.stdout).every((line) => line.includes('→ 200 ')))
  t.equal(current.code, 0, '--secret <new> is accepted')
  t.ok(deliveryLines(current.stdout).every((line) => line.includes('→ 200 ')))
  t.equal(wrong.code, 1, 'any other secret is refused')
  t.ok(deliveryLines(wrong.stdout).every((line) => line.includes('→ 401 ')))

  t.match((await getJson(server.url('/jobs/201'))).body, { status: 'Completed' })
  t.match((await getJson(server.url('/jobs/301'))).body, { status: 'Completed' })
  t.equal((await getJson(server.url('/jobs/401'))).status, 404)

  const stored = server.logs.filter((line) => line.msg === 'g2sentry: callback stored')
  t.ok(stored.some((line) => line.jobId === 201 && line.secretIndex === 1), 'the previous secret matched as secret #1')
  t.ok(stored.some((line) => line.jobId === 301 && line.secretIndex === 0), 'the new secret matched as secret #0')

  t.same(await stop(server), { code: 0, signal: null })
  t.notOk(server.output().includes(NEW) || server.output().includes(OLD), 'neither secret appears in the server\'s output')
})

t.test('/health answers while the process runs; /ready says whether the store takes writes', async (t) => {
  const dir = t.testdir()
  const db = join(dir, 'g2.db')
  const port = await freePort()
  const server = startServer(t, { port, env: { G2SENTRY_DB: db } })
  await listening(server)
  t.match(await getJson(server.url('/health')), { status: 200, body: { ok: true } })
  t.match(await getJson(server.url('/ready')), { status: 200, body: { ok: true, store: { ok: true }, writes: { ok: true } } })
  const lock = await holdWriteLock(t, db)
  t.match(await getJson(server.url('/ready')), { status: 503, body: { ok: false, store: { ok: true }, writes: { ok: false } } },
    'not ready while another process holds the write lock')
  t.match(await getJson(server.url('/health')), { status: 200 }, 'yet alive')
  await lock.release()
  t.match(await getJson(server.url('/ready')), { status: 200 }, 'ready once it is released')
  t.same(await stop(server), { code: 0, signal: null })
})
