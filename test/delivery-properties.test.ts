// DESIGN.md's four properties, checked on generated delivery schedules sent through the real
// callback route (signed bodies, app.inject) into a real SQLite file, a fresh one per run.
import t from 'tap'
import type { Test } from 'tap'
import fc from 'fast-check'
import Fastify, { type FastifyInstance } from 'fastify'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import g2sentry from '../src/index.js'
import {
  MAX_DELIVERIES, finalStatus, formatSchedule, interleave, invalidStepAt, lifecycle, mulberry32, randomArrivals,
  randomLifecycle, randomSchedule, rank, schedule,
  type Bound, type CallbackEvent, type Delivery, type JobPlan, type Step
} from '../src/schedules.js'
import type { AppendResult, JobState } from '../src/types.js'
import { signBody } from '../src/verify-signature.js'

const SECRET = 'property-test-secret'
const NUM_RUNS = Number(process.env.G2_PROPERTY_RUNS ?? 60)
/** fast-check prints the shrunk input; the error it wraps (tap shows it as `cause`) tells that schedule as a story. */
const FC_OPTIONS = { numRuns: NUM_RUNS }

// About 12 s alone on 2 cores, nearer 25 s with coverage while other test files share the CPU:
// more room than tap's default 30 s, so a busy machine does not turn a pass into a timeout.
t.setTimeout(120_000)

// ---------------------------------------------------------------------------------------------
// The harness: one app on a fresh SQLite file per property run, deliveries posted one by one.

let runCounter = 0

/** Runs `fn` against a ready app on its own database file, then closes it and removes the file. */
async function withApp<T> (dir: string, fn: (app: FastifyInstance) => Promise<T>): Promise<T> {
  const database = join(dir, `run-${++runCounter}.db`)
  const app = Fastify({ logger: false })
  await app.register(g2sentry, { secret: SECRET, database })
  await app.ready()
  try {
    return await fn(app)
  } finally {
    await app.close()
    for (const suffix of ['', '-wal', '-shm']) rmSync(database + suffix, { force: true })
  }
}

/** POSTs one callback, signed over the exact bytes sent, and expects a 200. */
async function deliver (app: FastifyInstance, event: CallbackEvent): Promise<AppendResult> {
  const body = JSON.stringify(event)
  const response = await app.inject({
    method: 'POST',
    url: '/callbacks/g2sentry',
    headers: { 'content-type': 'application/json', 'x-signature': signBody(body, SECRET) },
    payload: body
  })
  if (response.statusCode !== 200) throw new Error(`HTTP ${response.statusCode} for ${body}: ${response.body}`)
  return response.json<AppendResult>()
}

/** A run's truth and what the receiver answered, for failure messages that read as a story. */
class Run {
  readonly results: AppendResult[] = []
  constructor (readonly plans: JobPlan[], readonly deliveries: Delivery[]) {}

  fail (message: string): never {
    const truth = this.plans.map((p) => `  job ${p.jobId}: ${p.steps.join(', ')} → truly ${p.finalStatus}`).join('\n')
    const story = formatSchedule(this.deliveries, (_, i) => {
      const r = this.results[i]
      return r === undefined ? '(not sent)' : `→ ${r.outcome}, ${r.status ?? 'no job'}`
    })
    throw new Error(`${message}\njobs:\n${truth}\ndeliveries:\n${story.replace(/^/gm, '  ')}`)
  }
}

// ---------------------------------------------------------------------------------------------
// Arbitraries with shapes a reader can follow when fast-check shrinks them.

const assignment = fc.constantFrom<Step>('assign', 'assignWithPhone')

/**
 * Valid step lists: `withdrawn` assignments each undone by a withdrawal, then possibly a last
 * assignment that may be started and completed. Shrinks toward one assignment.
 */
function stepsArb (withdrawals: { min: number; max: number }): fc.Arbitrary<Step[]> {
  return fc.record({
    withdrawn: fc.array(assignment, { minLength: withdrawals.min, maxLength: withdrawals.max }),
    last: fc.option(fc.record({ assign: assignment, then: fc.constantFrom<Step[]>([], ['start'], ['start', 'complete']) }), { nil: undefined })
  }).map(({ withdrawn, last }) => [
    ...withdrawn.flatMap((a): Step[] => [a, 'withdraw']),
    ...(last === undefined ? [] : [last.assign, ...last.then])
  ]).filter((steps) => steps.length > 0)
}

/** One arrival key per delivery of each event: 1–7 deliveries, ordered by key. Shrinks toward "once each, in order". */
const arrivalsArb = fc.array(fc.array(fc.nat({ max: 30 }), { minLength: 1, maxLength: MAX_DELIVERIES }), { maxLength: 10 })

interface RunShape {
  withdrawals: { min: number; max: number }
  /** Whether a job may also get an event type the projection does not know. */
  unsupported: boolean
}

const runArb = (shape: RunShape) => fc.record({
  jobs: fc.array(fc.record({
    steps: stepsArb(shape.withdrawals),
    arrivals: arrivalsArb,
    unsupported: shape.unsupported ? fc.option(fc.constantFrom('JobGuardianRate', 'JobClientRate'), { nil: undefined }) : fc.constant(undefined)
  }), { minLength: 1, maxLength: 5 }),
  picks: fc.array(fc.nat({ max: 4 }), { maxLength: 100 })
})

type RunInput = { jobs: Array<{ steps: Step[]; arrivals: number[][]; unsupported: string | undefined }>; picks: number[] }

/** Turns the generated choices into jobs (ids 1..n) and their interleaved deliveries. */
function buildRun (input: RunInput, bound: Bound): Run {
  const plans: JobPlan[] = []
  const schedules = input.jobs.map((job, n) => {
    const jobId = n + 1
    const events = lifecycle(jobId, job.steps)
    plans.push({ jobId, steps: job.steps, events, finalStatus: finalStatus(events) })
    // An unsupported event rides along after the lifecycle; its arrival keys place it anywhere.
    const extra: CallbackEvent[] = job.unsupported === undefined
      ? []
      : [{ jobId, eventType: job.unsupported, jobName: `Job ${jobId}`, jobStatus: finalStatus(events) }]
    return schedule([...events, ...extra], job.arrivals, bound)
  })
  return new Run(plans, interleave(schedules, input.picks))
}

/** Posts every delivery in order, keeping each answer on the run. */
async function play (app: FastifyInstance, run: Run): Promise<void> {
  for (const delivery of run.deliveries) run.results.push(await deliver(app, delivery.event))
}

const without = (state: JobState | undefined, key: keyof JobState) => {
  if (state === undefined) return undefined
  const { [key]: _, ...rest } = state
  return rest
}

// ---------------------------------------------------------------------------------------------
// The four properties of DESIGN.md.

t.test('property 1: a rebuild from the log equals the live projection and replays every outcome', async (t) => {
  const dir = t.testdir()
  await fc.assert(fc.asyncProperty(runArb({ withdrawals: { min: 0, max: 3 }, unsupported: true }), async (input) => {
    const run = buildRun(input, 'none')
    await withApp(dir, async (app) => {
      await play(app, run)
      const rows = await app.g2sentry.store.readLog({ limit: 10_000 })
      if (rows.length !== run.deliveries.length) run.fail(`the log holds ${rows.length} rows for ${run.deliveries.length} deliveries`)
      rows.forEach((row, i) => {
        const live = run.results[i] as AppendResult
        if (row.seq !== live.seq || row.outcome !== live.outcome) run.fail(`log row ${row.seq} says ${row.outcome}; delivery ${i + 1} was answered ${live.outcome} (seq ${live.seq})`)
      })
      const report = await app.g2sentry.verify()
      if (report.events !== rows.length) run.fail(`verify() replayed ${report.events} of ${rows.length} rows`)
      if (report.outcomeMismatches.length > 0 || report.differingJobs.length > 0) {
        run.fail(`verify() found outcome mismatches ${JSON.stringify(report.outcomeMismatches)} and differing jobs ${JSON.stringify(report.differingJobs)}`)
      }
    })
  }), FC_OPTIONS)
  t.pass(`${NUM_RUNS} schedules verified`)
})

t.test('property 2: an event delivered again right after itself changes nothing but the delivery count', async (t) => {
  const dir = t.testdir()
  const arb = fc.record({
    run: runArb({ withdrawals: { min: 0, max: 3 }, unsupported: true }),
    // echoes[k]: how many times delivery k is sent again at once (before the job sees anything else).
    echoes: fc.array(fc.nat({ max: 3 }), { maxLength: 100 })
  })
  let checked = 0
  await fc.assert(fc.asyncProperty(arb, async ({ run: input, echoes }) => {
    const base = buildRun(input, 'none')
    const run = new Run(base.plans, base.deliveries.flatMap((d, k) => Array.from({ length: 1 + (echoes[k] ?? 0) }, () => d)))
    await withApp(dir, async (app) => {
      const last = new Map<number, { body: string; state: JobState | undefined }>()
      for (const delivery of run.deliveries) {
        const { jobId } = delivery.event
        const body = JSON.stringify(delivery.event)
        const result = await deliver(app, delivery.event)
        run.results.push(result)
        const state = await app.g2sentry.store.getJob(jobId)
        const before = last.get(jobId)
        last.set(jobId, { body, state })
        if (before?.body !== body) continue
        checked++
        const at = `delivery ${run.results.length} (${body}), again right after itself`
        const supported = ['JobAssigned', 'JobStarted', 'JobCompleted', 'JobWithdrawed'].includes(delivery.event.eventType)
        const allowed = supported ? ['duplicate', 'stale'] : ['unsupported']
        if (!allowed.includes(result.outcome)) run.fail(`${at}: outcome ${result.outcome}, expected ${allowed.join(' or ')}`)
        if (JSON.stringify(without(state, 'eventCount')) !== JSON.stringify(without(before.state, 'eventCount'))) {
          run.fail(`${at}: the job changed from ${JSON.stringify(before.state)} to ${JSON.stringify(state)}`)
        }
        const grew = (state?.eventCount ?? 0) - (before.state?.eventCount ?? 0)
        if (grew !== (supported ? 1 : 0)) run.fail(`${at}: eventCount grew by ${grew}`)
      }
      const rows = await app.g2sentry.store.readLog({ limit: 10_000 })
      if (rows.length !== run.deliveries.length) run.fail(`the log holds ${rows.length} rows for ${run.deliveries.length} deliveries`)
    })
  }), FC_OPTIONS)
  t.ok(checked > NUM_RUNS, `${checked} back-to-back redeliveries checked`)
})

t.test('property 3: without withdrawals every arrival order converges and the status never moves backwards', async (t) => {
  const dir = t.testdir()
  await fc.assert(fc.asyncProperty(runArb({ withdrawals: { min: 0, max: 0 }, unsupported: false }), async (input) => {
    const run: Run = buildRun(input, 'none')
    await withApp(dir, async (app) => {
      const seen = new Map<number, number>()
      for (const delivery of run.deliveries) {
        const result = await deliver(app, delivery.event)
        run.results.push(result)
        if (result.status === null) run.fail(`delivery ${run.results.length} left job ${result.jobId} without a status`)
        const before = seen.get(result.jobId) ?? -1
        if (rank(result.status) < before) run.fail(`delivery ${run.results.length} moved job ${result.jobId} back to ${result.status}`)
        seen.set(result.jobId, rank(result.status))
      }
      for (const plan of run.plans) {
        const job = await app.g2sentry.store.getJob(plan.jobId)
        if (job?.status !== plan.finalStatus) run.fail(`job ${plan.jobId} ended ${job?.status ?? 'missing'}, truly ${plan.finalStatus}`)
      }
    })
  }), FC_OPTIONS)
  t.pass(`${NUM_RUNS} schedules converged`)
})

t.test('property 4: with withdrawals, when no delivery crosses a withdrawal, the job ends in its true status', async (t) => {
  const dir = t.testdir()
  await fc.assert(fc.asyncProperty(runArb({ withdrawals: { min: 1, max: 3 }, unsupported: false }), async (input) => {
    const run = buildRun(input, 'withdrawals')
    await withApp(dir, async (app) => {
      await play(app, run)
      for (const plan of run.plans) {
        const job = await app.g2sentry.store.getJob(plan.jobId)
        if (job?.status !== plan.finalStatus) run.fail(`job ${plan.jobId} ended ${job?.status ?? 'missing'}, truly ${plan.finalStatus}`)
      }
    })
  }), FC_OPTIONS)
  t.pass(`${NUM_RUNS} bounded schedules ended in their true status`)
})

// ---------------------------------------------------------------------------------------------
// Hand-written schedules: the regressions a reader can follow without a generator.

/** Sends `events` in the given order and returns the outcomes and the job afterwards. */
async function sendAll (t: Test, events: CallbackEvent[]) {
  return withApp(t.testdir(), async (app) => {
    const results = []
    for (const event of events) results.push(await deliver(app, event))
    const report = await app.g2sentry.verify()
    return { outcomes: results.map((r) => r.outcome), job: await app.g2sentry.store.getJob(events[0]?.jobId ?? 0), report }
  })
}

t.test('example: a start that arrives before its assignment', async (t) => {
  const [assign, start] = lifecycle(1, ['assignWithPhone', 'start']) as [CallbackEvent, CallbackEvent]
  const { outcomes, job, report } = await sendAll(t, [start, assign, assign])
  t.same(outcomes, ['applied', 'stale', 'stale'])
  t.match(job, { status: 'InProgress', lastEventType: 'JobStarted', guardianPhone: start.guardianPhone, version: 1, eventCount: 3 })
  t.same([report.outcomeMismatches, report.differingJobs], [[], []])
})

t.test('example: an assignment redelivered after the job completed', async (t) => {
  const [assign, start, complete] = lifecycle(2, ['assign', 'start', 'complete']) as [CallbackEvent, CallbackEvent, CallbackEvent]
  const { outcomes, job, report } = await sendAll(t, [assign, start, complete, assign])
  t.same(outcomes, ['applied', 'applied', 'applied', 'stale'])
  t.match(job, { status: 'Completed', guardianPhone: null, version: 3, eventCount: 4 })
  t.same([report.outcomeMismatches, report.differingJobs], [[], []])
})

t.test('example: withdraw, re-assign identically, withdraw again', async (t) => {
  const events = lifecycle(3, ['assign', 'withdraw', 'assign', 'withdraw'])
  t.equal(JSON.stringify(events[2]), JSON.stringify(events[0]), 'the re-assignment is byte for byte the first')
  t.equal(JSON.stringify(events[3]), JSON.stringify(events[1]), 'so is the second withdrawal')
  const [a1, w1, a2, w2] = events as [CallbackEvent, CallbackEvent, CallbackEvent, CallbackEvent]
  const { outcomes, job, report } = await sendAll(t, [a1, a1, w1, w1, a2, a2, w2])
  t.same(outcomes, ['applied', 'duplicate', 'applied', 'duplicate', 'applied', 'duplicate', 'applied'])
  t.match(job, { status: 'New', lastEventType: 'JobWithdrawed', guardianPhone: null, version: 4, eventCount: 7 })
  t.same([report.outcomeMismatches, report.differingJobs], [[], []])
})

// ---------------------------------------------------------------------------------------------
// The generator itself: what the properties above rely on it for.

t.test('schedules: lifecycles follow the workflow', async (t) => {
  t.same(lifecycle(9, ['assignWithPhone', 'start', 'complete']).map((e) => [e.eventType, e.jobStatus, e.guardianPhone !== undefined]), [
    ['JobAssigned', 'Assigned', true], ['JobStarted', 'InProgress', true], ['JobCompleted', 'Completed', false]
  ])
  t.equal(invalidStepAt(['start']), 0, 'nothing starts before it is assigned')
  t.equal(invalidStepAt(['assign', 'assign']), 1, 'no second assignment without a withdrawal')
  t.equal(invalidStepAt(['assign', 'start', 'withdraw']), 2, 'no withdrawal once started')
  t.throws(() => lifecycle(1, ['assign', 'complete']), RangeError)
  t.equal(finalStatus([]), 'New')
  t.equal(finalStatus(lifecycle(1, ['assign', 'withdraw'])), 'New')
  fc.assert(fc.property(fc.nat(), fc.boolean(), (seed, withdrawals) => {
    const steps = randomLifecycle(mulberry32(seed), { withdrawals, maxWithdrawals: 2 })
    return steps.length > 0 && invalidStepAt(steps) === -1 &&
      steps.filter((s) => s === 'withdraw').length <= (withdrawals ? 2 : 0)
  }))
})

t.test('schedules: deliveries are the chosen copies, and the bound keeps them inside their withdrawal block', async (t) => {
  fc.assert(fc.property(stepsArb({ min: 0, max: 3 }), arrivalsArb, fc.constantFrom<Bound>('none', 'withdrawals'), (steps, arrivals, bound) => {
    const events = lifecycle(1, steps)
    const deliveries = schedule(events, arrivals, bound)
    events.forEach((_, i) => {
      const copies = deliveries.filter((d) => d.index === i)
      if (copies.length !== (arrivals[i]?.length ?? 1)) throw new Error(`event ${i} delivered ${copies.length} times`)
      if (copies.some((d, n) => d.attempt !== n + 1 || d.event !== events[i])) throw new Error(`event ${i} attempts out of order`)
    })
    if (bound === 'none') return
    // No delivery crosses a withdrawal: whenever one of two deliveries is a withdrawal, they arrive in true order.
    deliveries.forEach((earlier, i) => deliveries.slice(i + 1).forEach((later) => {
      const involvesWithdrawal = earlier.event.eventType === 'JobWithdrawed' || later.event.eventType === 'JobWithdrawed'
      if (involvesWithdrawal && earlier.index > later.index) throw new Error(`${formatSchedule(deliveries)}\ncrosses a withdrawal`)
    }))
  }))
  const events = lifecycle(1, ['assign', 'start'])
  t.same(schedule(events, [[5], [1]]).map((d) => d.event.eventType), ['JobStarted', 'JobAssigned'], 'unbounded: any order')
  t.same(schedule(events, []).map((d) => d.index), [0, 1], 'no keys: once each, in true order')
  t.throws(() => schedule(events, [[]]), RangeError)
  t.throws(() => schedule(events, [[1, 2, 3, 4, 5, 6, 7, 8]]), RangeError)
  const withdrawn = lifecycle(1, ['assign', 'withdraw', 'assign'])
  t.same(schedule(withdrawn, [[9, 9], [0], [0]], 'withdrawals').map((d) => d.index), [0, 0, 1, 2], 'bounded: the assignment stays before its withdrawal')
  t.same(schedule(withdrawn, [[9, 9], [0], [0]], 'none').map((d) => d.index), [1, 2, 0, 0], 'unbounded: it may cross it')
})

t.test('schedules: interleaving keeps each job in its order; random schedules replay from their seed', async (t) => {
  const a = schedule(lifecycle(1, ['assign', 'start']), [])
  const b = schedule(lifecycle(2, ['assign']), [[0, 1]])
  t.same(interleave([a, b], []).map((d) => d.event.jobId), [1, 1, 2, 2], 'no picks: job after job')
  t.same(interleave([a, b], [1, 0, 1, 1, 1]).map((d) => d.event.jobId), [2, 1, 2, 1])
  t.same(randomSchedule(42, { jobs: 4 }), randomSchedule(42, { jobs: 4 }), 'same seed, same run')
  const { jobs, deliveries } = randomSchedule(7, { jobs: 20, firstJobId: 100, bound: 'withdrawals', lossRate: 0.5 })
  t.same(jobs.map((j) => j.jobId), Array.from({ length: 20 }, (_, i) => 100 + i))
  t.equal(deliveries.length >= jobs.reduce((n, j) => n + j.events.length, 0), true, 'every event delivered at least once')
  t.ok(jobs.every((j) => invalidStepAt(j.steps) === -1 && j.finalStatus === finalStatus(j.events)))
  const arrivals = randomArrivals(mulberry32(1), lifecycle(1, ['assign', 'start', 'complete']), { lossRate: 1 })
  t.same(arrivals.map((keys) => keys.length), [MAX_DELIVERIES, MAX_DELIVERIES, MAX_DELIVERIES], 'every attempt lost: the whole retry ladder')
  t.equal(formatSchedule(schedule(lifecycle(3, ['assignWithPhone']), [[0, 0]])), 'job 3 JobAssigned(Assigned, phone) ×2')
})
