// The four properties of docs/design.md ("Properties the tests prove") on SQLite (a fresh file per run), and the schedule generator the
// properties rely on.
import t from 'tap'
import fc from 'fast-check'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import {
  MAX_DELIVERIES, finalStatus, formatSchedule, interleave, invalidStepAt, lifecycle, mulberry32, randomArrivals,
  randomLifecycle, randomSchedule, schedule, type Bound
} from '../../src/simulator/schedules.js'
import { arrivalsArb, deliveryProperties, stepsArb } from '../helpers/delivery-properties.js'

// About 12 s alone on 2 cores, nearer 25 s with coverage while other test files share the CPU:
// more room than tap's default 30 s, so a busy machine does not turn a pass into a timeout.
t.setTimeout(120_000)

let runs = 0
deliveryProperties(t, {
  open: async (t) => {
    const dir = t.testdir()
    return async () => {
      const database = join(dir, `run-${++runs}.db`)
      return {
        options: { database },
        cleanup: async () => { for (const suffix of ['', '-wal', '-shm']) rmSync(database + suffix, { force: true }) }
      }
    }
  }
}, Number(process.env.G2_PROPERTY_RUNS ?? 60))

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
