// Retention's loop over a store of its own (src/log/retention-loop.ts): the pages it walks, one
// refused job erased alone and logged once, and a stop that lets the redaction under way finish
// and starts no other.
import t from 'tap'
import { errors } from '../../src/errors.js'
import { startRetentionLoop, type RetentionLoopOptions } from '../../src/log/retention-loop.js'
import type { RedactionResult, RetentionCandidate } from '../../src/store/contract.js'
import { until } from '../helpers/until.js'

interface FakeJob extends RetentionCandidate { erased: boolean; bad: boolean }

/** Terminal jobs 1..n that ended at 1000 + jobId, `bad` ones refused by redact. */
function fakeStore (n: number, bad: number[] = [], redactGate?: () => Promise<void>) {
  const jobs: FakeJob[] = Array.from({ length: n }, (_, i) => ({ jobId: i + 1, updatedAt: 1000 + i + 1, erased: false, bad: bad.includes(i + 1) }))
  const calls: number[][] = []
  const released: string[] = []
  const store: RetentionLoopOptions['store'] = {
    acquireLease: async (_name, holder) => ({ held: true, holder, token: 1, expiresAt: Date.now() + 60_000 }),
    releaseLease: async (name) => { released.push(name); return true },
    async retentionCandidates ({ before, after, limit }) {
      return jobs.filter((job) => !job.erased && job.updatedAt < before &&
        (after === undefined || job.updatedAt > after.updatedAt || (job.updatedAt === after.updatedAt && job.jobId > after.jobId)))
        .slice(0, limit).map(({ jobId, updatedAt }) => ({ jobId, updatedAt }))
    },
    async redact ({ jobIds }): Promise<RedactionResult> {
      calls.push([...jobIds])
      await redactGate?.()
      const refused = jobs.find((job) => jobIds.includes(job.jobId) && job.bad)
      if (refused !== undefined) throw new errors.REDACTION_REFUSED(refused.jobId, refused.jobId * 10, 'the raw body was changed')
      for (const job of jobs) if (jobIds.includes(job.jobId)) job.erased = true
      return { recordSeq: 99, jobs: [...jobIds], rows: jobIds.length * 2, version1Rows: 0, quarantined: 0 }
    }
  }
  return { store, jobs, calls, released }
}

function logger () {
  const warnings: object[] = []
  const errorsLogged: object[] = []
  return { warnings, errorsLogged, log: { info: () => {}, warn: (fields: object) => { warnings.push(fields) }, error: (fields: object) => { errorsLogged.push(fields) } } }
}

const options = { personalDataMs: 1000, everyMs: 3_600_000, leaseTtlMs: 60_000 }

t.test('pages of batchJobs; a refused job is erased alone, skipped, logged once, and tried again once it changes', async (t) => {
  const { store, jobs, calls } = fakeStore(5, [2])
  const { warnings, errorsLogged, log } = logger()
  const refused: number[] = []
  const redacted: number[] = []
  const loop = startRetentionLoop({ ...options, store, batchJobs: 2, log, onRefused: (jobId) => refused.push(jobId), onRedacted: (result) => redacted.push(result.rows) })
  t.teardown(() => loop.stop())
  await until('the first round', () => calls.length >= 5)
  const report = await loop.runNow()
  t.same(calls.slice(0, 5), [[1, 2], [1], [2], [3, 4], [5]], 'the batch with the refused job is split; the cursor goes on past it')
  t.same(jobs.filter((job) => job.erased).map((job) => job.jobId), [1, 3, 4, 5])
  t.same(refused, [2])
  t.same(redacted, [2, 4, 2], 'rows counted per redaction')
  t.same(warnings, [{ jobId: 2, code: 'FST_G2SENTRY_REDACTION_REFUSED', reason: 'job 2 was not redacted: its row 20 does not verify (the raw body was changed); erasing it would hide that, run g2sentry verify' }])
  t.same(errorsLogged, [])
  t.same(report, { jobs: [], rows: 0, refused: [] }, 'the next round leaves the refused job alone')
  t.equal(calls.length, 5, 'and asks nothing of the store but candidates')

  const job2 = jobs[1] as FakeJob
  job2.updatedAt += 10
  t.same(await loop.runNow(), { jobs: [], rows: 0, refused: [2] }, 'once it changed, it is tried again')
  t.equal(warnings.length, 2)
})

t.test('another error ends the round, logged; the next round goes on', async (t) => {
  const { store, jobs } = fakeStore(2)
  let fail = true
  const redact = store.redact
  store.redact = async (request) => {
    if (fail) throw new Error('connection reset')
    return redact(request)
  }
  const { errorsLogged, log } = logger()
  const loop = startRetentionLoop({ ...options, store, batchJobs: 10, log })
  t.teardown(() => loop.stop())
  await until('the failed round logged', () => errorsLogged.length === 1)
  t.match(errorsLogged, [{ err: { message: 'connection reset' } }])
  fail = false
  t.same(await loop.runNow(), { jobs: [1, 2], rows: 4, refused: [] })
  t.ok(jobs.every((job) => job.erased))
})

t.test('stop lets the redaction under way finish, starts no other and releases the lease', async (t) => {
  let open: () => void = () => {}
  const gate = new Promise<void>((resolve) => { open = resolve })
  const { store, calls, released, jobs } = fakeStore(3, [], () => gate)
  const loop = startRetentionLoop({ ...options, store, batchJobs: 1 })
  await until('a redaction under way', () => calls.length === 1)
  let stopped = false
  const stopping = loop.stop().then(() => { stopped = true })
  await new Promise((resolve) => setImmediate(resolve))
  t.notOk(stopped, 'stop waits for it')
  open()
  await stopping
  t.same(calls, [[1]], 'no redaction after it')
  t.same(jobs.map((job) => job.erased), [true, false, false], 'the one under way committed')
  t.same(released, ['g2sentry:retention'])
  t.notOk(loop.holding)
})
