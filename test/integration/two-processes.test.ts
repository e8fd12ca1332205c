// Two processes, one file: two example servers on the
// same SQLite file take interleaved, concurrent traffic for the same jobs, each delivery sent to
// a random one of the two and retried on 503 like G2 Sentry would. No acknowledged event may be
// lost or doubled, a lock conflict may reach a client only as a 503 (a third process holds the
// lock for longer than the busy timeout part way through), and the projection must equal a rebuild. Set G2SENTRY_FAULT_SEED to replay a run.
import t, { type Test } from 'tap'
import Database from 'better-sqlite3'
import { spawn } from 'node:child_process'
import { Agent } from 'node:http'
import { join } from 'node:path'
import { mulberry32 } from '../../src/simulator/schedules.js'
import type { JobStatus } from '../../src/domain/types.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { ROOT } from '../helpers/cli-process.js'
import {
  allJobs, type ExampleServer, exitWithin, freePort, listening, pool, readLogFile, type Reply, send as sendTo, startServer, stop
} from '../helpers/example-process.js'
import { shuffle } from '../helpers/random.js'

t.setTimeout(120_000)

const SECRET = 'two-processes-secret'
const CALLBACK_PATH = '/callbacks/g2sentry'
const JOBS = 200
const CONCURRENCY = 40
/** How often a delivery answered 503 is retried (to a random server) before the test gives up on it. */
const MAX_RETRIES = 40
/** How long a third process holds the write lock mid-traffic: longer than the servers' 5 s busy timeout. */
const LOCK_MS = 6000

const SEED = Number(process.env.G2SENTRY_FAULT_SEED ?? Math.floor(Math.random() * 2 ** 31))
t.comment(`two-processes seed ${SEED} (G2SENTRY_FAULT_SEED=${SEED} replays this run)`)

// ---------------------------------------------------------------------------------------------
// The example server as a child process, each with its own keep-alive agent

interface Server extends ExampleServer {
  name: string
  agent: Agent
}

/** Starts examples/server.ts on `file`; it logs every request at info, so only the tail of its output is kept. */
function startOn (t: Test, name: string, file: string, port: number): Server {
  const server = startServer(t, { port, name, keep: 'tail', env: { G2SENTRY_DB: file, G2SENTRY_CALLBACK_SECRET: SECRET } })
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY })
  t.teardown(() => agent.destroy())
  return { ...server, name, agent }
}

const send = (server: Server, method: 'GET' | 'POST', path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<Reply> =>
  sendTo(server.agent, server.port, method, path, body, headers)

// ---------------------------------------------------------------------------------------------
// Traffic: lifecycles for the same jobs, some with withdrawals and re-assignments, each delivery
// sent 1 to 6 times.

interface Delivery { jobId: number; body: Buffer; signature: string }

function generate (rng: () => number): { sends: Delivery[]; distinct: Delivery[]; plainFinal: Map<number, JobStatus> } {
  const distinct: Delivery[] = []
  /** The true final status of the jobs without a withdrawal (those converge in any order). */
  const plainFinal = new Map<number, JobStatus>()
  const sign = (payload: Record<string, unknown>): Delivery => {
    const body = Buffer.from(JSON.stringify(payload), 'utf8')
    return { jobId: payload.jobId as number, body, signature: signBody(body, SECRET) }
  }
  for (let i = 0; i < JOBS; i++) {
    const jobId = 700 + i
    const jobName = `Open House at ${i + 1} Elm St`
    const phone = () => `+1555${String(Math.floor(rng() * 1e7)).padStart(7, '0')}`
    if (rng() < 0.25) {
      const p = phone()
      distinct.push(sign({ jobId, eventType: 'JobAssigned', jobName, jobStatus: 'Assigned', guardianPhone: p }))
      distinct.push(sign({ jobId, eventType: 'JobWithdrawed', jobName, jobStatus: 'New' }))
      const q = phone()
      distinct.push(sign({ jobId, eventType: 'JobAssigned', jobName, jobStatus: 'Assigned', guardianPhone: q }))
      distinct.push(sign({ jobId, eventType: 'JobStarted', jobName, jobStatus: 'InProgress', guardianPhone: q }))
    } else {
      const steps = 1 + Math.floor(rng() * 3)
      const p = phone()
      const lifecycle: Array<[string, JobStatus]> = [['JobAssigned', 'Assigned'], ['JobStarted', 'InProgress'], ['JobCompleted', 'Completed']]
      for (let s = 0; s < steps; s++) {
        const [eventType, jobStatus] = lifecycle[s] as [string, JobStatus]
        const payload: Record<string, unknown> = { jobId, eventType, jobName, jobStatus }
        if (s < 2 && rng() < 0.7) payload.guardianPhone = p
        distinct.push(sign(payload))
        plainFinal.set(jobId, jobStatus)
      }
    }
  }
  const sends: Delivery[] = []
  for (const d of distinct) {
    const copies = 1 + Math.floor(rng() * 6)
    for (let c = 0; c < copies; c++) sends.push(d)
  }
  return { sends: shuffle(sends, rng), distinct, plainFinal }
}

const projection = (server: Server): Promise<unknown[]> => allJobs(server.agent, server.port, server.name)

// ---------------------------------------------------------------------------------------------

t.test('two servers on one SQLite file, interleaved traffic for the same jobs', async (t) => {
  const rng = mulberry32(SEED)
  const { sends, distinct, plainFinal } = generate(rng)
  const file = join(t.testdir(), 'g2.db')
  t.comment(`${sends.length} deliveries of ${distinct.length} distinct bodies over ${JOBS} jobs, to two servers`)

  // The first creates the file; the second opens it once it exists (a simultaneous first start is tested below).
  const a = startOn(t, 'A', file, await freePort())
  await listening(a)
  const b = startOn(t, 'B', file, await freePort())
  await listening(b)
  const servers = [a, b]

  interface Ack { seq: number; body: Buffer; server: string }
  const acks: Ack[] = []
  const attempts = new Map<string, number>()
  const unexpected: string[] = []
  const badReads: string[] = []
  let answered503 = 0
  let gaveUp = 0
  let reads = 0
  const per503 = { A: 0, B: 0 } as Record<string, number>

  // A third process that, once a quarter of the traffic is acknowledged, holds the write lock for
  // longer than the servers' busy timeout (5 s): both servers must then answer 503, never 500.
  const holder = spawn(process.execPath, ['-e', `
    const Database = require('better-sqlite3')
    const db = new Database(process.argv[1])
    process.stdin.once('data', () => {
      db.exec('BEGIN IMMEDIATE')
      console.log('locked')
      setTimeout(() => { db.exec('ROLLBACK'); db.close(); console.log('released'); process.exit(0) }, ${LOCK_MS})
    })
    console.log('ready')
  `, file], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => {
    if (holder.exitCode === null && holder.signalCode === null) holder.kill('SIGKILL')
  })
  let holderSaid = ''
  holder.stdout.setEncoding('utf8').on('data', (chunk: string) => { holderSaid += chunk })
  // 'close': what the holder said is read to its end before it is checked.
  const holderExited = new Promise<number | null>((resolve) => holder.once('close', resolve))
  while (!holderSaid.includes('ready')) {
    if (holder.exitCode !== null) throw new Error(`the lock holder exited: ${holderSaid}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  let lockAsked = false
  let during503 = 0
  const started = Date.now()

  await pool(sends, CONCURRENCY, async (d) => {
    const key = d.body.toString('utf8')
    for (let attempt = 0; ; attempt++) {
      const server = servers[Math.floor(rng() * 2)] as Server
      attempts.set(key, (attempts.get(key) ?? 0) + 1)
      let reply: Reply
      try {
        reply = await send(server, 'POST', CALLBACK_PATH, d.body, { 'content-type': 'application/json', 'x-signature': d.signature })
      } catch (error) {
        unexpected.push(`${server.name}: ${String(error)}`)
        return
      }
      if (reply.status === 200) {
        const answer = JSON.parse(reply.text) as { seq: number }
        acks.push({ seq: answer.seq, body: d.body, server: server.name })
        if (!lockAsked && acks.length >= sends.length / 4) {
          lockAsked = true
          holder.stdin.write('go\n')
        }
        break
      }
      if (reply.status === 503) {
        answered503++
        if (holderSaid.includes('locked')) during503++
        per503[server.name] = (per503[server.name] ?? 0) + 1
        const code = (JSON.parse(reply.text) as { code?: string }).code
        if (code !== 'FST_G2SENTRY_STORAGE_UNAVAILABLE') unexpected.push(`${server.name}: 503 with code ${code}: ${reply.text}`)
        if (attempt >= MAX_RETRIES) {
          gaveUp++
          return
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(10 * (attempt + 1), 200)))
        continue
      }
      unexpected.push(`${server.name}: ${reply.status} ${reply.text}`)
      return
    }
    // Reads on either server while the other writes.
    if (rng() < 0.2) {
      reads++
      const server = servers[Math.floor(rng() * 2)] as Server
      const reply = await send(server, 'GET', `/jobs/${d.jobId}`).catch((error: unknown) => ({ status: 0, text: String(error) }))
      if (reply.status !== 200) badReads.push(`${server.name}: GET /jobs/${d.jobId} → ${reply.status} ${reply.text}`)
    }
  })
  const elapsed = Date.now() - started
  t.equal(await holderExited, 0, 'the third process took the lock and let it go')
  t.comment(`${acks.length} deliveries acknowledged in ${elapsed} ms (A ${acks.filter((x) => x.server === 'A').length}, B ${acks.filter((x) => x.server === 'B').length}); ` +
    `${answered503} answers were 503 (A ${per503.A}, B ${per503.B}), ${gaveUp} deliveries still 503 after ${MAX_RETRIES} retries; ${reads} reads`)

  t.ok(lockAsked && holderSaid.includes('released'), 'the lock was held while traffic was under way')
  t.ok(answered503 > 0, `the lock outlasting the busy timeout reached clients as 503s (${during503} while it was held)`)
  t.same(unexpected.slice(0, 10), [], `every answer was a 200 or a 503 with code FST_G2SENTRY_STORAGE_UNAVAILABLE (${unexpected.length} were not)`)
  t.equal(gaveUp, 0, 'every delivery was eventually acknowledged')
  t.equal(acks.length, sends.length, 'one acknowledgement per delivery')
  t.same(badReads.slice(0, 10), [], 'GET /jobs/:id answered 200 on both servers during the traffic')
  t.ok(acks.some((x) => x.server === 'A') && acks.some((x) => x.server === 'B'), 'both servers acknowledged deliveries')

  const viewA = await projection(a)
  const viewB = await projection(b)
  t.equal(viewA.length, JOBS, `all ${JOBS} jobs are projected`)
  t.same(viewB, viewA, 'both servers show the same projection')
  const statusOf = new Map((viewA as Array<{ jobId: number; status: JobStatus }>).map((job) => [job.jobId, job.status]))
  const wrong = [...plainFinal].filter(([jobId, status]) => statusOf.get(jobId) !== status)
  t.same(wrong.slice(0, 10), [], 'every job without a withdrawal reached its true final status')

  for (const server of servers) server.child.kill('SIGTERM')
  for (const server of servers) {
    t.same(await exitWithin(server, 10_000), { code: 0, signal: null }, `server ${server.name} stops cleanly`)
    // A storage failure is logged at error level with its cause, once per 503 (Fastify then logs
    // the 503 reply itself too); nothing else may be logged as an error.
    const storageFailures = server.errors.filter((line) => line.includes('"msg":"g2sentry: storage failed, answering 503 so the sender retries"'))
    const replies503 = server.errors.filter((line) => line.includes('"statusCode":503') && line.includes('"code":"FST_G2SENTRY_STORAGE_UNAVAILABLE"'))
    const others = server.errors.filter((line) => !storageFailures.includes(line) && !replies503.includes(line))
    t.same(others.map((line) => line.slice(0, 400)).slice(0, 5), [], `server ${server.name} logged no error other than its storage failures and their 503s`)
    t.equal(storageFailures.length, per503[server.name], `server ${server.name} logged one storage failure per 503 it answered`)
    t.ok(storageFailures.every((line) => line.includes('SQLITE_BUSY')), `server ${server.name}: each storage failure names SQLITE_BUSY`)
  }

  // The file, with both stopped.
  const { rows, report } = await readLogFile(file)
  const bySeq = new Map(rows.map((row) => [row.seq, row]))
  const seen = new Set<number>()
  const doubled = acks.filter((ack) => seen.has(ack.seq) || (seen.add(ack.seq), false))
  const missing = acks.filter((ack) => bySeq.get(ack.seq) === undefined)
  const different = acks.filter((ack) => { const row = bySeq.get(ack.seq); return row !== undefined && !row.rawBody.equals(ack.body) })
  t.same(doubled.map((x) => x.seq).slice(0, 10), [], 'no seq was acknowledged twice, across the two servers')
  t.same(missing.map((x) => ({ seq: x.seq, server: x.server })).slice(0, 10), [], `every acknowledged delivery is in the log (${missing.length} missing)`)
  t.same(different.map((x) => ({ seq: x.seq, server: x.server, body: x.body.toString(), logged: bySeq.get(x.seq)?.rawBody.toString() })).slice(0, 10), [],
    'the log row at each acknowledged seq holds exactly the acknowledged bytes')
  t.equal(rows.length, acks.length, 'the log holds exactly the acknowledged deliveries: a 503 committed nothing')
  const rowsPerBody = new Map<string, number>()
  for (const row of rows) rowsPerBody.set(row.rawBody.toString('utf8'), (rowsPerBody.get(row.rawBody.toString('utf8')) ?? 0) + 1)
  t.same([...rowsPerBody].filter(([key, n]) => n > (attempts.get(key) ?? 0)).slice(0, 10), [], 'no body is in the log more often than it was sent')
  t.same(report.differingJobs, [], 'the stored projection equals a rebuild from the log')
  t.same(report.outcomeMismatches, [], 'every log row replays to the outcome it was given live')
  t.comment(`503s seen: ${answered503}`)
})

// Two instances deployed at the same moment on a database file that does not exist yet: the
// first one, converting the new file to WAL, holds its write lock for a moment; the second must
// wait for it (busy timeout, 5 s by default) rather than crash. Holding the lock here, on a new file
// still in rollback-journal mode, is that moment made long enough to be hit every time.
t.test('a server starting on a new file while another process holds its write lock waits, then starts', async (t) => {
  const file = join(t.testdir(), 'g2.db')
  const holder = new Database(file)
  holder.exec('BEGIN IMMEDIATE')
  let released = false
  const release = () => {
    if (released) return
    released = true
    holder.exec('ROLLBACK')
  }
  t.teardown(() => {
    release()
    holder.close()
  })
  const server = startOn(t, 'late', file, await freePort())
  // The server boots in about a second; the lock goes 3 s after the spawn, well within its busy timeout.
  const timer = setTimeout(release, 3000)
  t.teardown(() => clearTimeout(timer))
  let started: true | string = true
  try {
    await listening(server)
  } catch (error) {
    started = (error as Error).message.split('\n').filter((line) => /SQLITE|locked|exited/.test(line)).slice(0, 3).join(' | ')
  }
  if (started !== true) t.comment(`the server did not start: ${started}`)
  t.equal(started, true, 'the server waited for the lock and listened, instead of exiting with SQLITE_BUSY')
  if (started !== true) return
  t.ok(released, 'it was listening only after the lock was released')
  const body = Buffer.from(JSON.stringify({ jobId: 1, eventType: 'JobAssigned', jobName: 'x', jobStatus: 'Assigned' }))
  const reply = await send(server, 'POST', CALLBACK_PATH, body, { 'content-type': 'application/json', 'x-signature': signBody(body, SECRET) })
  t.equal(reply.status, 200, 'and it takes deliveries')
  t.same(await stop(server), { code: 0, signal: null })
})
