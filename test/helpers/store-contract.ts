/**
 * The behaviour every G2SentryStore backend must show. A backend's test file calls
 * `storeContract(t, 'sqlite', openAFreshStore, location)`; every subtest opens its own
 * empty store through the factory, and the contract closes it when the subtest ends.
 *
 * `location` opens stores on the same storage again, for what must survive a restart.
 *
 * Rebuild after tampering with the stored projection is backend-specific (it needs the backend's
 * own SQL) and lives in the backend's test file.
 */
import { createHash } from 'node:crypto'
import type { Test } from 'tap'
import { mulberry32 } from '../../src/simulator/schedules.js'
import type { AppendResult, IncomingEvent, JobState, JobStatus, LogRow } from '../../src/domain/types.js'
import type { G2SentryStore, LeaseFence, RetentionCandidate } from '../../src/store/contract.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { bodyCommitment, CHAIN_VERSION } from '../../src/store/chain.js'
import { assigned, completed, incoming, SECRET, started, T0, withdrawn } from './fixtures.js'
import { readLogStream } from '../../src/log/read-log.js'
import { shuffle } from './random.js'

/** Opens a new, empty store for one subtest. */
export type OpenStore = (t: Test) => Promise<G2SentryStore>

export { assigned, completed, incoming, SECRET, started, T0, withdrawn } from './fixtures.js'

export const sha256 = (body: Buffer): string => createHash('sha256').update(body).digest('hex')

/** A few jobs in various states, with a duplicate and a stale delivery in the log: 8 events, 3 jobs. */
export async function seedLog (store: G2SentryStore): Promise<AppendResult[]> {
  const events = [
    incoming(assigned(1, { phone: '+44 7700 900001' }), T0),
    incoming(assigned(2, { phone: '+44 7700 900002' }), T0 + 1),
    incoming(started(1), T0 + 2),
    incoming(assigned(1, { phone: '+44 7700 900001' }), T0 + 3), // stale: job 1 is in progress
    incoming(assigned(2, { phone: '+44 7700 900002' }), T0 + 4), // duplicate
    incoming(completed(3), T0 + 5),
    incoming(withdrawn(2), T0 + 6),
    incoming({ jobId: 4, eventType: 'JobGuardianRate', jobName: 'Job 4', jobStatus: 'Completed' }, T0 + 7)
  ]
  const results: AppendResult[] = []
  for (const event of events) results.push(await store.append(event))
  return results
}

/** Every row of the log (or of one job's), read with `readLogStream` in pages of `pageSize`. */
export async function readWholeLog (store: G2SentryStore, jobId?: number, pageSize = 100): Promise<LogRow[]> {
  const rows: LogRow[] = []
  for await (const row of readLogStream(store, { jobId, pageSize })) rows.push(row)
  return rows
}

/**
 * A log without what each row's random salt decides (its salt, body commitment and hashes), for
 * comparing two logs written from the same events; `auditLog` checks the chain of each.
 */
export const withoutSalts = (log: LogRow[]): Array<Omit<LogRow, 'salt' | 'contentHash' | 'prevHash' | 'hash'>> =>
  log.map(({ salt: _salt, contentHash: _contentHash, prevHash: _prevHash, hash: _hash, ...rest }) => rest)

/**
 * Where a backend keeps a store between two opens (a file, a schema): the returned function opens
 * a store on the same storage every time it is called, as a restarted process would.
 */
export type StoreLocation = (t: Test) => () => Promise<G2SentryStore>

/** Takes lease `name` for `holder` and returns the fence for writes under it. */
export async function fenceFor (store: G2SentryStore, name: string, holder: string, ttlMs = 60_000): Promise<LeaseFence> {
  const grant = await store.acquireLease(name, holder, ttlMs)
  if (!grant.held) throw new Error(`${holder} did not get lease ${name}`)
  return { lease: name, holder, token: grant.token }
}

export function storeContract (t: Test, name: string, open: OpenStore, location: StoreLocation): void {
  t.test(`${name}: G2SentryStore contract`, async (t) => {
    /** A fresh store for one subtest, closed when it ends. */
    const fresh = async (t: Test): Promise<G2SentryStore> => {
      const store = await open(t)
      t.teardown(() => store.close())
      return store
    }

    t.test('the first event of a job is applied and creates its projection', async (t) => {
      const store = await fresh(t)
      const event = incoming(assigned(7, { phone: '+44 7700 900001', name: 'Job 7' }), T0 + 5)
      const result = await store.append(event)
      t.same(result, { outcome: 'applied', seq: result.seq, jobId: 7, status: 'Assigned' })
      t.ok(Number.isInteger(result.seq) && result.seq > 0, 'seq is a positive integer')

      t.same(await store.getJob(7), {
        jobId: 7,
        jobName: 'Job 7',
        status: 'Assigned',
        guardianPhone: '+44 7700 900001',
        lastEventType: 'JobAssigned',
        version: 1,
        eventCount: 1,
        createdAt: T0 + 5,
        updatedAt: T0 + 5
      } satisfies JobState)
      t.equal(await store.getJob(8), undefined, 'an unknown job has no projection')

      const log = await store.readLog({ limit: 10 })
      t.equal(log.length, 1)
      const row = log[0] as LogRow
      t.equal(row.seq, result.seq)
      t.equal(row.jobId, 7)
      t.equal(row.eventType, 'JobAssigned')
      t.equal(row.jobStatus, 'Assigned')
      t.equal(row.jobName, 'Job 7')
      t.equal(row.guardianPhone, '+44 7700 900001')
      t.ok(Buffer.isBuffer(row.rawBody), 'the raw body comes back as a Buffer')
      t.ok(row.rawBody.equals(event.rawBody), 'the raw body is kept byte for byte')
      t.equal(row.signature, event.signature)
      t.equal(row.chainVersion, CHAIN_VERSION, 'written at the current chain version')
      t.equal(row.contentHash, bodyCommitment(row.salt as Buffer, event.signature, event.rawBody), 'the body is committed to through its salt')
      t.equal(row.receivedAt, T0 + 5)
      t.equal(row.outcome, 'applied')
      t.equal(row.sameAs, null)
    })

    t.test('a redelivery is a duplicate: version unchanged, delivery counted, sameAs the first row', async (t) => {
      const store = await fresh(t)
      const event = incoming(assigned(1, { phone: '+44 7700 900002' }), T0)
      const first = await store.append(event)
      const before = await store.getJob(1)

      const again = await store.append({ ...event, receivedAt: T0 + 1000 })
      t.equal(again.outcome, 'duplicate')
      t.equal(again.status, 'Assigned')
      t.equal(again.jobId, 1)
      t.ok(again.seq > first.seq, 'the redelivery gets its own, later seq')

      const third = await store.append({ ...event, receivedAt: T0 + 6000 })
      t.equal(third.outcome, 'duplicate')

      const after = await store.getJob(1)
      t.same(after, { ...before, eventCount: 3 }, 'only the delivery count moved')

      const log = await store.readLog({ jobId: 1, limit: 10 })
      t.same(log.map((r) => [r.seq, r.outcome, r.sameAs]), [
        [first.seq, 'applied', null],
        [again.seq, 'duplicate', first.seq],
        [third.seq, 'duplicate', first.seq]
      ])
      t.same(log.map((r) => r.receivedAt), [T0, T0 + 1000, T0 + 6000], 'each delivery keeps its own received-at')
    })

    t.test('sameAs names the first earlier row with the same body, even across a re-assignment', async (t) => {
      const store = await fresh(t)
      const assign = incoming(assigned(3, { phone: '+44 7700 900003' }), T0)
      const a = await store.append(assign)
      const w = await store.append(incoming(withdrawn(3), T0 + 1))
      const reassign = await store.append({ ...assign, receivedAt: T0 + 2 })
      t.equal(w.outcome, 'applied', 'the withdrawal is applied')
      t.equal(reassign.outcome, 'applied', 'an identical re-assignment after a withdrawal is a new occurrence')
      const redelivery = await store.append({ ...assign, receivedAt: T0 + 3 })
      t.equal(redelivery.outcome, 'duplicate')
      const rows = await store.readLog({ jobId: 3, limit: 10 })
      t.same(rows.map((r) => r.sameAs), [null, null, null, a.seq])
      const job = await store.getJob(3)
      t.equal(job?.version, 3)
      t.equal(job?.eventCount, 4)
      t.equal(job?.guardianPhone, '+44 7700 900003')
    })

    t.test('a stale event is logged as stale and leaves the projection unchanged', async (t) => {
      const store = await fresh(t)
      await store.append(incoming(assigned(2, { phone: '+44 7700 900004' }), T0))
      await store.append(incoming(completed(2), T0 + 10))
      const before = await store.getJob(2)
      t.equal(before?.status, 'Completed')
      t.equal(before?.guardianPhone, null, 'completion clears the phone')

      const late = await store.append(incoming(started(2), T0 + 20))
      t.same(late, { outcome: 'stale', seq: late.seq, jobId: 2, status: 'Completed' })
      const lateAssign = await store.append(incoming(assigned(2, { phone: '+44 7700 900999' }), T0 + 30))
      t.equal(lateAssign.outcome, 'stale')

      const after = await store.getJob(2)
      t.same(after, { ...before, eventCount: 4 }, 'status, fields, version and updatedAt unchanged; deliveries counted')
      const log = await store.readLog({ jobId: 2, limit: 10 })
      t.same(log.map((r) => r.outcome), ['applied', 'applied', 'stale', 'stale'])
      t.same(log.map((r) => r.sameAs), [null, null, null, null])
    })

    t.test('an unsupported event type is logged and creates no projection', async (t) => {
      const store = await fresh(t)
      const rate = incoming({ jobId: 4, eventType: 'JobGuardianRate', jobName: 'Job 4', jobStatus: 'Completed' }, T0)
      const result = await store.append(rate)
      t.same(result, { outcome: 'unsupported', seq: result.seq, jobId: 4, status: null })
      t.equal(await store.getJob(4), undefined, 'no projection is created')
      t.same(await store.listJobs({ limit: 10 }), [])
      const log = await store.readLog({ limit: 10 })
      t.equal(log.length, 1)
      t.equal(log[0]?.outcome, 'unsupported')
      t.equal(log[0]?.eventType, 'JobGuardianRate')
      t.ok(log[0]?.rawBody.equals(rate.rawBody), 'the body is kept for a future projection')

      // On a job that exists, an unsupported event reports the job's status and changes nothing.
      await store.append(incoming(assigned(5), T0 + 1))
      const before = await store.getJob(5)
      const other = await store.append(incoming({ jobId: 5, eventType: 'JobClientRate', jobName: 'Renamed', jobStatus: 'Completed' }, T0 + 2))
      t.same(other, { outcome: 'unsupported', seq: other.seq, jobId: 5, status: 'Assigned' })
      t.same(await store.getJob(5), before, 'the projection is untouched')
    })

    t.test('a restart on the same storage keeps the log and the projection, and seq continues', async (t) => {
      const reopen = location(t)
      const first = await reopen()
      const results = await seedLog(first)
      const jobs = await first.listJobs({ limit: 100 })
      const log = await readWholeLog(first)
      await first.close()
      t.equal(jobs.length, 3)
      t.equal(log.length, 8)

      const store = await reopen()
      t.teardown(() => store.close())
      for (const job of jobs) t.same(await store.getJob(job.jobId), job, `job ${job.jobId} survives the restart`)
      t.same(await store.listJobs({ limit: 100 }), jobs)
      t.same(await readWholeLog(store), log, 'the log is unchanged, bodies byte for byte')

      const lastSeq = Math.max(...results.map((r) => r.seq))
      const next = await store.append(incoming(assigned(1, { phone: '+44 7700 900001' }), T0 + 100))
      t.equal(next.outcome, 'stale', 'the projection after restart is the one decisions are made on')
      t.ok(next.seq > lastSeq, `seq continues after the restart (${next.seq} > ${lastSeq})`)
      const redelivery = await store.append(incoming(started(1), T0 + 101))
      t.equal(redelivery.outcome, 'duplicate')
      t.equal(redelivery.status, 'InProgress')
      t.same(await store.rebuild({ dryRun: true }).then((r) => [r.outcomeMismatches, r.differingJobs]), [[], []])
    })

    t.test('seq strictly increases across jobs, and the log reads back in seq order', async (t) => {
      const store = await fresh(t)
      const events = [
        incoming(assigned(10), T0), incoming(assigned(20), T0 + 1), incoming(started(10), T0 + 2),
        incoming(assigned(30), T0 + 3), incoming(started(10), T0 + 4), incoming(completed(20), T0 + 5),
        incoming({ jobId: 40, eventType: 'Unknown', jobName: 'x', jobStatus: 'New' }, T0 + 6)
      ]
      const seqs: number[] = []
      for (const event of events) seqs.push((await store.append(event)).seq)
      for (let i = 1; i < seqs.length; i++) {
        t.ok((seqs[i] as number) > (seqs[i - 1] as number), `seq ${seqs[i]} > ${seqs[i - 1]}`)
      }
      const log = await store.readLog({ limit: 100 })
      t.same(log.map((r) => r.seq), seqs)
      t.same(log.map((r) => r.jobId), [10, 20, 10, 30, 10, 20, 40])
    })

    t.test('readLog pages with afterSeq and limit, and filters by jobId', async (t) => {
      const store = await fresh(t)
      const seqs: number[] = []
      const byJob = new Map<number, number[]>()
      for (let i = 0; i < 11; i++) {
        const jobId = i % 3 === 0 ? 100 : 200
        const event = i % 2 === 0 ? assigned(jobId, { phone: `+44 7700 9${String(i).padStart(5, '0')}` }) : started(jobId)
        const { seq } = await store.append(incoming(event, T0 + i))
        seqs.push(seq)
        byJob.set(jobId, [...(byJob.get(jobId) ?? []), seq])
      }

      const page1 = await store.readLog({ limit: 4 })
      t.same(page1.map((r) => r.seq), seqs.slice(0, 4))
      const page2 = await store.readLog({ afterSeq: page1[3]?.seq, limit: 4 })
      t.same(page2.map((r) => r.seq), seqs.slice(4, 8))
      const page3 = await store.readLog({ afterSeq: page2[3]?.seq, limit: 4 })
      t.same(page3.map((r) => r.seq), seqs.slice(8))
      t.same(await store.readLog({ afterSeq: seqs[10], limit: 4 }), [], 'nothing after the last seq')
      t.same(await store.readLog({ afterSeq: 0, limit: 2 }).then((rows) => rows.map((r) => r.seq)), seqs.slice(0, 2))
      t.same((await store.readLog({ afterSeq: seqs[5], limit: 100 })).map((r) => r.seq), seqs.slice(6),
        'afterSeq is exclusive')

      t.same((await readWholeLog(store, undefined, 3)).map((r) => r.seq), seqs)
      for (const [jobId, expected] of byJob) {
        const rows = await readWholeLog(store, jobId, 2)
        t.same(rows.map((r) => r.seq), expected, `job ${jobId} paged in seq order`)
        t.ok(rows.every((r) => r.jobId === jobId), `only job ${jobId}`)
      }
      const job200 = byJob.get(200) as number[]
      t.same((await store.readLog({ jobId: 200, afterSeq: job200[2], limit: 2 })).map((r) => r.seq), job200.slice(3, 5))
      t.same(await store.readLog({ jobId: 999, limit: 10 }), [], 'an unknown job has an empty log')
    })

    t.test('listJobs filters by status, pages by jobId with limit and after', async (t) => {
      const store = await fresh(t)
      const statuses: Array<[number, JobStatus]> = [
        [50, 'Assigned'], [10, 'InProgress'], [30, 'Assigned'], [20, 'Completed'], [40, 'Assigned'], [60, 'New']
      ]
      for (const [jobId, status] of statuses) {
        const event = status === 'Assigned'
          ? assigned(jobId)
          : status === 'InProgress'
            ? started(jobId)
            : status === 'Completed' ? completed(jobId) : withdrawn(jobId)
        await store.append(incoming(event, T0 + jobId))
      }
      // An unsupported event never shows up as a job.
      await store.append(incoming({ jobId: 5, eventType: 'NewJob', jobName: 'x', jobStatus: 'New' }, T0))

      const all = await store.listJobs({ limit: 100 })
      t.same(all.map((j) => j.jobId), [10, 20, 30, 40, 50, 60], 'ordered by jobId')
      t.same(all.map((j) => j.status), ['InProgress', 'Completed', 'Assigned', 'Assigned', 'Assigned', 'New'])
      t.same(all[0], await store.getJob(10), 'the same rows as getJob')

      t.same((await store.listJobs({ limit: 2 })).map((j) => j.jobId), [10, 20])
      t.same((await store.listJobs({ limit: 2, after: 20 })).map((j) => j.jobId), [30, 40])
      t.same((await store.listJobs({ limit: 2, after: 25 })).map((j) => j.jobId), [30, 40], 'after need not be an existing id')
      t.same(await store.listJobs({ limit: 10, after: 60 }), [])

      t.same((await store.listJobs({ status: 'Assigned', limit: 10 })).map((j) => j.jobId), [30, 40, 50])
      t.same((await store.listJobs({ status: 'Assigned', limit: 2 })).map((j) => j.jobId), [30, 40])
      t.same((await store.listJobs({ status: 'Assigned', limit: 2, after: 40 })).map((j) => j.jobId), [50])
      t.same((await store.listJobs({ status: 'Assigned', limit: 10, after: 10 })).map((j) => j.jobId), [30, 40, 50])
      t.same((await store.listJobs({ status: 'New', limit: 10 })).map((j) => j.jobId), [60])
      t.same(await store.listJobs({ status: 'Canceled', limit: 10 }), [])
    })

    t.test('an append that retries a quarantined body marks it in the same transaction; a second one writes nothing', async (t) => {
      const store = await fresh(t)
      const retried = incoming(assigned(21), T0)
      const later = incoming(assigned(23), T0 + 3)
      const refused = (event: IncomingEvent) =>
        ({ reason: 'invalid_payload' as const, detail: 'too strict', rawBody: event.rawBody, signature: event.signature, contentType: 'application/json', receivedAt: event.receivedAt })
      const ids = [await store.quarantine(refused(retried)), await store.quarantine(refused(later))]
      const first = await store.append({ ...retried, quarantineId: ids[0] })
      t.equal((await store.listQuarantine({ limit: 10 }))[0]?.retriedSeq, first.seq, 'marked with the seq it became')
      // The same body retried again (another process that listed it before the first marked it),
      // alone and within a batch of other appends: refused, and nothing else in the batch fails.
      const [again, other, sameBatch] = await Promise.allSettled([
        store.append({ ...retried, quarantineId: ids[0] }),
        store.append(incoming(assigned(22), T0 + 2)),
        store.append({ ...later, quarantineId: ids[1] })
      ])
      t.match(again, { status: 'rejected', reason: { code: 'FST_G2SENTRY_QUARANTINE_ALREADY_RETRIED', message: new RegExp(`as seq ${first.seq}$`) } })
      t.match(other, { status: 'fulfilled', value: { outcome: 'applied', jobId: 22 } }, 'a neighbour in the batch is appended')
      t.match(sameBatch, { status: 'fulfilled', value: { outcome: 'applied', jobId: 23 } }, 'and so is another retried body')
      t.same((await readWholeLog(store)).map((row) => row.jobId), [21, 22, 23], 'the refused retry wrote no row')
      t.same((await store.listQuarantine({ limit: 10 })).map((row) => row.retriedSeq), [first.seq, 3])
    })

    t.test('a batch that falls back to one event at a time still counts its duplicate and stale deliveries on the job', async (t) => {
      const store = await fresh(t)
      const body = incoming(assigned(31, { phone: '+15550000031' }), T0)
      await store.append(body)
      await store.append(incoming(started(31), T0 + 1))
      const id = await store.quarantine({ reason: 'invalid_payload', detail: 'too strict', rawBody: body.rawBody, signature: body.signature, contentType: 'application/json', receivedAt: T0 })
      await store.resolveQuarantine(id, 1)
      // One batch: a redelivery, a late assignment, and a retry that must fail, which sends the
      // batch down the one-event path.
      const [duplicate, stale, refused] = await Promise.allSettled([
        store.append(incoming(started(31), T0 + 2)),
        store.append(incoming(assigned(31), T0 + 3)),
        store.append({ ...incoming(assigned(32), T0 + 4), quarantineId: id })
      ])
      t.match(duplicate, { status: 'fulfilled', value: { outcome: 'duplicate' } })
      t.match(stale, { status: 'fulfilled', value: { outcome: 'stale' } })
      t.match(refused, { status: 'rejected', reason: { code: 'FST_G2SENTRY_QUARANTINE_ALREADY_RETRIED' } })
      t.match(await store.getJob(31), { status: 'InProgress', version: 2, eventCount: 4 }, 'four deliveries counted, two applied')
      const report = await store.rebuild({ dryRun: true })
      t.same(report.differingJobs, [], 'the projection equals a rebuild')
      t.same(report.outcomeMismatches, [])
    })

    t.test('quarantine keeps unreadable bodies, listed in id order with paging', async (t) => {
      const store = await fresh(t)
      const bodies = [Buffer.from('{not json'), Buffer.from('{"jobId":"x"}'), Buffer.from([0xff, 0x00, 0xfe])]
      const ids: number[] = []
      for (const [i, rawBody] of bodies.entries()) {
        ids.push(await store.quarantine({
          reason: i === 0 ? 'invalid_json' : 'invalid_payload',
          detail: `detail ${i}`,
          rawBody,
          signature: signBody(rawBody, SECRET),
          contentType: i === 2 ? null : 'application/json',
          receivedAt: T0 + i
        }))
      }
      t.ok(ids.every(Number.isInteger), 'ids are integers')
      t.ok((ids[0] as number) < (ids[1] as number) && (ids[1] as number) < (ids[2] as number), 'ids increase')

      const rows = await store.listQuarantine({ limit: 10 })
      t.same(rows.map((r) => r.id), ids)
      t.same(rows.map(({ rawBody, ...rest }) => rest), bodies.map((rawBody, i) => ({
        id: ids[i],
        reason: i === 0 ? 'invalid_json' : 'invalid_payload',
        detail: `detail ${i}`,
        signature: signBody(rawBody, SECRET),
        contentType: i === 2 ? null : 'application/json',
        receivedAt: T0 + i,
        retriedSeq: null,
        redactedBy: null
      })))
      rows.forEach((row, i) => t.ok(Buffer.isBuffer(row.rawBody) && row.rawBody.equals(bodies[i] as Buffer), `body ${i} byte for byte`))

      t.equal(await store.quarantineSize(), 3, 'three pending')
      await store.resolveQuarantine(ids[1] as number, 42)
      t.equal(await store.quarantineSize(), 2, 'two pending once one is resolved')
      t.same((await store.listQuarantine({ limit: 10, pending: true })).map((r) => r.id), [ids[0], ids[2]], 'pending leaves it out')
      t.equal((await store.listQuarantine({ limit: 10 }))[1]?.retriedSeq, 42, 'the full list shows the seq it became')

      t.same((await store.listQuarantine({ afterId: ids[0], limit: 1 })).map((r) => r.id), [ids[1]])
      t.same(await store.listQuarantine({ afterId: ids[2], limit: 10 }), [])
      t.same(await store.readLog({ limit: 10 }), [], 'quarantine does not touch the event log')
      t.same(await store.listJobs({ limit: 10 }), [], 'nor the projection')
    })

    t.test('500 concurrent appends over 50 jobs, with redeliveries, all commit consistently', async (t) => {
      const store = await fresh(t)
      const random = mulberry32(0xc0ffee)
      const jobIds = Array.from({ length: 50 }, (_, i) => 1000 + i)
      const deliveries: IncomingEvent[] = []
      for (const jobId of jobIds) {
        const lifecycle = [incoming(assigned(jobId, { phone: `+44 7700 ${900000 + jobId}` })), incoming(started(jobId)), incoming(completed(jobId))]
        const mine = [...lifecycle]
        for (let i = 0; i < 7; i++) mine.push(lifecycle[Math.floor(random() * lifecycle.length)] as IncomingEvent)
        deliveries.push(...mine)
      }
      const schedule = shuffle(deliveries, random).map((event, i) => ({ ...event, receivedAt: T0 + i }))
      t.equal(schedule.length, 500)

      const results = await Promise.all(schedule.map((event) => store.append(event)))
      t.equal(results.length, 500, 'every append resolved')
      t.equal(new Set(results.map((r) => r.seq)).size, 500, 'every append got a distinct seq')
      results.forEach((result, i) => {
        if (result.jobId !== schedule[i]?.jobId) t.fail(`result ${i} is for job ${result.jobId}, not ${schedule[i]?.jobId}`)
      })

      const log = await readWholeLog(store, undefined, 128)
      t.equal(log.length, 500, 'every delivery is in the log')
      t.same(log.map((r) => r.seq), results.map((r) => r.seq).sort((a, b) => a - b), 'the log holds exactly the returned seqs')
      const bySeq = new Map(log.map((row) => [row.seq, row]))
      let mismatched = 0
      results.forEach((result, i) => {
        const row = bySeq.get(result.seq)
        const event = schedule[i] as IncomingEvent
        if (row === undefined || row.outcome !== result.outcome || !row.rawBody.equals(event.rawBody) ||
            row.receivedAt !== event.receivedAt) mismatched++
      })
      t.equal(mismatched, 0, 'each result matches its log row (outcome, body, received-at)')

      // Every duplicate here is a redelivery: its sameAs is the first row of the job with that body.
      const firstByContent = new Map<string, number>()
      let duplicates = 0
      let badSameAs = 0
      for (const row of log) {
        const key = `${row.jobId}:${sha256(row.rawBody)}`
        if (row.outcome === 'duplicate') {
          duplicates++
          if (row.sameAs !== firstByContent.get(key)) badSameAs++
        } else if (row.sameAs !== null) badSameAs++
        if (!firstByContent.has(key)) firstByContent.set(key, row.seq)
      }
      t.ok(duplicates > 0, `the schedule produced duplicates (${duplicates})`)
      t.equal(badSameAs, 0, 'every sameAs points at the first row with the same body')

      const jobs = await store.listJobs({ limit: 100 })
      t.same(jobs.map((j) => j.jobId), jobIds)
      t.ok(jobs.every((j) => j.status === 'Completed'), 'every lifecycle converged to Completed')
      t.ok(jobs.every((j) => j.eventCount === 10), 'every delivery is counted')
      t.ok(jobs.every((j) => j.guardianPhone === null), 'no phone is shown after completion')
      for (const job of jobs) {
        const applied = log.filter((r) => r.jobId === job.jobId && r.outcome === 'applied').length
        if (job.version !== applied) t.fail(`job ${job.jobId}: version ${job.version}, ${applied} applied rows`)
      }

      const report = await store.rebuild({ dryRun: true })
      t.same(report, { events: 500, jobs: 50, outcomeMismatches: [], differingJobs: [] },
        'a replay of the log agrees with every live outcome and every projection')
      t.same(await store.listJobs({ limit: 100 }), jobs, 'a dry run changes nothing')
    })

    t.test('an onCommit listener that throws fails no append: the batch is committed once and every caller gets its result', async (t) => {
      const store = await open(t)
      const warnings: Error[] = []
      const onWarning = (warning: Error) => { warnings.push(warning) }
      process.on('warning', onWarning)
      t.teardown(() => { process.off('warning', onWarning) })
      const unsubscribe = store.onCommit?.(() => { throw new Error('a listener bug') })
      t.ok(unsubscribe, 'the store takes commit listeners')
      const events = [incoming(assigned(1), T0), incoming(assigned(2), T0 + 1), incoming(started(1), T0 + 2)]
      const settled = await Promise.allSettled(events.map((event) => store.append(event)))
      t.same(settled.map((s) => s.status), ['fulfilled', 'fulfilled', 'fulfilled'], 'every append resolves')
      t.same((await readWholeLog(store)).map((row) => [row.seq, row.jobId, row.outcome]),
        [[1, 1, 'applied'], [2, 2, 'applied'], [3, 1, 'applied']], 'each event is in the log once')
      await new Promise((resolve) => setImmediate(resolve))
      t.match(warnings, [{ code: 'FST_G2SENTRY_COMMIT_LISTENER_FAILED', message: /a listener bug/ }], 'the listener\'s error is reported as a process warning')
      unsubscribe?.()
    })

    t.test('a lease has one holder at a time; renewals keep the token, takeovers raise it', async (t) => {
      const store = await fresh(t)
      const before = Date.now()
      const first = await store.acquireLease('consumer:mail', 'host-a:1', 60_000)
      t.same({ ...first, expiresAt: 0 }, { held: true, holder: 'host-a:1', token: 1, expiresAt: 0 }, 'a free lease is taken, token 1')
      // The database's clock may differ from the test's a little (PostgreSQL on another host).
      t.ok(Math.abs(first.expiresAt - (before + 60_000)) < 5000, 'it expires ttlMs from now')

      const refused = await store.acquireLease('consumer:mail', 'host-b:2', 60_000)
      t.same(refused, { held: false, holder: 'host-a:1', token: 1, expiresAt: first.expiresAt }, 'a live lease is refused to another holder, naming its holder')

      await new Promise((resolve) => setTimeout(resolve, 5))
      const renewed = await store.acquireLease('consumer:mail', 'host-a:1', 60_000)
      t.equal(renewed.held, true, 'the holder renews')
      t.equal(renewed.token, 1, 'a renewal keeps the token')
      t.ok(renewed.expiresAt >= first.expiresAt, 'a renewal pushes the expiry on')

      const other = await store.acquireLease('reconciler', 'host-b:2', 60_000)
      t.same([other.held, other.token], [true, 1], 'leases of other names are independent')

      const leases = await store.listLeases()
      t.same(leases.map(({ name, holder, token, live }) => ({ name, holder, token, live })), [
        { name: 'consumer:mail', holder: 'host-a:1', token: 1, live: true },
        { name: 'reconciler', holder: 'host-b:2', token: 1, live: true }
      ], 'listLeases shows every lease by name, live')
      t.equal(leases[0]?.expiresAt, renewed.expiresAt)
      t.ok((leases[0]?.acquiredAt ?? 0) <= first.expiresAt - 60_000 + 1, 'acquiredAt is when it was first taken, not renewed')
    })

    t.test('an expired lease goes to the next holder with a higher token', async (t) => {
      const store = await fresh(t)
      const first = await store.acquireLease('work', 'a', 50)
      t.equal(first.held, true)
      t.equal((await store.acquireLease('work', 'b', 50)).held, false, 'refused while live')
      await new Promise((resolve) => setTimeout(resolve, 150))
      t.same((await store.listLeases()).map((l) => l.live), [false], 'listed as not live once expired')
      const taken = await store.acquireLease('work', 'b', 60_000)
      t.same([taken.held, taken.holder, taken.token], [true, 'b', 2], 'taken over, token 2')
      const late = await store.acquireLease('work', 'a', 60_000)
      t.same([late.held, late.holder, late.token], [false, 'b', 2], 'the old holder coming back late is refused')

      await new Promise((resolve) => setTimeout(resolve, 5))
      const again = await store.acquireLease('work', 'b', 50)
      t.same([again.held, again.token], [true, 2], 'a holder renewing keeps its token')
      await new Promise((resolve) => setTimeout(resolve, 150))
      const back = await store.acquireLease('work', 'b', 60_000)
      t.same([back.held, back.token], [true, 2], 'a holder renewing after expiry, with nobody between, keeps its token')
    })

    t.test('a released lease can be taken at once; only its holder can release it', async (t) => {
      const store = await fresh(t)
      await store.acquireLease('work', 'a', 60_000)
      t.equal(await store.releaseLease('work', 'b'), false, 'another holder cannot release it')
      t.equal(await store.releaseLease('nothing', 'a'), false, 'an unknown lease is not released')
      t.equal((await store.acquireLease('work', 'b', 60_000)).held, false, 'still held by a')
      t.equal(await store.releaseLease('work', 'a'), true, 'the holder releases it')
      t.equal(await store.releaseLease('work', 'a'), false, 'releasing twice reports false')
      const taken = await store.acquireLease('work', 'b', 60_000)
      t.same([taken.held, taken.holder, taken.token], [true, 'b', 2], 'taken at once after release, token 2')
    })

    t.test('many holders racing for a free lease: exactly one gets it', async (t) => {
      const store = await fresh(t)
      const grants = await Promise.all(Array.from({ length: 20 }, (_, i) => store.acquireLease('race', `holder-${i}`, 60_000)))
      const winners = grants.filter((g) => g.held)
      t.equal(winners.length, 1, 'one winner')
      const winner = winners[0]?.holder
      t.ok(grants.every((g) => g.holder === winner && g.token === 1), 'every loser is told who won')
    })

    t.test('a lease request that makes no sense is refused with FST_G2SENTRY_INVALID_LEASE', async (t) => {
      const store = await fresh(t)
      const cases: Array<[string, () => Promise<unknown>]> = [
        ['empty name', () => store.acquireLease('', 'a', 1000)],
        ['empty holder', () => store.acquireLease('work', '', 1000)],
        ['zero ttl', () => store.acquireLease('work', 'a', 0)],
        ['fractional ttl', () => store.acquireLease('work', 'a', 1.5)],
        ['release without a holder', () => store.releaseLease('work', '')]
      ]
      for (const [name, request] of cases) await t.rejects(request(), { code: 'FST_G2SENTRY_INVALID_LEASE' }, name)
      t.same(await store.listLeases(), [], 'nothing was written')
    })

    t.test('a consumer starts at the beginning or at the log\'s last seq, and keeps its checkpoint', async (t) => {
      const store = await fresh(t)
      await seedLog(store)
      const fromStart = await store.openConsumer('mail', 'beginning')
      t.same([fromStart.name, fromStart.checkpoint], ['mail', 0], 'from the beginning: checkpoint 0')
      const fromNow = await store.openConsumer('audit', 'now')
      t.equal(fromNow.checkpoint, 8, 'from now: the last seq of the log')
      const fence = await fenceFor(store, 'consumer:mail', 'a')
      t.equal(await store.saveCheckpoint('mail', 5, fence), true, 'the holder saves a checkpoint')
      const again = await store.openConsumer('mail', 'now')
      t.equal(again.checkpoint, 5, 'an existing consumer keeps its checkpoint, whatever start says')
      t.same((await store.listConsumers()).map(({ name, checkpoint, parked }) => ({ name, checkpoint, parked })), [
        { name: 'audit', checkpoint: 8, parked: 0 },
        { name: 'mail', checkpoint: 5, parked: 0 }
      ], 'listed by name')
    })

    t.test('a checkpoint moves only while its lease is held with the same token', async (t) => {
      const store = await fresh(t)
      await seedLog(store)
      await store.openConsumer('mail', 'beginning')
      const first = await fenceFor(store, 'consumer:mail', 'a', 50)
      t.equal(await store.saveCheckpoint('mail', 2, first), true)
      await new Promise((resolve) => setTimeout(resolve, 120))
      const second = await fenceFor(store, 'consumer:mail', 'b')
      t.equal(second.token, first.token + 1, 'taken over')
      t.equal(await store.saveCheckpoint('mail', 7, first), false, 'the old holder\'s save is fenced off')
      t.equal(await store.saveCheckpoint('mail', 3, first, { seq: 3, attempts: 5, error: 'boom' }), false, 'and so is its parking')
      t.equal((await store.openConsumer('mail', 'beginning')).checkpoint, 2, 'nothing the old holder wrote landed')
      t.same(await store.listParked({ limit: 10 }), [])
      t.equal(await store.saveCheckpoint('mail', 4, second), true, 'the new holder saves')
      t.equal(await store.saveCheckpoint('mail', 4, { ...second, holder: 'c' }), false, 'a holder that never had it cannot')
    })

    t.test('parked rows are kept with their error, listed, retried on request and removed when resolved', async (t) => {
      const store = await fresh(t)
      await seedLog(store)
      await store.openConsumer('mail', 'beginning')
      await store.openConsumer('sms', 'beginning')
      const mail = await fenceFor(store, 'consumer:mail', 'a')
      const sms = await fenceFor(store, 'consumer:sms', 'a')
      t.equal(await store.saveCheckpoint('mail', 3, mail, { seq: 3, attempts: 5, error: 'HTTP 500' }), true)
      t.equal(await store.saveCheckpoint('mail', 6, mail, { seq: 6, attempts: 5, error: 'x'.repeat(5000) }), true)
      t.equal(await store.saveCheckpoint('sms', 1, sms, { seq: 1, attempts: 2, error: 'timeout' }), true)
      const parked = await store.listParked({ limit: 10 })
      t.same(parked.map(({ consumer, seq, jobId, eventType, attempts, retryRequested }) => ({ consumer, seq, jobId, eventType, attempts, retryRequested })), [
        { consumer: 'mail', seq: 3, jobId: 1, eventType: 'JobStarted', attempts: 5, retryRequested: false },
        { consumer: 'mail', seq: 6, jobId: 3, eventType: 'JobCompleted', attempts: 5, retryRequested: false },
        { consumer: 'sms', seq: 1, jobId: 1, eventType: 'JobAssigned', attempts: 2, retryRequested: false }
      ], 'every parked row, with its job and event type from the log')
      t.equal(parked[0]?.error, 'HTTP 500')
      t.equal(parked[1]?.error.length, 2000, 'a long error is cut short')
      t.same((await store.listConsumers()).map((c) => [c.name, c.checkpoint, c.parked]), [['mail', 6, 2], ['sms', 1, 1]])
      t.same((await store.listParked({ consumer: 'mail', afterSeq: 3, limit: 10 })).map((p) => p.seq), [6], 'by consumer, paged by seq')

      t.equal(await store.retryParked('mail', [6, 99]), 1, 'a retry of one parked row (and of one that is not)')
      t.same((await store.listParked({ limit: 10, retryRequested: true })).map((p) => [p.consumer, p.seq]), [['mail', 6]])
      t.same((await store.listParked({ limit: 10, retryRequested: false })).map((p) => [p.consumer, p.seq]), [['mail', 3], ['sms', 1]])
      t.equal(await store.retryParked('mail'), 2, 'a retry of all of them')

      t.equal(await store.resolveParked('mail', 3, mail), true, 'a retry that succeeded removes the row')
      t.equal(await store.resolveParked('mail', 6, mail, { attempts: 10, error: 'still down' }), true, 'one that failed parks it again')
      t.same((await store.listParked({ consumer: 'mail', limit: 10 })).map((p) => [p.seq, p.attempts, p.error, p.retryRequested]), [[6, 10, 'still down', false]])
      t.equal(await store.resolveParked('mail', 6, { ...mail, token: mail.token + 1 }), false, 'fenced by the lease')
      t.equal((await store.listParked({ consumer: 'mail', limit: 10 })).length, 1)
    })

    t.test('a reset moves a checkpoint by hand and fences off the running holder', async (t) => {
      const store = await fresh(t)
      await seedLog(store)
      await store.openConsumer('mail', 'now')
      const fence = await fenceFor(store, 'consumer:mail', 'a')
      t.equal(await store.resetConsumer('mail', 2, 'consumer:mail'), true)
      t.equal((await store.openConsumer('mail', 'now')).checkpoint, 2, 'the checkpoint moved back')
      t.equal(await store.saveCheckpoint('mail', 8, fence), false, 'the holder\'s next save fails: it must reload')
      const renewed = await store.acquireLease('consumer:mail', 'a', 60_000)
      t.same([renewed.held, renewed.token], [true, fence.token + 1], 'it still holds the lease, with a new token')
      t.equal(await store.resetConsumer('nobody', 0, 'consumer:nobody'), false, 'an unknown consumer is not created by a reset')
      t.same((await store.listConsumers()).map((c) => c.name), ['mail'])
    })

    t.test('a delete removes a consumer\'s checkpoint and parked rows, refuses a live holder unless forced', async (t) => {
      const store = await fresh(t)
      await seedLog(store)
      for (const name of ['mail', 'sms']) await store.openConsumer(name, 'beginning')
      const mail = await fenceFor(store, 'consumer:mail', 'a')
      await store.saveCheckpoint('mail', 3, mail, { seq: 3, attempts: 2, error: 'down' })
      await store.saveCheckpoint('mail', 5, mail, { seq: 5, attempts: 2, error: 'down' })
      const sms = await fenceFor(store, 'consumer:sms', 'b')
      await store.saveCheckpoint('sms', 4, sms, { seq: 4, attempts: 1, error: 'down' })

      const refused = await store.deleteConsumer('mail', 'consumer:mail')
      t.match(refused, { found: true, deleted: false, parked: 0, holder: 'a', expiresAt: Number }, 'a live holder: nothing removed, the holder named')
      t.same((await store.listConsumers()).map((c) => [c.name, c.parked]), [['mail', 2], ['sms', 1]])

      t.same(await store.deleteConsumer('nobody', 'consumer:nobody'), { found: false, deleted: false, parked: 0, holder: null, expiresAt: null })

      await store.releaseLease('consumer:mail', 'a')
      t.same(await store.deleteConsumer('mail', 'consumer:mail'), { found: true, deleted: true, parked: 2, holder: null, expiresAt: null }, 'once released: removed')
      t.same((await store.listConsumers()).map((c) => c.name), ['sms'], 'the other consumer is untouched')
      t.same((await store.listParked({ limit: 10 })).map((p) => [p.consumer, p.seq]), [['sms', 4]])
      t.notOk((await store.listLeases()).some((lease) => lease.name === 'consumer:mail'), 'its idle lease went with it')
      t.equal((await store.openConsumer('mail', 'now')).checkpoint, 8, 'the name can be used again, as a new consumer')

      const forced = await store.deleteConsumer('sms', 'consumer:sms', { force: true })
      t.match(forced, { found: true, deleted: true, parked: 1, holder: 'b' }, 'forced: removed despite the live holder')
      t.equal(await store.saveCheckpoint('sms', 6, sms), false, 'the holder\'s next fenced write fails')
      t.same((await store.listConsumers()).map((c) => c.name), ['mail'], 'and did not bring the checkpoint back')
    })

    /** The reconciler's row for `status`, appended only while job `jobId`'s last seq is `ifLastSeq`. */
    const fromApi = (jobId: number, jobStatus: JobStatus, ifLastSeq: number, receivedAt = T0 + 100) => ({
      jobId,
      eventType: 'Reconciled',
      jobName: `Job ${jobId}`,
      jobStatus,
      rawBody: Buffer.from(JSON.stringify({ jobId, status: jobStatus })),
      signature: '',
      receivedAt,
      source: 'api' as const,
      ifLastSeq
    })

    t.test('appendIf appends while the job\'s last seq is unchanged and is superseded once a row arrived, in one batch too', async (t) => {
      const store = await fresh(t)
      const appendIf = store.appendIf?.bind(store)
      if (appendIf === undefined) throw new Error('the built-in stores implement appendIf')
      const first = await store.append(incoming(assigned(1)))
      // Queued together, so they share a batch: the first is applied, the second sees its row.
      const [won, lost] = await Promise.all([appendIf(fromApi(1, 'Canceled', first.seq)), appendIf(fromApi(1, 'New', first.seq))])
      t.match(won, { outcome: 'applied', seq: 2, jobId: 1, status: 'Canceled' })
      t.same(lost, { outcome: 'superseded', jobId: 1, lastSeq: 2 })
      // A callback queued just before a conditional append for the same job supersedes it.
      const [callback, late] = await Promise.all([store.append(incoming(assigned(2))), appendIf(fromApi(2, 'New', 0))])
      t.match(callback, { outcome: 'applied', seq: 3 })
      t.same(late, { outcome: 'superseded', jobId: 2, lastSeq: 3 })
      t.match(await appendIf(fromApi(3, 'Canceled', 0)), { outcome: 'applied', seq: 4 }, 'a job without rows: ifLastSeq 0')
      const rows = await readWholeLog(store)
      t.same(rows.map((r) => [r.seq, r.source, r.eventType]), [[1, 'callback', 'JobAssigned'], [2, 'api', 'Reconciled'], [3, 'callback', 'JobAssigned'], [4, 'api', 'Reconciled']])
      t.equal(rows[1]?.signature, '')
      t.same((await store.rebuild({ dryRun: true })).differingJobs, [], 'a rebuild replays the api rows to the same projection')
      // A signed callback of type Reconciled is not an API answer.
      t.match(await store.append(incoming({ jobId: 1, eventType: 'Reconciled', jobName: 'Job 1', jobStatus: 'New' })), { outcome: 'unsupported', status: 'Canceled' })
    })

    t.test('the request window: a sliding log per partner key, and a pause for everyone', async (t) => {
      const store = await fresh(t)
      const state = store.reconcileState
      if (state === undefined) throw new Error('the built-in stores implement reconcileState')
      t.equal(await state.takeRequestSlot('k', 1000, 2, 1000), 0)
      t.equal(await state.takeRequestSlot('k', 1500, 2, 1000), 0)
      t.equal(await state.takeRequestSlot('k', 1900, 2, 1000), 100, 'full: wait until the first leaves the window')
      t.equal(await state.takeRequestSlot('other', 1900, 2, 1000), 0, 'another partner key has its own window')
      t.equal(await state.takeRequestSlot('k', 2000, 2, 1000), 0, 'the first left at 2000')
      t.equal(await state.takeRequestSlot('k', 2100, 2, 1000), 400)
      t.same(await state.requestTimes('k', 0), [1500, 2000], 'the refused tries took no slot; old ones are forgotten')
      await state.pauseRequests('k', 9000)
      await state.pauseRequests('k', 5000)
      t.equal(await state.takeRequestSlot('k', 6000, 2, 1000), 3000, 'a pause holds until its end; a shorter one does not shorten it')
      // A request in flight holds its slot from the latest it can arrive until its answer came.
      t.equal(await state.takeRequestSlot('slow', 1000, 1, 1000, 5000), 0)
      t.equal(await state.takeRequestSlot('slow', 1500, 1, 1000), 4500, 'in flight: held as if it arrived at its timeout')
      await state.settleRequest('slow', 5000, 1200)
      t.equal(await state.takeRequestSlot('slow', 1500, 1, 1000), 700, 'answered at 1200: held until 2200')
      const racing = await Promise.all(Array.from({ length: 10 }, () => state.takeRequestSlot('race', 50_000, 3, 1000)))
      t.equal(racing.filter((wait) => wait === 0).length, 3, 'ten at once: exactly the limit get a slot')
    })

    t.test('reconciler candidates: doubtful jobs first, then quiet ones oldest first, never terminal ones', async (t) => {
      const store = await fresh(t)
      const state = store.reconcileState
      if (state === undefined) throw new Error('the built-in stores implement reconcileState')
      await store.append(incoming(assigned(1), T0)) // quiet since T0
      await store.append(incoming(assigned(2), T0 + 10)) // quiet since T0 + 10
      await store.append(incoming(started(3), T0 + 20)) // first event not an assignment
      await store.append(incoming(completed(4), T0 + 30)) // terminal
      await store.append(incoming(assigned(5), T0 + 40))
      await store.append(incoming(assigned(5), T0 + 41))
      await store.append(incoming(withdrawn(5), T0 + 42)) // a withdrawal after two assignments
      await store.append(incoming(started(6), T0 + 50))
      await store.append(incoming(assigned(6), T0 + 51)) // stale, disagrees; and not first an assignment
      const pick = async (now: number, quietFor: number, limit = 10) =>
        (await state.candidates({ now, quietFor, limit })).map((c) => [c.jobId, c.reason])
      t.same(await pick(T0 + 60, 1000), [[3, 'ambiguous'], [5, 'ambiguous'], [6, 'ambiguous']], 'nothing is quiet yet')
      t.same(await pick(T0 + 2000, 1000), [[3, 'ambiguous'], [5, 'ambiguous'], [6, 'ambiguous'], [1, 'quiet'], [2, 'quiet']])
      t.same(await pick(T0 + 2000, 1000, 4), [[3, 'ambiguous'], [5, 'ambiguous'], [6, 'ambiguous'], [1, 'quiet']], 'within the budget, most urgent first')
      const [five] = await state.candidates({ now: T0, quietFor: 0, limit: 1, jobIds: [5] })
      t.match(five, { jobId: 5, status: 'New', lastSeq: 7, lastEventAt: T0 + 42, checkedAt: null, reason: 'requested' })
      await state.recordCheck(5, T0 + 2000, 7)
      await state.recordCheck(1, T0 + 2000, 1)
      t.same(await pick(T0 + 2500, 1000), [[3, 'ambiguous'], [6, 'ambiguous'], [2, 'quiet']], 'a checked doubt is settled; a checked job is quiet again only after quietFor')
      t.same(await pick(T0 + 5000, 1000), [[3, 'ambiguous'], [6, 'ambiguous'], [2, 'quiet'], [1, 'quiet'], [5, 'quiet']])
      t.equal(await state.oldestUnchecked(T0 + 5000), 5000 - 10, 'job 2 has waited longest')
      t.same((await state.candidates({ now: 0, quietFor: 0, limit: 2, allOpen: true, afterJobId: 2 })).map((c) => c.jobId), [3, 5], 'every open job, paged')
      t.same((await state.candidates({ now: 0, quietFor: 0, limit: 5, jobIds: [4, 9] })).map((c) => [c.jobId, c.status]), [[4, 'Completed']], 'a named job, even terminal')
    })

    t.test('retention candidates: terminal jobs holding unerased rows, oldest change first, keyset paged', async (t) => {
      const store = await fresh(t)
      const { retentionCandidates, redact } = store
      if (retentionCandidates === undefined || redact === undefined) throw new Error('the built-in stores implement the lifecycle role')
      const phone = { phone: '+15550100009' }
      const deliveries: Array<[number, ReturnType<typeof assigned>]> = [
        [0, assigned(1, phone)], [1, started(1)], [2, completed(1)], // Completed at T0 + 2
        [3, assigned(2, phone)], // open
        [4, assigned(3, phone)], [5, withdrawn(3)], // withdrawn: open again, may come back
        [6, assigned(4, phone)], // Canceled at T0 + 7, by the reconciler (below)
        [8, completed(5)], [8, completed(8)], // the same time: by jobId
        [9, assigned(6, phone)], [10, completed(6)], // erased (below)
        [20, completed(7)], // recent
        [30, started(9, phone)] // in progress
      ]
      for (const [at, payload] of deliveries) await store.append(incoming(payload, T0 + at))
      const { ifLastSeq: _, ...canceled } = fromApi(4, 'Canceled', 0, T0 + 7)
      await store.append(canceled)
      t.match(await redact({ jobIds: [6], by: 'retention', at: T0 + 50 }), { jobs: [6], rows: 2 })
      const ids = async (query: Parameters<typeof retentionCandidates>[0]) => (await retentionCandidates.call(store, query)).map((c) => c.jobId)

      const cases: Array<[string, Parameters<typeof retentionCandidates>[0], number[]]> = [
        ['every terminal job with rows to erase; never open, withdrawn or erased ones', { before: T0 + 100, limit: 10 }, [1, 4, 5, 8, 7]],
        ['a job that changed at `before` is not older than it', { before: T0 + 20, limit: 10 }, [1, 4, 5, 8]],
        ['one ms later it is', { before: T0 + 21, limit: 10 }, [1, 4, 5, 8, 7]],
        ['nothing before the first terminal change', { before: T0 + 2, limit: 10 }, []],
        ['at most `limit`', { before: T0 + 100, limit: 2 }, [1, 4]],
        ['after a candidate', { before: T0 + 100, after: { updatedAt: T0 + 7, jobId: 4 }, limit: 2 }, [5, 8]],
        ['after the first of two at the same time', { before: T0 + 100, after: { updatedAt: T0 + 8, jobId: 5 }, limit: 10 }, [8, 7]],
        ['after the last', { before: T0 + 100, after: { updatedAt: T0 + 20, jobId: 7 }, limit: 10 }, []]
      ]
      for (const [name, query, expected] of cases) t.same(await ids(query), expected, name)
      t.same(await retentionCandidates.call(store, { before: T0 + 100, limit: 1 }), [{ jobId: 1, updatedAt: T0 + 2 }], 'each with the time of its last change')

      const paged: number[] = []
      let after: RetentionCandidate | undefined
      for (let page = await retentionCandidates.call(store, { before: T0 + 100, limit: 1 }); page.length > 0;
        page = await retentionCandidates.call(store, { before: T0 + 100, after, limit: 1 })) {
        paged.push(...page.map((c) => c.jobId))
        after = page.at(-1)
      }
      t.same(paged, [1, 4, 5, 8, 7], 'one at a time, every candidate once')

      await redact({ jobIds: [1, 4], by: 'retention', at: T0 + 60 })
      t.same(await ids({ before: T0 + 100, limit: 10 }), [5, 8, 7], 'erased jobs leave the candidates')
      t.match(await store.append(incoming(assigned(6, phone), T0 + 70)), { outcome: 'stale' })
      t.same(await ids({ before: T0 + 100, limit: 10 }), [5, 8, 6, 7], 'an erased job that received a row again is one again, at the time of its last change')
    })

    t.test('appends still queued when close is called settle, and after close append rejects', async (t) => {
      const store = await open(t)
      const queued = store.append(incoming(assigned(1), T0))
      await store.close()
      await t.resolves(queued, 'an append accepted before close is committed')
      await t.rejects(store.append(incoming(assigned(2), T0)), 'append after close rejects')
      await t.resolves(store.close(), 'close is idempotent')
    })
  })
}
