// POST /callbacks/g2sentry against every row of docs/design.md, "What each input gets": the answer,
// and what was or was not kept (log rows, quarantine rows, projection).
import t from 'tap'
import type { Test } from 'tap'
import Database from 'better-sqlite3'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import g2sentry from '../../src/index.js'
import type { CommittedEvent } from '../../src/plugin/options.js'
import { sqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { signBody } from '../../src/domain/verify-signature.js'
import {
  assigned, buildApp, bytesOf, CALLBACK_PATH, completed, logRows, memoryStream, post, quarantineRows,
  SECRET, started, withdrawn, type CallbackPayload
} from '../helpers/helpers.js'

const PHONE = '+12345678901'

async function getJob (app: FastifyInstance, jobId: number, prefix = '') {
  return app.inject({ method: 'GET', url: `${prefix}/jobs/${jobId}` })
}

async function assertNothingKept (t: Test, app: FastifyInstance): Promise<void> {
  t.same(await logRows(app), [], 'nothing in the event log')
  t.same(await quarantineRows(app), [], 'nothing in quarantine')
}

/** A payload padded with an extra field so that its JSON is exactly `size` bytes. */
function paddedTo (size: number, base: CallbackPayload = assigned(1)): Buffer {
  const overhead = bytesOf({ ...base, padding: '' }).length
  const body = bytesOf({ ...base, padding: 'x'.repeat(size - overhead) })
  if (body.length !== size) throw new Error(`padding went wrong: ${body.length} bytes, wanted ${size}`)
  return body
}

t.test('valid signature, new event: 200 applied, logged and projected', async (t) => {
  const file = join(t.testdir(), 'g2.db')
  const app = await buildApp(t, { database: file })
  const payload = assigned(5, { phone: PHONE })
  const res = await post(app, payload)
  t.equal(res.statusCode, 200)
  t.same(res.json(), { outcome: 'applied', seq: 1, jobId: 5, status: 'Assigned' })

  // The 200 came after the commit: another connection sees the row on disk.
  const reader = new Database(file, { readonly: true })
  t.teardown(() => reader.close())
  t.same(reader.prepare('SELECT seq, job_id, outcome FROM events').all(), [{ seq: 1, job_id: 5, outcome: 'applied' }],
    'the event is on disk when the 200 is sent')

  const [row, ...rest] = await logRows(app)
  t.same(rest, [])
  t.match(row, {
    seq: 1,
    jobId: 5,
    eventType: 'JobAssigned',
    jobStatus: 'Assigned',
    jobName: 'Open House at 123 Main St',
    guardianPhone: PHONE,
    signature: signBody(bytesOf(payload), SECRET),
    outcome: 'applied',
    sameAs: null
  })
  t.same(row?.rawBody, bytesOf(payload), 'the exact bytes are logged')

  const job = await getJob(app, 5)
  t.equal(job.statusCode, 200)
  t.match(job.json(), { jobId: 5, status: 'Assigned', guardianPhone: PHONE, version: 1, eventCount: 1 })
  t.same(await quarantineRows(app), [])
})

t.test('a lifecycle: each new event is applied with the next seq', async (t) => {
  const app = await buildApp(t)
  const deliveries: Array<[CallbackPayload, string]> = [
    [assigned(7, { phone: PHONE }), 'Assigned'],
    [withdrawn(7), 'New'],
    [assigned(7), 'Assigned'],
    [started(7, { phone: PHONE }), 'InProgress'],
    [completed(7), 'Completed']
  ]
  for (const [index, [payload, status]] of deliveries.entries()) {
    const res = await post(app, payload)
    t.equal(res.statusCode, 200)
    t.same(res.json(), { outcome: 'applied', seq: index + 1, jobId: 7, status }, payload.eventType)
  }
  t.same((await logRows(app)).map((row) => row.outcome), ['applied', 'applied', 'applied', 'applied', 'applied'])
  t.match((await getJob(app, 7)).json(), { status: 'Completed', guardianPhone: null, version: 5, eventCount: 5 })
})

t.test('valid signature, repeated event: 200 duplicate, kept in the log as a delivery', async (t) => {
  const app = await buildApp(t)
  const payload = assigned(5, { phone: PHONE })
  t.same((await post(app, payload)).json(), { outcome: 'applied', seq: 1, jobId: 5, status: 'Assigned' })
  const again = await post(app, payload)
  t.equal(again.statusCode, 200)
  t.same(again.json(), { outcome: 'duplicate', seq: 2, jobId: 5, status: 'Assigned' })
  const third = await post(app, payload)
  t.same(third.json(), { outcome: 'duplicate', seq: 3, jobId: 5, status: 'Assigned' })

  const rows = await logRows(app)
  t.same(rows.map((row) => [row.seq, row.outcome, row.sameAs]), [[1, 'applied', null], [2, 'duplicate', 1], [3, 'duplicate', 1]])
  t.match((await getJob(app, 5)).json(), { status: 'Assigned', guardianPhone: PHONE, version: 1, eventCount: 3 },
    'the projection is not changed, only the delivery count')

  t.test('concurrent redeliveries: one applied, the rest duplicates', async (t) => {
    const app = await buildApp(t)
    const payload = started(8, { phone: PHONE })
    const answers = await Promise.all(Array.from({ length: 6 }, () => post(app, payload)))
    t.ok(answers.every((res) => res.statusCode === 200))
    const outcomes = answers.map((res) => res.json().outcome).sort()
    t.same(outcomes, ['applied', 'duplicate', 'duplicate', 'duplicate', 'duplicate', 'duplicate'])
    t.same(answers.map((res) => res.json().seq).sort((a, b) => a - b), [1, 2, 3, 4, 5, 6], 'each delivery has its own seq')
    t.match((await getJob(app, 8)).json(), { status: 'InProgress', version: 1, eventCount: 6 })
  })
})

t.test('valid signature, stale event: 200 stale, logged, projection unchanged', async (t) => {
  const app = await buildApp(t)
  t.same((await post(app, started(5, { phone: PHONE }))).json(), { outcome: 'applied', seq: 1, jobId: 5, status: 'InProgress' },
    'an early start creates the job')
  const late = await post(app, assigned(5, { phone: PHONE }))
  t.equal(late.statusCode, 200)
  t.same(late.json(), { outcome: 'stale', seq: 2, jobId: 5, status: 'InProgress' })

  t.same((await logRows(app)).map((row) => [row.seq, row.eventType, row.outcome]), [[1, 'JobStarted', 'applied'], [2, 'JobAssigned', 'stale']])
  t.match((await getJob(app, 5)).json(), { status: 'InProgress', lastEventType: 'JobStarted', version: 1, eventCount: 2 })
})

t.test('valid signature, unsupported event type: 200 unsupported, logged, no projection', async (t) => {
  const app = await buildApp(t)
  const payload = { jobId: 9, eventType: 'JobGuardianRate', jobName: 'Open House at 123 Main St', jobStatus: 'Completed' }
  const res = await post(app, payload)
  t.equal(res.statusCode, 200)
  t.same(res.json(), { outcome: 'unsupported', seq: 1, jobId: 9, status: null })

  const rows = await logRows(app)
  t.equal(rows.length, 1)
  t.match(rows[0], { seq: 1, jobId: 9, eventType: 'JobGuardianRate', outcome: 'unsupported' })
  t.same(rows[0]?.rawBody, bytesOf(payload))

  const job = await getJob(app, 9)
  t.equal(job.statusCode, 404, 'no job projection')
  t.equal(job.json().code, 'FST_G2SENTRY_JOB_NOT_FOUND')
  const events = await app.inject({ method: 'GET', url: '/jobs/9/events' })
  t.equal(events.statusCode, 200, 'but the log lists it')
  t.match(events.json(), { jobId: 9, events: [{ seq: 1, eventType: 'JobGuardianRate', jobStatus: 'Completed', outcome: 'unsupported' }] })
  t.equal(events.json().events.length, 1)

  t.test('on a job that exists, its status is reported and the projection is untouched', async (t) => {
    await post(app, assigned(10, { phone: PHONE }))
    const rate = await post(app, { jobId: 10, eventType: 'JobClientRate', jobName: 'Renamed', jobStatus: 'Completed' })
    t.same(rate.json(), { outcome: 'unsupported', seq: 3, jobId: 10, status: 'Assigned' })
    t.match((await getJob(app, 10)).json(), { status: 'Assigned', jobName: 'Open House at 123 Main St', guardianPhone: PHONE, version: 1 })
  })
})

t.test('valid signature, body not JSON: 400 and quarantined byte for byte', async (t) => {
  const cases: Array<{ name: string; body: Buffer; detail: string }> = [
    { name: 'truncated JSON', body: Buffer.from('{"jobId": 5, "eventType": "JobAssig'), detail: 'not JSON' },
    { name: 'plain text', body: Buffer.from('hello'), detail: 'not JSON' },
    { name: 'an empty body', body: Buffer.alloc(0), detail: 'not JSON' },
    { name: 'invalid UTF-8', body: Buffer.from([0x7b, 0x22, 0x6a, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), detail: 'not UTF-8' },
    { name: 'a lone UTF-16 surrogate encoded as UTF-8', body: Buffer.concat([Buffer.from('{"jobName":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]), detail: 'not UTF-8' }
  ]
  for (const { name, body, detail } of cases) {
    t.test(name, async (t) => {
      const app = await buildApp(t)
      const before = Date.now()
      const res = await post(app, body)
      t.equal(res.statusCode, 400)
      t.match(res.json(), { statusCode: 400, code: 'FST_G2SENTRY_INVALID_JSON', error: 'Bad Request' })
      t.same(await logRows(app), [], 'nothing in the log')
      const rows = await quarantineRows(app)
      t.equal(rows.length, 1, 'one quarantine row')
      t.match(rows[0], { id: 1, reason: 'invalid_json', detail, signature: signBody(body, SECRET), contentType: 'application/json' })
      t.ok(Buffer.isBuffer(rows[0]?.rawBody))
      t.ok(rows[0]?.rawBody.equals(body), 'the exact raw bytes')
      t.ok((rows[0]?.receivedAt ?? 0) >= before && (rows[0]?.receivedAt ?? 0) <= Date.now(), 'received-at is the time of the delivery')
    })
  }
})

t.test('valid signature, JSON failing the schema: 422 and quarantined', async (t) => {
  const base = assigned(5, { phone: PHONE })
  const { jobName: _omitted, ...withoutName } = base
  const cases: Array<{ name: string; body: unknown }> = [
    { name: 'jobId as a string', body: { ...base, jobId: '5' } },
    { name: 'jobId 1.5', body: { ...base, jobId: 1.5 } },
    { name: 'jobId 0', body: { ...base, jobId: 0 } },
    { name: 'jobId -1', body: { ...base, jobId: -1 } },
    { name: 'jobId 2**53', body: { ...base, jobId: 2 ** 53 } },
    { name: 'jobId missing', body: { eventType: 'JobAssigned', jobName: 'x', jobStatus: 'Assigned' } },
    { name: 'jobName missing', body: withoutName },
    { name: 'jobName null', body: { ...base, jobName: null } },
    { name: 'eventType empty', body: { ...base, eventType: '' } },
    { name: 'jobStatus "Done"', body: { ...base, jobStatus: 'Done' } },
    { name: 'jobStatus in lower case', body: { ...base, jobStatus: 'assigned' } },
    { name: 'guardianPhone 123', body: { ...base, guardianPhone: 123 } },
    { name: 'guardianPhone null', body: { ...base, guardianPhone: null } },
    { name: 'an array body', body: [base] },
    { name: 'a null body', body: null },
    { name: 'a number body', body: 5 },
    { name: 'a string body', body: 'JobAssigned' }
  ]
  for (const { name, body } of cases) {
    t.test(name, async (t) => {
      const app = await buildApp(t)
      const bytes = Buffer.from(JSON.stringify(body))
      const res = await post(app, bytes)
      t.equal(res.statusCode, 422)
      t.match(res.json(), { statusCode: 422, code: 'FST_G2SENTRY_INVALID_PAYLOAD', error: 'Unprocessable Entity' })
      t.notMatch(res.body, PHONE, 'the answer does not quote the body')
      t.same(await logRows(app), [], 'nothing in the log')
      t.equal((await getJob(app, 5)).statusCode, 404, 'no projection')
      const rows = await quarantineRows(app)
      t.equal(rows.length, 1, 'one quarantine row')
      t.match(rows[0], { reason: 'invalid_payload', signature: signBody(bytes, SECRET), contentType: 'application/json' })
      t.notMatch(rows[0]?.detail ?? '', PHONE, 'the detail does not quote the body')
      t.ok(rows[0]?.rawBody.equals(bytes), 'the exact raw bytes')
    })
  }
})

t.test('body over the limit: 413 and nothing kept', async (t) => {
  t.test('default limit, 64 KiB', async (t) => {
    const app = await buildApp(t)
    const over = paddedTo(64 * 1024 + 1)
    const res = await post(app, over)
    t.equal(res.statusCode, 413)
    t.match(res.json(), { statusCode: 413, code: 'FST_G2SENTRY_BODY_TOO_LARGE', message: 'The body is larger than 65536 bytes' })
    await assertNothingKept(t, app)

    const unsigned = await post(app, over, { signature: null })
    t.equal(unsigned.statusCode, 413, 'the size is checked before the signature')
    await assertNothingKept(t, app)

    const atLimit = await post(app, paddedTo(64 * 1024))
    t.equal(atLimit.statusCode, 200, 'exactly 64 KiB is accepted')
    t.equal(atLimit.json().outcome, 'applied')
    const under = await post(app, paddedTo(64 * 1024 - 1, assigned(2)))
    t.equal(under.statusCode, 200, 'just under is accepted')
    const rows = await logRows(app)
    t.same(rows.map((row) => row.rawBody.length), [64 * 1024, 64 * 1024 - 1], 'the padded bodies are logged whole')
  })

  t.test('a custom bodyLimit', async (t) => {
    const app = await buildApp(t, { bodyLimit: 1024 })
    const res = await post(app, paddedTo(1025))
    t.equal(res.statusCode, 413)
    t.match(res.json(), { code: 'FST_G2SENTRY_BODY_TOO_LARGE', message: 'The body is larger than 1024 bytes' })
    await assertNothingKept(t, app)
    t.equal((await post(app, paddedTo(1024))).statusCode, 200, 'exactly the limit is accepted')
    t.equal((await post(app, paddedTo(1023, assigned(2)))).statusCode, 200, 'just under is accepted')
    t.equal((await logRows(app)).length, 2)
  })

  t.test('a custom bodyLimit larger than the default', async (t) => {
    const app = await buildApp(t, { bodyLimit: 128 * 1024 })
    t.equal((await post(app, paddedTo(100 * 1024))).statusCode, 200)
    t.equal((await post(app, paddedTo(128 * 1024 + 1, assigned(2)))).statusCode, 413)
    t.equal((await logRows(app)).length, 1)
  })

  t.test('a streamed body without Content-Length is counted as it arrives', async (t) => {
    const app = await buildApp(t, { bodyLimit: 1024 })
    const send = (body: Buffer) => app.inject({
      method: 'POST',
      url: CALLBACK_PATH,
      headers: { 'content-type': 'application/json', 'x-signature': signBody(body, SECRET) },
      payload: Readable.from([body.subarray(0, 500), body.subarray(500)])
    })
    const over = await send(paddedTo(1025))
    t.equal(over.statusCode, 413)
    t.equal(over.json().code, 'FST_G2SENTRY_BODY_TOO_LARGE')
    await assertNothingKept(t, app)
    const within = await send(paddedTo(1024))
    t.equal(within.statusCode, 200)
    t.equal((await logRows(app)).length, 1)
  })
})

t.test('wrong content type: 415 and nothing kept', async (t) => {
  const payload = assigned(5, { phone: PHONE })
  const types: Array<string | null> = ['text/plain', 'application/x-www-form-urlencoded', null, 'application/xml', 'multipart/form-data; boundary=x']
  for (const contentType of types) {
    t.test(contentType ?? 'no Content-Type', async (t) => {
      const app = await buildApp(t)
      const res = await post(app, payload, { contentType })
      t.equal(res.statusCode, 415)
      t.match(res.json(), { statusCode: 415, code: 'FST_G2SENTRY_UNSUPPORTED_MEDIA_TYPE', message: 'Callbacks must be sent as application/json' })
      await assertNothingKept(t, app)
      t.equal((await getJob(app, 5)).statusCode, 404)
    })
  }

  t.test('application/json; charset=utf-8 is JSON', async (t) => {
    const app = await buildApp(t)
    const res = await post(app, payload, { contentType: 'application/json; charset=utf-8' })
    t.equal(res.statusCode, 200)
    t.equal(res.json().outcome, 'applied')
    t.equal((await logRows(app)).length, 1)
  })
})

t.test('the plugin’s raw-bytes parser does not leak into the rest of the app', async (t) => {
  const app = Fastify({ logger: false })
  app.register(g2sentry, { secret: SECRET, database: join(t.testdir(), 'g2.db') })
  app.post('/echo', async (request) => request.body)
  t.teardown(() => app.close())
  await app.ready()
  const echo = await app.inject({ method: 'POST', url: '/echo', payload: { a: 1 } })
  t.equal(echo.statusCode, 200)
  t.same(echo.json(), { a: 1 }, 'parsed by Fastify’s own JSON parser')
  const text = await app.inject({ method: 'POST', url: '/echo', headers: { 'content-type': 'text/plain' }, payload: 'hi' })
  t.equal(text.statusCode, 200)
  t.equal(text.body, 'hi', 'and its text parser')
  t.equal((await post(app, assigned(1))).statusCode, 200)
})

t.test('storage failure: 503, nothing acknowledged that was not committed', async (t) => {
  const filename = join(t.testdir(), 'g2.db')
  const store = sqliteStore({ filename, busyTimeout: 50 })
  t.teardown(() => store.close())
  const app = await buildApp(t, { store })
  const blocker = new Database(filename)
  t.teardown(() => blocker.close())

  const payload = assigned(5, { phone: PHONE })
  blocker.exec('BEGIN IMMEDIATE')
  const failed = await post(app, payload)
  t.equal(failed.statusCode, 503)
  t.match(failed.json(), { statusCode: 503, code: 'FST_G2SENTRY_STORAGE_UNAVAILABLE', message: 'The event could not be stored; retry later' })
  t.same(await logRows(app), [], 'nothing in the log')
  t.equal((await getJob(app, 5)).statusCode, 404, 'no projection')

  t.test('a quarantine write failing is a 503 too', async (t) => {
    const notJson = await post(app, 'not json')
    t.equal(notJson.statusCode, 503)
    t.equal(notJson.json().code, 'FST_G2SENTRY_STORAGE_UNAVAILABLE')
    const badPayload = await post(app, { ...payload, jobId: 'five' })
    t.equal(badPayload.statusCode, 503)
    t.equal(badPayload.json().code, 'FST_G2SENTRY_STORAGE_UNAVAILABLE')
    t.same(await quarantineRows(app), [], 'nothing in quarantine')
  })

  t.test('once the lock is released the same delivery succeeds', async (t) => {
    blocker.exec('ROLLBACK')
    const retried = await post(app, payload)
    t.equal(retried.statusCode, 200)
    t.same(retried.json(), { outcome: 'applied', seq: 1, jobId: 5, status: 'Assigned' }, 'applied, not a duplicate of anything')
    t.equal((await logRows(app)).length, 1)
    t.match((await getJob(app, 5)).json(), { status: 'Assigned', guardianPhone: PHONE, eventCount: 1 })
    t.equal((await post(app, 'not json')).statusCode, 400, 'and quarantine works again')
    t.equal((await quarantineRows(app)).length, 1)
  })
})

t.test('onEvent', async (t) => {
  t.test('is called once per committed event, after the commit', async (t) => {
    const calls: Array<{ committed: CommittedEvent; inLog: boolean; signature: unknown }> = []
    const app: FastifyInstance = await buildApp(t, {
      onEvent: async (committed: CommittedEvent, request: FastifyRequest | undefined) => {
        const rows = await app.g2sentry.store.readLog({ limit: 100 })
        calls.push({ committed, inLog: rows.some((row) => row.seq === committed.seq), signature: request?.headers['x-signature'] })
      }
    })
    const first = assigned(5, { phone: PHONE })
    await post(app, first) // applied
    await post(app, first) // duplicate
    await post(app, withdrawn(5)) // applied
    await post(app, started(6)) // applied
    await post(app, assigned(6)) // stale
    await post(app, { jobId: 6, eventType: 'JobGuardianRate', jobName: 'x', jobStatus: 'Completed' }) // unsupported
    // Not committed: none of these calls onEvent.
    await post(app, first, { signature: null })
    await post(app, first, { secret: 'wrong' })
    await post(app, 'not json')
    await post(app, { ...first, jobStatus: 'Done' })
    await post(app, first, { contentType: 'text/plain' })

    t.same(calls.map(({ committed }) => [committed.outcome, committed.seq, committed.jobId, committed.status]), [
      ['applied', 1, 5, 'Assigned'],
      ['duplicate', 2, 5, 'Assigned'],
      ['applied', 3, 5, 'New'],
      ['applied', 4, 6, 'InProgress'],
      ['stale', 5, 6, 'InProgress'],
      ['unsupported', 6, 6, 'InProgress']
    ])
    t.match(calls[0]?.committed.event, { jobId: 5, eventType: 'JobAssigned', jobName: 'Open House at 123 Main St', jobStatus: 'Assigned', guardianPhone: PHONE })
    t.match(calls[2]?.committed.event, { jobId: 5, eventType: 'JobWithdrawed', jobStatus: 'New' })
    t.notOk('rawBody' in (calls[0]?.committed.event ?? {}), 'the event is the payload’s fields')
    t.ok(calls.every((call) => call.committed.source === 'callback'), 'each from a callback')
    t.ok(calls.every((call) => call.inLog), 'every call sees its event in the log')
    t.equal(calls[0]?.signature, signBody(bytesOf(first), SECRET), 'and gets the request')
  })

  t.test('that throws still answers 200 and the event stays in the log', async (t) => {
    const { stream, lines } = memoryStream()
    const app = await buildApp(t, {
      logStream: stream,
      onEvent: () => { throw new Error('listener broke') }
    })
    const res = await post(app, assigned(5))
    t.equal(res.statusCode, 200)
    t.same(res.json(), { outcome: 'applied', seq: 1, jobId: 5, status: 'Assigned' })
    t.equal((await logRows(app)).length, 1)
    t.equal((await getJob(app, 5)).statusCode, 200)
    const errors = lines.map((line) => JSON.parse(line)).filter((entry) => entry.level === 50)
    t.equal(errors.length, 1, 'the failure is logged')
    t.match(errors[0], { seq: 1, err: { message: 'listener broke' } })
  })

  t.test('that rejects still answers 200 and the event stays in the log', async (t) => {
    const app = await buildApp(t, { onEvent: async () => { throw new Error('listener broke') } })
    const res = await post(app, assigned(5))
    t.equal(res.statusCode, 200)
    t.equal(res.json().outcome, 'applied')
    const again = await post(app, assigned(5))
    t.equal(again.statusCode, 200)
    t.equal(again.json().outcome, 'duplicate')
    t.same((await logRows(app)).map((row) => row.outcome), ['applied', 'duplicate'])
  })
})

t.test('a store onCommit listener that throws still answers 200 for committed events', async (t) => {
  const store = sqliteStore({ filename: join(t.testdir(), 'g2.db') })
  t.teardown(() => store.close())
  t.type(store.onCommit, 'function', 'the SQLite store has onCommit')
  store.onCommit?.(() => { throw new Error('a listener bug') })
  const onWarning = () => {}
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })
  const app = await buildApp(t, { store })
  const answers = await Promise.all([post(app, assigned(1)), post(app, assigned(2)), post(app, started(1))])
  t.same(answers.map((res) => res.statusCode), [200, 200, 200], 'no 503 for rows that are in the log')
  t.same((await logRows(app)).map((row) => row.jobId).sort(), [1, 1, 2])
})

t.test('callbackPath moves the route', async (t) => {
  const app = await buildApp(t, { callbackPath: '/hooks/g2' })
  const moved = await post(app, assigned(5), { url: '/hooks/g2' })
  t.equal(moved.statusCode, 200)
  t.equal(moved.json().outcome, 'applied')
  const old = await post(app, assigned(6))
  t.equal(old.statusCode, 404, 'the default path is not served')
  t.same((await logRows(app)).map((row) => row.jobId), [5])
})

t.test('registered with a prefix, every route is under it', async (t) => {
  const app = await buildApp(t, { prefix: '/api' })
  const res = await post(app, assigned(5, { phone: PHONE }), { url: '/api/callbacks/g2sentry' })
  t.equal(res.statusCode, 200)
  t.equal(res.json().outcome, 'applied')
  const job = await getJob(app, 5, '/api')
  t.equal(job.statusCode, 200)
  t.match(job.json(), { jobId: 5, status: 'Assigned' })
  t.equal((await app.inject({ method: 'GET', url: '/api/jobs/5/events' })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/api/jobs' })).statusCode, 200)

  t.equal((await post(app, assigned(6))).statusCode, 404, 'no callback route outside the prefix')
  t.equal((await getJob(app, 5)).statusCode, 404, 'no job route outside the prefix')

  t.test('also with a callbackPath and a jobRoutes prefix', async (t) => {
    const app = await buildApp(t, { prefix: '/api', callbackPath: '/in', jobRoutes: { prefix: '/g2' } })
    t.equal((await post(app, assigned(5), { url: '/api/in' })).statusCode, 200)
    t.equal((await app.inject({ method: 'GET', url: '/api/g2/5' })).statusCode, 200)
  })
})

t.test('a __proto__ key in a signed body does not pollute Object.prototype', async (t) => {
  const app = await buildApp(t)
  const body = '{"jobId":5,"eventType":"JobAssigned","jobName":"Open House","jobStatus":"Assigned","__proto__":{"polluted":"yes","jobStatus":"Completed"}}'
  const res = await post(app, body)
  t.equal(res.statusCode, 200)
  t.same(res.json(), { outcome: 'applied', seq: 1, jobId: 5, status: 'Assigned' })
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype is untouched')
  t.equal((Object.prototype as Record<string, unknown>).jobStatus, undefined)
  const [row] = await logRows(app)
  t.equal(row?.rawBody.toString('utf8'), body, 'the raw bytes are logged as sent')
  t.match((await getJob(app, 5)).json(), { status: 'Assigned' })

  t.test('a constructor.prototype key neither', async (t) => {
    const res = await post(app, '{"jobId":6,"eventType":"JobAssigned","jobName":"x","jobStatus":"Assigned","constructor":{"prototype":{"polluted":"yes"}}}')
    t.equal(res.statusCode, 200)
    t.equal(({} as Record<string, unknown>).polluted, undefined)
  })

  t.test('a field given only through __proto__ does not count as given', async (t) => {
    const res = await post(app, '{"jobId":7,"eventType":"JobAssigned","jobName":"x","__proto__":{"jobStatus":"Assigned"}}')
    t.equal(res.statusCode, 422)
    t.equal(res.json().code, 'FST_G2SENTRY_INVALID_PAYLOAD')
    t.equal((await getJob(app, 7)).statusCode, 404)
  })
})

t.test('logs never hold the secret, the guardian phone or the raw body', async (t) => {
  const phone = '+15550001111'
  const { stream, lines } = memoryStream()
  const app = await buildApp(t, { logStream: stream })

  const valid = assigned(5, { phone })
  t.equal((await post(app, valid)).statusCode, 200)
  t.equal((await post(app, valid, { secret: 'not-the-secret' })).statusCode, 401)
  t.equal((await post(app, valid, { signature: null })).statusCode, 401)
  t.equal((await post(app, `{"guardianPhone":"${phone}",`)).statusCode, 400)
  t.equal((await post(app, { ...valid, jobStatus: 'Done' })).statusCode, 422)
  t.equal((await post(app, started(5, { phone }), { contentType: 'text/plain' })).statusCode, 415)

  t.ok(lines.length > 0, 'the logger wrote something')
  const refused = lines.map((line) => JSON.parse(line)).filter((entry) => entry.msg === 'g2sentry: callback refused, bad signature')
  t.same(refused.map((entry) => [entry.level, entry.reason]), [[40, 'mismatch'], [40, 'missing']], 'each 401 is logged with its reason')
  const stored = lines.map((line) => JSON.parse(line)).filter((entry) => entry.msg === 'g2sentry: callback stored')
  t.match(stored, [{ jobId: 5, seq: 1, outcome: 'applied', secretIndex: 0 }])

  const rawBody = bytesOf(valid).toString('utf8')
  for (const line of lines) {
    t.notOk(line.includes(SECRET), 'no secret')
    t.notOk(line.includes(phone), 'no phone')
    t.notOk(line.includes('15550001111'), 'not even the digits')
    t.notOk(line.includes(rawBody), 'no raw body')
    t.notOk(line.includes('Open House at 123 Main St'), 'no field of the body')
  }
})
