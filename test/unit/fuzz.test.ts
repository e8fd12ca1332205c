// Fuzzing POST /callbacks/g2sentry with fast-check ("Prove it under faults", item 4): arbitrary
// bytes, arbitrary JSON and callback-shaped JSON with wrong types, duplicate and prototype keys,
// each sent signed, unsigned or wrongly signed. Whatever arrives:
// - the server never answers 5xx, except 503 for a storage fault;
// - an unsigned (or wrongly signed) body is refused with 401 and changes neither log nor quarantine;
// - a signed body is either logged (200: exactly one new log row holding exactly its bytes) or
//   quarantined (400 / 422: exactly one new quarantine row holding exactly its bytes), and which
//   of the three it gets is what the input table of docs/design.md says for that body.
import t from 'tap'
import type { Test } from 'tap'
import Database from 'better-sqlite3'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import fc from 'fast-check'
import { join } from 'node:path'
import { sqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { JOB_STATUSES, SUPPORTED_EVENT_TYPES } from '../../src/domain/types.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { buildApp, CALLBACK_PATH, SECRET } from '../helpers/helpers.js'

type Signing = 'signed' | 'unsigned' | 'wrong secret' | 'garbage header'

interface Delivery {
  bytes: Buffer
  signing: Signing
}

/** A delivery that prints as its signing and its bytes (as text when they are UTF-8, else hex). */
function delivery (bytes: Uint8Array | Buffer | string, signing: Signing): Delivery {
  const body = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : Buffer.from(bytes)
  return {
    bytes: body,
    signing,
    [fc.toStringMethod]: () => {
      const text = body.toString('utf8')
      const shown = Buffer.from(text, 'utf8').equals(body) ? JSON.stringify(text) : `hex ${body.toString('hex')}`
      return `${signing} ${body.length} bytes ${shown}`
    }
  } as Delivery
}

const signing = fc.constantFrom<Signing>('signed', 'signed', 'unsigned', 'wrong secret', 'garbage header')

function send (app: FastifyInstance, { bytes, signing }: Delivery): Promise<LightMyRequestResponse> {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (signing === 'signed') headers['x-signature'] = signBody(bytes, SECRET)
  if (signing === 'wrong secret') headers['x-signature'] = signBody(bytes, 'not-the-secret')
  if (signing === 'garbage header') headers['x-signature'] = `sha256=${signBody(bytes, SECRET)}`
  return app.inject({ method: 'POST', url: CALLBACK_PATH, headers, payload: bytes })
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })
const statuses: readonly string[] = JOB_STATUSES
const supported: readonly string[] = SUPPORTED_EVENT_TYPES

interface Expected {
  status: 200 | 400 | 422
  event?: { jobId: number; eventType: string; jobName: string; jobStatus: string; guardianPhone: string | null }
}

/**
 * What the input table says a signed body gets, worked out independently of the plugin: 400 when
 * the bytes are not UTF-8 JSON, 422 when the JSON is not a callback, else 200 with these fields.
 */
function oracle (bytes: Buffer): Expected {
  let value: unknown
  try {
    value = JSON.parse(strictUtf8.decode(bytes))
  } catch {
    return { status: 400 }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return { status: 422 }
  const own = (key: string): unknown => Object.prototype.hasOwnProperty.call(value, key) ? (value as Record<string, unknown>)[key] : undefined
  const jobId = own('jobId')
  const eventType = own('eventType')
  const jobName = own('jobName')
  const jobStatus = own('jobStatus')
  const guardianPhone = own('guardianPhone')
  const hasPhone = Object.prototype.hasOwnProperty.call(value, 'guardianPhone')
  const valid =
    typeof jobId === 'number' && Number.isSafeInteger(jobId) && jobId >= 1 &&
    typeof eventType === 'string' && eventType.length > 0 &&
    typeof jobName === 'string' &&
    typeof jobStatus === 'string' && statuses.includes(jobStatus) &&
    (!hasPhone || typeof guardianPhone === 'string')
  if (!valid) return { status: 422 }
  return { status: 200, event: { jobId, eventType, jobName, jobStatus, guardianPhone: hasPhone ? guardianPhone as string : null } }
}

/** The log and quarantine rows added since the last call. */
function tracker (app: FastifyInstance) {
  let lastSeq = 0
  let lastId = 0
  return async () => {
    const log = await app.g2sentry.store.readLog({ afterSeq: lastSeq, limit: 10 })
    const quarantine = await app.g2sentry.store.listQuarantine({ afterId: lastId, limit: 10 })
    lastSeq = log.at(-1)?.seq ?? lastSeq
    lastId = quarantine.at(-1)?.id ?? lastId
    return { log, quarantine }
  }
}

function fail (message: string, res: LightMyRequestResponse): never {
  throw new Error(`${message}; answered ${res.statusCode} ${res.body}`)
}

/** Sends one delivery and checks the answer and the store against the properties above; returns the status. */
async function check (app: FastifyInstance, added: ReturnType<typeof tracker>, input: Delivery): Promise<number> {
  const res = await send(app, input)
  const { log, quarantine } = await added()
  if (res.statusCode >= 500) fail('a 5xx without any storage fault', res)
  if (({} as Record<string, unknown>).polluted !== undefined) fail('Object.prototype was polluted', res)

  if (input.signing !== 'signed') {
    const code = input.signing === 'unsigned' ? 'FST_G2SENTRY_MISSING_SIGNATURE' : 'FST_G2SENTRY_BAD_SIGNATURE'
    if (res.statusCode !== 401 || res.json().code !== code) fail(`expected 401 ${code} for an ${input.signing} body`, res)
    if (log.length !== 0 || quarantine.length !== 0) fail(`an ${input.signing} body was stored (${log.length} log, ${quarantine.length} quarantine rows)`, res)
    return res.statusCode
  }

  const expected = oracle(input.bytes)
  if (res.statusCode !== expected.status) fail(`expected ${expected.status}`, res)
  if (expected.status === 200) {
    if (log.length !== 1 || quarantine.length !== 0) fail(`expected one new log row and no quarantine row, got ${log.length} and ${quarantine.length}`, res)
    const [row] = log
    if (row === undefined || !row.rawBody.equals(input.bytes)) fail('the log row does not hold the exact bytes', res)
    const { jobId, eventType, jobName, jobStatus, guardianPhone } = row
    const logged = { jobId, eventType, jobName, jobStatus, guardianPhone }
    if (JSON.stringify(logged) !== JSON.stringify(expected.event)) fail(`logged ${JSON.stringify(logged)}, the body says ${JSON.stringify(expected.event)}`, res)
    const answer = res.json()
    if (answer.seq !== row.seq || answer.jobId !== jobId || answer.outcome !== row.outcome) fail(`the answer does not describe log row ${row.seq} (${row.outcome})`, res)
    if ((answer.outcome === 'unsupported') !== !supported.includes(eventType)) fail(`outcome ${answer.outcome} for event type ${JSON.stringify(eventType)}`, res)
    return res.statusCode
  }
  const code = expected.status === 400 ? 'FST_G2SENTRY_INVALID_JSON' : 'FST_G2SENTRY_INVALID_PAYLOAD'
  const reason = expected.status === 400 ? 'invalid_json' : 'invalid_payload'
  if (res.json().code !== code) fail(`expected ${code}`, res)
  if (log.length !== 0 || quarantine.length !== 1) fail(`expected no log row and one quarantine row, got ${log.length} and ${quarantine.length}`, res)
  const [row] = quarantine
  if (row === undefined || !row.rawBody.equals(input.bytes)) fail('the quarantine row does not hold the exact bytes', res)
  if (row.reason !== reason || row.signature !== signBody(input.bytes, SECRET)) fail(`quarantined as ${row.reason} with signature ${row.signature}`, res)
  return res.statusCode
}

/** A failed property as one test failure: fast-check's summary as its name, the whole report (counterexample, seed, error) below it. */
function reportFailure (t: Test, error: unknown): void {
  const message = error instanceof Error ? error.message : String(error)
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause.message : undefined
  t.fail(message.split('\n')[0] ?? message, { report: message.split('\n'), error: cause })
}

/**
 * Runs `arbitrary` through `check` on a fresh app; a counterexample fails the test with
 * fast-check's report. `atLeast` says how many answers of each status the run must have seen,
 * so that a generator gone degenerate is noticed.
 */
async function fuzz (t: Test, arbitrary: fc.Arbitrary<Delivery>, numRuns: number, atLeast: Partial<Record<200 | 400 | 401 | 422, number>>): Promise<void> {
  const app = await buildApp(t)
  const added = tracker(app)
  const seen = new Map<number, number>()
  let sent = 0
  try {
    await fc.assert(fc.asyncProperty(arbitrary, async (input) => {
      sent++
      const status = await check(app, added, input)
      seen.set(status, (seen.get(status) ?? 0) + 1)
    }), { numRuns })
    t.pass(`${numRuns} deliveries, every one answered and stored as the input table says`)
  } catch (error) {
    reportFailure(t, error)
    return
  }
  const counts = Object.fromEntries([...seen].sort(([a], [b]) => a - b))
  t.comment(`answers: ${JSON.stringify(counts)}`)
  for (const [status, least] of Object.entries(atLeast)) {
    t.ok((seen.get(Number(status)) ?? 0) >= least, `at least ${least} answers ${status} (${seen.get(Number(status)) ?? 0})`)
  }
  const all = await app.g2sentry.store.readLog({ limit: 10_000 })
  t.ok(all.every((row) => row.signature === signBody(row.rawBody, SECRET)), 'every logged body carries its own valid signature')
  const quarantined = await app.g2sentry.store.listQuarantine({ limit: 10_000 })
  t.ok(quarantined.every((row) => row.signature === signBody(row.rawBody, SECRET)), 'every quarantined body carries its own valid signature')
  t.ok(all.length + quarantined.length <= sent, 'no more rows than deliveries')
  const report = await app.g2sentry.store.rebuild({ dryRun: true })
  t.same(report.differingJobs, [], 'the projection still equals a rebuild from the log')
  t.same(report.outcomeMismatches, [])
}

// ---------------------------------------------------------------------------------------------
// Generators

/** A JSON text fragment for a value of any type, including number literals JSON.stringify never writes. */
const anyJsonText: fc.Arbitrary<string> = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }).map((value) => JSON.stringify(value)),
  fc.constantFrom('1e400', '-1e400', '-0', '5.0', '1E1', '9007199254740993', '9007199254740991', '0.1e1', '1' + '0'.repeat(30)),
  fc.string({ unit: 'binary', maxLength: 12 }).map((value) => JSON.stringify(value))
)

const str = (arbitrary: fc.Arbitrary<string>): fc.Arbitrary<string> => arbitrary.map((value) => JSON.stringify(value))

/** Each callback field: mostly a right value, sometimes a wrong one. */
const fields = {
  jobId: fc.oneof(
    { weight: 14, arbitrary: fc.integer({ min: 1, max: 30 }).map(String) },
    { weight: 1, arbitrary: fc.constantFrom(String(Number.MAX_SAFE_INTEGER), '0', '-1', '1.5', String(2 ** 53), '"5"', 'null', '1e400', '2.0') },
    { weight: 1, arbitrary: anyJsonText }
  ),
  eventType: fc.oneof(
    { weight: 14, arbitrary: str(fc.constantFrom(...SUPPORTED_EVENT_TYPES, 'JobGuardianRate', 'NewJob')) },
    { weight: 1, arbitrary: str(fc.string({ unit: 'binary', maxLength: 20 })) },
    { weight: 1, arbitrary: anyJsonText }
  ),
  jobName: fc.oneof(
    { weight: 8, arbitrary: str(fc.string({ unit: 'grapheme', maxLength: 20 })) },
    { weight: 4, arbitrary: str(fc.string({ unit: 'binary', maxLength: 20 })) },
    { weight: 2, arbitrary: str(fc.constantFrom("'); DROP TABLE events; --", 'a\u0000b', '\u202Eevil\u202C')) },
    { weight: 1, arbitrary: anyJsonText }
  ),
  jobStatus: fc.oneof(
    { weight: 14, arbitrary: str(fc.constantFrom(...JOB_STATUSES)) },
    { weight: 1, arbitrary: str(fc.constantFrom('assigned', 'Done', '', 'Assigned ', "'); DROP TABLE jobs; --")) },
    { weight: 1, arbitrary: anyJsonText }
  ),
  guardianPhone: fc.oneof(
    { weight: 10, arbitrary: str(fc.stringMatching(/^\+1\d{10}$/)) },
    { weight: 3, arbitrary: str(fc.string({ unit: 'binary', maxLength: 12 })) },
    { weight: 1, arbitrary: anyJsonText }
  )
}

/** An extra member: unknown keys, prototype keys, or a second copy of a callback field. */
const extraMember: fc.Arbitrary<[string, string]> = fc.tuple(
  fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom('__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString', "'; DROP TABLE quarantine; --") },
    { weight: 1, arbitrary: fc.constantFrom('jobId', 'eventType', 'jobName', 'jobStatus', 'guardianPhone') },
    { weight: 2, arbitrary: fc.string({ maxLength: 8 }) }
  ),
  fc.oneof(
    anyJsonText,
    fc.constant('{"polluted":"yes"}'),
    fc.constant('{"prototype":{"polluted":"yes"}}'),
    fc.constant('{"__proto__":{"polluted":"yes"}}')
  )
)

/** A JSON object text written member by member, so that keys can repeat and their order varies. */
const callbackText: fc.Arbitrary<string> = fc.tuple(
  fc.record(fields, { requiredKeys: ['jobId', 'eventType', 'jobName', 'jobStatus'] }),
  fc.array(extraMember, { maxLength: 3 }),
  fc.oneof(
    { weight: 7, arbitrary: fc.constant(undefined) },
    { weight: 1, arbitrary: fc.constantFrom('jobId', 'eventType', 'jobName', 'jobStatus', 'guardianPhone') }
  ),
  fc.nat()
).map(([record, extras, dropped, seed]) => {
  const members: Array<[string, string]> = Object.entries(record).filter(([key]) => key !== dropped)
  for (const [offset, extra] of extras.entries()) members.splice((seed + offset * 7) % (members.length + 1), 0, extra)
  return `{${members.map(([key, value]) => `${JSON.stringify(key)}:${value}`).join(',')}}`
})

// ---------------------------------------------------------------------------------------------

t.test('arbitrary bytes, signed and unsigned', async (t) => {
  await fuzz(t, fc.tuple(fc.uint8Array({ maxLength: 2048 }), signing).map(([bytes, how]) => delivery(bytes, how)), 300, { 400: 50, 401: 50 })
})

t.test('arbitrary JSON text (fc.json), signed and unsigned', async (t) => {
  await fuzz(t, fc.tuple(fc.json({ maxDepth: 4 }), signing).map(([text, how]) => delivery(text, how)), 250, { 401: 50, 422: 50 })
})

t.test('arbitrary JSON values (fc.jsonValue, unicode strings), signed and unsigned', async (t) => {
  await fuzz(t, fc.tuple(fc.jsonValue({ maxDepth: 4, stringUnit: 'binary' }), signing).map(([value, how]) => delivery(JSON.stringify(value) ?? 'null', how)), 250, { 401: 50, 422: 50 })
})

t.test('callback-shaped JSON: wrong types, missing fields, duplicate and prototype keys, signed and unsigned', async (t) => {
  await fuzz(t, fc.tuple(callbackText, signing).map(([text, how]) => delivery(text, how)), 300, { 200: 40, 401: 50, 422: 40 })
})

t.test('near-misses: a callback with a few bytes changed, inserted or cut, signed and unsigned', async (t) => {
  const mutated = fc.tuple(callbackText, fc.array(fc.tuple(fc.nat(), fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) }), fc.constantFrom('set', 'set', 'set', 'insert', 'cut')), { minLength: 1, maxLength: 2 }), signing)
    .map(([text, edits, how]) => {
      let bytes = Buffer.from(text, 'utf8')
      for (const [at, byte, kind] of edits) {
        const index = at % (bytes.length + 1)
        if (kind === 'set' && index < bytes.length) bytes[index] = byte
        else if (kind === 'insert') bytes = Buffer.concat([bytes.subarray(0, index), Buffer.from([byte]), bytes.subarray(index)])
        else bytes = bytes.subarray(0, index)
      }
      return delivery(bytes, how)
    })
  await fuzz(t, mutated, 250, { 400: 20, 401: 50 })
})

// With the database locked by another connection, every signed body needs a write that cannot
// happen: it must get 503 and leave nothing behind; unsigned ones are refused before any write.
t.test('under a storage fault: 503 for signed bodies, 401 for the rest, and nothing stored', async (t) => {
  const filename = join(t.testdir(), 'g2.db')
  const store = sqliteStore({ filename, busyTimeout: 1 })
  t.teardown(() => store.close())
  const app = await buildApp(t, { store })
  const blocker = new Database(filename)
  t.teardown(() => blocker.close())
  blocker.exec('BEGIN IMMEDIATE')
  const inputs = fc.tuple(fc.oneof(callbackText, fc.json({ maxDepth: 2 }), fc.uint8Array({ maxLength: 256 }).map((bytes) => Buffer.from(bytes).toString('latin1'))), signing)
    .map(([text, how]) => delivery(text, how))
  try {
    await fc.assert(fc.asyncProperty(inputs, async (input) => {
      const res = await send(app, input)
      const expected = input.signing === 'signed'
        ? { status: 503, code: 'FST_G2SENTRY_STORAGE_UNAVAILABLE' }
        : { status: 401, code: input.signing === 'unsigned' ? 'FST_G2SENTRY_MISSING_SIGNATURE' : 'FST_G2SENTRY_BAD_SIGNATURE' }
      if (res.statusCode !== expected.status || res.json().code !== expected.code) fail(`expected ${expected.status} ${expected.code}`, res)
    }), { numRuns: 100 })
    t.pass('100 deliveries under a locked database')
  } catch (error) {
    reportFailure(t, error)
  }
  blocker.exec('ROLLBACK')
  t.same(await app.g2sentry.store.readLog({ limit: 10 }), [], 'nothing in the log')
  t.same(await app.g2sentry.store.listQuarantine({ limit: 10 }), [], 'nothing in quarantine')
  const count = blocker.prepare('SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM jobs) AS jobs, (SELECT count(*) FROM quarantine) AS quarantine').get()
  t.same(count, { events: 0, jobs: 0, quarantine: 0 }, 'and nothing on disk')
})
