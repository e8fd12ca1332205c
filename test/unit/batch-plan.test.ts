// The batch planner (src/store/batch-plan.ts), on its own: what a batch writes, decided in memory
// from what the store read. Both stores' writers write exactly this, on both of their paths.
import t from 'tap'
import { planBatch, type PlanReads } from '../../src/store/batch-plan.js'
import { contentHash, type ChainHead } from '../../src/store/rows.js'
import { projectEvent } from '../../src/domain/project-status.js'
import { RECONCILED_EVENT_TYPE, type AppendResult, type ConditionalEvent, type IncomingEvent, type JobState } from '../../src/domain/types.js'
import { assigned, incoming, JOB_NAME, started, T0 } from '../helpers/fixtures.js'

/** Reads answering from a log described by hand. */
function readsOf (known: { jobs?: JobState[]; lastSeqs?: Record<number, number>; firsts?: Record<string, number> } = {}): PlanReads {
  const jobs = new Map((known.jobs ?? []).map((job) => [job.jobId, job]))
  return {
    state: (jobId) => jobs.get(jobId),
    lastSeq: (jobId) => known.lastSeqs?.[jobId] ?? 0,
    firstSameContent: (jobId, _body, hash) => known.firsts?.[`${jobId} ${hash}`] ?? null
  }
}

const stateAfter = (...events: IncomingEvent[]): JobState =>
  events.reduce<JobState | undefined>((state, event) => projectEvent(state, event).state, undefined) as JobState
const outcomes = (results: Array<{ outcome: string }>) => results.map((r) => r.outcome)
const column = (rows: unknown[][], index: number) => rows.map((row) => row[index])
// EVENT_INSERT_COLUMNS: seq 0, outcome 10, same_as 11, prev_hash 12, hash 13.

t.test('an empty log: seqs from 1, each row chained to the one before, one job row per job with its last state', async (t) => {
  const events = [incoming(assigned(1)), incoming(started(1)), incoming(assigned(2))]
  const plan = planBatch(events, undefined, readsOf())
  t.same(outcomes(plan.results), ['applied', 'applied', 'applied'])
  t.same(column(plan.rows, 0), [1, 2, 3])
  t.equal(column(plan.rows, 12)[1], column(plan.rows, 13)[0], 'row 2 links to row 1\'s hash')
  t.same(plan.head, { seq: 3, hash: column(plan.rows, 13)[2] })
  t.same(plan.jobs.map((job) => [job.jobId, job.status, job.version, job.eventCount]), [[1, 'InProgress', 2, 2], [2, 'Assigned', 1, 1]])
})

t.test('after a head: seqs go on from it', async (t) => {
  const head: ChainHead = { seq: 41, hash: 'a'.repeat(64) }
  const plan = planBatch([incoming(assigned(1))], head, readsOf())
  t.equal(column(plan.rows, 0)[0], 42)
  t.equal(column(plan.rows, 12)[0], head.hash)
})

t.test('duplicate and stale deliveries count on the job (eventCount) and are written with it', async (t) => {
  const first = incoming(assigned(1))
  const start = incoming(started(1))
  const known = stateAfter(first, start)
  const plan = planBatch([incoming(started(1)), incoming(assigned(1))], { seq: 2, hash: 'h' }, readsOf({ jobs: [known] }))
  t.same(outcomes(plan.results), ['duplicate', 'stale'])
  t.same(plan.jobs.map((job) => [job.status, job.version, job.eventCount]), [['InProgress', 2, 4]], 'the job row is written with both deliveries counted')
})

t.test('a duplicate names the first row with its body: earlier in the log, else earlier in the batch', async (t) => {
  const body = incoming(assigned(1))
  const inBatch = planBatch([body, incoming(assigned(1))], undefined, readsOf())
  t.same(outcomes(inBatch.results), ['applied', 'duplicate'])
  t.same(column(inBatch.rows, 11), [null, 1])
  const hash = contentHash(body.rawBody)
  const inLog = planBatch([incoming(assigned(1))], { seq: 9, hash: 'h' }, readsOf({ jobs: [stateAfter(body)], firsts: { [`1 ${hash}`]: 7 } }))
  t.same(column(inLog.rows, 11), [7])
  t.equal(inLog.firsts.get(`1 ${hash}`), 10, 'firsts: the batch\'s own first row with that body')
})

t.test('an unsupported event is written and changes no job', async (t) => {
  const rate = incoming({ jobId: 3, eventType: 'JobGuardianRate', jobName: 'x', jobStatus: 'Completed' })
  const plan = planBatch([rate], undefined, readsOf())
  t.same(outcomes(plan.results), ['unsupported'])
  t.equal(plan.rows.length, 1)
  t.same(plan.jobs, [])
})

t.test('a conditional event: superseded when the job\'s last seq moved, in the log or earlier in the batch', async (t) => {
  // The reconciler's: G2 Sentry says the job was canceled.
  const conditional = (ifLastSeq: number): ConditionalEvent =>
    ({ ...incoming({ jobId: 1, eventType: RECONCILED_EVENT_TYPE, jobName: JOB_NAME, jobStatus: 'Canceled' }, T0 + 1), source: 'api', ifLastSeq })
  const known = stateAfter(incoming(assigned(1)))
  const fine = planBatch([conditional(5)], { seq: 5, hash: 'h' }, readsOf({ jobs: [known], lastSeqs: { 1: 5 } }))
  t.same(outcomes(fine.results), ['applied'])
  const moved = planBatch([conditional(4)], { seq: 5, hash: 'h' }, readsOf({ jobs: [known], lastSeqs: { 1: 5 } }))
  t.same(moved.results, [{ outcome: 'superseded', jobId: 1, lastSeq: 5 }])
  t.same(moved.rows, [], 'nothing written')
  t.same(moved.head, { seq: 5, hash: 'h' }, 'the head stays')
  const behind = planBatch([incoming(started(1)), conditional(5)], { seq: 5, hash: 'h' }, readsOf({ jobs: [known], lastSeqs: { 1: 5 } }))
  t.same(behind.results[1], { outcome: 'superseded', jobId: 1, lastSeq: 6 }, 'a row earlier in the batch moved it')
})

t.test('quarantined bodies the batch appends, with their seqs', async (t) => {
  const plan = planBatch([incoming(assigned(1)), { ...incoming(assigned(2)), quarantineId: 12 }], undefined, readsOf())
  t.same(plan.retried, [{ id: 12, seq: 2 }])
  t.equal((plan.results[1] as AppendResult).seq, 2)
})
