// The forwarder as a user runs it: the example server in a child process with
// G2SENTRY_FORWARD_URL set, a receiver (a real HTTP server checking the signature) that fails one
// attempt in three and is down for seconds, and a real SIGKILL of the server part way through.
// Every applied change of the run must reach the receiver, in seq order, signed; `g2sentry
// consumers` must show the forwarder at the last applied seq. The same with two instances on one
// PostgreSQL schema, where the instance forwarding is killed; and one instance's live stream
// shows the other's commits.
import t, { type Test } from 'tap'
import { Agent } from 'node:http'
import { join } from 'node:path'
import type { LogRow } from '../../src/domain/types.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { readLogStream } from '../../src/log/read-log.js'
import { openStore } from '../../src/store/open-store.js'
import { runCli } from '../helpers/cli-process.js'
import { freePort, listening, send, startServer, type ExampleServer } from '../helpers/example-process.js'
import { assigned, completed, started, withdrawn, type CallbackPayload } from '../helpers/helpers.js'
import { freshSchema, pgUrl, requirePg } from '../helpers/pg.js'
import { distinctInOrder, startReceiver, type Receiver } from '../helpers/receiver.js'
import { until } from '../helpers/until.js'

t.setTimeout(400_000)

const CALLBACK_SECRET = 'forward-process-callback-secret'
const FORWARD_SECRET = 'forward-process-forward-secret'

function server (t: Test, db: string, receiver: Receiver, port: number, name: string): ExampleServer {
  return startServer(t, {
    port,
    name,
    keep: 'tail',
    env: {
      G2SENTRY_DB: db,
      G2SENTRY_CALLBACK_SECRET: CALLBACK_SECRET,
      G2SENTRY_FORWARD_URL: receiver.url,
      G2SENTRY_FORWARD_SECRET: FORWARD_SECRET,
      G2SENTRY_FORWARD_MAX_BACKOFF_MS: '500'
    }
  })
}

/** Lifecycles for `jobs`, with a withdrawal, a redelivery and a stale assignment among them. */
const lifecycle = (jobId: number): CallbackPayload[] =>
  [assigned(jobId), withdrawn(jobId), assigned(jobId), assigned(jobId), started(jobId), assigned(jobId), completed(jobId)]

const agent = new Agent({ keepAlive: true })
t.teardown(() => agent.destroy())

/** Delivers every event of the jobs to `target()`, retrying (like G2 Sentry) until a 200. */
async function deliver (target: () => ExampleServer, jobs: number[]): Promise<void> {
  for (const jobId of jobs) {
    for (const payload of lifecycle(jobId)) {
      const body = Buffer.from(JSON.stringify(payload))
      for (let attempt = 0; ; attempt++) {
        const to = target()
        const reply = await send(agent, to.port, 'POST', '/callbacks/g2sentry', body,
          { 'content-type': 'application/json', 'x-signature': signBody(body, CALLBACK_SECRET) }).catch(() => undefined)
        if (reply?.status === 200) break
        if (attempt > 200) throw new Error(`job ${jobId}: no 200 after ${attempt} attempts`)
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
  }
}

async function appliedSeqs (db: string): Promise<number[]> {
  const store = await openStore(db)
  try {
    const rows: LogRow[] = []
    for await (const row of readLogStream(store)) rows.push(row)
    return rows.filter((row) => row.outcome === 'applied').map((row) => row.seq)
  } finally {
    await store.close()
  }
}

/** Checks what the receiver got against the log, and the CLI's view of the forwarder. */
async function check (t: Test, db: string, receiver: Receiver): Promise<void> {
  const applied = await appliedSeqs(db)
  await until('every applied change forwarded', () => new Set(receiver.accepted.map((c) => c.seq)).size >= applied.length, 60_000)
  const { distinct, repeats, outOfOrder } = distinctInOrder(receiver.accepted)
  t.same(distinct.map((c) => c.seq), applied, `every applied change arrived (${applied.length}), none other`)
  t.equal(outOfOrder, 0, 'in seq order')
  t.ok(repeats <= 10, `repeats only around the kill (${repeats})`)
  t.equal(receiver.badSignatures(), 0, 'every request carried a valid X-Signature')
  t.ok(receiver.attempts() > applied.length, `failed attempts were retried (${receiver.attempts()} attempts)`)

  const last = applied[applied.length - 1] as number
  await until('the checkpoint saved', async () => {
    const listed = await runCli(['consumers', '--db', db, '--format', 'ndjson'])
    return listed.stdout.includes(`"checkpoint":${last},`)
  }, 60_000)
  const table = await runCli(['consumers', '--db', db])
  t.match(table.stdout, new RegExp(`^forwarder\\s+${last}\\s+0\\s+0\\s`, 'm'), `g2sentry consumers shows the forwarder at seq ${last}, lag 0`)
}

t.test('sqlite: every applied change reaches a flaky receiver, in order, signed, across a SIGKILL of the server', async (t) => {
  const db = join(t.testdir(), 'data', 'g2.db')
  const receiver = await startReceiver(t, { secret: FORWARD_SECRET, fail: (n) => n % 3 === 0 })
  const port = await freePort()
  let current = server(t, db, receiver, port, 'first')
  await listening(current, 90_000)

  await deliver(() => current, [1, 2, 3])
  await receiver.down()
  await deliver(() => current, [4, 5])
  await new Promise((resolve) => setTimeout(resolve, 2000))
  await receiver.up()
  await deliver(() => current, [6])
  current.child.kill('SIGKILL')
  await current.exited
  current = server(t, db, receiver, port, 'restarted')
  await listening(current, 90_000)
  await deliver(() => current, [7, 8])

  await check(t, db, receiver)
})

t.test('postgres: two instances, the one forwarding is killed, the other takes over', async (t) => {
  if (!await requirePg(t)) return
  const db = `${pgUrl()}?schema=${freshSchema(t)}`
  const receiver = await startReceiver(t, { secret: FORWARD_SECRET, fail: (n) => n % 3 === 0 })
  const servers = [server(t, db, receiver, await freePort(), 'A'), server(t, db, receiver, await freePort(), 'B')]
  await Promise.all(servers.map((s) => listening(s, 90_000)))
  const alive = () => servers.filter((s) => s.child.exitCode === null && s.child.signalCode === null)
  let turn = 0
  const spread = () => { const list = alive(); return list[turn++ % list.length] as ExampleServer }

  await deliver(spread, [1, 2, 3])
  await receiver.down()
  await deliver(spread, [4])
  await new Promise((resolve) => setTimeout(resolve, 2000))
  await receiver.up()

  // The instance that holds the forwarder's lease, as the CLI names it (host:pid:id).
  let holder = ''
  await until('a holder', async () => {
    const listed = await runCli(['consumers', '--db', db, '--format', 'ndjson'])
    holder = (JSON.parse(listed.stdout.split('\n')[0] || '{}') as { holder?: string | null }).holder ?? ''
    return holder !== ''
  }, 60_000)
  const pid = Number(holder.split(':')[1])
  const forwarding = servers.find((s) => s.child.pid === pid)
  t.ok(forwarding, `the holder is one of the two instances (${holder})`)
  forwarding?.child.kill('SIGKILL')
  await deliver(spread, [5, 6])

  await check(t, db, receiver)
})

t.test('postgres: an instance\'s live stream shows the other instance\'s commits', async (t) => {
  if (!await requirePg(t)) return
  const db = `${pgUrl()}?schema=${freshSchema(t)}`
  const env = { G2SENTRY_DB: db, G2SENTRY_CALLBACK_SECRET: CALLBACK_SECRET }
  const a = startServer(t, { port: await freePort(), name: 'A', keep: 'tail', env })
  const b = startServer(t, { port: await freePort(), name: 'B', keep: 'tail', env })
  await Promise.all([listening(a, 90_000), listening(b, 90_000)])

  const controller = new AbortController()
  t.teardown(() => controller.abort())
  const response = await fetch(a.url('/jobs/stream'), { signal: controller.signal })
  const reader = (response.body as ReadableStream<Uint8Array>).getReader()
  let text = ''
  const seen = (): number[] => [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]))
  void (async () => {
    for (;;) {
      const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }))
      if (done) return
      text += Buffer.from(value as Uint8Array).toString('utf8')
    }
  })()
  await until('the stream open', () => text.includes('retry:'), 60_000)

  let turn = 0
  await deliver(() => [b, a][turn++ % 2] as ExampleServer, [1, 2])
  const applied = await appliedSeqs(db)
  await until('every change on A\'s stream', () => seen().length >= applied.length, 10_000)
  t.same(seen(), applied, 'every applied change of both instances, in seq order, none twice')
  controller.abort()
})
