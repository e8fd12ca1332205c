// Crash safety under SIGKILL: the example server runs as a child
// process on a real SQLite file, takes thousands of signed callbacks from 50 concurrent
// keep-alive connections, and is SIGKILLed at a random (seeded, printed) moment. Restarted on the
// same file, every delivery that was answered 2xx must be in the log exactly once (same seq, same
// bytes), the projection must equal a rebuild, and redelivering everything afterwards must change
// nothing. Set G2SENTRY_FAULT_SEED to replay a run.
import t, { type Test } from 'tap'
import { Agent } from 'node:http'
import { join } from 'node:path'
import { mulberry32 } from '../../src/simulator/schedules.js'
import type { JobStatus, LogRow } from '../../src/domain/types.js'
import type { RebuildReport } from '../../src/store/contract.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { allJobs, exitWithin, freePort, listening, pool, readLogFile, send, startServer, stop } from '../helpers/example-process.js'
import { shuffle } from '../helpers/random.js'

t.setTimeout(120_000)

const SECRET = 'crash-safety-secret'
const CALLBACK_PATH = '/callbacks/g2sentry'
const RUNS = 3
const JOBS = 200
const CONCURRENCY = 50
const KILL_MIN_MS = 100
const KILL_MAX_MS = 1500
/** At most this many passes over the generated deliveries before the kill: enough to be still sending when it comes. */
const LOAD_PASSES = 10

const MASTER_SEED = Number(process.env.G2SENTRY_FAULT_SEED ?? Math.floor(Math.random() * 2 ** 31))
t.comment(`crash-safety seed ${MASTER_SEED} (G2SENTRY_FAULT_SEED=${MASTER_SEED} replays this run)`)

// ---------------------------------------------------------------------------------------------
// The example server as a child process

/** Starts examples/server.ts on `file`; it logs every request at info, so only the tail of its output is kept. */
const startOn = (t: Test, file: string, port: number) =>
  startServer(t, { port, keep: 'tail', env: { G2SENTRY_DB: file, G2SENTRY_CALLBACK_SECRET: SECRET } })

// ---------------------------------------------------------------------------------------------
// HTTP over keep-alive connections (one agent per server process)

interface Delivery {
  jobId: number
  eventType: string
  body: Buffer
  signature: string
}

const postDelivery = (agent: Agent, port: number, d: Delivery) =>
  send(agent, port, 'POST', CALLBACK_PATH, d.body, { 'content-type': 'application/json', 'x-signature': d.signature })

interface Ack { seq: number; body: Buffer; outcome: string; phase: string }

// ---------------------------------------------------------------------------------------------
// Generated traffic: lifecycles without withdrawals (so that redelivering everything is a no-op
// once everything has been delivered), plus unsupported rating events, each sent 1 to 7 times.

const LIFECYCLE: Array<[string, JobStatus]> = [['JobAssigned', 'Assigned'], ['JobStarted', 'InProgress'], ['JobCompleted', 'Completed']]

function generate (rng: () => number): { sends: Delivery[]; distinct: Delivery[]; finalStatus: Map<number, JobStatus> } {
  const distinct: Delivery[] = []
  const finalStatus = new Map<number, JobStatus>()
  const sign = (payload: Record<string, unknown>): Delivery => {
    const body = Buffer.from(JSON.stringify(payload), 'utf8')
    return { jobId: payload.jobId as number, eventType: payload.eventType as string, body, signature: signBody(body, SECRET) }
  }
  for (let i = 0; i < JOBS; i++) {
    const jobId = 5000 + i
    const steps = rng() < 0.6 ? 3 : 1 + Math.floor(rng() * 2)
    const name = `Open House at ${100 + i} Main St`
    const phone = `+1555${String(Math.floor(rng() * 1e7)).padStart(7, '0')}`
    for (let s = 0; s < steps; s++) {
      const [eventType, jobStatus] = LIFECYCLE[s] as [string, JobStatus]
      const payload: Record<string, unknown> = { jobId, eventType, jobName: s === 2 && rng() < 0.2 ? `${name} (done)` : name, jobStatus }
      if (s < 2 && rng() < 0.7) payload.guardianPhone = phone
      distinct.push(sign(payload))
      finalStatus.set(jobId, jobStatus)
    }
    if (rng() < 0.3) {
      distinct.push(sign({ jobId, eventType: 'JobGuardianRate', jobName: name, jobStatus: 'Completed', rating: 1 + Math.floor(rng() * 5) }))
    }
  }
  const sends: Delivery[] = []
  for (const d of distinct) {
    const copies = 1 + Math.floor(rng() * 7)
    for (let c = 0; c < copies; c++) sends.push(d)
  }
  return { sends: shuffle(sends, rng), distinct, finalStatus }
}

// ---------------------------------------------------------------------------------------------
// Checks against the file, with the server stopped

/** Every acknowledged (seq, body) is the log row with that seq, byte for byte; no seq acknowledged twice. */
function checkAcks (t: Test, rows: LogRow[], acks: Ack[], label: string): void {
  const bySeq = new Map(rows.map((row) => [row.seq, row]))
  const seen = new Set<number>()
  const doubled: number[] = []
  const missing: Ack[] = []
  const different: Ack[] = []
  for (const ack of acks) {
    if (seen.has(ack.seq)) doubled.push(ack.seq)
    seen.add(ack.seq)
    const row = bySeq.get(ack.seq)
    if (row === undefined) missing.push(ack)
    else if (!row.rawBody.equals(ack.body)) different.push(ack)
  }
  t.same(doubled, [], `${label}: no seq was acknowledged twice`)
  t.same(missing.map((a) => ({ seq: a.seq, phase: a.phase, body: a.body.toString() })).slice(0, 10), [],
    `${label}: every one of the ${acks.length} acknowledged deliveries is in the log (${missing.length} missing)`)
  t.same(different.map((a) => ({ seq: a.seq, phase: a.phase, body: a.body.toString(), logged: bySeq.get(a.seq)?.rawBody.toString() })).slice(0, 10), [],
    `${label}: the log row at each acknowledged seq holds exactly the acknowledged bytes (${different.length} differ)`)
  const seqs = rows.map((row) => row.seq)
  t.equal(new Set(seqs).size, seqs.length, `${label}: no seq appears twice in the log`)
}

function checkRebuild (t: Test, report: RebuildReport, label: string): void {
  t.same(report.differingJobs, [], `${label}: the stored projection equals a rebuild from the log`)
  t.same(report.outcomeMismatches, [], `${label}: every log row replays to the outcome it was given live`)
}

interface JobView { jobId: number; jobName: string; status: JobStatus; guardianPhone: string | null; lastEventType: string; version: number; eventCount: number }

async function projection (agent: Agent, port: number): Promise<Map<number, JobView>> {
  return new Map((await allJobs<JobView>(agent, port)).map((job) => [job.jobId, job]))
}

/** Sends every delivery once, concurrently; every answer must be a 2xx with a seq. */
async function redeliverAll (t: Test, agent: Agent, port: number, sends: Delivery[], phase: string, acks: Ack[]): Promise<Map<string, number>> {
  const outcomes = new Map<string, number>()
  const failures: string[] = []
  await pool(sends, CONCURRENCY, async (d) => {
    try {
      const reply = await postDelivery(agent, port, d)
      if (reply.status < 200 || reply.status >= 300) {
        failures.push(`${reply.status} ${reply.text}`)
        return
      }
      const answer = JSON.parse(reply.text) as { seq: number; outcome: string }
      acks.push({ seq: answer.seq, body: d.body, outcome: answer.outcome, phase })
      const key = `${d.eventType === 'JobGuardianRate' ? 'rating' : 'lifecycle'}:${answer.outcome}`
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1)
    } catch (error) {
      failures.push(String(error))
    }
  })
  t.same(failures.slice(0, 10), [], `${phase}: all ${sends.length} deliveries answered 2xx (${failures.length} did not)`)
  return outcomes
}

// ---------------------------------------------------------------------------------------------

for (let run = 1; run <= RUNS; run++) {
  t.test(`crash run ${run}: SIGKILL under load, restart, nothing acknowledged is lost`, async (t) => {
    const seed = (MASTER_SEED + run * 7919) >>> 0
    const rng = mulberry32(seed)
    const killAfter = KILL_MIN_MS + Math.floor(rng() * (KILL_MAX_MS - KILL_MIN_MS))
    const { sends, distinct, finalStatus } = generate(rng)
    t.comment(`run ${run}: seed ${seed}, ${sends.length} deliveries of ${distinct.length} distinct bodies over ${JOBS} jobs, SIGKILL after ${killAfter} ms`)
    const file = join(t.testdir(), 'g2.db')

    // 1. Load, then SIGKILL at the chosen moment.
    const port = await freePort()
    const server = startOn(t, file, port)
    await listening(server)
    const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY })
    t.teardown(() => agent.destroy())

    const acks: Ack[] = []
    const attempts = new Map<string, number>()
    let killed = false
    let unanswered = 0
    let non2xx = 0
    const started = Date.now()
    const killer = setTimeout(() => {
      killed = true
      server.child.kill('SIGKILL')
    }, killAfter)
    // The generated deliveries, then again from the start (more redeliveries) until the kill.
    const load = Array.from({ length: LOAD_PASSES }, () => sends).flat()
    await pool(load, CONCURRENCY, async (d) => {
      const key = d.body.toString('utf8')
      attempts.set(key, (attempts.get(key) ?? 0) + 1)
      try {
        const reply = await postDelivery(agent, port, d)
        if (reply.status >= 200 && reply.status < 300) {
          const answer = JSON.parse(reply.text) as { seq: number; outcome: string }
          acks.push({ seq: answer.seq, body: d.body, outcome: answer.outcome, phase: 'before the kill' })
        } else {
          non2xx++
        }
      } catch {
        unanswered++
      }
    }, () => killed)
    const sentFor = Date.now() - started
    if (!killed) {
      // Every pass was answered before the kill moment: kill now, still a crash with no clean shutdown.
      t.comment(`run ${run}: all ${load.length} deliveries were answered before the kill moment; killing now`)
      clearTimeout(killer)
      killed = true
      server.child.kill('SIGKILL')
    }
    const exit = await exitWithin(server, 10_000)
    t.same(exit, { code: null, signal: 'SIGKILL' }, 'the server died of SIGKILL')
    agent.destroy()
    const attempted = [...attempts.values()].reduce((a, b) => a + b, 0)
    t.comment(`run ${run}: ${attempted} sent in ${sentFor} ms, ${acks.length} acknowledged, ${unanswered} cut off by the kill, ${non2xx} other answers`)
    t.equal(non2xx, 0, 'before the kill every answered delivery was a 2xx')
    t.ok(acks.length > 0, 'some deliveries were acknowledged before the kill')

    // 2. The file as the crash left it (opening it is what a restart does first).
    const afterCrash = await readLogFile(file)
    checkAcks(t, afterCrash.rows, acks, 'after the crash')
    checkRebuild(t, afterCrash.report, 'after the crash')
    const rowsPerBody = new Map<string, number>()
    for (const row of afterCrash.rows) {
      const key = row.rawBody.toString('utf8')
      rowsPerBody.set(key, (rowsPerBody.get(key) ?? 0) + 1)
    }
    const phantoms = [...rowsPerBody].filter(([key, n]) => n > (attempts.get(key) ?? 0))
    t.same(phantoms.slice(0, 10), [], 'no body is in the log more often than it was sent')
    t.ok(afterCrash.rows.length >= acks.length && afterCrash.rows.length <= attempted,
      `the log holds ${afterCrash.rows.length} rows: at least the ${acks.length} acknowledged, at most the ${attempted} sent`)
    t.comment(`run ${run}: ${afterCrash.rows.length - acks.length} rows committed but not acknowledged (killed between commit and answer)`)

    // 3. Restart on the same file; redeliver everything, twice.
    const port2 = await freePort()
    const restarted = startOn(t, file, port2)
    await listening(restarted)
    const agent2 = new Agent({ keepAlive: true, maxSockets: CONCURRENCY })
    t.teardown(() => agent2.destroy())

    const first = await redeliverAll(t, agent2, port2, sends, 'first full redelivery', acks)
    const before = await projection(agent2, port2)
    t.equal(before.size, JOBS, `after the first full redelivery all ${JOBS} jobs are projected`)
    const wrongStatus = [...finalStatus].filter(([jobId, status]) => before.get(jobId)?.status !== status)
    t.same(wrongStatus.slice(0, 10), [], 'every job reached its true final status')

    const second = await redeliverAll(t, agent2, port2, sends, 'second full redelivery', acks)
    const after = await projection(agent2, port2)
    t.comment(`run ${run}: first redelivery outcomes ${JSON.stringify(Object.fromEntries(first))}; second ${JSON.stringify(Object.fromEntries(second))}`)
    t.notOk(second.has('lifecycle:applied'), 'the second full redelivery applied nothing')

    const sendsPerJob = new Map<number, number>()
    for (const d of sends) {
      if (d.eventType !== 'JobGuardianRate') sendsPerJob.set(d.jobId, (sendsPerJob.get(d.jobId) ?? 0) + 1)
    }
    const changed: unknown[] = []
    for (const [jobId, was] of before) {
      const now = after.get(jobId)
      const fields = (job: JobView | undefined) => job && {
        status: job.status, version: job.version, jobName: job.jobName, guardianPhone: job.guardianPhone, lastEventType: job.lastEventType
      }
      if (JSON.stringify(fields(was)) !== JSON.stringify(fields(now))) changed.push({ jobId, before: fields(was), after: fields(now) })
      else if (now !== undefined && now.eventCount !== was.eventCount + (sendsPerJob.get(jobId) ?? 0)) {
        changed.push({ jobId, eventCountBefore: was.eventCount, eventCountAfter: now.eventCount, sent: sendsPerJob.get(jobId) })
      }
    }
    t.equal(after.size, before.size, 'no job appeared or disappeared')
    t.same(changed.slice(0, 10), [], 'the second full redelivery changed no job\'s status, version or fields; only delivery counts grew, by exactly the deliveries sent')

    // 4. A clean stop, then the whole file checked once more.
    t.same(await stop(restarted), { code: 0, signal: null }, 'the restarted server stops cleanly')
    agent2.destroy()
    t.same(restarted.errors.slice(0, 5), [], 'the restarted server logged no error')
    const final = await readLogFile(file)
    checkAcks(t, final.rows, acks, 'at the end')
    checkRebuild(t, final.report, 'at the end')
    t.equal(final.rows.length, afterCrash.rows.length + 2 * sends.length, 'the log grew by exactly the two full redeliveries')
  })
}
