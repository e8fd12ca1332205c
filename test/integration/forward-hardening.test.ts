// The forwarder of the example server (a child process) against receivers that misbehave and URLs
// that carry secrets: a SIGTERM ends the server within 5 s whether the receiver answers 500 (the
// forwarder in a minute-long backoff) or never answers; a URL with `user:password@` delivers with
// Basic auth; neither the password nor a query token ever reaches a log line, a stored error or
// the CLI; a restart after a SIGKILL says why it waits for the dead instance's lease.
import t, { type Test } from 'tap'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { signBody } from '../../src/domain/verify-signature.js'
import { runCli } from '../helpers/cli-process.js'
import { freePort, listening, startServer, stop, type ExampleServer } from '../helpers/example-process.js'
import { assigned, CALLBACK_PATH, completed, started } from '../helpers/helpers.js'
import { startReceiver, type Receiver } from '../helpers/receiver.js'
import { until } from '../helpers/until.js'

t.setTimeout(240_000)

const CALLBACK_SECRET = 'forward-hardening-callback-secret'
const FORWARD_SECRET = 'forward-hardening-forward-secret'
// A password with characters a URL must percent-encode, so both forms are looked for.
const PASSWORD = 'pa55:w0rd@never-logged'
const QUERY_TOKEN = 'qu3ry-t0ken-never-logged'

function server (t: Test, db: string, port: number, forwardUrl: string, env: Record<string, string> = {}): ExampleServer {
  return startServer(t, {
    port,
    env: {
      G2SENTRY_DB: db,
      G2SENTRY_CALLBACK_SECRET: CALLBACK_SECRET,
      G2SENTRY_FORWARD_URL: forwardUrl,
      G2SENTRY_FORWARD_SECRET: FORWARD_SECRET,
      ...env
    }
  })
}

async function deliver (target: ExampleServer, payloads: object[]): Promise<void> {
  for (const payload of payloads) {
    const body = JSON.stringify(payload)
    const response = await fetch(target.url(CALLBACK_PATH), {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-signature': signBody(body, CALLBACK_SECRET) },
      body
    })
    if (response.status !== 200) throw new Error(`callback answered ${response.status}`)
  }
}

/** Sends SIGTERM once the receiver has seen `attempts` requests, and measures how long the exit takes. */
async function termDuring (t: Test, receiver: Receiver, env: Record<string, string>, attempts: number): Promise<void> {
  const port = await freePort()
  const running = server(t, join(t.testdir(), 'g2.db'), port, receiver.url, env)
  await listening(running, 60_000)
  await deliver(running, [assigned(1)])
  await until(`${attempts} forwarding attempts`, () => receiver.attempts() >= attempts, 30_000)
  // The forwarder is now in its backoff, or waiting on an answer that never comes.
  await new Promise((resolve) => setTimeout(resolve, 300))
  const started = Date.now()
  const exit = await stop(running, 5000)
  const elapsed = Date.now() - started
  t.same(exit, { code: 0, signal: null }, `exited cleanly within 5 s (${elapsed} ms)`)
  t.notMatch(running.output(), /\n\s+at /, 'no stack trace')
}

t.test('SIGTERM while a request is in flight, the forwarder deep in its backoff: exits within 5 s', async (t) => {
  // Seven 500s take the backoff to its 6.4-12.8 s step; the eighth request never gets an answer.
  // The SIGTERM aborts that request: the consumer must not then start the next backoff's sleep.
  const receiver = await startReceiver(t, { secret: FORWARD_SECRET, fail: (n) => n < 8, hang: (n) => n >= 8 })
  await termDuring(t, receiver, { G2SENTRY_FORWARD_MAX_BACKOFF_MS: '60000' }, 8)
})

t.test('a forward URL with user:password@ and ?token=: delivered with Basic auth; the password and the token are in no log line, table or CLI output', async (t) => {
  let failing = false
  const basic = `Basic ${Buffer.from(`hook-user:${PASSWORD}`).toString('base64')}`
  const receiver = await startReceiver(t, { secret: FORWARD_SECRET, authorization: basic, fail: () => failing })
  const forwardUrl = `http://hook-user:${encodeURIComponent(PASSWORD)}@127.0.0.1:${receiver.port}/g2sentry-changes?token=${QUERY_TOKEN}`
  const db = join(t.testdir(), 'g2.db')
  const running = server(t, db, await freePort(), forwardUrl, { G2SENTRY_FORWARD_MAX_ATTEMPTS: '2', G2SENTRY_FORWARD_MAX_BACKOFF_MS: '200' })
  await listening(running, 60_000)

  await deliver(running, [assigned(1), started(1)])
  await until('both changes delivered', () => receiver.accepted.length >= 2, 20_000)
  t.equal(receiver.unauthorized(), 0, 'every request carried the Basic credentials')
  t.ok(receiver.targets.every((target) => target === `/g2sentry-changes?token=${QUERY_TOKEN}`), 'the query string is sent as it was given')

  // A receiver that answers 500, then one that is down: each change is parked after 2 attempts.
  failing = true
  await deliver(running, [completed(1)])
  const parkedCount = (): number => {
    const file = new Database(db, { readonly: true })
    try {
      return (file.prepare('SELECT count(*) AS n FROM consumer_parked').get() as { n: number }).n
    } finally {
      file.close()
    }
  }
  await until('the 500 parked', () => parkedCount() === 1, 20_000)
  await receiver.down()
  await deliver(running, [assigned(2)])
  await until('the refused connection parked', () => parkedCount() === 2, 20_000)
  t.same(await stop(running), { code: 0, signal: null }, 'SIGTERM: a clean exit')

  const file = new Database(db, { readonly: true })
  const parked = file.prepare('SELECT * FROM consumer_parked ORDER BY seq').all() as Array<{ error: string }>
  file.close()
  t.match(parked.map((row) => row.error), [/^Forwarding to http:\/\/127\.0\.0\.1:\d+\/g2sentry-changes failed: HTTP 500$/, /failed: ECONNREFUSED$/],
    'each parked error names the URL without credentials or query, and does not promise a retry')
  const listed = await runCli(['consumers', 'parked', '--db', db, '--format', 'ndjson'])
  t.equal(listed.code, 0, listed.stderr)
  const table = await runCli(['consumers', 'parked', '--db', db])
  const warnings = running.logs.filter((line) => line.level === 40 && /consumer handler failed/.test(line.msg))
  t.ok(warnings.length >= 4, `each failed attempt logged (${warnings.length})`)
  const places: Array<[string, string]> = [
    ['the server\'s output (every log line)', running.output()],
    ['the consumer_parked table', JSON.stringify(parked)],
    ['g2sentry consumers parked', listed.stdout + listed.stderr + table.stdout + table.stderr]
  ]
  for (const [where, text] of places) {
    for (const secret of [PASSWORD, encodeURIComponent(PASSWORD), QUERY_TOKEN, basic.slice(6)]) {
      t.notOk(text.includes(secret), `${where}: no ${secret === QUERY_TOKEN ? 'query token' : 'password'} (${secret.slice(0, 4)}…)`)
    }
  }
})

t.test('a restart after a SIGKILL says, once, that it waits for the killed instance\'s lease, then forwards', async (t) => {
  const receiver = await startReceiver(t, { secret: FORWARD_SECRET })
  const db = join(t.testdir(), 'g2.db')
  const port = await freePort()
  const first = server(t, db, port, receiver.url)
  await listening(first, 60_000)
  await deliver(first, [assigned(1)])
  await until('the first change forwarded', () => receiver.accepted.length >= 1, 20_000)
  const killedPid = first.child.pid as number
  first.child.kill('SIGKILL')
  await first.exited

  const restarted = server(t, db, port, receiver.url)
  await listening(restarted, 60_000)
  await deliver(restarted, [started(1)])
  await until('the change after the restart forwarded', () => receiver.accepted.some((change) => change.status === 'InProgress'), 30_000)
  const waits = restarted.logs.filter((line) => /consumer waits/.test(line.msg))
  t.equal(waits.length, 1, 'one line says why nothing was forwarded for a while')
  t.match(waits[0], {
    level: 30,
    consumer: 'forwarder',
    holder: new RegExp(`^[^:]+:${killedPid}:[0-9a-f]+$`),
    expiresAt: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
    msg: 'g2sentry: consumer waits: another instance holds its lease; this one takes over if that lease expires unrenewed'
  }, 'at info level, naming the killed instance as the holder and when its lease ends')
  t.same(await stop(restarted), { code: 0, signal: null }, 'SIGTERM: a clean exit')
})
