// g2sentry quarantine list|retry end to end: bodies quarantined by the plugin itself, and bodies
// "quarantined by an older, stricter version" (valid callbacks written straight into the
// quarantine), retried through the published CLI entry in a child process and through
// retryQuarantine, with the audit still passing afterwards.
import t from 'tap'
import { join } from 'node:path'
import { signBody, sqliteStore } from '../../src/index.js'
import { retryQuarantine } from '../../src/log/quarantine.js'
import { simulatedDeliveries } from '../../src/simulator/simulate.js'
import type { G2SentryStore } from '../../src/store/contract.js'
import type { QuarantineInput } from '../../src/domain/types.js'
import { openStore } from '../../src/store/open-store.js'
import { cliEnv, runCli } from '../helpers/cli-process.js'
import { assigned, buildApp, bytesOf, completed, post, SECRET, started } from '../helpers/helpers.js'
import { freshSchema, pgUrl, requirePg } from '../helpers/pg.js'

const lines = (text: string) => text.split('\n').filter((line) => line !== '')
const PHONE = '+15550001111'
const NOT_JSON = '{"jobId":301,'
const BAD_STATUS = { jobId: 302, eventType: 'JobAssigned', jobName: 'Night watch', jobStatus: 'Booked' }

/** A valid callback, as an older, stricter version would have quarantined it. */
function strictlyRefused (payload: object, receivedAt: number, secret = SECRET): QuarantineInput {
  const rawBody = bytesOf(payload)
  return {
    reason: 'invalid_payload',
    detail: '/guardianPhone Expected string to match \'^\\+1\\d{10}$\'',
    rawBody,
    signature: signBody(rawBody, secret),
    contentType: 'application/json; charset=utf-8',
    receivedAt
  }
}

/** Runs `fn` on the store `db` names (a SQLite file or a postgres:// URL), closed afterwards. */
async function withStore<T> (db: string, fn: (store: G2SentryStore) => Promise<T>): Promise<T> {
  const store = await openStore(db)
  try {
    return await fn(store)
  } finally {
    await store.close()
  }
}

t.test('quarantine list and retry on a real database', async (t) => {
  const dir = t.testdir()
  const db = join(dir, 'g2.db')
  const app = await buildApp(t, { database: db })
  for (const { payload } of simulatedDeliveries()) t.equal((await post(app, payload)).statusCode, 200)
  t.equal((await post(app, NOT_JSON)).statusCode, 400, 'a signed body that is not JSON: 400, quarantined')
  t.equal((await post(app, BAD_STATUS)).statusCode, 422, 'a signed body failing the schema: 422, quarantined')
  t.equal((await post(app, NOT_JSON, { secret: 'someone-else' })).statusCode, 401, 'an unsigned body: 401, not kept')
  await app.close()

  t.test('list shows the pending rows', async (t) => {
    const table = await runCli(['quarantine', 'list', '--db', db])
    t.equal(table.code, 0)
    t.equal(table.stderr, '')
    const out = lines(table.stdout)
    t.match(out[0], /^id\s+receivedAt\s+reason\s+detail\s+contentType\s+bytes\s+retriedSeq$/, 'a header')
    t.equal(out.length, 3, 'and the two quarantined bodies')
    t.match(out[1], new RegExp(`^1\\s+\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z\\s+invalid_json\\s+not JSON\\s+application/json\\s+${NOT_JSON.length}$`))
    t.match(out[2], new RegExp(`^2\\s+\\S+Z\\s+invalid_payload\\s+/jobStatus Expected union value\\s+application/json\\s+${bytesOf(BAD_STATUS).length}$`))

    const ndjson = await runCli(['quarantine', 'list', '--db', db, '--format', 'ndjson'])
    const rows = lines(ndjson.stdout).map((line) => JSON.parse(line) as Record<string, unknown>)
    t.match(rows, [
      { id: 1, reason: 'invalid_json', detail: 'not JSON', contentType: 'application/json', bytes: NOT_JSON.length, retriedSeq: null, body: NOT_JSON, signature: signBody(NOT_JSON, SECRET) },
      { id: 2, reason: 'invalid_payload', body: bytesOf(BAD_STATUS).toString(), retriedSeq: null }
    ], 'ndjson carries the body as text and the signature')
    t.notOk('bodyBase64' in (rows[0] ?? {}), 'no base64 copy of a UTF-8 body')
  })

  t.test('retry with the same schema appends nothing and says why', async (t) => {
    const before = await withStore(db, (store) => store.chainHead())
    const r = await runCli(['quarantine', 'retry', '--db', db, '--secret', SECRET])
    t.equal(r.code, 0)
    t.same(lines(r.stdout), [
      'id 1: still invalid (invalid_json: not JSON)',
      'id 2: still invalid (invalid_payload: /jobStatus Expected union value)',
      'retried: 0 appended, 2 still invalid, 0 unsigned'
    ])
    t.same(await withStore(db, (store) => store.chainHead()), before, 'the log did not grow')
    t.equal(lines((await runCli(['quarantine', 'list', '--db', db])).stdout).length, 3, 'both are still pending')
  })

  t.test('bodies a stricter version refused: retry appends them, once', async (t) => {
    // Job 401: assigned then started, both refused by the old schema (it wanted another phone
    // format); a completion for job 402 signed with a secret nobody configured.
    const firstSeen = Date.now() - 30 * 86_400_000
    const [assignId, startId, foreignId] = await withStore(db, async (store) => [
      await store.quarantine(strictlyRefused(assigned(401, { phone: PHONE, name: 'Warehouse, Dock 7' }), firstSeen)),
      await store.quarantine(strictlyRefused(started(401, { phone: PHONE, name: 'Warehouse, Dock 7' }), firstSeen + 60_000)),
      await store.quarantine(strictlyRefused(completed(402), firstSeen + 120_000, 'another-secret'))
    ])
    t.same([assignId, startId, foreignId], [3, 4, 5])

    const listed = await runCli(['quarantine', 'list', '--db', db])
    t.same(lines(listed.stdout).slice(1).map((line) => line.split(/\s+/)[0]), ['1', '2', '3', '4', '5'], 'five pending')

    const r = await runCli(['quarantine', 'retry', '--db', db, '--secret', 'old-secret', '--secret', SECRET])
    t.equal(r.code, 0, 'exit 0')
    t.same(lines(r.stdout), [
      'id 3: appended as seq 12 (job 401, applied)',
      'id 4: appended as seq 13 (job 401, applied)',
      'id 1: still invalid (invalid_json: not JSON)',
      'id 2: still invalid (invalid_payload: /jobStatus Expected union value)',
      'id 5: signed by none of the given secrets, not appended',
      'retried: 2 appended, 2 still invalid, 1 unsigned'
    ], 'what happened to each body')

    await withStore(db, async (store) => {
      const rows = await store.readLog({ afterSeq: 11, limit: 10 })
      t.equal(rows.length, 2, 'two rows appended, the foreign one not')
      t.match(rows[0], { seq: 12, jobId: 401, eventType: 'JobAssigned', outcome: 'applied', receivedAt: firstSeen, guardianPhone: PHONE },
        'the assignment, with the time it was first received')
      t.match(rows[1], { seq: 13, jobId: 401, eventType: 'JobStarted', outcome: 'applied', receivedAt: firstSeen + 60_000 })
      t.same(rows[0]?.rawBody, bytesOf(assigned(401, { phone: PHONE, name: 'Warehouse, Dock 7' })), 'the body byte for byte')
      t.equal(rows[0]?.signature, signBody(rows[0]?.rawBody as Buffer, SECRET), 'with the signature it arrived with')
      t.match(await store.getJob(401), { status: 'InProgress', guardianPhone: PHONE, version: 2 }, 'the projection took them in')
      t.equal(await store.getJob(402), undefined, 'the unsigned completion did not reach the projection')
      t.equal(await store.quarantineSize(), 3, 'three bodies still pending')
    })

    const pending = await runCli(['quarantine', 'list', '--db', db])
    t.same(lines(pending.stdout).slice(1).map((line) => line.split(/\s+/)[0]), ['1', '2', '5'], 'list no longer shows the retried ones')
    const all = lines((await runCli(['quarantine', 'list', '--db', db, '--all'])).stdout)
    t.same(all.slice(1).map((line) => line.split(/\s+/)[0]), ['1', '2', '3', '4', '5'], '--all shows every body')
    t.match(all[3], /\s12$/, 'with the seq a retried body became')
    t.match(all[4], /\s13$/)
    t.match(all[1], /\s\d+$/, 'and only the size where nothing was retried')
    const allNdjson = lines((await runCli(['quarantine', 'list', '--db', db, '--all', '--format', 'ndjson'])).stdout).map((line) => JSON.parse(line) as { id: number; retriedSeq: number | null })
    t.same(allNdjson.map((row) => [row.id, row.retriedSeq]), [[1, null], [2, null], [3, 12], [4, 13], [5, null]])

    const head = await withStore(db, (store) => store.chainHead())
    const again = await runCli(['quarantine', 'retry', '--db', db, '--secret', SECRET])
    t.equal(again.code, 0)
    t.match(again.stdout, /^retried: 0 appended, 2 still invalid, 1 unsigned$/m, 'a second retry appends nothing')
    t.same(await withStore(db, (store) => store.chainHead()), head, 'the log did not grow')

    const byId = await runCli(['quarantine', 'retry', '--db', db, '--secret', SECRET, '--id', '3', '--id', '5', '--id', '99'])
    t.equal(byId.code, 1, 'exit 1: an --id that is not in the quarantine')
    t.same(lines(byId.stdout), [
      'id 5: signed by none of the given secrets, not appended',
      'id 3: already retried as seq 12',
      'id 99: not in the quarantine',
      'retried: 0 appended, 0 still invalid, 1 unsigned'
    ])
    t.same(await withStore(db, (store) => store.chainHead()), head, 'still nothing appended')

    const audit = await runCli(['verify', '--db', db, '--secret', SECRET])
    t.equal(audit.code, 0, 'g2sentry verify still passes after the retries')
    t.match(audit.stdout, /^chain: ok, 13 rows linked$/m)
    t.match(audit.stdout, /^signatures: ok/m)
    t.match(audit.stdout, /^ok: /m)

    // A retried row keeps the time it was first received, far before its neighbours in seq.
    const early = await runCli(['export', '--db', db, '--to', new Date(firstSeen + 60_000).toISOString()])
    t.same(lines(early.stdout).map((line) => (JSON.parse(line) as { seq: number }).seq), [12, 13], 'an export by time finds them by that time')
  })

  t.test('the secret from the environment, and usage', async (t) => {
    const [fromEnv, noSecret, noSub, badSub, help, subHelp, mainHelp, badFormat, badId, noDb] = await Promise.all([
      runCli(['quarantine', 'retry', '--db', db, '--id', '5'], { env: cliEnv({ G2SENTRY_CALLBACK_SECRET: 'nobody', G2SENTRY_CALLBACK_SECRET_PREVIOUS: 'another-secret' }) }),
      runCli(['quarantine', 'retry', '--db', db]),
      runCli(['quarantine', '--db', db]),
      runCli(['quarantine', 'purge', '--db', db]),
      runCli(['quarantine', '--help']),
      runCli(['quarantine', 'retry', '--help']),
      runCli(['--help']),
      runCli(['quarantine', 'list', '--db', db, '--format', 'csv']),
      runCli(['quarantine', 'retry', '--db', db, '--secret', SECRET, '--id', 'x']),
      runCli(['quarantine', 'list'])
    ])
    t.equal(fromEnv.code, 0)
    t.same(lines(fromEnv.stdout), ['id 5: appended as seq 14 (job 402, applied)', 'retried: 1 appended, 0 still invalid, 0 unsigned'],
      '$G2SENTRY_CALLBACK_SECRET_PREVIOUS counts as a secret during a rotation')
    t.equal(noSecret.code, 2)
    t.match(noSecret.stderr, /quarantine retry needs the callback secret/)
    t.equal(noSub.code, 2)
    t.match(noSub.stderr, /quarantine needs a subcommand: list or retry/)
    t.equal(badSub.code, 2)
    t.match(badSub.stderr, /unknown quarantine subcommand "purge"/)
    t.equal(help.code, 0)
    t.match(help.stdout, /^Usage: g2sentry quarantine list +--db FILE\|URL/)
    t.match(subHelp.stdout, /^Usage: g2sentry quarantine list/, 'a subcommand\'s --help prints the usage too')
    t.match(mainHelp.stdout, /\n\s+quarantine\s/, 'the main usage lists quarantine')
    t.equal(badFormat.code, 2)
    t.match(badFormat.stderr, /--format must be table or ndjson/)
    t.equal(badId.code, 2)
    t.match(badId.stderr, /--id must be a whole number, got "x"/)
    t.equal(noDb.code, 2)
    t.match(noDb.stderr, /--db FILE\|URL is required/)
  })
})

t.test('retryQuarantine', async (t) => {
  t.test('a body appended but not marked (a crash in between) is marked, not appended again', async (t) => {
    const store = sqliteStore({ filename: join(t.testdir(), 'g2.db') })
    t.teardown(() => store.close())
    const entry = strictlyRefused(assigned(501, { phone: PHONE }), 1_000)
    const id = await store.quarantine(entry)
    // What a retry does before it records the seq.
    const { seq } = await store.append({ jobId: 501, eventType: 'JobAssigned', jobName: 'Open House at 123 Main St', jobStatus: 'Assigned', guardianPhone: PHONE, rawBody: entry.rawBody, signature: entry.signature, receivedAt: entry.receivedAt })
    // A live redelivery of the same body, received later: a delivery of its own, not this one.
    await store.append({ jobId: 501, eventType: 'JobAssigned', jobName: 'Open House at 123 Main St', jobStatus: 'Assigned', guardianPhone: PHONE, rawBody: entry.rawBody, signature: entry.signature, receivedAt: 2_000 })
    const report = await retryQuarantine(store, { secrets: [SECRET] })
    t.same(report.retried, [{ id, seq, jobId: 501, outcome: 'applied' }], 'reported with the row it already became')
    t.equal((await store.chainHead())?.seq, 2, 'nothing appended')
    t.equal((await store.listQuarantine({ limit: 10 }))[0]?.retriedSeq, seq, 'and marked')
  })

  t.test('two retries at once append each body once', async (t) => {
    const store = sqliteStore({ filename: join(t.testdir(), 'g2.db') })
    t.teardown(() => store.close())
    for (let jobId = 601; jobId <= 610; jobId++) await store.quarantine(strictlyRefused(assigned(jobId), jobId))
    const appended: number[] = []
    const [a, b] = await Promise.all([
      retryQuarantine(store, { secrets: [SECRET], onAppend: (r) => { appended.push(r.id) } }),
      retryQuarantine(store, { secrets: [SECRET], onAppend: (r) => { appended.push(r.id) } })
    ])
    t.equal(a.retried.length + b.retried.length, 10, 'ten bodies retried in all')
    t.equal((await store.chainHead())?.seq, 10, 'ten rows appended, none twice')
    t.same(appended.sort((x, y) => x - y), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'onAppend heard each once')
    t.equal(await store.quarantineSize(), 0)
  })

  t.test('two processes retrying the same quarantine at once append each body once', async (t) => {
    const file = join(t.testdir(), 'g2.db')
    const store = sqliteStore({ filename: file })
    for (let jobId = 801; jobId <= 840; jobId++) await store.quarantine(strictlyRefused(assigned(jobId), jobId))
    await store.close()
    const env = cliEnv({ G2SENTRY_CALLBACK_SECRET: SECRET })
    const runs = await Promise.all([1, 2].map(() => runCli(['quarantine', 'retry', '--db', file], { env })))
    t.same(runs.map((run) => run.code), [0, 0], `both exit 0 ${runs.map((run) => run.stderr).join('')}`)
    const appended = runs.flatMap((run) => lines(run.stdout).filter((line) => / appended as seq /.test(line)))
    t.equal(appended.length, 40, 'forty bodies appended between them')
    const reopened = sqliteStore({ filename: file })
    t.teardown(() => reopened.close())
    const rows = await reopened.readLog({ limit: 100 })
    t.equal(rows.length, 40, 'forty rows, none twice')
    t.same([...new Set(rows.map((row) => row.jobId))].length, 40)
    t.equal(await reopened.quarantineSize(), 0, 'every body marked')
    t.same((await reopened.listQuarantine({ limit: 100 })).map((row) => row.retriedSeq).sort((a, b) => (a ?? 0) - (b ?? 0)),
      rows.map((row) => row.seq), 'each marked with the row it became')
  })

  t.test('more pending bodies than one page, and an empty quarantine', async (t) => {
    const store = sqliteStore({ filename: join(t.testdir(), 'g2.db') })
    t.teardown(() => store.close())
    t.same(await retryQuarantine(store, { secrets: [SECRET] }), { retried: [], stillInvalid: [], unsigned: [], alreadyRetried: [], notFound: [], redacted: [] })
    for (let i = 0; i < 250; i++) await store.quarantine({ ...strictlyRefused({ jobId: 700 }, i), reason: 'invalid_payload' })
    const report = await retryQuarantine(store, { secrets: [SECRET] })
    t.equal(report.stillInvalid.length, 250, 'every page was read')
    t.match(report.stillInvalid[0], { id: 1, reason: 'invalid_payload', detail: /\/eventType|\/jobName|required/ })
  })
})

t.test('on PostgreSQL: retry, list and export through the CLI', async (t) => {
  if (!(await requirePg(t))) return
  const url = new URL(pgUrl())
  url.searchParams.set('schema', freshSchema(t))
  const db = url.href
  const app = await buildApp(t, { database: db })
  for (const { payload } of simulatedDeliveries()) t.equal((await post(app, payload)).statusCode, 200)
  t.equal((await post(app, BAD_STATUS)).statusCode, 422)
  await app.close()
  const firstSeen = Date.now() - 86_400_000
  t.equal(await withStore(db, (store) => store.quarantine(strictlyRefused(assigned(801, { phone: PHONE }), firstSeen))), 2)

  const retry = await runCli(['quarantine', 'retry', '--db', db, '--secret', SECRET])
  t.equal(retry.code, 0, `exit 0 ${retry.stderr}`)
  t.same(lines(retry.stdout), [
    'id 2: appended as seq 12 (job 801, applied)',
    'id 1: still invalid (invalid_payload: /jobStatus Expected union value)',
    'retried: 1 appended, 1 still invalid, 0 unsigned'
  ])
  t.match((await runCli(['quarantine', 'retry', '--db', db, '--secret', SECRET])).stdout, /^retried: 0 appended/m, 'a second retry appends nothing')
  const all = lines((await runCli(['quarantine', 'list', '--db', db, '--all'])).stdout)
  t.match(all[2], /^2\s.*\s12$/, 'list --all shows the seq it became')
  const rows = await withStore(db, (store) => store.readLog({ limit: 100 }))
  const exported = lines((await runCli(['export', '--db', db])).stdout).map((line) => JSON.parse(line) as { seq: number; hash: string; receivedAt: string })
  t.same(exported.map((row) => [row.seq, row.hash]), rows.map((row) => [row.seq, row.hash]), 'the export carries the log\'s hashes')
  t.equal(exported.at(-1)?.receivedAt, new Date(firstSeen).toISOString(), 'the retried row keeps its first received-at time')
  const audit = await runCli(['verify', '--db', db, '--secret', SECRET])
  t.equal(audit.code, 0, 'verify passes')
})

t.test('the plugin API: retryQuarantine with the plugin\'s secrets, exportLog, and the live stream sees the retry', async (t) => {
  const app = await buildApp(t, { secret: ['new', SECRET] })
  const { store } = app.g2sentry
  const id = await store.quarantine(strictlyRefused(assigned(401, { phone: PHONE }), 1_790_000_000_000))
  await store.quarantine(strictlyRefused(assigned(402, { phone: PHONE }), 1_790_000_000_001, 'not-a-configured-secret'))
  const report = await app.g2sentry.retryQuarantine()
  t.match(report, { retried: [{ id, seq: 1, jobId: 401, outcome: 'applied' }], unsigned: [id + 1] })
  t.equal((await app.inject('/jobs/401')).json().status, 'Assigned', 'the retried body is projected')
  t.same(await app.g2sentry.retryQuarantine({ ids: [id] }), { retried: [], stillInvalid: [], unsigned: [], alreadyRetried: [{ id, seq: 1 }], notFound: [], redacted: [] })

  const chunks: string[] = []
  t.same(await app.g2sentry.exportLog({ format: 'ndjson', write: (chunk) => { chunks.push(chunk) } }), { rows: 1 })
  t.match(JSON.parse(chunks.join('').trim()), { seq: 1, jobId: 401, outcome: 'applied', receivedAt: new Date(1_790_000_000_000).toISOString() })
})

t.test('a retried body goes down the same post-commit path as a callback: onEvent (source quarantine) and the metrics', async (t) => {
  const heard: Array<{ seq: number; outcome: string; source: string; request: boolean }> = []
  const app = await buildApp(t, {
    metrics: true,
    onEvent: (committed, request) => { heard.push({ seq: committed.seq, outcome: committed.outcome, source: committed.source, request: request !== undefined }) }
  })
  t.equal((await post(app, assigned(501, { phone: PHONE }))).statusCode, 200)
  await app.g2sentry.store.quarantine(strictlyRefused(started(501), 1_790_000_000_000))
  t.match(await app.g2sentry.retryQuarantine(), { retried: [{ seq: 2, jobId: 501, outcome: 'applied' }] })
  t.same(heard, [
    { seq: 1, outcome: 'applied', source: 'callback', request: true },
    { seq: 2, outcome: 'applied', source: 'quarantine', request: false }
  ])
  const metrics = (await app.inject('/metrics')).body
  t.match(metrics, /g2sentry_deliveries_total\{outcome="applied"\} 2/, 'both deliveries counted')
})
