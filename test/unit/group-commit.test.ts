// The group-commit queue on its own, with a committer the test drives by hand: without overlap
// a batch starts only once the one before it settled (SQLite, unchanged); with overlap the next
// batch starts as soon as the running one releases its turn, never more than one early.
import t from 'tap'
import { groupCommit, type BatchOutcome } from '../../src/store/group-commit.js'
import type { AppendResult, IncomingEvent } from '../../src/domain/types.js'
import { assigned, incoming, T0 } from '../helpers/fixtures.js'

interface Call { jobIds: number[]; release: () => void; settle: () => void; fail: (error: Error) => void }

/** A committer that records each batch and commits it only when the test says so. */
function manualCommitter (): { calls: Call[]; commit: (events: IncomingEvent[], release: () => void) => Promise<BatchOutcome[]> } {
  const calls: Call[] = []
  return {
    calls,
    commit: (events, release) => new Promise((resolve, reject) => {
      calls.push({
        jobIds: events.map((event) => event.jobId),
        release,
        settle: () => resolve(events.map((event, i) => ({ ok: true, result: { outcome: 'applied', seq: i + 1, jobId: event.jobId, status: 'Assigned' } }))),
        fail: reject
      })
    })
  }
}

const turns = async (n: number): Promise<void> => { for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve)) }

t.test('without overlap, the next batch waits for the running one to settle, even when it calls release', async (t) => {
  const { calls, commit } = manualCommitter()
  const queue = groupCommit(256, commit)
  const first = queue.append(incoming(assigned(1), T0))
  await turns(3)
  t.same(calls.map((c) => c.jobIds), [[1]])
  const second = queue.append(incoming(assigned(2), T0))
  calls[0]?.release()
  await turns(3)
  t.equal(calls.length, 1, 'release does nothing')
  calls[0]?.settle()
  await first
  await turns(3)
  t.same(calls.map((c) => c.jobIds), [[1], [2]])
  calls[1]?.settle()
  t.equal((await second).jobId, 2)
})

t.test('with overlap, the next batch starts at release, one early at most, and drain waits for both', async (t) => {
  const { calls, commit } = manualCommitter()
  const queue = groupCommit(256, commit, { overlap: true })
  const results: Array<Promise<AppendResult | unknown>> = [queue.append(incoming(assigned(1), T0))]
  await turns(3)
  results.push(queue.append(incoming(assigned(2), T0)))
  await turns(3)
  t.equal(calls.length, 1, 'not before release')
  calls[0]?.release()
  await turns(3)
  t.same(calls.map((c) => c.jobIds), [[1], [2]], 'the second batch started while the first is in flight')
  results.push(queue.append(incoming(assigned(3), T0)))
  await turns(3)
  t.equal(calls.length, 2, 'a third waits for the second to release its turn')
  let drained = false
  const draining = queue.drain().then(() => { drained = true })
  calls[1]?.release()
  await turns(3)
  t.same(calls.map((c) => c.jobIds), [[1], [2], [3]])
  calls[2]?.settle()
  calls[1]?.settle()
  await turns(3)
  t.notOk(drained, 'drain waits for the first batch')
  calls[0]?.fail(new Error('lost'))
  await draining
  const settled = await Promise.allSettled(results)
  t.same(settled.map((s) => s.status), ['rejected', 'fulfilled', 'fulfilled'], 'each caller gets its own batch\'s outcome')
})

t.test('with overlap, a batch that settles without releasing hands the turn on', async (t) => {
  const { calls, commit } = manualCommitter()
  const queue = groupCommit(256, commit, { overlap: true })
  const first = queue.append(incoming(assigned(1), T0))
  await turns(3)
  const second = queue.append(incoming(assigned(2), T0))
  calls[0]?.settle()
  await first
  await turns(3)
  t.same(calls.map((c) => c.jobIds), [[1], [2]])
  calls[1]?.release()
  calls[1]?.settle()
  t.equal((await second).jobId, 2)
  await queue.drain()
})
