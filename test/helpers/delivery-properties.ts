// The four properties of docs/design.md ("Properties the tests prove"), checked on generated delivery schedules sent through the real
// callback route (signed bodies, app.inject) into a real store, a fresh one per run. The test
// files run them against SQLite (delivery-properties.test.ts) and PostgreSQL
// (delivery-properties-postgres.test.ts).
import type { Test } from 'tap'
import fc from 'fast-check'
import Fastify, { type FastifyInstance } from 'fastify'
import g2sentry, { type G2SentryOptions } from '../../src/index.js'
import {
  MAX_DELIVERIES, finalStatus, formatSchedule, interleave, lifecycle, rank, schedule, trueStatus, withoutLost,
  type Bound, type Delivery, type JobPlan, type Step
} from '../../src/simulator/schedules.js'
import { FakeG2Sentry } from '../../src/simulator/fake-g2sentry.js'
import type { AppendResult, JobEvent, JobState } from '../../src/domain/types.js'
import { signBody } from '../../src/domain/verify-signature.js'

const SECRET = 'property-test-secret'

// ---------------------------------------------------------------------------------------------
// The harness: one app on a fresh, empty store per property run, deliveries posted one by one.

/** Where a property's runs happen: `place` gives each run a fresh, empty store. */
export interface Backend {
  /** Called once per property test; returns what to give the plugin for each run, and its cleanup. */
  open: (t: Test) => Promise<() => Promise<{ options: Pick<G2SentryOptions, 'database' | 'store'>; cleanup: () => Promise<void> }>>
}

type WithApp = <T>(fn: (app: FastifyInstance) => Promise<T>) => Promise<T>

async function harness (t: Test, backend: Backend, extra: () => Partial<G2SentryOptions> = () => ({})): Promise<WithApp> {
  const place = await backend.open(t)
  return async (fn) => {
    const { options, cleanup } = await place()
    const app = Fastify({ logger: false })
    await app.register(g2sentry, { secret: SECRET, ...options, ...extra() })
    await app.ready()
    try {
      return await fn(app)
    } finally {
      await app.close()
      await cleanup()
    }
  }
}

/** POSTs one callback, signed over the exact bytes sent, and expects a 200. */
async function deliver (app: FastifyInstance, event: JobEvent): Promise<AppendResult> {
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
export function stepsArb (withdrawals: { min: number; max: number }): fc.Arbitrary<Step[]> {
  return fc.record({
    withdrawn: fc.array(assignment, { minLength: withdrawals.min, maxLength: withdrawals.max }),
    last: fc.option(fc.record({ assign: assignment, then: fc.constantFrom<Step[]>([], ['start'], ['start', 'complete']) }), { nil: undefined })
  }).map(({ withdrawn, last }) => [
    ...withdrawn.flatMap((a): Step[] => [a, 'withdraw']),
    ...(last === undefined ? [] : [last.assign, ...last.then])
  ]).filter((steps) => steps.length > 0)
}

/** One arrival key per delivery of each event: 1–7 deliveries, ordered by key. Shrinks toward "once each, in order". */
export const arrivalsArb = fc.array(fc.array(fc.nat({ max: 30 }), { minLength: 1, maxLength: MAX_DELIVERIES }), { maxLength: 10 })

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
    const extra: JobEvent[] = job.unsupported === undefined
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

/**
 * Registers the four properties and the hand-written example schedules on `t`, each run on a
 * fresh store from `backend`, `numRuns` generated schedules per property.
 */
export function deliveryProperties (t: Test, backend: Backend, numRuns: number): void {
  // ---------------------------------------------------------------------------------------------
  // The four properties of docs/design.md.

  t.test('property 1: a rebuild from the log equals the live projection and replays every outcome', async (t) => {
    const withApp = await harness(t, backend)
    await fc.assert(fc.asyncProperty(runArb({ withdrawals: { min: 0, max: 3 }, unsupported: true }), async (input) => {
      const run = buildRun(input, 'none')
      await withApp(async (app) => {
        await play(app, run)
        const rows = await app.g2sentry.store.readLog({ limit: 10_000 })
        if (rows.length !== run.deliveries.length) run.fail(`the log holds ${rows.length} rows for ${run.deliveries.length} deliveries`)
        rows.forEach((row, i) => {
          const live = run.results[i] as AppendResult
          if (row.seq !== live.seq || row.outcome !== live.outcome) run.fail(`log row ${row.seq} says ${row.outcome}; delivery ${i + 1} was answered ${live.outcome} (seq ${live.seq})`)
        })
        const report = await app.g2sentry.checkProjection()
        if (report.events !== rows.length) run.fail(`verify() replayed ${report.events} of ${rows.length} rows`)
        if (report.outcomeMismatches.length > 0 || report.differingJobs.length > 0) {
          run.fail(`verify() found outcome mismatches ${JSON.stringify(report.outcomeMismatches)} and differing jobs ${JSON.stringify(report.differingJobs)}`)
        }
      })
    }), { numRuns })
    t.pass(`${numRuns} schedules verified`)
  })

  t.test('property 2: an event delivered again right after itself changes nothing but the delivery count', async (t) => {
    const withApp = await harness(t, backend)
    const arb = fc.record({
      run: runArb({ withdrawals: { min: 0, max: 3 }, unsupported: true }),
      // echoes[k]: how many times delivery k is sent again at once (before the job sees anything else).
      echoes: fc.array(fc.nat({ max: 3 }), { maxLength: 100 })
    })
    let checked = 0
    await fc.assert(fc.asyncProperty(arb, async ({ run: input, echoes }) => {
      const base = buildRun(input, 'none')
      const run = new Run(base.plans, base.deliveries.flatMap((d, k) => Array.from({ length: 1 + (echoes[k] ?? 0) }, () => d)))
      await withApp(async (app) => {
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
    }), { numRuns })
    t.ok(checked > numRuns, `${checked} back-to-back redeliveries checked`)
  })

  t.test('property 3: without withdrawals every arrival order converges and the status never moves backwards', async (t) => {
    const withApp = await harness(t, backend)
    await fc.assert(fc.asyncProperty(runArb({ withdrawals: { min: 0, max: 0 }, unsupported: false }), async (input) => {
      const run: Run = buildRun(input, 'none')
      await withApp(async (app) => {
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
    }), { numRuns })
    t.pass(`${numRuns} schedules converged`)
  })

  t.test('property 4: with withdrawals, when no delivery crosses a withdrawal, the job ends in its true status', async (t) => {
    const withApp = await harness(t, backend)
    await fc.assert(fc.asyncProperty(runArb({ withdrawals: { min: 1, max: 3 }, unsupported: false }), async (input) => {
      const run = buildRun(input, 'withdrawals')
      await withApp(async (app) => {
        await play(app, run)
        for (const plan of run.plans) {
          const job = await app.g2sentry.store.getJob(plan.jobId)
          if (job?.status !== plan.finalStatus) run.fail(`job ${plan.jobId} ended ${job?.status ?? 'missing'}, truly ${plan.finalStatus}`)
        }
      })
    }), { numRuns })
    t.pass(`${numRuns} bounded schedules ended in their true status`)
  })

  // ---------------------------------------------------------------------------------------------
  // Hand-written schedules: the regressions a reader can follow without a generator.

  /** Sends `events` in the given order and returns the outcomes and the job afterwards. */
  async function sendAll (t: Test, events: JobEvent[]) {
    const withApp = await harness(t, backend)
    return withApp(async (app) => {
      const results = []
      for (const event of events) results.push(await deliver(app, event))
      const report = await app.g2sentry.checkProjection()
      return { outcomes: results.map((r) => r.outcome), job: await app.g2sentry.store.getJob(events[0]?.jobId ?? 0), report }
    })
  }

  t.test('example: a start that arrives before its assignment', async (t) => {
    const [assign, start] = lifecycle(1, ['assignWithPhone', 'start']) as [JobEvent, JobEvent]
    const { outcomes, job, report } = await sendAll(t, [start, assign, assign])
    t.same(outcomes, ['applied', 'stale', 'stale'])
    t.match(job, { status: 'InProgress', lastEventType: 'JobStarted', guardianPhone: start.guardianPhone, version: 1, eventCount: 3 })
    t.same([report.outcomeMismatches, report.differingJobs], [[], []])
  })

  t.test('example: an assignment redelivered after the job completed', async (t) => {
    const [assign, start, complete] = lifecycle(2, ['assign', 'start', 'complete']) as [JobEvent, JobEvent, JobEvent]
    const { outcomes, job, report } = await sendAll(t, [assign, start, complete, assign])
    t.same(outcomes, ['applied', 'applied', 'applied', 'stale'])
    t.match(job, { status: 'Completed', guardianPhone: null, version: 3, eventCount: 4 })
    t.same([report.outcomeMismatches, report.differingJobs], [[], []])
  })

  t.test('example: withdraw, re-assign identically, withdraw again', async (t) => {
    const events = lifecycle(3, ['assign', 'withdraw', 'assign', 'withdraw'])
    t.equal(JSON.stringify(events[2]), JSON.stringify(events[0]), 'the re-assignment is byte for byte the first')
    t.equal(JSON.stringify(events[3]), JSON.stringify(events[1]), 'so is the second withdrawal')
    const [a1, w1, a2, w2] = events as [JobEvent, JobEvent, JobEvent, JobEvent]
    const { outcomes, job, report } = await sendAll(t, [a1, a1, w1, w1, a2, a2, w2])
    t.same(outcomes, ['applied', 'duplicate', 'applied', 'duplicate', 'applied', 'duplicate', 'applied'])
    t.match(job, { status: 'New', lastEventType: 'JobWithdrawed', guardianPhone: null, version: 4, eventCount: 7 })
    t.same([report.outcomeMismatches, report.differingJobs], [[], []])
  })
}

/**
 * Property 5 (docs/design.md, "Reconciliation"): schedules in any order, where G2 Sentry gave up
 * on some callbacks and some jobs were canceled (never pushed); after one reconciler round
 * against the fake G2 Sentry, every job shows its true status and the log still verifies.
 */
export function reconcileProperty (t: Test, backend: Backend, numRuns: number): void {
  t.test('property 5: with lost callbacks and cancellations, once the reconciler has run, every job shows its true status', async (t) => {
  // A fresh fake G2 Sentry per run (a fresh partner window, as each run has a fresh store).
    let fake: FakeG2Sentry | undefined
    t.teardown(() => fake?.close())
    const withApp = await harness(t, backend, () => ({
      reconcile: { baseUrl: (fake as FakeG2Sentry).url, partnerKey: 'demo-partner', partnerSecret: 'demo-partner-secret', quietForMs: 1, everyMs: 3_600_000 }
    }))
    const arb = fc.record({
      run: runArb({ withdrawals: { min: 0, max: 3 }, unsupported: false }),
      // Per job: whether the client cancels at the end (when the workflow allows), and which
      // events after the first G2 Sentry gave up on.
      cancel: fc.array(fc.boolean(), { maxLength: 5 }),
      lost: fc.array(fc.array(fc.nat({ max: 9 }), { maxLength: 3 }), { maxLength: 5 })
    })
    let reconciled = 0
    let mostInWindow = 0
    await fc.assert(fc.asyncProperty(arb, async ({ run: input, cancel, lost }) => {
      const plans: JobPlan[] = []
      const schedules = input.jobs.map((job, n) => {
        const jobId = n + 1
        const open = ['Assigned', 'New'].includes(finalStatus(lifecycle(jobId, job.steps)))
        const steps: Step[] = cancel[n] === true && open ? [...job.steps, 'cancel'] : job.steps
        const events = lifecycle(jobId, steps)
        plans.push({ jobId, steps, events, finalStatus: trueStatus(steps) })
        // The first event always arrives, so the receiver knows the job.
        const gaveUp = new Set((lost[n] ?? []).filter((i) => i > 0))
        return withoutLost(schedule(events, job.arrivals, 'none'), gaveUp)
      })
      const run: Run = new Run(plans, interleave(schedules, input.picks))
      await fake?.close()
      fake = await FakeG2Sentry.start()
      for (const plan of plans) fake.setStatus(plan.jobId, plan.finalStatus)
      await withApp(async (app) => {
        await play(app, run)
        // A job is asked about once it has been quiet for quietForMs (1 ms here): on SQLite the last
        // delivery and the round can fall in the same millisecond, when no job is quiet yet.
        await new Promise((resolve) => setTimeout(resolve, 5))
        const report = await app.g2sentry.reconcile()
        if (report === undefined || report.stopped !== undefined) run.fail(`the reconciler did not run a round: ${String(report?.stopped)}`)
        reconciled += report.checks.filter((c) => c.result === 'reconciled').length
        for (const plan of run.plans) {
          const job = await app.g2sentry.store.getJob(plan.jobId)
          if (job?.status !== plan.finalStatus) run.fail(`after reconciling, job ${plan.jobId} is ${job?.status ?? 'missing'}, truly ${plan.finalStatus}`)
        }
        const audit = await app.g2sentry.audit()
        if (!audit.ok) run.fail(`verify failed after reconciling: ${JSON.stringify(audit.chain)}`)
      })
      mostInWindow = Math.max(mostInWindow, fake.maxInWindow(60_000))
      if (fake.requests.some((r) => r.status === 429)) run.fail('the fake refused a request with 429')
    }), { numRuns })
    t.ok(reconciled > 0, `${reconciled} jobs reconciled over ${numRuns} runs`)
    t.ok(mostInWindow <= 50, `the fake never saw more than 50 requests in 60 s (at most ${mostInWindow})`)
  })
}
