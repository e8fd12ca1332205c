// Hostile input on POST /callbacks/g2sentry ("Prove it under faults", item 4): each input is
// answered as docs/design.md's "What each input gets" says, and the store is left unchanged unless
// that table says otherwise: signed bodies that are not callbacks are quarantined byte for byte,
// unsigned ones leave nothing. Most requests go through `app.inject`; the slowly dripped bodies
// and the repeated X-Signature headers go over a real socket to a listening server.
import t from 'tap'
import type { Test } from 'tap'
import Database from 'better-sqlite3'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { signBody } from '../../src/domain/verify-signature.js'
import {
  assigned, buildApp, bytesOf, CALLBACK_PATH, logRows, post, quarantineRows, SECRET
} from '../helpers/helpers.js'

const PHONE = '+12345678901'
const MAX_SAFE = Number.MAX_SAFE_INTEGER

function getJob (app: FastifyInstance, jobId: number | string): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'GET', url: `/jobs/${jobId}` })
}

async function assertNothingKept (t: Test, app: FastifyInstance): Promise<void> {
  t.same(await logRows(app), [], 'nothing in the event log')
  t.same(await quarantineRows(app), [], 'nothing in quarantine')
}

interface Refusal {
  status: number
  code: string
}

/** The answer is the refusal, and the store holds nothing at all. */
async function assertRefused (t: Test, app: FastifyInstance, res: { statusCode: number; json: () => any }, { status, code }: Refusal): Promise<void> {
  t.equal(res.statusCode, status, `answered ${status}`)
  t.match(res.json(), { statusCode: status, code })
  await assertNothingKept(t, app)
}

interface Quarantined {
  status: 400 | 422
  detail?: string | RegExp
  contentType?: string | null
}

/** The answer is 400 or 422 with this plugin's code, nothing is logged, and exactly `bytes` is quarantined once. */
async function assertQuarantined (t: Test, app: FastifyInstance, res: { statusCode: number; json: () => any }, bytes: Buffer, expected: Quarantined): Promise<void> {
  const code = expected.status === 400 ? 'FST_G2SENTRY_INVALID_JSON' : 'FST_G2SENTRY_INVALID_PAYLOAD'
  const reason = expected.status === 400 ? 'invalid_json' : 'invalid_payload'
  t.equal(res.statusCode, expected.status, `answered ${expected.status}`)
  t.match(res.json(), { statusCode: expected.status, code })
  t.same(await logRows(app), [], 'nothing in the event log')
  const rows = await quarantineRows(app)
  t.equal(rows.length, 1, 'one quarantine row')
  t.match(rows[0], {
    reason,
    signature: signBody(bytes, SECRET),
    contentType: expected.contentType === undefined ? 'application/json' : expected.contentType
  })
  if (expected.detail !== undefined) t.match(rows[0]?.detail, expected.detail)
  t.ok(rows[0]?.rawBody.equals(bytes), 'the exact bytes are quarantined')
}

/** The answer is a 200 for the event, logged once with its exact bytes, and nothing quarantined. */
async function assertLogged (t: Test, app: FastifyInstance, res: LightMyRequestResponse, bytes: Buffer, expected: Record<string, unknown>): Promise<void> {
  t.equal(res.statusCode, 200, 'answered 200')
  t.match(res.json(), expected)
  const rows = await logRows(app)
  t.equal(rows.length, 1, 'one log row')
  t.ok(rows[0]?.rawBody.equals(bytes), 'the exact bytes are logged')
  t.same(await quarantineRows(app), [], 'nothing in quarantine')
}

function assertNotPolluted (t: Test): void {
  const plain = {} as Record<string, unknown>
  t.equal(plain.polluted, undefined, 'Object.prototype.polluted is not set')
  for (const key of ['polluted', 'jobId', 'jobStatus', 'guardianPhone', 'jobName', 'eventType']) {
    t.notOk(Object.hasOwn(Object.prototype, key), `Object.prototype has no ${key}`)
  }
}

/** A valid JobAssigned body for `jobId` whose JSON ends in `,<tail>}`: `tail` is spliced in verbatim. */
function withTail (jobId: number, tail: string, name = 'Open House'): Buffer {
  const head = JSON.stringify({ jobId, eventType: 'JobAssigned', jobName: name, jobStatus: 'Assigned' }).slice(0, -1)
  return Buffer.from(`${head},${tail}}`, 'utf8')
}

/** A valid JobAssigned body padded with an extra field so that its JSON is exactly `size` bytes, and whose last byte can be cut to break it. */
function paddedTo (size: number, base: object = assigned(1)): Buffer {
  const overhead = bytesOf({ ...base, padding: '' }).length
  const body = bytesOf({ ...base, padding: 'x'.repeat(size - overhead) })
  if (body.length !== size) throw new Error(`padding went wrong: ${body.length} bytes, wanted ${size}`)
  return body
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP over a socket, for what `inject` cannot do: a body dripped over time, and a header
// sent twice.

interface RawResponse {
  statusCode: number
  headers: string
  body: string
  json: () => any
}

interface RawRequest {
  /** Header lines after the request line, without the trailing CRLF. Host and Connection: close are added. */
  headers: string[]
  /** The body, written one chunk at a time (as HTTP/1.1 chunks when `chunked`). */
  chunks: Buffer[]
  /** Milliseconds to wait before each chunk. */
  delay?: number
  chunked?: boolean
}

async function listening (t: Test, options: Parameters<typeof buildApp>[1] = {}): Promise<{ app: FastifyInstance; port: number }> {
  const app = await buildApp(t, options)
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, port: (app.server.address() as AddressInfo).port }
}

async function rawPost (port: number, { headers, chunks, delay = 0, chunked = false }: RawRequest): Promise<RawResponse> {
  const socket = connect(port, '127.0.0.1')
  const received: Buffer[] = []
  socket.on('data', (data: Buffer) => received.push(data))
  socket.on('error', () => {}) // the server may answer (413) and close before the whole body is written
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
  const guard = setTimeout(() => socket.destroy(), 10_000)
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  const head = [`POST ${CALLBACK_PATH} HTTP/1.1`, 'Host: 127.0.0.1', ...headers, 'Connection: close', '', ''].join('\r\n')
  socket.write(head)
  for (const chunk of chunks) {
    if (delay > 0) await sleep(delay)
    if (socket.destroyed || socket.writableEnded) break
    socket.write(chunked ? Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]) : chunk)
  }
  if (chunked && !socket.destroyed) socket.write('0\r\n\r\n')
  await closed
  clearTimeout(guard)
  const text = Buffer.concat(received).toString('utf8')
  const split = text.indexOf('\r\n\r\n')
  const statusLine = /^HTTP\/1\.1 (\d{3})/.exec(text)
  if (statusLine === null || split < 0) throw new Error(`not an HTTP response: ${JSON.stringify(text)}`)
  const body = text.slice(split + 4)
  return { statusCode: Number(statusLine[1]), headers: text.slice(0, split), body, json: () => JSON.parse(body) }
}

/** `body` cut into exactly `count` pieces of about the same size. */
function pieces (body: Buffer, count: number): Buffer[] {
  return Array.from({ length: count }, (_, index) =>
    body.subarray(Math.round(index * body.length / count), Math.round((index + 1) * body.length / count)))
}

/** `body` cut at the given byte offsets. */
function cutAt (body: Buffer, offsets: number[]): Buffer[] {
  const bounds = [0, ...offsets, body.length]
  return bounds.slice(1).map((end, index) => body.subarray(bounds[index], end))
}

// ---------------------------------------------------------------------------------------------

t.test('0-byte bodies', async (t) => {
  const EMPTY = Buffer.alloc(0)

  t.test('signed (the HMAC of nothing), application/json: 400, quarantined as 0 bytes', async (t) => {
    const app = await buildApp(t)
    const res = await post(app, EMPTY)
    await assertQuarantined(t, app, res, EMPTY, { status: 400, detail: 'not JSON' })
  })

  t.test('unsigned, application/json: 401, nothing kept', async (t) => {
    const app = await buildApp(t)
    await assertRefused(t, app, await post(app, EMPTY, { signature: null }), { status: 401, code: 'FST_G2SENTRY_MISSING_SIGNATURE' })
  })

  t.test('signed with the HMAC of a real body: 401, nothing kept', async (t) => {
    const app = await buildApp(t)
    const res = await post(app, EMPTY, { signature: signBody(bytesOf(assigned(1)), SECRET) })
    await assertRefused(t, app, res, { status: 401, code: 'FST_G2SENTRY_BAD_SIGNATURE' })
  })

  t.test('signed, text/plain: 415, nothing kept', async (t) => {
    const app = await buildApp(t)
    await assertRefused(t, app, await post(app, EMPTY, { contentType: 'text/plain' }), { status: 415, code: 'FST_G2SENTRY_UNSUPPORTED_MEDIA_TYPE' })
  })

  // A body with no Content-Type is refused with 415 (test/unit/callback-route.test.ts); an empty
  // one must be too, signed or not: a missing Content-Type is a wrong content type.
  t.test('signed, no Content-Type: 415, nothing kept', async (t) => {
    const app = await buildApp(t)
    await assertRefused(t, app, await post(app, EMPTY, { contentType: null }), { status: 415, code: 'FST_G2SENTRY_UNSUPPORTED_MEDIA_TYPE' })
  })

  t.test('unsigned, no Content-Type: 415, nothing kept', async (t) => {
    const app = await buildApp(t)
    await assertRefused(t, app, await post(app, EMPTY, { contentType: null, signature: null }), { status: 415, code: 'FST_G2SENTRY_UNSUPPORTED_MEDIA_TYPE' })
  })

  t.test('over a socket with Content-Length: 0, signed: 400 and quarantined', async (t) => {
    const { app, port } = await listening(t)
    const res = await rawPost(port, {
      headers: ['Content-Type: application/json', 'Content-Length: 0', `X-Signature: ${signBody(EMPTY, SECRET)}`],
      chunks: []
    })
    await assertQuarantined(t, app, res, EMPTY, { status: 400, detail: 'not JSON' })
  })
})

t.test('bodies just under, at and over the limit', async (t) => {
  const LIMIT = 1024

  t.test('signed, not JSON, one byte under the limit: 400, quarantined whole', async (t) => {
    const app = await buildApp(t, { bodyLimit: LIMIT })
    const broken = paddedTo(LIMIT).subarray(0, LIMIT - 1) // the closing brace cut off
    t.equal(broken.length, LIMIT - 1)
    await assertQuarantined(t, app, await post(app, broken), broken, { status: 400, detail: 'not JSON' })
  })

  t.test('signed, failing the schema, exactly at the limit: 422, quarantined whole', async (t) => {
    const app = await buildApp(t, { bodyLimit: LIMIT })
    const body = paddedTo(LIMIT, { ...assigned(1), jobStatus: 'Done' })
    await assertQuarantined(t, app, await post(app, body), body, { status: 422, detail: /^\/jobStatus / })
  })

  t.test('one byte over: 413 whether signed, unsigned or wrongly signed, nothing kept', async (t) => {
    const app = await buildApp(t, { bodyLimit: LIMIT })
    const over = paddedTo(LIMIT + 1)
    for (const options of [{}, { signature: null }, { secret: 'wrong' }, { signature: 'zz' }]) {
      const res = await post(app, over, options)
      t.equal(res.statusCode, 413, JSON.stringify(options))
      t.match(res.json(), { statusCode: 413, code: 'FST_G2SENTRY_BODY_TOO_LARGE', message: `The body is larger than ${LIMIT} bytes` })
    }
    const notJson = Buffer.alloc(LIMIT + 1, 0xff)
    t.equal((await post(app, notJson)).statusCode, 413, 'signed non-JSON over the limit')
    await assertNothingKept(t, app)
  })

  t.test('over the socket: a Content-Length over the limit, and a chunked body growing past it, get 413', async (t) => {
    const { app, port } = await listening(t, { bodyLimit: LIMIT })
    const over = paddedTo(LIMIT + 1)
    const declared = await rawPost(port, {
      headers: ['Content-Type: application/json', `Content-Length: ${over.length}`, `X-Signature: ${signBody(over, SECRET)}`],
      chunks: pieces(over, 4),
      delay: 5
    })
    t.equal(declared.statusCode, 413)
    t.equal(declared.json().code, 'FST_G2SENTRY_BODY_TOO_LARGE')
    const streamed = await rawPost(port, {
      headers: ['Content-Type: application/json', 'Transfer-Encoding: chunked', `X-Signature: ${signBody(over, SECRET)}`],
      chunks: pieces(over, 8),
      delay: 5,
      chunked: true
    })
    t.equal(streamed.statusCode, 413)
    t.equal(streamed.json().code, 'FST_G2SENTRY_BODY_TOO_LARGE')
    await assertNothingKept(t, app)
  })
})

t.test('a slowly dripped body (20 chunks, 25 ms apart, over a real socket)', async (t) => {
  // An emoji in the name, and cuts inside it, so that chunks split a UTF-8 sequence.
  const body = bytesOf(assigned(31, { phone: PHONE, name: 'Open House 🏠 at 123 Main St' }))
  const emoji = body.indexOf(Buffer.from('🏠'))
  const chunks = [...cutAt(body.subarray(0, emoji + 4), [emoji + 1, emoji + 2, emoji + 3]), ...pieces(body.subarray(emoji + 4), 16)]
  t.equal(chunks.length, 20, '20 chunks')
  t.ok(Buffer.concat(chunks).equals(body))

  t.test('signed, with Content-Length: 200, logged with its exact bytes', async (t) => {
    const { app, port } = await listening(t)
    const started = Date.now()
    const res = await rawPost(port, {
      headers: ['Content-Type: application/json', `Content-Length: ${body.length}`, `X-Signature: ${signBody(body, SECRET)}`],
      chunks,
      delay: 25
    })
    t.ok(Date.now() - started >= 20 * 25 * 0.9, 'the body really was dripped')
    t.equal(res.statusCode, 200)
    t.same(res.json(), { outcome: 'applied', seq: 1, jobId: 31, status: 'Assigned' })
    const rows = await logRows(app)
    t.equal(rows.length, 1)
    t.ok(rows[0]?.rawBody.equals(body), 'the exact bytes are logged')
    t.equal(rows[0]?.jobName, 'Open House 🏠 at 123 Main St', 'the emoji split across chunks is whole')
    t.same(await quarantineRows(app), [])
  })

  t.test('signed, chunked transfer encoding: 200', async (t) => {
    const { app, port } = await listening(t)
    const res = await rawPost(port, {
      headers: ['Content-Type: application/json', 'Transfer-Encoding: chunked', `X-Signature: ${signBody(body, SECRET)}`],
      chunks,
      delay: 25,
      chunked: true
    })
    t.equal(res.statusCode, 200)
    t.equal(res.json().outcome, 'applied')
    const rows = await logRows(app)
    t.equal(rows.length, 1)
    t.ok(rows[0]?.rawBody.equals(body), 'the exact bytes are logged')
  })

  t.test('unsigned: 401, nothing kept', async (t) => {
    const { app, port } = await listening(t)
    const res = await rawPost(port, {
      headers: ['Content-Type: application/json', `Content-Length: ${body.length}`],
      chunks,
      delay: 25
    })
    await assertRefused(t, app, res, { status: 401, code: 'FST_G2SENTRY_MISSING_SIGNATURE' })
  })

  t.test('signed over a different body (one byte changed in the last chunk): 401, nothing kept', async (t) => {
    const { app, port } = await listening(t)
    const tampered = Buffer.from(body)
    tampered[tampered.length - 3] = 0x41
    const res = await rawPost(port, {
      headers: ['Content-Type: application/json', `Content-Length: ${body.length}`, `X-Signature: ${signBody(body, SECRET)}`],
      chunks: cutAt(tampered, chunks.slice(0, -1).reduce<number[]>((ends, chunk) => [...ends, (ends.at(-1) ?? 0) + chunk.length], [])),
      delay: 25
    })
    await assertRefused(t, app, res, { status: 401, code: 'FST_G2SENTRY_BAD_SIGNATURE' })
  })
})

t.test('truncated JSON: every proper prefix of a valid body, signed, is 400 and quarantined byte for byte', async (t) => {
  const app = await buildApp(t)
  const body = bytesOf(assigned(41, { phone: PHONE, name: 'Casa 🏡' }))
  const emoji = body.indexOf(Buffer.from('🏡'))
  for (let length = 0; length < body.length; length++) {
    const prefix = body.subarray(0, length)
    const res = await post(app, prefix)
    if (res.statusCode !== 400) t.fail(`prefix of ${length} bytes answered ${res.statusCode}`)
  }
  t.same(await logRows(app), [], 'nothing in the log')
  const rows = await app.g2sentry.store.listQuarantine({ limit: 1000 })
  t.equal(rows.length, body.length, 'one quarantine row per prefix')
  t.ok(rows.every((row, length) => row.rawBody.equals(body.subarray(0, length))), 'each with its exact bytes')
  t.ok(rows.every((row) => row.reason === 'invalid_json'))
  const cutInEmoji = (length: number) => length > emoji && length < emoji + 4
  t.ok(rows.every((row, length) => row.detail === (cutInEmoji(length) ? 'not UTF-8' : 'not JSON')),
    'a cut inside the emoji is "not UTF-8", any other cut "not JSON"')

  t.test('unsigned prefixes: 401, nothing kept', async (t) => {
    const app = await buildApp(t)
    for (const length of [0, 1, emoji + 2, body.length - 1]) {
      const res = await post(app, body.subarray(0, length), { signature: null })
      t.equal(res.statusCode, 401, `${length} bytes`)
    }
    await assertNothingKept(t, app)
  })
})

t.test('deep nesting', async (t) => {
  const DEPTH = 10_000

  t.test('10,000 nested arrays in an extra field: a valid callback, 200', async (t) => {
    const app = await buildApp(t)
    const body = withTail(51, `"deep":${'['.repeat(DEPTH)}${']'.repeat(DEPTH)}`)
    await assertLogged(t, app, await post(app, body), body, { outcome: 'applied', seq: 1, jobId: 51, status: 'Assigned' })
    t.equal((await getJob(app, 51)).statusCode, 200)
  })

  t.test('10,000 nested objects with a __proto__ at the bottom (so the prototype scan walks it all): 200, not polluted', async (t) => {
    const app = await buildApp(t)
    const body = withTail(52, `"deep":${'{"a":'.repeat(DEPTH)}{"__proto__":{"polluted":"deep"}}${'}'.repeat(DEPTH)}`)
    t.ok(body.length < 64 * 1024, 'within the default limit')
    await assertLogged(t, app, await post(app, body), body, { outcome: 'applied', jobId: 52 })
    assertNotPolluted(t)
  })

  t.test('a body that is 10,000 nested arrays: 422, quarantined', async (t) => {
    const app = await buildApp(t)
    const body = Buffer.from('['.repeat(DEPTH) + ']'.repeat(DEPTH))
    await assertQuarantined(t, app, await post(app, body), body, { status: 422 })
  })

  t.test('jobName as 10,000 nested arrays: 422, quarantined', async (t) => {
    const app = await buildApp(t)
    const body = Buffer.from(`{"jobId":53,"eventType":"JobAssigned","jobStatus":"Assigned","jobName":${'['.repeat(DEPTH)}${']'.repeat(DEPTH)}}`)
    await assertQuarantined(t, app, await post(app, body), body, { status: 422, detail: /^\/jobName / })
  })

  t.test('10,000 arrays never closed: 400, quarantined', async (t) => {
    const app = await buildApp(t)
    const body = withTail(54, `"deep":${'['.repeat(DEPTH)}`)
    await assertQuarantined(t, app, await post(app, body), body, { status: 400, detail: 'not JSON' })
  })

  t.test('unsigned, 10,000 nested arrays: 401, nothing kept', async (t) => {
    const app = await buildApp(t)
    const body = withTail(55, `"deep":${'['.repeat(DEPTH)}${']'.repeat(DEPTH)}`)
    await assertRefused(t, app, await post(app, body, { signature: null }), { status: 401, code: 'FST_G2SENTRY_MISSING_SIGNATURE' })
  })

  t.test('1,000,000 nested arrays under a 4 MiB bodyLimit: still 200, no stack overflow', async (t) => {
    const app = await buildApp(t, { bodyLimit: 4 * 1024 * 1024 })
    const depth = 1_000_000
    const body = withTail(56, `"deep":${'['.repeat(depth)}${']'.repeat(depth)}`)
    await assertLogged(t, app, await post(app, body), body, { outcome: 'applied', jobId: 56 })
  })
})

t.test('__proto__ and constructor keys: 200 for otherwise valid bodies, Object.prototype untouched', async (t) => {
  const cases: Array<{ name: string; tail: string }> = [
    { name: '"__proto__" spelt with a \\u escape', tail: '"\\u005f_proto__":{"polluted":"escaped"}' },
    { name: '"__proto__": null', tail: '"__proto__":null' },
    { name: '"__proto__": an array', tail: '"__proto__":[{"polluted":"array"}]' },
    { name: '"__proto__" nested in an extra field', tail: '"extra":{"inner":{"__proto__":{"polluted":"nested"}}}' },
    { name: '"constructor.prototype" nested in an array', tail: '"extra":[{"constructor":{"prototype":{"polluted":"ctor"}}}]' },
    { name: '"constructor" as a string', tail: '"constructor":"Object"' },
    { name: '"constructor" as an object without prototype', tail: '"constructor":{"name":"Evil"}' },
    { name: '"prototype" at the top', tail: '"prototype":{"polluted":"proto"}' },
    { name: 'hasOwnProperty, toString and valueOf as keys', tail: '"hasOwnProperty":"x","toString":"y","valueOf":1,"__defineGetter__":2' },
    { name: '__proto__ and constructor together', tail: '"__proto__":{"polluted":"both"},"constructor":{"prototype":{"polluted":"both"}}' }
  ]
  for (const [index, { name, tail }] of cases.entries()) {
    t.test(name, async (t) => {
      const app = await buildApp(t)
      const jobId = 60 + index
      const body = withTail(jobId, tail)
      await assertLogged(t, app, await post(app, body), body, { outcome: 'applied', seq: 1, jobId, status: 'Assigned' })
      assertNotPolluted(t)
      t.match((await getJob(app, jobId)).json(), { jobId, status: 'Assigned', jobName: 'Open House', guardianPhone: null })
    })
  }

  t.test('fields given through __proto__ do not override or add to the real ones', async (t) => {
    const app = await buildApp(t)
    const body = withTail(71, '"__proto__":{"jobStatus":"Completed","guardianPhone":"+19999999999","jobId":72}')
    await assertLogged(t, app, await post(app, body), body, { outcome: 'applied', jobId: 71, status: 'Assigned' })
    t.match((await getJob(app, 71)).json(), { status: 'Assigned', guardianPhone: null })
    t.equal((await getJob(app, 72)).statusCode, 404)
    assertNotPolluted(t)
  })

  t.test('a jobId given only through constructor.prototype does not count: 422', async (t) => {
    const app = await buildApp(t)
    const body = Buffer.from('{"eventType":"JobAssigned","jobName":"x","jobStatus":"Assigned","constructor":{"prototype":{"jobId":73}}}')
    await assertQuarantined(t, app, await post(app, body), body, { status: 422, detail: /^\/jobId / })
    assertNotPolluted(t)
  })
})

t.test('duplicate keys: the last one wins, the raw body is kept verbatim', async (t) => {
  t.test('jobStatus "Assigned" then "Completed": 200, projected Completed', async (t) => {
    const app = await buildApp(t)
    const body = Buffer.from('{"jobId":81,"eventType":"JobAssigned","jobName":"Dup","jobStatus":"Assigned","jobStatus":"Completed"}')
    await assertLogged(t, app, await post(app, body), body, { outcome: 'applied', seq: 1, jobId: 81, status: 'Completed' })
    t.match((await logRows(app))[0], { jobStatus: 'Completed', eventType: 'JobAssigned' })
    t.match((await getJob(app, 81)).json(), { status: 'Completed' })
  })

  t.test('jobId "x" then 82: 200 for job 82', async (t) => {
    const app = await buildApp(t)
    const body = Buffer.from('{"jobId":"x","eventType":"JobAssigned","jobName":"Dup","jobStatus":"Assigned","jobId":82}')
    await assertLogged(t, app, await post(app, body), body, { outcome: 'applied', jobId: 82 })
  })

  t.test('jobId 83 then "83": 422, quarantined', async (t) => {
    const app = await buildApp(t)
    const body = Buffer.from('{"jobId":83,"eventType":"JobAssigned","jobName":"Dup","jobStatus":"Assigned","jobId":"83"}')
    await assertQuarantined(t, app, await post(app, body), body, { status: 422, detail: /^\/jobId / })
  })

  t.test('jobName twice: the second name is projected', async (t) => {
    const app = await buildApp(t)
    const body = Buffer.from('{"jobId":84,"eventType":"JobAssigned","jobName":"first","jobStatus":"Assigned","jobName":"second"}')
    await assertLogged(t, app, await post(app, body), body, { outcome: 'applied', jobId: 84 })
    t.match((await getJob(app, 84)).json(), { jobName: 'second' })
  })

  t.test('guardianPhone a string then null: 422, quarantined', async (t) => {
    const app = await buildApp(t)
    const body = Buffer.from(`{"jobId":85,"eventType":"JobAssigned","jobName":"Dup","jobStatus":"Assigned","guardianPhone":"${PHONE}","guardianPhone":null}`)
    await assertQuarantined(t, app, await post(app, body), body, { status: 422, detail: /^\/guardianPhone / })
  })
})

t.test('jobId variants', async (t) => {
  const refused: Array<{ name: string; literal: string }> = [
    { name: 'a string "5"', literal: '"5"' },
    { name: 'a float 1.5', literal: '1.5' },
    { name: 'negative -1', literal: '-1' },
    { name: 'zero', literal: '0' },
    { name: 'minus zero', literal: '-0' },
    { name: '2^53', literal: String(2 ** 53) },
    { name: '2^53 + 1 (rounds to 2^53)', literal: '9007199254740993' },
    { name: '2^53 + 2', literal: String(2 ** 53 + 2) },
    { name: '1e400 (Infinity)', literal: '1e400' },
    { name: '-1e400', literal: '-1e400' },
    { name: 'a very long integer', literal: '1' + '0'.repeat(400) },
    { name: 'null', literal: 'null' },
    { name: 'true', literal: 'true' },
    { name: 'an array [5]', literal: '[5]' },
    { name: 'an object', literal: '{"value":5}' }
  ]
  for (const { name, literal } of refused) {
    t.test(`${name}: 422, quarantined`, async (t) => {
      const app = await buildApp(t)
      const body = Buffer.from(`{"jobId":${literal},"eventType":"JobAssigned","jobName":"x","jobStatus":"Assigned"}`)
      await assertQuarantined(t, app, await post(app, body), body, { status: 422, detail: /^\/jobId / })
      const unsigned = await post(app, body, { signature: null })
      t.equal(unsigned.statusCode, 401, 'unsigned, 401')
      t.equal((await quarantineRows(app)).length, 1, 'and nothing more in quarantine')
    })
  }

  t.test('Number.MAX_SAFE_INTEGER: 200, and readable by GET /jobs/:jobId', async (t) => {
    const app = await buildApp(t)
    const body = Buffer.from(`{"jobId":${MAX_SAFE},"eventType":"JobAssigned","jobName":"x","jobStatus":"Assigned"}`)
    await assertLogged(t, app, await post(app, body), body, { outcome: 'applied', seq: 1, jobId: MAX_SAFE, status: 'Assigned' })
    t.equal((await logRows(app))[0]?.jobId, MAX_SAFE, 'logged with the exact id')
    const job = await getJob(app, MAX_SAFE)
    t.equal(job.statusCode, 200)
    t.equal(job.json().jobId, MAX_SAFE)
  })

  t.test('1: the smallest jobId, 200', async (t) => {
    const app = await buildApp(t)
    const body = Buffer.from('{"jobId":1,"eventType":"JobAssigned","jobName":"x","jobStatus":"Assigned"}')
    await assertLogged(t, app, await post(app, body), body, { jobId: 1 })
  })

  // JSON has one number type: 5.0 and 5e0 are the integer 5. Current behaviour, asserted.
  t.test('5.0 and 5e0 are the integer 5: 200', async (t) => {
    const app = await buildApp(t)
    for (const literal of ['5.0', '5e0', '0.5e1']) {
      const res = await post(app, Buffer.from(`{"jobId":${literal},"eventType":"JobAssigned","jobName":"x","jobStatus":"Assigned"}`))
      t.equal(res.statusCode, 200, literal)
      t.equal(res.json().jobId, 5)
    }
    t.same((await logRows(app)).map((row) => row.jobId), [5, 5, 5])
  })
})

t.test('NUL, emoji and right-to-left text in jobName come back byte for byte', async (t) => {
  const names: Array<{ name: string; jobName: string }> = [
    { name: 'a NUL in the middle', jobName: 'Open\u0000House' },
    { name: 'only NULs', jobName: '\u0000\u0000\u0000' },
    { name: 'a trailing NUL', jobName: 'Open House\u0000' },
    { name: 'emoji, a ZWJ family and a flag', jobName: '🏠 Open House 👨‍👩‍👧‍👦 🇺🇸' },
    { name: 'a right-to-left override', jobName: '\u202EesuoH nepO\u202C at 123 Main St' },
    { name: 'Hebrew', jobName: 'בית פתוח ברחוב הראשי 123' },
    { name: 'Arabic with isolates and marks', jobName: '\u2067منزل مفتوح\u2069 \u200F123\u200E' },
    { name: 'combining marks and a BOM in the middle', jobName: 'Ope\u0301n\uFEFF Hou\u0308se' },
    { name: 'the last code point and C0/C1 controls', jobName: '\u{10FFFF}\u0001\u001F\u007F\u0085' }
  ]
  for (const [index, { name, jobName }] of names.entries()) {
    t.test(name, async (t) => {
      const app = await buildApp(t)
      const jobId = 100 + index
      const body = bytesOf(assigned(jobId, { name: jobName }))
      await assertLogged(t, app, await post(app, body), body, { outcome: 'applied', seq: 1, jobId, status: 'Assigned' })
      const [row] = await logRows(app)
      t.equal(row?.jobName, jobName, 'the log row holds the name')
      const job = await getJob(app, jobId)
      t.equal(job.statusCode, 200)
      t.ok(Buffer.from(job.json().jobName, 'utf8').equals(Buffer.from(jobName, 'utf8')), 'GET /jobs/:jobId returns the name byte for byte')
      t.equal(job.json().jobName, jobName)
      const events = await app.inject({ method: 'GET', url: `/jobs/${jobId}/events` })
      t.equal(events.json().events[0]?.jobName, jobName, 'and so does GET /jobs/:jobId/events')
    })
  }

  t.test('the same in guardianPhone and eventType', async (t) => {
    const app = await buildApp(t)
    const body = bytesOf({ jobId: 120, eventType: 'Job\u0000Assigned 🏠', jobName: 'x', jobStatus: 'Assigned' })
    await assertLogged(t, app, await post(app, body), body, { outcome: 'unsupported', jobId: 120 })
    t.equal((await logRows(app))[0]?.eventType, 'Job\u0000Assigned 🏠')
    const phone = bytesOf(assigned(121, { phone: '+1\u0000555\u202E🏠' }))
    t.equal((await post(app, phone)).statusCode, 200)
    t.equal((await getJob(app, 121)).json().guardianPhone, '+1\u0000555\u202E🏠')
  })

  t.test('a raw NUL byte inside a JSON string is not JSON: 400, quarantined', async (t) => {
    const app = await buildApp(t)
    const body = Buffer.from('{"jobId":122,"eventType":"JobAssigned","jobName":"Open\u0000House","jobStatus":"Assigned"}', 'utf8')
    t.ok(body.includes(0), 'the body holds a 0x00 byte')
    await assertQuarantined(t, app, await post(app, body), body, { status: 400, detail: 'not JSON' })
  })

  t.test('an overlong UTF-8 NUL (C0 80) is not UTF-8: 400, quarantined', async (t) => {
    const app = await buildApp(t)
    const body = Buffer.concat([Buffer.from('{"jobId":123,"eventType":"JobAssigned","jobName":"a'), Buffer.from([0xc0, 0x80]), Buffer.from('","jobStatus":"Assigned"}')])
    await assertQuarantined(t, app, await post(app, body), body, { status: 400, detail: 'not UTF-8' })
  })

  t.test('a UTF-16 body with a BOM is not UTF-8: 400, quarantined', async (t) => {
    const app = await buildApp(t)
    const body = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(JSON.stringify(assigned(124)), 'utf16le')])
    await assertQuarantined(t, app, await post(app, body), body, { status: 400, detail: 'not UTF-8' })
  })

  // Current behaviour, asserted: a UTF-8 byte order mark before the JSON is skipped, and the
  // bytes, BOM included, are what is signed and logged.
  t.test('a UTF-8 BOM before the JSON: 200, logged with the BOM', async (t) => {
    const app = await buildApp(t)
    const body = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytesOf(assigned(125))])
    await assertLogged(t, app, await post(app, body), body, { outcome: 'applied', jobId: 125 })
  })

  // A lone surrogate escape is valid JSON (RFC 8259 §8.2 leaves its meaning to the receiver),
  // but not text: SQLite would store U+FFFD in its place, and the row would no longer match its
  // raw body (the audit would call it tampered). So it is refused, with the body kept.
  t.test('a lone surrogate escape in a string field: 422, quarantined', async (t) => {
    const app = await buildApp(t)
    for (const field of ['jobName', 'eventType', 'guardianPhone']) {
      const payload = { jobId: 126, eventType: 'JobAssigned', jobName: 'Open House', jobStatus: 'Assigned', guardianPhone: '+1555' }
      const body = Buffer.from(JSON.stringify(payload).replace(`"${field}":"`, `"${field}":"a\\ud800b`))
      const res = await post(app, body)
      t.equal(res.statusCode, 422, `${field}: 422`)
      t.match(res.json(), { code: 'FST_G2SENTRY_INVALID_PAYLOAD', message: new RegExp(`/${field} is not well-formed Unicode`) })
    }
    t.equal((await logRows(app)).length, 0, 'nothing logged')
    t.equal((await app.g2sentry.store.listQuarantine({ limit: 10 })).length, 3, 'all three quarantined')
    const paired = Buffer.from('{"jobId":127,"eventType":"JobAssigned","jobName":"a\\ud83d\\ude00b","jobStatus":"Assigned"}')
    t.equal((await post(app, paired)).statusCode, 200, 'a surrogate pair (an emoji) is fine')
    t.equal((await getJob(app, 127)).json().jobName, 'a😀b')
  })
})

t.test('SQL in every string field is data, and the tables are intact afterwards', async (t) => {
  const file = join(t.testdir(), 'g2.db')
  const app = await buildApp(t, { database: file })
  const reader = new Database(file, { readonly: true })
  t.teardown(() => reader.close())
  const schema = () => reader.prepare("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name").all()
  const schemaBefore = schema()
  t.ok(schemaBefore.length >= 3, 'the tables exist to begin with')

  const SQL = [
    "'); DROP TABLE events; --",
    '"); DROP TABLE jobs; --',
    "' OR '1'='1",
    "Robert'); DELETE FROM quarantine; UPDATE jobs SET status = 'Completed'; --",
    '1; ATTACH DATABASE \'/tmp/pwned.db\' AS pwned; --'
  ]

  let jobId = 200
  let logged = 0
  let quarantined = 0
  for (const sql of SQL) {
    t.test(`eventType ${JSON.stringify(sql)}: 200 unsupported`, async (t) => {
      const id = ++jobId
      const res = await post(app, { jobId: id, eventType: sql, jobName: 'x', jobStatus: 'Assigned' })
      t.equal(res.statusCode, 200)
      t.same(res.json(), { outcome: 'unsupported', seq: ++logged, jobId: id, status: null })
      t.equal((await app.g2sentry.store.readLog({ afterSeq: logged - 1, limit: 1 }))[0]?.eventType, sql)
    })
    t.test(`jobName ${JSON.stringify(sql)}: 200 applied, returned as given`, async (t) => {
      const id = ++jobId
      const res = await post(app, assigned(id, { name: sql }))
      t.equal(res.statusCode, 200)
      t.same(res.json(), { outcome: 'applied', seq: ++logged, jobId: id, status: 'Assigned' })
      t.equal((await getJob(app, id)).json().jobName, sql)
    })
    t.test(`guardianPhone ${JSON.stringify(sql)}: 200 applied, returned as given`, async (t) => {
      const id = ++jobId
      const res = await post(app, assigned(id, { phone: sql }))
      t.equal(res.statusCode, 200)
      t.same(res.json(), { outcome: 'applied', seq: ++logged, jobId: id, status: 'Assigned' })
      t.equal((await getJob(app, id)).json().guardianPhone, sql)
    })
    t.test(`jobStatus ${JSON.stringify(sql)}: 422, quarantined`, async (t) => {
      const id = ++jobId
      const body = bytesOf({ jobId: id, eventType: 'JobAssigned', jobName: 'x', jobStatus: sql })
      const res = await post(app, body)
      t.equal(res.statusCode, 422)
      t.equal(res.json().code, 'FST_G2SENTRY_INVALID_PAYLOAD')
      const row = (await app.g2sentry.store.listQuarantine({ afterId: quarantined++, limit: 1 }))[0]
      t.ok(row?.rawBody.equals(body), 'quarantined byte for byte')
      t.equal((await getJob(app, id)).statusCode, 404)
    })
    t.test(`an extra key ${JSON.stringify(sql)}: 200 applied`, async (t) => {
      const id = ++jobId
      const res = await post(app, { ...assigned(id), [sql]: sql })
      t.equal(res.statusCode, 200)
      t.equal(res.json().seq, ++logged)
    })
    t.test(`a Content-Type parameter ${JSON.stringify(sql)} on a body that is not JSON: 400, the header kept as data`, async (t) => {
      const contentType = `application/json; x=${JSON.stringify(sql)}`
      const body = Buffer.from(`{"jobId":${++jobId},`)
      const res = await post(app, body, { contentType })
      t.equal(res.statusCode, 400)
      t.equal(res.json().code, 'FST_G2SENTRY_INVALID_JSON')
      const row = (await app.g2sentry.store.listQuarantine({ afterId: quarantined++, limit: 1 }))[0]
      t.equal(row?.contentType, contentType)
      t.ok(row?.rawBody.equals(body))
    })
  }

  t.test('SQL in the GET routes\' parameters is refused by their schema', async (t) => {
    for (const url of [`/jobs/${encodeURIComponent("1' OR '1'='1")}`, `/jobs/${encodeURIComponent('1; DROP TABLE jobs')}/events`, `/jobs?status=${encodeURIComponent("Assigned' OR 1=1 --")}`]) {
      const res = await app.inject({ method: 'GET', url })
      t.equal(res.statusCode, 400, url)
      t.equal(res.json().code, 'FST_G2SENTRY_INVALID_REQUEST')
    }
  })

  t.test('afterwards: same schema, integrity ok, every row where it should be, projection rebuildable', async (t) => {
    t.same(schema(), schemaBefore, 'no table, index or trigger was added, changed or dropped')
    t.equal(reader.pragma('integrity_check', { simple: true }), 'ok')
    const log = await app.g2sentry.store.readLog({ limit: 1000 })
    t.equal(log.length, logged, 'every accepted delivery is in the log')
    t.equal(log.length, SQL.length * 4)
    t.equal((await app.g2sentry.store.listQuarantine({ limit: 1000 })).length, quarantined, 'every quarantined body is there')
    t.equal(quarantined, SQL.length * 2)
    const jobs = await app.inject({ method: 'GET', url: '/jobs?limit=500' })
    t.ok(jobs.json().jobs.every((job: { status: string }) => job.status === 'Assigned'), 'no status was changed by a string')
    t.equal(jobs.json().jobs.length, SQL.length * 3)
    const report = await app.g2sentry.store.rebuild({ dryRun: true })
    t.same(report.differingJobs, [], 'the projection equals a rebuild from the log')
    t.same(report.outcomeMismatches, [])
  })
})

t.test('content types', async (t) => {
  const refused = [
    'text/plain',
    'text/plain; charset=utf-8',
    'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=----x',
    'application/json-patch+json',
    'application/vnd.api+json',
    'text/json',
    'application/jsonx',
    'application/json, text/plain',
    'application/octet-stream'
  ]
  for (const contentType of refused) {
    t.test(`${contentType}: 415 signed or not, nothing kept`, async (t) => {
      const app = await buildApp(t)
      const body = bytesOf(assigned(301))
      for (const options of [{ contentType }, { contentType, signature: null }, { contentType, secret: 'wrong' }]) {
        const res = await post(app, body, options)
        t.equal(res.statusCode, 415)
        t.match(res.json(), { statusCode: 415, code: 'FST_G2SENTRY_UNSUPPORTED_MEDIA_TYPE' })
      }
      await assertNothingKept(t, app)
    })
  }

  const accepted = [
    'application/json; charset=utf-8',
    'application/json;charset=UTF-8',
    'APPLICATION/JSON',
    'Application/Json; Charset=UTF-8',
    'application/json ; charset=utf-8'
  ]
  for (const contentType of accepted) {
    t.test(`${contentType}: JSON, 200`, async (t) => {
      const app = await buildApp(t)
      const body = bytesOf(assigned(302, { name: 'Casa 🏡' }))
      const res = await post(app, body, { contentType })
      await assertLogged(t, app, res, body, { outcome: 'applied', jobId: 302 })
      t.equal((await post(app, body, { contentType, signature: null })).statusCode, 401, 'and 401 unsigned')
      t.equal((await logRows(app)).length, 1)
    })
  }

  // Current behaviour, asserted: the charset parameter is not read. The signed bytes are always
  // decoded as UTF-8, so a latin1-labelled body is accepted when its bytes are UTF-8 (ASCII) and
  // quarantined as "not UTF-8" when they are not.
  t.test('application/json; charset=latin1: the bytes are read as UTF-8 whatever the label', async (t) => {
    const contentType = 'application/json; charset=latin1'
    const app = await buildApp(t)
    const ascii = bytesOf(assigned(303))
    await assertLogged(t, app, await post(app, ascii, { contentType }), ascii, { outcome: 'applied', jobId: 303 })
    const latin1 = Buffer.from(JSON.stringify(assigned(304, { name: 'Café' })), 'latin1')
    const res = await post(app, latin1, { contentType })
    t.equal(res.statusCode, 400)
    t.equal(res.json().code, 'FST_G2SENTRY_INVALID_JSON')
    const rows = await quarantineRows(app)
    t.equal(rows.length, 1)
    t.match(rows[0], { reason: 'invalid_json', detail: 'not UTF-8', contentType })
    t.ok(rows[0]?.rawBody.equals(latin1))
  })
})

t.test('X-Signature variants', async (t) => {
  const body = bytesOf(assigned(401, { phone: PHONE }))
  const hex = signBody(body, SECRET)

  t.test('upper-case hex: 200', async (t) => {
    const app = await buildApp(t)
    await assertLogged(t, app, await post(app, body, { signature: hex.toUpperCase() }), body, { outcome: 'applied', jobId: 401 })
    t.equal((await logRows(app))[0]?.signature, hex.toUpperCase(), 'the header is logged as received')
  })

  t.test('mixed-case hex: 200', async (t) => {
    const app = await buildApp(t)
    const mixed = [...hex].map((c, i) => (i % 2 === 0 ? c.toUpperCase() : c)).join('')
    await assertLogged(t, app, await post(app, body, { signature: mixed }), body, { outcome: 'applied', jobId: 401 })
  })

  const refused: Array<{ name: string; signature: string }> = [
    { name: 'a "sha256=" prefix', signature: `sha256=${hex}` },
    { name: 'a "SHA256=" prefix', signature: `SHA256=${hex.toUpperCase()}` },
    { name: 'a space inside', signature: `${hex.slice(0, 32)} ${hex.slice(32)}` },
    { name: 'hex in groups separated by colons', signature: hex.match(/../g)?.join(':') ?? '' },
    { name: 'a leading space (kept as sent by inject)', signature: ` ${hex}` },
    { name: 'a trailing space (kept as sent by inject)', signature: `${hex} ` },
    { name: 'two signatures joined by ", "', signature: `${hex}, ${hex}` },
    { name: 'a "0x" prefix', signature: `0x${hex}` },
    { name: 'full-width hex digits', signature: [...hex].map((c) => String.fromCharCode(c.charCodeAt(0) + 0xfee0)).join('') }
  ]
  for (const { name, signature } of refused) {
    t.test(`${name}: 401 FST_G2SENTRY_BAD_SIGNATURE, nothing kept`, async (t) => {
      const app = await buildApp(t)
      await assertRefused(t, app, await post(app, body, { signature }), { status: 401, code: 'FST_G2SENTRY_BAD_SIGNATURE' })
    })
  }

  // Over HTTP, optional whitespace around a field value is not part of it (RFC 9110 §5.5): the
  // server's parser strips it, and what the route sees is exactly 64 hex digits.
  t.test('over a socket, spaces and tabs around the value are not part of it: 200', async (t) => {
    const { app, port } = await listening(t)
    const res = await rawPost(port, {
      headers: ['Content-Type: application/json', `Content-Length: ${body.length}`, `X-Signature: \t ${hex} \t`],
      chunks: [body]
    })
    t.equal(res.statusCode, 200)
    t.equal(res.json().outcome, 'applied')
    const rows = await logRows(app)
    t.equal(rows.length, 1)
    t.equal(rows[0]?.signature, hex, 'the value is logged without the whitespace')
  })

  t.test('over a socket, a space inside the value: 401', async (t) => {
    const { app, port } = await listening(t)
    const res = await rawPost(port, {
      headers: ['Content-Type: application/json', `Content-Length: ${body.length}`, `X-Signature: ${hex.slice(0, 10)} ${hex.slice(10)}`],
      chunks: [body]
    })
    await assertRefused(t, app, res, { status: 401, code: 'FST_G2SENTRY_BAD_SIGNATURE' })
  })

  t.test('over a socket, the hex as full-width UTF-8 digits: 401', async (t) => {
    const { app, port } = await listening(t)
    const wide = [...hex].map((c) => String.fromCharCode(c.charCodeAt(0) + 0xfee0)).join('')
    const res = await rawPost(port, {
      headers: ['Content-Type: application/json', `Content-Length: ${body.length}`, `X-Signature: ${wide}`],
      chunks: [body]
    })
    await assertRefused(t, app, res, { status: 401, code: 'FST_G2SENTRY_BAD_SIGNATURE' })
  })

  const twice: Array<{ name: string; headers: string[] }> = [
    { name: 'both right', headers: [`X-Signature: ${hex}`, `X-Signature: ${hex}`] },
    { name: 'the first wrong, the second right', headers: [`X-Signature: ${signBody(body, 'wrong')}`, `X-Signature: ${hex}`] },
    { name: 'the first right, the second wrong', headers: [`X-Signature: ${hex}`, `X-Signature: ${signBody(body, 'wrong')}`] },
    { name: 'the first right, the second empty', headers: [`X-Signature: ${hex}`, 'X-Signature: '] },
    { name: 'differently cased names, both right', headers: [`X-Signature: ${hex}`, `x-signature: ${hex.toUpperCase()}`] }
  ]
  for (const { name, headers } of twice) {
    t.test(`two X-Signature headers over a socket, ${name}: 401, nothing kept`, async (t) => {
      const { app, port } = await listening(t)
      const res = await rawPost(port, {
        headers: ['Content-Type: application/json', `Content-Length: ${body.length}`, ...headers],
        chunks: [body]
      })
      await assertRefused(t, app, res, { status: 401, code: 'FST_G2SENTRY_BAD_SIGNATURE' })
      t.equal((await getJob(app, 401)).statusCode, 404, 'no projection')
    })
  }
})
