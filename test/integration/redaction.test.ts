// Erasure (docs/design.md, "Erasure"), on SQLite files and on PostgreSQL: after a job is redacted,
// nothing stored (its rows, its projection, the quarantine, the database's files) holds its
// guardian's phone, the SHA-256 of any of its bodies, or their HMAC under the callback secret;
// the job's status and history stay; verify passes, and catches every edit made afterwards.
import t, { type Test } from 'tap'
import Database from 'better-sqlite3'
import { createHash, createHmac } from 'node:crypto'
import { copyFileSync, existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { auditLog, sqliteStore } from '../../src/index.js'
import { GENESIS, rowHash } from '../../src/store/chain.js'
import type { LogRow } from '../../src/domain/types.js'
import { runCli } from '../helpers/cli-process.js'
import { assigned, buildApp, bytesOf, completed, post, SECRET, started, withdrawn } from '../helpers/helpers.js'
import { freshSchema, pgUrl, requirePg, withClient } from '../helpers/pg.js'
import { until } from '../helpers/until.js'

const PHONE_A = '+15550100001'
const PHONE_B = '+15550100002'
const PHONE_OTHER = '+15550100003'

/** What job 1 went through: two guardians, a withdrawal, a stale redelivery, a quarantined body naming it. */
const JOB_1 = [
  assigned(1, { phone: PHONE_A }), started(1, { phone: PHONE_A }), withdrawn(1), assigned(1, { phone: PHONE_B }),
  started(1, { phone: PHONE_B }), completed(1), assigned(1, { phone: PHONE_A })
]
const JOB_1_QUARANTINED = { jobId: 1, eventType: 'JobStarted', jobStatus: 'Paused', jobName: 'x', guardianPhone: PHONE_A }
const JOB_2 = [assigned(2, { phone: PHONE_OTHER }), started(2, { phone: PHONE_OTHER })]
const JOB_2_QUARANTINED = { jobId: 2, eventType: 'JobStarted', jobStatus: 'Paused', jobName: 'x', guardianPhone: PHONE_OTHER }

/** Every trace of a job-1 body that must be gone: the phones, each body's SHA-256 and HMAC (hex and raw). */
function traces (): Array<[string, Buffer]> {
  const bodies = [...JOB_1, JOB_1_QUARANTINED].map(bytesOf)
  const list: Array<[string, Buffer]> = [['phone A', Buffer.from(PHONE_A.slice(2))], ['phone B', Buffer.from(PHONE_B.slice(2))]]
  bodies.forEach((body, i) => {
    const sha = createHash('sha256').update(body).digest()
    const hmac = createHmac('sha256', SECRET).update(body).digest()
    list.push([`body ${i} SHA-256 (hex)`, Buffer.from(sha.toString('hex'))], [`body ${i} SHA-256`, sha],
      [`body ${i} HMAC (hex)`, Buffer.from(hmac.toString('hex'))], [`body ${i} HMAC`, hmac])
  })
  return list
}

interface Backend {
  name: string
  /** A new, empty log: its `database` option, and every byte of its database files (after a checkpoint). */
  open: (t: Test, dir: string) => Promise<{ database: string; files: () => Promise<Buffer> }>
}

const sqlite: Backend = {
  name: 'SQLite',
  async open (_t, dir) {
    const database = join(dir, 'g2.db')
    return {
      database,
      files: async () => Buffer.concat([database, `${database}-wal`].filter((file) => existsSync(file)).map((file) => readFileSync(file)))
    }
  }
}

const postgres: Backend = {
  name: 'PostgreSQL',
  async open (t) {
    const schema = freshSchema(t)
    return {
      database: `${pgUrl()}?schema=${schema}`,
      // The heap, index and TOAST files of the schema's tables, once a checkpoint wrote them out.
      files: async () => withClient(async (client) => {
        await client.query('CHECKPOINT')
        const { rows } = await client.query<{ path: string }>(`SELECT current_setting('data_directory') || '/' || pg_relation_filepath(c.oid) AS path
          FROM pg_class c WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'i')
          UNION ALL SELECT current_setting('data_directory') || '/' || pg_relation_filepath(c.reltoastrelid) FROM pg_class c
          WHERE c.relnamespace = $1::regnamespace AND c.reltoastrelid <> 0`, [schema])
        return Buffer.concat(rows.filter(({ path }) => existsSync(path)).map(({ path }) => readFileSync(path)))
      })
    }
  }
}

/** Posts job 1's and job 2's deliveries and the two quarantined bodies; returns job 1's rows as the routes showed them before. */
async function deliver (t: Test, app: FastifyInstance) {
  for (const payload of [...JOB_2.slice(0, 1), ...JOB_1, ...JOB_2.slice(1)]) t.equal((await post(app, payload)).statusCode, 200)
  for (const payload of [JOB_1_QUARANTINED, JOB_2_QUARANTINED]) t.equal((await post(app, payload)).statusCode, 422, 'quarantined')
  return (await app.inject('/jobs/1/events')).json<{ events: Array<Record<string, unknown>> }>().events
}

const hex = (row: LogRow) => JSON.stringify(row, (_key, value: unknown) =>
  value !== null && typeof value === 'object' && (value as { type?: string }).type === 'Buffer' ? Buffer.from((value as { data: number[] }).data).toString('hex') : value)

for (const backend of [sqlite, postgres]) {
  t.test(`${backend.name}: a redacted job keeps its status and history, and nothing stored holds its personal data`, async (t) => {
    if (backend === postgres && !await requirePg(t)) return
    const { database, files } = await backend.open(t, t.testdir())
    const app = await buildApp(t, { database })
    const before = await deliver(t, app)
    const jobBefore = (await app.inject('/jobs/1')).json<Record<string, unknown>>()
    t.match(await files(), /./, 'the files can be read')
    t.ok((await files()).includes(PHONE_A.slice(2)), 'before: the phone is in the files')

    // PostgreSQL keeps an updated row's old version in the page's free space until the page is
    // rewritten: VACUUM FULL does (docs/operations.md).
    const result = await app.g2sentry.redact({ jobId: 1, reason: 'erasure request 2026-12', vacuum: 'full' })
    t.same(result, { recordSeq: 10, jobs: [1], rows: 7, version1Rows: 0, quarantined: 1 }, 'seven rows, one quarantined body, one record')

    const rows = await app.g2sentry.store.readLog({ limit: 100 })
    const jobRows = rows.filter((row) => row.jobId === 1)
    t.equal(jobRows.length, 7)
    for (const row of jobRows) {
      t.ok(row.rawBody.length === 0 && row.signature === '' && row.salt === null && row.redactedBy === 10, `row ${row.seq}: body, signature and salt gone`)
      t.ok(row.guardianPhone === null || /^\[redacted [12]\]$/.test(row.guardianPhone), `row ${row.seq}: the phone is a placeholder`)
    }
    t.same([...new Set(jobRows.map((row) => row.guardianPhone))], ['[redacted 1]', null, '[redacted 2]'], 'one placeholder per guardian, in order')
    const record = rows.find((row) => row.seq === 10) as LogRow
    t.match(record, { jobId: 0, source: 'redaction', outcome: 'recorded', eventType: 'Redaction', signature: '' })
    t.match(JSON.parse(record.rawBody.toString()), { redaction: { jobs: [1], reason: 'erasure request 2026-12', by: 'request', quarantine: [1] } })
    const stored = rows.map(hex).join('\n') + JSON.stringify(await app.g2sentry.store.getJob(1)) +
      (await app.g2sentry.store.listQuarantine({ limit: 10 })).map((entry) => entry.rawBody.toString('hex') + entry.signature + entry.detail).join('')
    for (const [name, bytes] of traces()) {
      if (bytes.length === 32) continue
      t.notOk(stored.includes(bytes.toString()), `no ${name} in the rows, the projection or the quarantine`)
    }
    t.ok(stored.includes(PHONE_OTHER), 'another job\'s phone is still there')
    const quarantine = await app.g2sentry.store.listQuarantine({ limit: 10 })
    t.match(quarantine, [{ id: 1, signature: '', detail: 'redacted', redactedBy: 10 }, { id: 2, redactedBy: null }])
    t.equal(quarantine[0]?.rawBody.length, 0, 'the quarantined body naming the job is erased')
    t.same((await app.g2sentry.retryQuarantine({ ids: [1] })).redacted, [1], 'an erased quarantined body is not retried')

    const bytes = await files()
    for (const [name, trace] of traces()) t.notOk(bytes.includes(trace), `no ${name} in the database files`)
    t.ok(bytes.includes(PHONE_OTHER.slice(2)), 'another job\'s phone is in the files: the search works')

    t.same((await app.inject('/jobs/1')).json(), jobBefore, 'GET /jobs/1 is unchanged (its phone was not shown: the job is Completed)')
    const after = (await app.inject('/jobs/1/events')).json<{ events: Array<Record<string, unknown>> }>().events
    t.same(after, before.map((event) => ({ ...event, redacted: true })), 'GET /jobs/1/events: the same rows, each marked redacted')

    const report = await app.g2sentry.audit()
    t.ok(report.ok, 'verify passes')
    t.same(report.redactions, { records: 1, rows: 7, version1Rows: 0, problems: [] })
    t.same(report.projection.outcomeMismatches, [], 'every erased row replays to its outcome: the placeholders compare as the phones did')
    t.same((await app.g2sentry.rebuild()).differingJobs, [])
    t.same((await app.inject('/jobs/1')).json(), jobBefore, 'a rebuild gives the same job')

    // Consumers started after the erasure read it from the beginning: rows as erased, changes as before.
    const delivered: LogRow[] = []
    const changes: number[] = []
    app.g2sentry.consume<'rows'>('auditor', (row) => { delivered.push(row) }, { deliver: 'rows' })
    app.g2sentry.consume('mailer', (change) => { changes.push(change.seq) })
    await until('every row delivered', () => delivered.length === rows.length)
    t.same(delivered.map((row) => row.seq), rows.map((row) => row.seq), 'a rows consumer gets every row, the record included')
    t.ok(delivered.filter((row) => row.jobId === 1).every((row) => row.redactedBy === 10 && row.rawBody.length === 0), 'job 1\'s rows arrive erased, naming their record')
    t.match(delivered.find((row) => row.seq === 10), { source: 'redaction', outcome: 'recorded' })
    const applied = rows.filter((row) => row.outcome === 'applied').map((row) => row.seq)
    await until('every change delivered', () => changes.length === applied.length)
    t.same(changes, applied, 'a changes consumer gets the same changes as before the erasure, and no record')
    t.same(await app.g2sentry.redact({ jobId: 1 }), { recordSeq: null, jobs: [], rows: 0, version1Rows: 0, quarantined: 0 }, 'a second redaction has nothing to do')
  })

  t.test(`${backend.name}: an open job redacted, then news: the placeholders go on, verify passes`, async (t) => {
    if (backend === postgres && !await requirePg(t)) return
    const { database } = await backend.open(t, t.testdir())
    const app = await buildApp(t, { database })
    t.equal((await post(app, assigned(5, { phone: PHONE_A }))).statusCode, 200)
    await app.g2sentry.redact({ jobId: 5 })
    t.equal((await app.inject('/jobs/5')).json<{ guardianPhone: unknown }>().guardianPhone, null, 'the erased phone is not shown')
    t.match((await post(app, started(5, { phone: PHONE_B }))).json(), { outcome: 'applied' })
    t.equal((await app.inject('/jobs/5')).json<{ guardianPhone: unknown }>().guardianPhone, PHONE_B, 'a new guardian\'s phone is shown')
    await app.g2sentry.redact({ jobId: 5 })
    t.same((await app.g2sentry.store.readLog({ jobId: 5, limit: 10 })).map((row) => row.guardianPhone), ['[redacted 1]', '[redacted 2]'])
    const report = await app.g2sentry.audit()
    t.ok(report.ok, 'verify passes')
    t.match(report.redactions, { records: 2, rows: 2, problems: [] })
  })
}

t.test('PostgreSQL: a redaction through the CLI on a schema', async (t) => {
  if (!await requirePg(t)) return
  const { database } = await postgres.open(t, '')
  const app = await buildApp(t, { database })
  await deliver(t, app)
  await app.close()
  const run = await runCli(['redact', '--db', database, '--job', '1', '--reason', 'request', '--full-vacuum'])
  t.equal(run.code, 0, run.stderr)
  t.match(run.stdout, /job 1: erased 7 rows and 1 quarantined body, record seq 10/)
  const verify = await runCli(['verify', '--db', database, '--secret', SECRET])
  t.equal(verify.code, 0, verify.stdout)
  t.match(verify.stdout, /erasure: ok, 7 rows erased by 1 redaction record/)
  t.match(verify.stdout, /signatures: ok, every row that still holds its body is signed/)
  t.match(verify.stdout, /projection: replayed 9 events into/, 'the redaction record is not counted as an event')
})

/** A SQLite log with both jobs delivered and both redacted (records 11 and 12), closed; returns the file. */
async function redactedLog (t: Test, dir: string): Promise<string> {
  const { database } = await sqlite.open(t, dir)
  const app = await buildApp(t, { database })
  await deliver(t, app)
  t.equal((await post(app, assigned(3, { phone: PHONE_B }))).statusCode, 200)
  await app.g2sentry.redact({ jobId: 1 })
  await app.g2sentry.redact({ jobId: 2 })
  await app.close()
  return database
}

/** Each edit made with SQL after the erasure, and what verify says of it. */
const TAMPERING: Array<[string, string, RegExp]> = [
  ['an erased row edited afterwards (its time)', 'UPDATE events SET received_at = received_at + 1 WHERE seq = 3', /chain: BROKEN at seq 3: a stored field of a redacted row was changed/],
  ['an erased row\'s placeholder changed', "UPDATE events SET guardian_phone = '[redacted 9]' WHERE seq = 2", /seq 2: a field of erased row 2 differs from what its redaction record kept/],
  ['a row emptied with no record', "UPDATE events SET raw_body = x'', signature = '', salt = NULL, guardian_phone = NULL WHERE seq = 10", /chain: BROKEN at seq 10: the raw body was changed/],
  ['a row emptied and pointed at a record that does not name it', "UPDATE events SET raw_body = x'', signature = '', salt = NULL, guardian_phone = NULL, redacted_by = 11 WHERE seq = 10",
    /seq 10: row 10 names redaction record 11, which does not name it/],
  ['an erased row moved to another record', 'UPDATE events SET redacted_by = 12 WHERE seq = 2', /redaction record 11 names row 2, which it did not erase[\s\S]*row 2 names redaction record 12, which does not name it/],
  ['an erased row pointed at a row that is no record', 'UPDATE events SET redacted_by = 1 WHERE seq = 2', /1 erased rows name no redaction record/],
  ['a body put back in an erased row', `UPDATE events SET raw_body = x'${bytesOf(JOB_1[0]).toString('hex')}' WHERE seq = 2`, /chain: BROKEN at seq 2: a redacted row holds a body, a signature, a salt or a phone again/],
  ['the redaction record edited', "UPDATE events SET raw_body = CAST(replace(CAST(raw_body AS TEXT), '\"jobs\":[1]', '\"jobs\":[2]') AS BLOB) WHERE seq = 11", /chain: BROKEN at seq 11: the record was changed/]
]

t.test('SQLite: verify after erasure, and every edit made afterwards is caught (g2sentry verify)', async (t) => {
  const dir = t.testdir()
  const file = await redactedLog(t, dir)
  const clean = await runCli(['verify', '--db', file, '--secret', SECRET])
  t.equal(clean.code, 0, clean.stdout)
  t.match(clean.stdout, /erasure: ok, 9 rows erased by 2 redaction records, each as its record says/)
  t.match(clean.stdout, /signatures: ok/, 'erased rows and records need no signature')
  const replay = await runCli(['replay', '--db', file, '--format', 'table'])
  t.match(replay.stdout, /\b2 .*JobAssigned.*applied\s+callback\s+Open House at 123 Main St \[erased by seq 11\]/, 'replay marks an erased row')
  t.match(replay.stdout, /\b11 .*Redaction\s+recorded\s+redaction/, 'and shows the record')
  const exported = (await runCli(['export', '--db', file, '--job', '1'])).stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>)
  t.match(exported[0], { redactedBy: 11, body: '', signature: '', chainVersion: 2 })

  for (const [name, sql, expected] of TAMPERING) {
    const copy = join(dir, `${name.replace(/\W+/g, '-')}.db`)
    copyFileSync(file, copy)
    const db = new Database(copy)
    db.exec(sql)
    db.close()
    const run = await runCli(['verify', '--db', copy, '--secret', SECRET])
    t.equal(run.code, 1, `${name}: verify fails`)
    t.match(run.stdout, expected, `${name}: ${String(expected)}`)
  }
})

t.test('SQLite: a job whose row does not verify is not redacted: nothing is written', async (t) => {
  const { database } = await sqlite.open(t, t.testdir())
  const app = await buildApp(t, { database })
  await deliver(t, app)
  await app.close()
  const db = new Database(database)
  db.exec("UPDATE events SET job_status = 'Canceled' WHERE seq = 3")
  db.close()
  const run = await runCli(['redact', '--db', database, '--job', '1'])
  t.equal(run.code, 1)
  t.match(run.stdout, /job 1: job 1 was not redacted: its row 3 does not verify \(a field parsed from the raw body differs from the body\)/)
  const check = new Database(database, { readonly: true })
  t.same(check.prepare('SELECT count(*) AS n FROM events WHERE redacted_by IS NOT NULL OR source = \'redaction\'').get(), { n: 0 }, 'nothing erased, no record')
  check.close()
  t.equal((await runCli(['redact', '--db', database, '--job', '999'])).code, 1, 'a job with no rows: exit 1')
  t.equal((await runCli(['redact', '--db', database, '--job', 'abc'])).code, 2, 'not a job id: a usage error')
  t.equal((await runCli(['redact', '--db', database])).code, 2, 'no --job: a usage error')
})

/**
 * Rewrites every row of a SQLite log as chain version 1 wrote it (content hash the body's
 * SHA-256, no salt, the first version's hash), as a log from before this version has them.
 */
function asVersion1 (file: string): void {
  const db = new Database(file)
  // As the log's own connection writes: what an update frees is overwritten.
  db.pragma('secure_delete = ON')
  const rows = db.prepare('SELECT * FROM events ORDER BY seq').all() as Array<Record<string, unknown>>
  const update = db.prepare('UPDATE events SET content_hash = ?, chain_version = 1, salt = NULL, prev_hash = ?, hash = ? WHERE seq = ?')
  let prev = GENESIS
  for (const row of rows) {
    const contentHash = createHash('sha256').update(row.raw_body as Buffer).digest('hex')
    const hash = rowHash(prev, { seq: row.seq as number, receivedAt: row.received_at as number, signature: row.signature as string, contentHash, outcome: row.outcome as 'applied', sameAs: row.same_as as number | null, source: row.source as 'callback' })
    update.run(contentHash, prev, hash, row.seq)
    prev = hash
  }
  db.close()
}

t.test('SQLite: rows written before chain version 2 are erased too, and verify says plainly what remains', async (t) => {
  const dir = t.testdir()
  const { database, files } = await sqlite.open(t, dir)
  const app = await buildApp(t, { database })
  await deliver(t, app)
  await app.close()
  asVersion1(database)
  t.equal((await runCli(['verify', '--db', database, '--secret', SECRET])).code, 0, 'a version 1 log verifies')
  const run = await runCli(['redact', '--db', database, '--job', '1'])
  t.equal(run.code, 0, run.stderr)
  t.match(run.stdout, /7 of them were written before chain version 2: pseudonymised, not erased/)
  const verify = await runCli(['verify', '--db', database, '--secret', SECRET])
  t.equal(verify.code, 0, verify.stdout)
  t.match(verify.stdout, /7 erased rows were written before chain version 2: pseudonymised, not erased\. Their body, signature and body hash are gone, but each row's hash still commits/)
  const bytes = await files()
  for (const [name, trace] of traces()) t.notOk(bytes.includes(trace), `no ${name} in the file`)
  const store = sqliteStore({ filename: database, readOnly: true })
  const rows = (await store.readLog({ jobId: 1, limit: 10 }))
  t.ok(rows.every((row) => row.contentHash === '' && row.chainVersion === 1), 'their body hashes are gone')
  await store.close()

  const copy = join(dir, 'edited.db')
  copyFileSync(database, copy)
  const db = new Database(copy)
  db.exec("UPDATE events SET outcome = 'duplicate' WHERE seq = 3")
  db.close()
  const edited = await runCli(['verify', '--db', copy, '--secret', SECRET])
  t.equal(edited.code, 1, 'an erased version 1 row edited afterwards is caught by its record')
  t.match(edited.stdout, /seq 3: a field of erased row 3 differs from what its redaction record kept/)
})

t.test('a store without the lifecycle methods: app.g2sentry.redact says so', async (t) => {
  const store = sqliteStore({ filename: join(t.testdir(), 'x.db') })
  const { redact: _redact, ...withoutRedact } = store
  const app = await buildApp(t, { store: { ...withoutRedact, close: () => store.close() } as typeof store })
  await t.rejects(app.g2sentry.redact({ jobId: 1 }), { code: 'FST_G2SENTRY_INVALID_OPTION', message: /no redact method/ })
  await t.rejects(app.g2sentry.redact({ jobId: 0 }), { code: 'FST_G2SENTRY_INVALID_OPTION', message: /jobId must be a positive whole number/ })
  t.ok(await auditLog(store), 'audit still runs')
})
