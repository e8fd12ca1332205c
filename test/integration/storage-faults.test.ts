// Storage faults: a read-only database, a full disk and a
// locked database, each a real SQLite fault on a real file, never a mock. Whatever the fault:
// callbacks are answered 503 with FST_G2SENTRY_STORAGE_UNAVAILABLE, nothing is acknowledged that
// was not committed, a failed batch leaves no half-written event, reads keep working where the
// fault allows, and the server recovers by itself, without a restart, when the fault clears.
import t, { type Test } from 'tap'
import { sqliteConnection } from '../../src/store/sqlite/connection-of.js'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmdirSync, statfsSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { readLogStream } from '../../src/log/read-log.js'
import { sqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import type { IncomingEvent, LogRow } from '../../src/domain/types.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { holdWriteLock } from '../helpers/lock-holder.js'
import { assigned, buildApp, bytesOf, completed, memoryStream, post, SECRET, started, type CallbackPayload } from '../helpers/helpers.js'

t.setTimeout(60_000)

const UNAVAILABLE = 'FST_G2SENTRY_STORAGE_UNAVAILABLE'

type SqliteStore = ReturnType<typeof sqliteStore>

async function wholeLog (store: SqliteStore): Promise<LogRow[]> {
  const rows: LogRow[] = []
  for await (const row of readLogStream(store)) rows.push(row)
  return rows
}

/** How many log rows hold exactly these bytes. */
function countBody (rows: LogRow[], body: Buffer): number {
  return rows.filter((row) => row.rawBody.equals(body)).length
}

/** The projection equals a rebuild, no job row lacks its events and no event lacks its job row. */
async function assertConsistent (t: Test, store: SqliteStore, label: string): Promise<void> {
  const report = await store.rebuild({ dryRun: true })
  t.same(report.differingJobs, [], `${label}: the stored projection equals a rebuild from the log`)
  t.same(report.outcomeMismatches, [], `${label}: every log row replays to the outcome it was given live`)
  const countsOff = sqliteConnection(store).prepare(`SELECT j.job_id AS jobId, j.event_count AS eventCount,
      (SELECT count(*) FROM events e WHERE e.job_id = j.job_id AND e.outcome != 'unsupported') AS rows
    FROM jobs j WHERE j.event_count != (SELECT count(*) FROM events e WHERE e.job_id = j.job_id AND e.outcome != 'unsupported')`).all()
  t.same(countsOff, [], `${label}: every job's delivery count equals its rows in the log (no event without its projection update, or the reverse)`)
  const orphans = sqliteConnection(store).prepare(`SELECT DISTINCT job_id AS jobId FROM events
    WHERE outcome != 'unsupported' AND job_id NOT IN (SELECT job_id FROM jobs)`).all()
  t.same(orphans, [], `${label}: no logged event lacks its job`)
  t.equal(sqliteConnection(store).pragma('integrity_check', { simple: true }), 'ok', `${label}: the file passes integrity_check`)
}

function assertUnavailable (t: Test, res: LightMyRequestResponse, what: string): void {
  t.equal(res.statusCode, 503, `${what}: 503`)
  t.equal((res.json() as { code?: string }).code, UNAVAILABLE, `${what}: with code ${UNAVAILABLE}`)
}

interface Sent { body: Buffer; res: LightMyRequestResponse }

/**
 * Every 200 is the log row at its seq, byte for byte; every 503 is nowhere in the log; every
 * answer is one or the other.
 */
function assertAnswersMatchLog (t: Test, rows: LogRow[], sent: Sent[], label: string): void {
  const bySeq = new Map(rows.map((row) => [row.seq, row]))
  const other = sent.filter(({ res }) => res.statusCode !== 200 && res.statusCode !== 503).map(({ res }) => `${res.statusCode} ${res.body}`)
  const wrongCode = sent.filter(({ res }) => res.statusCode === 503 && (res.json() as { code?: string }).code !== UNAVAILABLE).map(({ res }) => res.body)
  const lost = sent.filter(({ body, res }) => res.statusCode === 200 && !bySeq.get((res.json() as { seq: number }).seq)?.rawBody.equals(body))
  const kept = sent.filter(({ body, res }) => res.statusCode === 503 && countBody(rows, body) > 0)
  const seqs = sent.filter(({ res }) => res.statusCode === 200).map(({ res }) => (res.json() as { seq: number }).seq)
  t.same(other.slice(0, 5), [], `${label}: every answer is a 200 or a 503`)
  t.same(wrongCode.slice(0, 5), [], `${label}: every 503 carries ${UNAVAILABLE}`)
  t.same(lost.map(({ body }) => body.toString()).slice(0, 5), [], `${label}: every 200 is in the log at its seq, with its exact bytes`)
  t.same(kept.map(({ body }) => body.toString()).slice(0, 5), [], `${label}: no 503 left anything in the log`)
  t.equal(new Set(seqs).size, seqs.length, `${label}: no seq answered twice`)
}

/** A distinct, signed assignment for each job id. */
const distinctAssignment = (jobId: number): CallbackPayload => assigned(jobId, { phone: `+1555${String(jobId).padStart(7, '0')}` })

function incomingOf (payload: CallbackPayload, receivedAt = Date.now()): IncomingEvent {
  const rawBody = bytesOf(payload)
  return {
    jobId: payload.jobId,
    eventType: payload.eventType,
    jobName: payload.jobName,
    jobStatus: payload.jobStatus as IncomingEvent['jobStatus'],
    guardianPhone: payload.guardianPhone,
    rawBody,
    signature: signBody(rawBody, SECRET),
    receivedAt
  }
}

async function getJob (app: FastifyInstance, jobId: number): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'GET', url: `/jobs/${jobId}` })
}

/** An app on `store`, with the store closed when the test ends. */
async function appOn (t: Test, store: SqliteStore): Promise<FastifyInstance> {
  t.teardown(() => store.close())
  return buildApp(t, { store })
}

// ---------------------------------------------------------------------------------------------

t.test('read-only database (query_only on the store\'s own connection, binding even for root)', async (t) => {
  const store = sqliteStore({ filename: join(t.testdir(), 'g2.db') })
  const app = await appOn(t, store)
  for (const payload of [assigned(1, { phone: '+15550000001' }), started(1), assigned(2)]) {
    t.equal((await post(app, payload)).statusCode, 200, 'populated while writable')
  }
  const before = await wholeLog(store)
  const jobBefore = (await getJob(app, 1)).json()

  sqliteConnection(store).pragma('query_only = ON')
  const fresh = completed(1)
  assertUnavailable(t, await post(app, fresh), 'a new event')
  assertUnavailable(t, await post(app, started(1)), 'a redelivery')
  assertUnavailable(t, await post(app, 'not json'), 'a body for quarantine')
  const burst = await Promise.all([3, 4, 5, 6, 7].map((jobId) => post(app, assigned(jobId))))
  burst.forEach((res, i) => assertUnavailable(t, res, `concurrent delivery ${i + 1}`))

  const job = await getJob(app, 1)
  t.equal(job.statusCode, 200, 'GET /jobs/:id still answers while the file is read-only')
  t.same(job.json(), jobBefore, 'with the state as it was')
  t.equal((await app.inject({ method: 'GET', url: '/jobs' })).statusCode, 200, 'GET /jobs too')
  t.equal((await app.inject({ method: 'GET', url: '/jobs/1/events' })).statusCode, 200, 'and GET /jobs/:id/events')
  t.same((await wholeLog(store)).map((row) => row.seq), before.map((row) => row.seq), 'nothing new in the log')
  t.same(await store.listQuarantine({ limit: 10 }), [], 'nothing in quarantine')

  sqliteConnection(store).pragma('query_only = OFF')
  const retried = await post(app, fresh)
  t.equal(retried.statusCode, 200, 'once writable again the same delivery is accepted, without a restart')
  t.match(retried.json(), { outcome: 'applied', seq: before.length + 1, status: 'Completed' })
  const again = await Promise.all([3, 4, 5, 6, 7].map((jobId) => post(app, assigned(jobId))))
  t.ok(again.every((res) => res.statusCode === 200), 'and the concurrent ones too')
  t.equal((await post(app, 'not json')).statusCode, 400, 'quarantine works again')
  const after = await wholeLog(store)
  t.equal(after.length, before.length + 6, 'the log holds each retried delivery once')
  await assertConsistent(t, store, 'after the read-only spell')
})

/** Whether this process may mount a tmpfs (root in a sandbox often may not): a reason to skip, or false. */
function cannotMountTmpfs (): string | false {
  const probe = mkdtempSync(join(tmpdir(), 'g2sentry-probe-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe], { stdio: 'pipe' })
    execFileSync('umount', [probe], { stdio: 'pipe' })
    return false
  } catch (error) {
    const reason = String((error as { stderr?: Buffer }).stderr ?? error).trim()
    return `cannot mount a tmpfs here (${reason}); the max_page_count test below still covers SQLITE_FULL`
  } finally {
    rmdirSync(probe)
  }
}

t.test('full disk: a tiny tmpfs filled up, then space freed', { skip: cannotMountTmpfs() }, async (t) => {
  const mnt = mkdtempSync(join(tmpdir(), 'g2sentry-full-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], { stdio: 'pipe' })
  } catch (error) {
    rmdirSync(mnt)
    throw error
  }
  const store = sqliteStore({ filename: join(mnt, 'g2.db') })
  t.teardown(async () => {
    await store.close().catch(() => {})
    try {
      execFileSync('umount', [mnt], { stdio: 'pipe' })
    } catch {
      execFileSync('umount', ['-l', mnt], { stdio: 'pipe' })
    }
    rmdirSync(mnt)
  })
  const app = await buildApp(t, { store })
  t.equal((await post(app, distinctAssignment(1))).statusCode, 200, 'a first delivery while there is room')

  // Leave about 160 KiB free; the WAL grows by a few pages with every commit.
  const filler = join(mnt, 'filler')
  const { bavail, bsize } = statfsSync(mnt)
  writeFileSync(filler, Buffer.alloc(Math.max(0, bavail * bsize - 160 * 1024)))

  const sent: Sent[] = []
  let firstFailure: Buffer | undefined
  for (let jobId = 2; jobId < 400 && firstFailure === undefined; jobId++) {
    const body = bytesOf(distinctAssignment(jobId))
    const res = await post(app, body)
    sent.push({ body, res })
    if (res.statusCode !== 200) firstFailure = body
  }
  t.ok(firstFailure, `the disk filled up after ${sent.length - 1} more deliveries`)
  if (firstFailure === undefined) return
  assertUnavailable(t, sent[sent.length - 1]?.res as LightMyRequestResponse, 'the delivery that found the disk full')

  // A burst in one group commit while the disk is full.
  const burstBodies = Array.from({ length: 20 }, (_, i) => bytesOf(distinctAssignment(1000 + i)))
  const burst = await Promise.all(burstBodies.map((body) => post(app, body)))
  burst.forEach((res, i) => sent.push({ body: burstBodies[i] as Buffer, res }))
  t.ok(burst.every((res) => res.statusCode === 503), 'a concurrent burst on the full disk: all 503')
  // A quarantine row is a smaller commit than an event: it may still fit where the failed commit did not.
  const quarantined = await post(app, 'not json')
  const quarantineRows = await store.listQuarantine({ limit: 10 })
  if (quarantined.statusCode === 503) {
    assertUnavailable(t, quarantined, 'a body for quarantine on the full disk')
    t.same(quarantineRows, [], 'and nothing was quarantined')
  } else {
    t.equal(quarantined.statusCode, 400, 'a body for quarantine on the full disk: 400 if its smaller commit still fit')
    t.equal(quarantineRows.length, 1, 'and then it is in quarantine')
  }

  const job = await getJob(app, 1)
  t.equal(job.statusCode, 200, 'GET /jobs/:id still answers on the full disk')
  t.equal((await app.inject({ method: 'GET', url: '/jobs?limit=500' })).statusCode, 200, 'GET /jobs too')
  assertAnswersMatchLog(t, await wholeLog(store), sent, 'on the full disk')
  await assertConsistent(t, store, 'on the full disk')

  // Space is freed: no restart, the same deliveries now succeed.
  unlinkSync(filler)
  const retried = await post(app, firstFailure)
  t.equal(retried.statusCode, 200, 'once space is freed the delivery that failed is accepted, without a restart')
  const burstAgain = await Promise.all(burstBodies.map((body) => post(app, body)))
  t.ok(burstAgain.every((res) => res.statusCode === 200), 'and the burst too')
  t.equal((await post(app, 'not json')).statusCode, 400, 'quarantine works again')

  const rows = await wholeLog(store)
  t.equal(countBody(rows, firstFailure), 1, 'the delivery that failed is in the log once')
  t.ok(burstBodies.every((body) => countBody(rows, body) === 1), 'each burst delivery is in the log once')
  await assertConsistent(t, store, 'after space was freed')

  // The file as a restart finds it.
  await store.close()
  const reopened = sqliteStore({ filename: join(mnt, 'g2.db') })
  try {
    const reread = await wholeLog(reopened)
    t.same(reread.map((row) => [row.seq, row.rawBody.toString()]), rows.map((row) => [row.seq, row.rawBody.toString()]),
      'reopened, the file holds exactly the same log')
    await assertConsistent(t, reopened, 'reopened')
  } finally {
    await reopened.close()
  }
})

t.test('full database: max_page_count on the store\'s connection (SQLITE_FULL), then raised', async (t) => {
  const store = sqliteStore({ filename: join(t.testdir(), 'g2.db') })
  const app = await appOn(t, store)
  for (let jobId = 1; jobId <= 5; jobId++) t.equal((await post(app, distinctAssignment(jobId))).statusCode, 200)
  const defaultMax = sqliteConnection(store).pragma('max_page_count', { simple: true }) as number
  const pages = sqliteConnection(store).pragma('page_count', { simple: true }) as number

  t.test('one group commit that fills the file: every event lands whole, or not at all', async (t) => {
    sqliteConnection(store).pragma(`max_page_count = ${pages + 2}`)
    // All appended in the same turn of the event loop: one transaction, one savepoint per event.
    const events = Array.from({ length: 200 }, (_, i) => incomingOf(i % 3 === 0 ? distinctAssignment(2000 + i) : started(2000 + i - (i % 3), { phone: `+1555${i}` })))
    const settled = await Promise.allSettled(events.map((event) => store.append(event)))
    const ok = settled.filter((s) => s.status === 'fulfilled').length
    const failed = settled.filter((s) => s.status === 'rejected')
    t.comment(`one batch of ${events.length}: ${ok} committed, ${failed.length} failed (${[...new Set(failed.map((s) => (s as PromiseRejectedResult).reason?.code))].join(', ')})`)
    t.ok(failed.length > 0, 'the file filled up within the batch')
    const rows = await wholeLog(store)
    const bySeq = new Map(rows.map((row) => [row.seq, row]))
    const lost = settled.filter((s, i) => s.status === 'fulfilled' && !bySeq.get(s.value.seq)?.rawBody.equals((events[i] as IncomingEvent).rawBody))
    const kept = settled.filter((s, i) => s.status === 'rejected' && countBody(rows, (events[i] as IncomingEvent).rawBody) > 0)
    t.equal(lost.length, 0, 'every append reported committed is in the log at its seq')
    t.equal(kept.length, 0, 'no failed append left a row in the log')
    await assertConsistent(t, store, 'after the failed batch')
    sqliteConnection(store).pragma(`max_page_count = ${defaultMax}`)
  })

  t.test('over HTTP: a burst that fills the file, 503 while full, 200 once there is room again', async (t) => {
    const now = sqliteConnection(store).pragma('page_count', { simple: true }) as number
    sqliteConnection(store).pragma(`max_page_count = ${now + 2}`)
    const sent: Sent[] = []
    // A concurrent burst that runs out of room part way, then single deliveries until one fails.
    const burstBodies = Array.from({ length: 100 }, (_, i) => bytesOf(distinctAssignment(3000 + i)))
    const burst = await Promise.all(burstBodies.map((body) => post(app, body)))
    burst.forEach((res, i) => sent.push({ body: burstBodies[i] as Buffer, res }))
    t.comment(`burst of ${burst.length}: ${burst.filter((res) => res.statusCode === 200).length} answered 200, ${burst.filter((res) => res.statusCode === 503).length} answered 503`)
    let firstFailure: Buffer | undefined = burst.some((res) => res.statusCode !== 200) ? burstBodies[burst.findIndex((res) => res.statusCode !== 200)] : undefined
    for (let jobId = 100; jobId < 2000 && firstFailure === undefined; jobId++) {
      const body = bytesOf(distinctAssignment(jobId))
      const res = await post(app, body)
      sent.push({ body, res })
      if (res.statusCode !== 200) firstFailure = body
    }
    t.ok(firstFailure, `the file filled up (${sent.filter(({ res }) => res.statusCode === 200).length} deliveries answered 200 first)`)
    if (firstFailure === undefined) return
    assertUnavailable(t, sent.find(({ body }) => body === firstFailure)?.res as LightMyRequestResponse, 'the first delivery that found the file full')
    t.equal((await getJob(app, 1)).statusCode, 200, 'GET /jobs/:id still answers while the file is full')
    assertAnswersMatchLog(t, await wholeLog(store), sent, 'while full')
    await assertConsistent(t, store, 'while full')

    // Room again: the sender retries every 503; each delivery must end up in the log exactly once.
    sqliteConnection(store).pragma(`max_page_count = ${defaultMax}`)
    const failed = sent.filter(({ res }) => res.statusCode !== 200)
    const retried = await Promise.all(failed.map(({ body }) => post(app, body)))
    t.ok(retried.every((res) => res.statusCode === 200), `with room again every one of the ${failed.length} failed deliveries is accepted, without a restart`)
    const rows = await wholeLog(store)
    const notOnce = sent.filter(({ body }) => countBody(rows, body) !== 1).map(({ body }) => ({ body: body.toString(), rows: countBody(rows, body) }))
    t.same(notOnce.slice(0, 5), [], `each delivery is in the log exactly once after the retries (${notOnce.length} are not)`)
    await assertConsistent(t, store, 'after the file had room again')
  })
})

t.test('locked database: the lock is released while deliveries are in flight', async (t) => {
  const filename = join(t.testdir(), 'g2.db')
  const store = sqliteStore({ filename, busyTimeout: 100 })
  const app = await appOn(t, store)
  t.equal((await post(app, assigned(1, { phone: '+15550000001' }))).statusCode, 200)
  const logBefore = (await wholeLog(store)).length

  // Another process holds the write lock until told to let go.
  const lock = await holdWriteLock(t, filename)

  const read = await getJob(app, 1)
  t.equal(read.statusCode, 200, 'GET /jobs/:id answers while another process holds the write lock')

  // 50 distinct deliveries, one every 10 ms; the lock goes once some have failed and before the
  // last are sent, so that some are in flight (waiting on the lock) when it is released.
  const bodies = Array.from({ length: 50 }, (_, i) => bytesOf(i % 2 === 0 ? distinctAssignment(10 + i) : started(10 + i - 1, { phone: `+1666${i}` })))
  const inFlight: Array<Promise<Sent>> = []
  let first503 = false
  let releasedAt = -1
  let releasing: Promise<void> | undefined
  for (let i = 0; i < bodies.length; i++) {
    const body = bodies[i] as Buffer
    inFlight.push(post(app, body).then((res) => {
      if (res.statusCode === 503) first503 = true
      return { body, res }
    }))
    if (releasing === undefined && first503 && i >= 20) {
      releasedAt = i
      releasing = lock.release()
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  if (releasing === undefined) {
    releasedAt = bodies.length
    releasing = lock.release()
  }
  await releasing
  const sent = await Promise.all(inFlight)
  const ok = sent.filter(({ res }) => res.statusCode === 200).length
  const unavailable = sent.filter(({ res }) => res.statusCode === 503).length
  t.comment(`lock released after ${releasedAt} of ${bodies.length} sends: ${ok} answered 200, ${unavailable} answered 503`)
  t.ok(releasedAt < bodies.length, 'the lock was released while deliveries were still being sent')
  t.ok(unavailable > 0, 'deliveries made while locked were answered 503')
  t.ok(ok > 0, 'deliveries made after the release were answered 200, without a restart')

  const rows = await wholeLog(store)
  assertAnswersMatchLog(t, rows, sent, 'around the lock')
  t.equal(rows.length, logBefore + ok, 'the log grew by exactly the deliveries answered 200')
  await assertConsistent(t, store, 'after the lock')

  // The sender retries every 503: nothing lost, nothing doubled.
  const retried = await Promise.all(sent.filter(({ res }) => res.statusCode === 503).map(({ body }) => post(app, body)))
  t.ok(retried.every((res) => res.statusCode === 200), 'every retried 503 is now a 200')
  const final = await wholeLog(store)
  const counts = bodies.map((body) => countBody(final, body))
  t.same(counts.filter((n) => n !== 1), [], 'each of the 50 deliveries is in the log exactly once')
  await assertConsistent(t, store, 'after the retries')
})

t.test('a 503 is logged once, at error level, with the store\'s own error as the cause', async (t) => {
  const store = sqliteStore({ filename: join(t.testdir(), 'g2.db') })
  t.teardown(() => store.close())
  const log = memoryStream()
  const app = await buildApp(t, { store, logStream: log.stream })
  sqliteConnection(store).pragma('query_only = ON')
  for (const payload of [assigned(1), 'not json']) {
    log.lines.length = 0
    const res = await post(app, payload)
    assertUnavailable(t, res, typeof payload === 'string' ? 'a body for quarantine' : 'an event')
    t.same(res.json(), { statusCode: 503, code: UNAVAILABLE, error: 'Service Unavailable', message: 'The event could not be stored; retry later' }, 'the body has Fastify\'s error shape')
    const errorLines = log.lines.map((line) => JSON.parse(line) as { level: number; msg: string; err?: { type?: string; message?: string } }).filter((line) => line.level >= 50)
    t.equal(errorLines.length, 1, `one error line, not one per layer: ${JSON.stringify(errorLines.map((line) => line.msg))}`)
    t.match(errorLines[0], { msg: /storage failed/, err: { type: 'SqliteError', message: /readonly/ } }, 'and it names the cause')
  }
})
