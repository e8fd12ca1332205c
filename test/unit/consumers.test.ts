// Durable consumers in one process, on a real SQLite file: order, at-least-once, retries with
// backoff, parking, start positions, waking on commit, one runner per name, close and reset.
// Across processes (SIGKILL, takeover) see consumer-processes.test.ts.
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { backoffDelay, resolveConsumerOptions, startConsumer, type Consumer, type ConsumerOptions, type Delivery } from '../../src/consumers/consumer.js'
import type { JobChange } from '../../src/domain/job-change.js'
import type { G2SentryStore } from '../../src/store/contract.js'
import type { LogRow } from '../../src/domain/types.js'
import { sqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { assigned, completed, incoming, seedLog, started, T0 } from '../helpers/store-contract.js'
import { JOB_NAME } from '../helpers/fixtures.js'
import { until } from '../helpers/until.js'

const openStore = (t: Test): G2SentryStore => {
  const store = sqliteStore({ filename: join(t.testdir(), 'g2.db') })
  t.teardown(() => store.close())
  return store
}

function run<D extends Delivery = 'changes'> (t: Test, store: G2SentryStore, name: string, handler: (item: D extends 'rows' ? LogRow : JobChange, attempt: number) => unknown,
  options: ConsumerOptions<D> = {}): Consumer {
  const consumer = startConsumer(store, name, (item, context) => handler(item, context.attempt), { minBackoffMs: 5, maxBackoffMs: 20, ...options })
  t.teardown(() => consumer.close())
  return consumer
}

const checkpointOf = async (store: G2SentryStore, name: string): Promise<number | undefined> =>
  (await store.listConsumers()).find((c) => c.name === name)?.checkpoint

t.test('each projection change, in seq order, then the checkpoint at the last row', async (t) => {
  const store = openStore(t)
  await seedLog(store)
  const seen: JobChange[] = []
  run(t, store, 'changes', (change) => { seen.push(change) })
  await until('the checkpoint at seq 8', async () => await checkpointOf(store, 'changes') === 8)
  t.same(seen.map((c) => c.seq), [1, 2, 3, 6, 7], 'only applied rows, in seq order (duplicate, stale and unsupported left out)')
  t.same(seen[0], { seq: 1, jobId: 1, eventType: 'JobAssigned', status: 'Assigned', jobName: JOB_NAME, receivedAt: new Date(T0).toISOString() },
    'the stream\'s shape, with no phone')
})

t.test('deliver: rows hands over every log row', async (t) => {
  const store = openStore(t)
  await seedLog(store)
  const seen: LogRow[] = []
  run<'rows'>(t, store, 'rows', (row) => { seen.push(row) }, { deliver: 'rows' })
  await until('eight rows', () => seen.length === 8)
  t.same(seen.map((r) => [r.seq, r.outcome]), [[1, 'applied'], [2, 'applied'], [3, 'applied'], [4, 'stale'], [5, 'duplicate'], [6, 'applied'], [7, 'applied'], [8, 'unsupported']])
})

t.test('a consumer wakes on each commit, with no poll delay', async (t) => {
  const store = openStore(t)
  const seen: number[] = []
  // A poll an hour apart: only the commit can wake it in time.
  run(t, store, 'waker', (change) => { seen.push(change.seq) }, { pollMs: 3_600_000 })
  await new Promise((resolve) => setTimeout(resolve, 50))
  for (let jobId = 1; jobId <= 5; jobId++) {
    const { seq } = await store.append(incoming(assigned(jobId), T0 + jobId))
    await until(`seq ${seq} handled`, () => seen.includes(seq))
  }
  t.same(seen, [1, 2, 3, 4, 5])
})

t.test('a handler that fails N times is retried, and no later row is handed over before it succeeds', async (t) => {
  const store = openStore(t)
  await seedLog(store)
  const calls: Array<[number, number]> = []
  const times: number[] = []
  run(t, store, 'flaky', (change, attempt) => {
    calls.push([change.seq, attempt])
    if (change.seq === 3) times.push(Date.now())
    if (change.seq === 3 && attempt <= 4) throw new Error(`attempt ${attempt} fails`)
  }, { minBackoffMs: 20, maxBackoffMs: 80 })
  await until('the checkpoint at seq 8', async () => await checkpointOf(store, 'flaky') === 8)
  t.same(calls, [[1, 1], [2, 1], [3, 1], [3, 2], [3, 3], [3, 4], [3, 5], [6, 1], [7, 1]], 'seq 3 five times (4 failures), then the rest in order')
  // Between half and all of 20, 40, 80, 80 ms.
  const gaps = times.slice(1).map((time, i) => time - (times[i] as number))
  t.ok(gaps.every((gap, i) => gap >= ([10, 20, 40, 40][i] ?? 0) - 2), `backoff grows, capped: ${gaps.join(', ')} ms`)
  const status = (await store.listConsumers())[0]
  t.equal(status?.parked, 0, 'nothing parked without maxAttempts')
})

t.test('after maxAttempts a row is parked and the consumer moves on; a retry hands it over again', async (t) => {
  const store = openStore(t)
  await seedLog(store)
  const calls: Array<[number, number]> = []
  let healthy = false
  const consumer = run(t, store, 'parker', (change, attempt) => {
    calls.push([change.seq, attempt])
    if (change.seq === 3 && !healthy) throw new Error('the receiver refuses job 1')
  }, { maxAttempts: 3 })
  await until('the checkpoint at seq 8', async () => await checkpointOf(store, 'parker') === 8)
  t.same(calls, [[1, 1], [2, 1], [3, 1], [3, 2], [3, 3], [6, 1], [7, 1]])
  const [parked] = await store.listParked({ consumer: 'parker', limit: 10 })
  t.same(parked && [parked.seq, parked.attempts, parked.error, parked.jobId], [3, 3, 'the receiver refuses job 1', 1], 'parked with its attempts and error')

  healthy = true
  t.equal(await consumer.retryParked(), 1)
  await until('the parked row retried', async () => (await store.listParked({ limit: 10 })).length === 0)
  t.same(calls.slice(7), [[3, 4]], 'handed over once more, attempt 4')
  t.equal(await checkpointOf(store, 'parker'), 8, 'the checkpoint did not move back')
})

t.test('a parked row that fails its retry is parked again with the attempts added up', async (t) => {
  const store = openStore(t)
  await store.append(incoming(assigned(1), T0))
  const consumer = run(t, store, 'stubborn', () => { throw new Error('no') }, { maxAttempts: 2 })
  await until('the row parked', async () => (await store.listParked({ limit: 10 })).length === 1)
  await consumer.retryParked([1])
  await until('the retry over', async () => (await store.listParked({ limit: 10 }))[0]?.attempts === 4)
  t.same((await store.listParked({ limit: 10 })).map((p) => [p.seq, p.attempts, p.retryRequested]), [[1, 4, false]])
})

t.test('start: now skips what is already in the log; an existing consumer keeps its checkpoint', async (t) => {
  const store = openStore(t)
  await seedLog(store)
  const seen: number[] = []
  const first = run(t, store, 'late', (change) => { seen.push(change.seq) }, { start: 'now' })
  await until('the consumer created', async () => await checkpointOf(store, 'late') === 8)
  const { seq } = await store.append(incoming(started(2), T0 + 100))
  await until('the new change', () => seen.includes(seq))
  t.same(seen, [seq], 'only the change made after it started')
  await first.close()

  await store.append(incoming(completed(2), T0 + 200))
  const again: number[] = []
  run(t, store, 'late', (change) => { again.push(change.seq) }, { start: 'now' })
  await until('the change made while it was stopped', () => again.length === 1)
  t.same(again, [seq + 1], 'restarted, it goes on from its checkpoint, not from now')
})

t.test('two consumers of one name: one runs, the other takes over when it closes', async (t) => {
  const store = openStore(t)
  await seedLog(store)
  const seenA: number[] = []
  const seenB: number[] = []
  const a = run(t, store, 'single', (change) => { seenA.push(change.seq) }, { leaseTtlMs: 300 })
  await until('a caught up', () => seenA.length === 5)
  const b = run(t, store, 'single', (change) => { seenB.push(change.seq) }, { leaseTtlMs: 300 })
  await new Promise((resolve) => setTimeout(resolve, 400))
  t.equal(b.status().active, false, 'b waits while a holds the lease')
  t.equal(a.status().active, true)
  await store.append(incoming(started(2), T0 + 100))
  await until('a handles the new change', () => seenA.length === 6)
  t.same(seenB, [], 'b handled nothing')

  await a.close()
  await store.append(incoming(completed(2), T0 + 200))
  await until('b handles the next change', () => seenB.length === 1)
  t.same(seenB, [10], 'b starts from a\'s checkpoint: nothing twice, nothing skipped')
  t.equal(b.status().active, true)
})

t.test('close lets the running handler finish, aborts its signal and saves what was done', async (t) => {
  const store = openStore(t)
  await seedLog(store)
  let aborted = false
  let started3: () => void = () => {}
  const reached = new Promise<void>((resolve) => { started3 = resolve })
  const consumer = startConsumer(store, 'closer', async (change, { signal }) => {
    if (change.seq !== 3) return
    started3()
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => { aborted = true; resolve() }))
    throw new Error('aborted')
  })
  await reached
  await consumer.close()
  t.equal(aborted, true, 'the handler saw the abort')
  t.equal(await checkpointOf(store, 'closer'), 2, 'the checkpoint is at the last row handled, before the interrupted one')
  t.same((await store.listLeases()).map((l) => l.live), [false], 'the lease was released')
  await t.resolves(consumer.close(), 'close twice is fine')
})

t.test('a reset moves a running consumer back: it hands the range over again', async (t) => {
  const store = openStore(t)
  await seedLog(store)
  const seen: number[] = []
  run(t, store, 'replayer', (change) => { seen.push(change.seq) }, { leaseTtlMs: 300 })
  await until('caught up', async () => await checkpointOf(store, 'replayer') === 8)
  t.equal(await store.resetConsumer('replayer', 5, 'consumer:replayer'), true)
  await store.append(incoming(started(2), T0 + 100))
  await until('the replayed range and the new change', async () => seen.slice(-3).join() === '6,7,9' && await checkpointOf(store, 'replayer') === 9)
  t.same(seen.slice(0, 5), [1, 2, 3, 6, 7], 'the first pass')
  // The new change may be handled once more if it came before the consumer noticed the reset.
  t.match(seen.slice(5).join(), /^(9,)?6,7,9$/, 'then from seq 5 again')
})

t.test('options are checked when the consumer is created', async (t) => {
  const handler = () => {}
  const cases: Array<[string, unknown, unknown, unknown, RegExp]> = [
    ['a name with spaces', 'my consumer', handler, {}, /consumer name/],
    ['an empty name', '', handler, {}, /consumer name/],
    ['no handler', 'x', undefined, {}, /handler must be a function/],
    ['a bad deliver', 'x', handler, { deliver: 'all' }, /deliver must be "changes" or "rows"/],
    ['a bad start', 'x', handler, { start: 'end' }, /start must be "beginning" or "now"/],
    ['zero attempts', 'x', handler, { maxAttempts: 0 }, /maxAttempts must be a positive integer/],
    ['a fractional backoff', 'x', handler, { minBackoffMs: 1.5 }, /minBackoffMs must be a positive integer/],
    ['a cap below the minimum', 'x', handler, { minBackoffMs: 500, maxBackoffMs: 100 }, /maxBackoffMs must not be less/],
    ['a tiny lease', 'x', handler, { leaseTtlMs: 10 }, /leaseTtlMs must be at least 30/],
    ['options not an object', 'x', handler, 5, /options must be an object/]
  ]
  for (const [what, name, fn, options, message] of cases) {
    t.throws(() => resolveConsumerOptions(name, fn, options as ConsumerOptions<Delivery>), { code: 'FST_G2SENTRY_INVALID_OPTION', message }, what)
  }
})

t.test('backoff doubles from the minimum up to the cap, with equal jitter', async (t) => {
  const table: Array<[number, number, number]> = [
    // attempt, with random 0, with random 1 (min 100, cap 1000)
    [1, 50, 100],
    [2, 100, 200],
    [3, 200, 400],
    [4, 400, 800],
    [5, 500, 1000],
    [60, 500, 1000]
  ]
  for (const [attempt, low, high] of table) {
    t.equal(backoffDelay(attempt, 100, 1000, () => 0), low, `attempt ${attempt}, lowest`)
    t.equal(backoffDelay(attempt, 100, 1000, () => 1), high, `attempt ${attempt}, highest`)
  }
})
