// The reconciler through the plugin, against the fake G2 Sentry (a real HTTP server), on a real
// store. The test files run it on SQLite (reconciler.test.ts) and PostgreSQL
// (reconciler-postgres.test.ts).
import type { Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp, post, assigned, started, withdrawn, completed, memoryStream, SECRET } from './helpers.js'
import { FakeG2Sentry, type FakeAnswer } from '../../src/simulator/fake-g2sentry.js'
import { PartnerApiClient } from '../../src/partner-api/client.js'
import { Reconciler } from '../../src/partner-api/reconciler.js'
import { FAILURE_BACKOFF_MS } from '../../src/store/reconcile-sql.js'
import type { CommittedEvent, G2SentryOptions, ReconcileOptions } from '../../src/plugin/options.js'
import type { LogRow } from '../../src/domain/types.js'

/** Plugin options that open a fresh, empty store for one test. */
export type Place = (t: Test) => Promise<Pick<G2SentryOptions, 'database'>>

export async function startFake (t: Test): Promise<FakeG2Sentry> {
  const fake = await FakeG2Sentry.start()
  t.teardown(() => fake.close())
  return fake
}

interface Setup {
  app: FastifyInstance
  fake: FakeG2Sentry
  committed: CommittedEvent[]
}

/** An app reconciling against a fresh fake; rounds run when the test asks (`every` is an hour). */
async function setup (t: Test, place: Place, reconcile: Partial<ReconcileOptions> = {}, metrics = false, logStream?: NodeJS.WritableStream): Promise<Setup> {
  const fake = await startFake(t)
  const committed: CommittedEvent[] = []
  const app = await buildApp(t, {
    ...await place(t),
    metrics,
    ...(logStream === undefined ? {} : { logStream: logStream as never }),
    onEvent: (event) => { committed.push(event) },
    reconcile: { baseUrl: fake.url, partnerKey: fake.partnerKey, partnerSecret: fake.partnerSecret, quietForMs: 1, everyMs: 3_600_000, ...reconcile }
  })
  return { app, fake, committed }
}

const deliver = async (t: Test, app: FastifyInstance, payload: object) => {
  const response = await post(app, payload)
  t.equal(response.statusCode, 200, `${JSON.stringify(payload)} delivered`)
  // The apps here ask about a job once it has been quiet for 1 ms (quietForMs): a round run in
  // the same millisecond as the job's last delivery would not ask about it yet.
  await new Promise((resolve) => setTimeout(resolve, 2))
  return response.json<{ outcome: string; seq: number }>()
}

const rowsOf = async (app: FastifyInstance, jobId: number): Promise<LogRow[]> => app.g2sentry.store.readLog({ jobId, limit: 100 })
const statusOf = async (app: FastifyInstance, jobId: number) => (await app.g2sentry.store.getJob(jobId))?.status
const asked = (fake: FakeG2Sentry, jobId: number) => fake.requests.filter((r) => r.path === `/jobs/${jobId}/status`).length

export function reconcilerBehaviour (t: Test, place: Place): void {
  t.test('cancellations, lost withdrawals and late withdrawals converge to G2 Sentry\'s status', async (t) => {
    const { app, fake, committed } = await setup(t, place)
    // Job 1: canceled by the client, which no callback tells.
    await deliver(t, app, assigned(1, { phone: '+15550000001' }))
    fake.setStatus(1, 'Canceled')
    // Job 2: the guardian withdrew; the withdrawal's callback was lost.
    await deliver(t, app, assigned(2, { phone: '+15550000002' }))
    fake.setStatus(2, 'New')
    // Job 3: assigned, withdrawn, re-assigned; the withdrawal arrived after the re-assignment.
    await deliver(t, app, assigned(3))
    await deliver(t, app, assigned(3))
    await deliver(t, app, withdrawn(3))
    fake.setStatus(3, 'Assigned')
    // Job 4: G2 Sentry agrees; job 5 is complete and is never asked about.
    await deliver(t, app, started(4))
    fake.setStatus(4, 'InProgress')
    await deliver(t, app, completed(5))
    fake.setStatus(5, 'Completed')

    const report = await app.g2sentry.reconcile()
    t.same(report?.checks.map((c) => [c.jobId, c.from, c.to, c.result]).sort(), [
      [1, 'Assigned', 'Canceled', 'reconciled'],
      [2, 'Assigned', 'New', 'reconciled'],
      [3, 'New', 'Assigned', 'reconciled'],
      [4, 'InProgress', 'InProgress', 'equal']
    ])
    t.equal(report?.checks[0]?.jobId, 3, 'the ambiguous job (a withdrawal after two assignments) is asked first')
    t.same([await statusOf(app, 1), await statusOf(app, 2), await statusOf(app, 3), await statusOf(app, 4)], ['Canceled', 'New', 'Assigned', 'InProgress'])
    t.match(await app.g2sentry.store.getJob(1), { guardianPhone: null, lastEventType: 'Reconciled' })
    t.equal(asked(fake, 5), 0, 'a terminal job is never asked about')

    const [row] = (await rowsOf(app, 1)).slice(-1) as [LogRow]
    t.match(row, { eventType: 'Reconciled', jobStatus: 'Canceled', source: 'api', signature: '', outcome: 'applied' })
    t.same(JSON.parse(row.rawBody.toString()), { jobId: 1, status: 'Canceled' }, 'the body is the API\'s answer, byte for byte')
    t.same(committed.filter((c) => c.source === 'api').map((c) => [c.jobId, c.status]).sort(), [[1, 'Canceled'], [2, 'New'], [3, 'Assigned']],
      'each reconciled row went through the post-commit path (onEvent)')

    const events = await app.inject({ url: '/jobs/1/events' })
    t.same(events.json<{ events: Array<{ source: string }> }>().events.map((e) => e.source), ['callback', 'api'], 'GET /jobs/:jobId/events shows the source')

    const audit = await app.g2sentry.audit()
    t.ok(audit.ok, 'verify passes on a log with api rows')
    t.equal(audit.apiRows, 3)
    t.same(audit.unsigned, [], 'every callback row is signed; api rows are not counted as unsigned')
    const rebuilt = await app.g2sentry.checkProjection()
    t.same([rebuilt.differingJobs, rebuilt.outcomeMismatches], [[], []], 'a rebuild replays the Reconciled rows to the same projection')

    // The next round: jobs 1, 2, 3 and 4 were just checked, 1 is now terminal.
    const before = fake.requests.length
    const again = await app.g2sentry.reconcile()
    t.equal(asked(fake, 1), 1, 'the canceled job is not asked about again')
    t.ok(again !== undefined && fake.requests.length - before === again.checks.length)
  })

  t.test('a quiet job is asked about only after quietFor; an ambiguous one at once', async (t) => {
    const { app, fake } = await setup(t, place, { quietForMs: 3_600_000 })
    await deliver(t, app, assigned(1))
    fake.setStatus(1, 'Canceled')
    await deliver(t, app, started(2)) // the first event is not an assignment: ambiguous
    fake.setStatus(2, 'InProgress')
    const report = await app.g2sentry.reconcile()
    t.same(report?.checks.map((c) => [c.jobId, c.reason, c.result]), [[2, 'ambiguous', 'equal']])
    t.equal(asked(fake, 1), 0, 'job 1 had news a moment ago')
    const next = await app.g2sentry.reconcile()
    t.same(next?.checks, [], 'an ambiguity already checked is not asked about again')
  })

  t.test('a status the table calls stale is a conflict: logged and counted, not appended', async (t) => {
    const { app, fake } = await setup(t, place, {}, true)
    await deliver(t, app, started(1))
    fake.setStatus(1, 'Assigned')
    const report = await app.g2sentry.reconcile()
    t.same(report?.checks.map((c) => c.result), ['conflict'])
    t.equal((await rowsOf(app, 1)).length, 1, 'nothing appended')
    t.equal(await statusOf(app, 1), 'InProgress')
    const metrics = (await app.inject({ url: '/metrics' })).body
    t.match(metrics, /g2sentry_reconcile_conflicts_total 1/)
    t.match(metrics, /g2sentry_partner_api_requests_total\{endpoint="status",result="ok"\} 1/)
    t.match(metrics, /g2sentry_partner_api_requests_total\{endpoint="login",result="ok"\} 1/)
    t.match(metrics, /g2sentry_reconcile_oldest_unchecked_seconds \d/)
  })

  t.test('metrics: reconciled jobs by from and to', async (t) => {
    const { app, fake } = await setup(t, place, {}, true)
    await deliver(t, app, assigned(1))
    fake.setStatus(1, 'Canceled')
    await deliver(t, app, assigned(2))
    fake.setStatus(2, 'Canceled')
    await app.g2sentry.reconcile()
    const metrics = (await app.inject({ url: '/metrics' })).body
    t.match(metrics, /g2sentry_reconciled_jobs_total\{from="Assigned",to="Canceled"\} 2/)
    t.match(metrics, /g2sentry_reconcile_checks_total\{result="reconciled"\} 2/)
    t.notMatch(metrics, /g2sentry_deliveries_total\{outcome="applied"\} [3-9]/, 'api rows are not counted as deliveries')
  })

  t.test('a slow answer never undoes a newer callback', async (t) => {
    const { app, fake } = await setup(t, place)
    // The withdrawal's callback was lost: G2 Sentry says New when asked…
    await deliver(t, app, assigned(1))
    fake.setStatus(1, 'New')
    const held = fake.hold(1)
    const round = app.g2sentry.reconcile()
    await held.arrived
    // …but while its answer is on the way, the guardian is re-assigned and that callback lands
    // (byte for byte the first assignment: a duplicate, yet a new row of the job's log).
    const callback = await deliver(t, app, assigned(1))
    t.equal(callback.outcome, 'duplicate')
    fake.setStatus(1, 'Assigned')
    held.release()
    const report = await round
    t.same(report?.checks.map((c) => [c.from, c.to, c.result]), [['Assigned', 'New', 'superseded']])
    t.equal(await statusOf(app, 1), 'Assigned', 'the late answer did not undo the re-assignment')
    t.same((await rowsOf(app, 1)).map((r) => r.source), ['callback', 'callback'], 'nothing appended from the API')
    // The next round asks again and finds G2 Sentry agrees.
    const next = await app.g2sentry.reconcile()
    t.same(next?.checks.map((c) => [c.jobId, c.result]), [[1, 'equal']])
  })

  t.test('a signed callback of type Reconciled is unsupported: a sender cannot forge an API answer', async (t) => {
    const { app } = await setup(t, place)
    await deliver(t, app, assigned(1))
    const forged = await deliver(t, app, { jobId: 1, eventType: 'Reconciled', jobName: 'x', jobStatus: 'Canceled' })
    t.equal(forged.outcome, 'unsupported')
    t.equal(await statusOf(app, 1), 'Assigned')
  })

  t.test('an unknown job and refused credentials', async (t) => {
    const { app, fake } = await setup(t, place, { partnerSecret: 'not-the-secret' })
    await deliver(t, app, assigned(1))
    const report = await app.g2sentry.reconcile()
    t.same(report?.checks.map((c) => c.result), ['error'])
    t.match(report?.stopped, { code: 'FST_G2SENTRY_PARTNER_CREDENTIALS_REFUSED' })
    t.equal(asked(fake, 1), 0)

    const other = await setup(t, place)
    await deliver(t, other.app, assigned(9))
    const unknown = await other.app.g2sentry.reconcile()
    t.same(unknown?.checks.map((c) => c.result), ['not_found'])
    t.equal((await rowsOf(other.app, 9)).length, 1, 'nothing appended for a job G2 Sentry does not know')
  })

  t.test('one job\'s unusable answer never stalls the others, and no request reaches another host', async (t) => {
    const log = memoryStream()
    const { app, fake } = await setup(t, place, {}, true, log.stream)
    // A second real server, as "another host" a redirect may point to: it must receive nothing.
    const other = await startFake(t)
    const redirect = (path: string): FakeAnswer => ({ status: 307, headers: { location: `${other.url}${path}` } })
    const faults: Array<[number, FakeAnswer | ((path: string) => FakeAnswer), string]> = [
      [11, { status: 200, body: { jobId: 11, status: 'Expired' } }, 'HTTP 200 and an unknown status "Expired"'],
      [12, { status: 200, body: { jobId: 12, status: 'canceled' } }, 'HTTP 200 and an unknown status "canceled"'],
      [13, { status: 200, body: { jobId: 99, status: 'Canceled' } }, 'HTTP 200 and the status of another job (jobId 99)'],
      [14, { status: 200, body: '{"jobId": 14, "status": "Can' }, 'HTTP 200 and a body that is not JSON'],
      [15, { status: 200, body: '"Canceled"' }, 'HTTP 200 and JSON that is not an object (a string)'],
      [16, { status: 400, body: { message: 'Bad request' } }, 'HTTP 400'],
      [17, { status: 403, body: { message: 'Forbidden' } }, 'HTTP 403'],
      [18, { status: 503, body: { message: 'Down for this job' } }, 'HTTP 503 after 4 attempts'],
      [19, redirect, `HTTP 307, a redirect to ${other.url} (not followed)`],
      [20, { status: 200, bytes: 100 * 1024 * 1024 }, 'HTTP 200 and an answer over 16384 bytes (not read further)']
    ]
    for (const [jobId, answer] of faults) {
      await deliver(t, app, assigned(jobId))
      fake.setStatus(jobId, 'Canceled')
      other.setStatus(jobId, 'Canceled')
      fake.answer(new RegExp(`^/jobs/${jobId}/status$`), answer)
    }
    // The good jobs come after every bad one in the round's order: each is still asked.
    for (const jobId of [21, 22, 23]) {
      await deliver(t, app, assigned(jobId))
      fake.setStatus(jobId, 'Canceled')
    }

    const report = await app.g2sentry.reconcile()
    t.equal(report?.stopped, undefined, 'the round did not stop')
    for (const [jobId, , answered] of faults) {
      const check = report?.checks.find((c) => c.jobId === jobId)
      t.match(check, { result: 'unusable', answered, failures: 1 }, `job ${jobId}: ${answered}`)
      t.equal(await statusOf(app, jobId), 'Assigned', `job ${jobId}: nothing applied`)
      t.equal((await rowsOf(app, jobId)).length, 1, `job ${jobId}: nothing appended`)
    }
    for (const jobId of [21, 22, 23]) t.equal(await statusOf(app, jobId), 'Canceled', `job ${jobId} converged in the same round`)
    t.same(other.requests, [], 'the other host received nothing')

    const state = app.g2sentry.store.reconcileState
    const failures = await state?.failures(100) ?? []
    t.same(failures.map((f) => [f.jobId, f.failures, f.answer]).sort((a, b) => Number(a[0]) - Number(b[0])),
      faults.map(([jobId, , answered]) => [jobId, 1, answered]), 'each failure is recorded for its job: what was answered, how many times')
    t.ok(failures.every((f) => f.retryAt - f.failedAt === FAILURE_BACKOFF_MS), 'each job backs off for a minute first')
    t.notMatch(JSON.stringify(failures), /eyJ/, 'no token recorded')

    const metrics = (await app.inject({ url: '/metrics' })).body
    t.match(metrics, /g2sentry_reconcile_checks_total\{result="unusable"\} 10/)
    t.match(metrics, /g2sentry_reconcile_failing_jobs 10/)

    // The next round leaves the failing jobs alone: they back off.
    const before = fake.requests.length
    const next = await app.g2sentry.reconcile()
    t.same(next?.checks, [], 'every failing job is backing off; the good ones are terminal')
    t.equal(fake.requests.length, before, 'no request for them')

    // Two minutes on (another reconciler on the same store, its clock ahead): the jobs are asked
    // again. G2 Sentry is fixed for all but job 11, which fails a second time and waits longer.
    fake.clearAnswers()
    fake.answer(/^\/jobs\/11\/status$/, faults[0]?.[1] as FakeAnswer)
    const later = Date.now() + 2 * FAILURE_BACKOFF_MS
    const reconciler = new Reconciler({
      store: app.g2sentry.store,
      client: new PartnerApiClient({ baseUrl: fake.url, partnerKey: fake.partnerKey, partnerSecret: fake.partnerSecret }),
      quietForMs: 1,
      clock: { now: () => later, sleep: async () => {} }
    })
    const retried = await reconciler.round(50)
    t.same(retried.checks.map((c) => [c.jobId, c.result]).sort((a, b) => Number(a[0]) - Number(b[0])),
      faults.map(([jobId]) => [jobId, jobId === 11 ? 'unusable' : 'reconciled']), 'asked again after the backoff')
    for (const [jobId] of faults) t.equal(await statusOf(app, jobId), jobId === 11 ? 'Assigned' : 'Canceled', `job ${jobId}`)
    t.match(await state?.failures(100), [{ jobId: 11, failures: 2, retryAt: later + 2 * FAILURE_BACKOFF_MS }], 'a good answer clears a failure; a second failure doubles the wait')
    // Job 11 completes by callback: nobody will ask about it again, so its failure goes too.
    await deliver(t, app, completed(11))
    t.same(await state?.failures(100), [], 'a job that closed is no longer failing')
    t.match((await app.inject({ url: '/metrics' })).body, /g2sentry_reconcile_failing_jobs 0/)

    const warned = log.lines.map((l) => JSON.parse(l) as { msg: string; jobId?: number; answered?: string })
      .filter((l) => /answer about a job is unusable/.test(l.msg))
    t.same(warned.map((l) => l.jobId).sort((a, b) => Number(a) - Number(b)), faults.map(([jobId]) => jobId), 'one warning per job, with what was answered, not one per round')
    t.ok(warned.every((l) => typeof l.answered === 'string'))
  })

  t.test('a 5xx for two jobs in a row is an outage: the round stops instead of making every job back off', async (t) => {
    const { app, fake } = await setup(t, place)
    for (const jobId of [1, 2, 3]) {
      await deliver(t, app, assigned(jobId))
      fake.setStatus(jobId, 'Canceled')
    }
    fake.answer(/^\/jobs\/\d+\/status$/, { status: 503 })
    const report = await app.g2sentry.reconcile()
    t.same(report?.checks.map((c) => [c.jobId, c.result]), [[1, 'unusable'], [2, 'error']])
    t.match(report?.stopped, { code: 'FST_G2SENTRY_PARTNER_API_UNUSABLE_ANSWER', message: /HTTP 503 after 4 attempts/ })
    t.same((await app.g2sentry.store.reconcileState?.failures(10))?.map((f) => f.jobId), [1], 'only the first is recorded as the job\'s failure')
    t.equal(asked(fake, 3), 0, 'job 3 was not asked')
    fake.clearAnswers()
    const next = await app.g2sentry.reconcile()
    t.same(next?.checks.map((c) => [c.jobId, c.result]), [[2, 'reconciled'], [3, 'reconciled']], 'once G2 Sentry is back, the jobs not backing off converge at once')
  })

  t.test('the reconcile option is checked at registration', async (t) => {
    const base = { baseUrl: 'http://127.0.0.1:1', partnerKey: 'k', partnerSecret: 'very-secret-value' }
    const cases: Array<[string, unknown, RegExp]> = [
      ['not an object', 'yes', /reconcile must be an object/],
      ['no baseUrl', { ...base, baseUrl: undefined }, /reconcile.baseUrl/],
      ['a baseUrl that is not http', { ...base, baseUrl: 'ftp://x' }, /reconcile.baseUrl/],
      ['no partnerKey', { ...base, partnerKey: '' }, /reconcile.partnerKey/],
      ['no partnerSecret', { ...base, partnerSecret: 1 }, /reconcile.partnerSecret/],
      ['quietForMs 0', { ...base, quietForMs: 0 }, /reconcile.quietForMs must be a positive integer/],
      ['everyMs 1.5', { ...base, everyMs: 1.5 }, /reconcile.everyMs/],
      ['requestsPerMinute over G2 Sentry\'s 60', { ...base, requestsPerMinute: 61 }, /reconcile.requestsPerMinute must be a positive integer up to 60/],
      ['leaseTtlMs -1', { ...base, leaseTtlMs: -1 }, /reconcile.leaseTtlMs/]
    ]
    for (const [name, reconcile, message] of cases) {
      const error = await buildApp(t, { ...await place(t), reconcile: reconcile as ReconcileOptions }).then(() => undefined, (e: unknown) => e as Error)
      t.match(error, { code: 'FST_G2SENTRY_INVALID_OPTION', message }, name)
      t.notMatch(String(error?.message), /very-secret-value/, `${name}: the secret is not in the message`)
    }
  })
}

export { SECRET }
