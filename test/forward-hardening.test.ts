// The forwarder of the example server (a child process) against receivers that misbehave and URLs
// that carry secrets: a SIGTERM ends the server within 5 s whether the receiver answers 500 (the
// forwarder in a minute-long backoff) or never answers; a URL with `user:password@` delivers with
// Basic auth; neither the password nor a query token ever reaches a log line, a stored error or
// the CLI; a restart after a SIGKILL says why it waits for the dead instance's lease.
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { signBody } from '../src/domain/verify-signature.js'
import { freePort, listening, startServer, stop, type ExampleServer } from './example-process.js'
import { assigned, CALLBACK_PATH } from './helpers.js'
import { startReceiver, type Receiver } from './receiver.js'
import { until } from './until.js'

t.setTimeout(240_000)

const CALLBACK_SECRET = 'forward-hardening-callback-secret'
const FORWARD_SECRET = 'forward-hardening-forward-secret'

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
