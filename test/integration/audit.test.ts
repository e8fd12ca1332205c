// The log as evidence: every kind of edit made with plain SQL is caught by the chain, the
// signatures are checked against the secrets given, and `g2sentry verify` says so.
import t, { type Test } from 'tap'
import { sqliteConnection } from '../../src/store/sqlite/connection-of.js'
import Database from 'better-sqlite3'
import { copyFileSync } from 'node:fs'
import { join } from 'node:path'
import { auditLog, sqliteStore, type AuditReport } from '../../src/index.js'
import { auditInRanges } from '../../src/log/audit.js'
import { simulatedDeliveries } from '../../src/simulator/simulate.js'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { randomSchedule } from '../../src/simulator/schedules.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { ROOT, runCli, type Run } from '../helpers/cli-process.js'
import { withoutCoverage } from '../helpers/ts-loader.js'
import { buildApp, post, SECRET } from '../helpers/helpers.js'
import { OLD_SECRET, oldSecretSeqs, PAGE_SIZE, RANGE_SIZE, ROWS, TAMPER_CASES, UNCHAINED, UNCHAINED_CASES, writeLongLog } from '../helpers/audit-cases.js'

/** A log of the eleven simulated deliveries, written through the plugin; returns the file. */
async function writtenLog (t: Test, dir: string, secret = SECRET): Promise<string> {
  const file = join(dir, 'source.db')
  const app = await buildApp(t, { database: file, secret })
  for (const { payload } of simulatedDeliveries()) t.equal((await post(app, payload, { secret })).statusCode, 200)
  await app.close()
  return file
}

/** A copy of `file` edited with plain SQL, audited with `secrets`. */
async function auditAfter (dir: string, file: string, name: string, sql: string, secrets = [SECRET]) {
  const copy = join(dir, `${name}.db`)
  copyFileSync(file, copy)
  const db = new Database(copy)
  db.exec(sql)
  db.close()
  const store = sqliteStore({ filename: copy })
  try {
    return await auditLog(store, { secrets })
  } finally {
    await store.close()
  }
}

t.test('an untouched log passes: chain, signatures and projection', async (t) => {
  const file = await writtenLog(t, t.testdir())
  const store = sqliteStore({ filename: file })
  t.teardown(() => store.close())
  const report = await auditLog(store, { secrets: [SECRET] })
  t.match(report, { events: 11, ok: true, chain: { ok: true, firstBrokenSeq: null, problem: null, unchainedRows: 0 }, unsigned: [] })
  const rows = await store.readLog({ limit: 100 })
  t.equal(rows[0]?.prevHash, '', 'the first row links to genesis')
  for (let i = 1; i < rows.length; i++) t.equal(rows[i]?.prevHash, rows[i - 1]?.hash, `row ${i + 1} links to row ${i}`)
  t.equal((await store.chainHead())?.seq, 11)
})

t.test('every kind of edit with plain SQL is caught at the row it touches', async (t) => {
  const dir = t.testdir()
  const file = await writtenLog(t, dir)
  const cases: Array<[string, string, number, RegExp]> = [
    ['job name edited', "UPDATE events SET job_name = 'Something else' WHERE seq = 4", 4, /parsed from the raw body/],
    ['status edited', "UPDATE events SET job_status = 'Canceled' WHERE seq = 6", 6, /parsed from the raw body/],
    ['phone edited', "UPDATE events SET guardian_phone = '+10000000000' WHERE seq = 1", 1, /parsed from the raw body/],
    ['raw body edited', "UPDATE events SET raw_body = CAST(replace(CAST(raw_body AS TEXT), 'Open House', 'Open Hoose') AS BLOB) WHERE seq = 2", 2, /raw body was changed/],
    ['raw body and its content hash edited', `UPDATE events SET raw_body = CAST('{"jobId":101}' AS BLOB),
      content_hash = '${'0'.repeat(64)}' WHERE seq = 2`, 2, /raw body was changed/],
    ['outcome edited', "UPDATE events SET outcome = 'applied' WHERE seq = 3", 3, /stored field/],
    ['signature edited', 'UPDATE events SET signature = upper(signature) WHERE seq = 5', 5, /raw body was changed \(or its signature/],
    ['received-at edited', 'UPDATE events SET received_at = received_at - 3600000 WHERE seq = 7', 7, /stored field/],
    ['hash recomputed by hand but the next row still links to the old one', "UPDATE events SET hash = 'ff' || substr(hash, 3) WHERE seq = 8", 8, /stored field/],
    ['a middle row deleted', 'DELETE FROM events WHERE seq = 5', 6, /rows 5…5 are missing/],
    ['the last rows deleted', 'DELETE FROM events WHERE seq >= 10', 10, /ends at seq 9 but seq 11 was written/],
    ['two rows swapped', `UPDATE events SET seq = -1 WHERE seq = 3; UPDATE events SET seq = 3 WHERE seq = 4;
      UPDATE events SET seq = 4 WHERE seq = -1`, 3, /does not link|stored field/],
    ['a row inserted', `INSERT INTO events (seq, job_id, event_type, job_status, job_name, raw_body, signature, content_hash, received_at, outcome, prev_hash, hash)
      SELECT 12, job_id, event_type, job_status, job_name, raw_body, signature, content_hash, received_at, 'duplicate', hash, 'forged' FROM events WHERE seq = 11`,
    12, /stored field|raw body was changed/]
  ]
  for (const [name, sql, seq, problem] of cases) {
    const report = await auditAfter(dir, file, name.replace(/\W+/g, '-'), sql)
    t.equal(report.ok, false, `${name}: not ok`)
    t.equal(report.chain.firstBrokenSeq, seq, `${name}: first broken seq ${seq}`)
    t.match(report.chain.problem, problem, `${name}: says why`)
  }
})

t.test('signatures are checked against the secrets given, for a rotation too', async (t) => {
  const file = await writtenLog(t, t.testdir(), 'old-secret')
  const store = sqliteStore({ filename: file })
  t.teardown(() => store.close())
  t.same((await auditLog(store, { secrets: ['new-secret'] })).unsigned, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 'no row is signed by the new secret alone')
  t.same((await auditLog(store, { secrets: ['new-secret', 'old-secret'] })).unsigned, [], 'every row is signed by one of the two')
  t.equal((await auditLog(store, {})).unsigned, null, 'not checked without secrets')
  t.equal((await auditLog(store, {})).ok, true, 'and the rest holds')
})

t.test('the plugin audits with its own secrets', async (t) => {
  const app = await buildApp(t, { secret: ['new', SECRET] })
  for (const { payload } of simulatedDeliveries().slice(0, 4)) await post(app, payload)
  t.match(await app.g2sentry.audit(), { events: 4, ok: true, unsigned: [] })
  t.match(await app.g2sentry.checkProjection(), { events: 4, outcomeMismatches: [], differingJobs: [] })
})

t.test('g2sentry verify reports the first broken seq and unsigned rows, exit 1', async (t) => {
  const dir = t.testdir()
  const file = await writtenLog(t, dir)
  const ok = await runCli(['verify', '--db', file, '--secret', 'other', '--secret', SECRET], { expectSuccess: true })
  t.match(ok.stdout, /^chain: ok, 11 rows linked$/m)
  t.match(ok.stdout, /^signatures: ok/m)
  t.match(ok.stdout, /^ok: the log is intact/m)

  const copy = join(dir, 'edited.db')
  copyFileSync(file, copy)
  const db = new Database(copy)
  db.exec("UPDATE events SET job_name = 'x' WHERE seq = 4")
  db.close()
  const failed = await runCli(['verify', '--db', copy, '--secret', 'wrong'])
  t.equal(failed.code, 1)
  t.match(failed.stdout, /^chain: BROKEN at seq 4: a field parsed from the raw body differs from the body$/m)
  t.match(failed.stdout, /^signatures: 11 rows are signed by none of the given secrets: seq 1, 2, 3/m)
  t.match(failed.stdout, /^FAILED$/m)
  const unchecked = await runCli(['verify', '--db', file], { expectSuccess: true })
  t.match(unchecked.stdout, /^signatures: not checked/m)
})

t.test('rows from the Partner API: chained, counted apart, and an edit to their source or body breaks the chain', async (t) => {
  const dir = t.testdir()
  const file = await writtenLog(t, dir)
  const store = sqliteStore({ filename: file })
  const body = Buffer.from('{"jobId":103,"status":"Canceled","extra":"ignored"}')
  const last = (await store.readLog({ jobId: 103, limit: 100 })).at(-1)?.seq ?? 0
  t.match(await store.appendIf({ jobId: 103, eventType: 'Reconciled', jobName: 'Night watch, 9 Dock Rd', jobStatus: 'Canceled', rawBody: body, signature: '', receivedAt: Date.now(), source: 'api', ifLastSeq: last }), { outcome: 'applied', seq: 12 })
  const report = await auditLog(store, { secrets: [SECRET] })
  await store.close()
  t.ok(report.ok, 'verify passes on a log with an api row')
  t.same([report.apiRows, report.unsigned], [1, []], 'counted apart, not as unsigned')

  const cases: Array<[string, string, RegExp]> = [
    ['source flipped to callback', 'UPDATE events SET source = \'callback\' WHERE seq = 12', /the raw body is not a callback/],
    ['a callback row claimed as api', 'UPDATE events SET source = \'api\' WHERE seq = 3', /the raw body is not a Partner API status answer/],
    ['api body edited', 'UPDATE events SET raw_body = CAST(\'{"jobId":103,"status":"New"}\' AS BLOB) WHERE seq = 12', /the raw body was changed/],
    ['api status edited', 'UPDATE events SET job_status = \'New\' WHERE seq = 12', /differs from its body/]
  ]
  for (const [name, sql, problem] of cases) {
    const after = await auditAfter(dir, file, name.replace(/\W+/g, '-'), sql)
    t.equal(after.ok, false, `${name}: not ok`)
    t.match(after.chain.problem, problem, name)
  }

  const cli = await runCli(['verify', '--db', file, '--secret', SECRET])
  t.equal(cli.code, 0)
  t.match(cli.stdout, /^1 row from the Partner API \(chained, not signed\)$/m)
})

/** The long log of test/audit-cases.ts in a SQLite file; with `unchained`, an old log whose first rows have no hash. */
async function longLog (dir: string, name: string, unchained = false): Promise<string> {
  const file = join(dir, `${name}.db`)
  const store = sqliteStore({ filename: file, synchronous: 'NORMAL' })
  try {
    await writeLongLog(store, unchained ? async (sql) => { sqliteConnection(store).exec(sql) } : undefined)
  } finally {
    await store.close()
  }
  return file
}

/** A copy of `file` edited with plain SQL. */
function tampered (dir: string, file: string, name: string, sql: string): string {
  const copy = join(dir, `${name.replace(/\W+/g, '-')}.db`)
  copyFileSync(file, copy)
  const db = new Database(copy)
  db.exec(sql)
  db.close()
  return copy
}

/**
 * The audit of the log in `file` in one pass (no worker), and in ranges of RANGE_SIZE seqs and of
 * one seq, read PAGE_SIZE rows at a time and checked one after the other in this thread (starting
 * a worker thread under tap's TypeScript loader takes seconds, so the threads themselves are
 * tested on fewer cases, below): each must give the one-pass report.
 */
async function auditEveryWay (t: Test, file: string, name: string, secrets = [SECRET]): Promise<AuditReport> {
  const store = sqliteStore({ filename: file, readOnly: true })
  try {
    const onePass = await auditLog(store, { secrets, database: file, workers: 0 })
    for (const rangeSize of [RANGE_SIZE, 1]) {
      t.same(await auditInRanges(store, { database: file, secrets, rangeSize, pageSize: PAGE_SIZE }), onePass, `${name}: in ranges of ${rangeSize}, the one-pass report`)
    }
    return onePass
  } finally {
    await store.close()
  }
}

t.test('a log of several ranges: every tamper case is found at its first broken row, a range\'s edges too, in ranges as in one pass', async (t) => {
  const dir = t.testdir()
  for (const [kind, cases] of [['long', TAMPER_CASES], ['old', UNCHAINED_CASES]] as const) {
    const file = await longLog(dir, kind, kind === 'old')
    for (const { name, sql, seq, problem, unchainedRows = 0 } of cases) {
      const report = await auditEveryWay(t, tampered(dir, file, `${kind}-${name}`, sql), name)
      t.equal(report.chain.firstBrokenSeq, seq, `${name}: first broken seq ${seq}`)
      if (problem !== undefined) t.match(report.chain.problem, problem, `${name}: says why`)
      t.equal(report.chain.unchainedRows, unchainedRows, `${name}: ${unchainedRows} rows from before the chain`)
    }
  }
})

t.test('a log of several ranges, untouched: signatures of a rotation, API rows, rows from before the chain', async (t) => {
  const dir = t.testdir()
  const file = await longLog(dir, 'long')
  t.match(await auditEveryWay(t, file, 'one secret'), { events: ROWS, ok: false, chain: { ok: true }, unsigned: oldSecretSeqs(), apiRows: 3 })
  t.match(await auditEveryWay(t, file, 'both secrets', [SECRET, OLD_SECRET]), { events: ROWS, ok: true, unsigned: [] })
  t.match(await auditEveryWay(t, await longLog(dir, 'old', true), 'old log', [SECRET, OLD_SECRET]), { events: ROWS, ok: true, chain: { unchainedRows: UNCHAINED } })
})

t.test('worker threads check the ranges: the one-pass report, with a range deleted, the last range deleted, an old log', async (t) => {
  const dir = t.testdir()
  const file = await longLog(dir, 'long')
  const old = await longLog(dir, 'old', true)
  const byName = new Map(TAMPER_CASES.map((c) => [c.name, c]))
  const runs: Array<[string, string, number]> = [
    ['a whole range deleted', tampered(dir, file, 'threads-range', byName.get('a whole range deleted')?.sql ?? ''), 2],
    ['the last range deleted', tampered(dir, file, 'threads-last', byName.get('the last range deleted')?.sql ?? ''), 3],
    ['an old log', old, 2]
  ]
  for (const [name, copy, workers] of runs) {
    const store = sqliteStore({ filename: copy, readOnly: true })
    try {
      const onePass = await auditLog(store, { secrets: [SECRET], database: copy, workers: 0 })
      t.same(await auditLog(store, { secrets: [SECRET], database: copy, workers, rangeSize: RANGE_SIZE, pageSize: PAGE_SIZE }), onePass, `${name}: ${workers} threads give the one-pass report`)
    } finally {
      await store.close()
    }
  }
})

t.test('auditLog refuses options that are no whole numbers', async (t) => {
  const store = sqliteStore({ filename: ':memory:' })
  t.teardown(() => store.close())
  await t.rejects(auditLog(store, { workers: -1 }), { code: 'FST_G2SENTRY_INVALID_OPTION', message: /workers must be a whole number/ })
  await t.rejects(auditLog(store, { workers: 1.5 }), { code: 'FST_G2SENTRY_INVALID_OPTION' })
  await t.rejects(auditLog(store, { rangeSize: 0 }), { code: 'FST_G2SENTRY_INVALID_OPTION', message: /rangeSize must be a positive whole number/ })
  await t.rejects(auditLog(store, { pageSize: 0 }), { code: 'FST_G2SENTRY_INVALID_OPTION', message: /pageSize/ })
  t.match(await auditLog(store, { database: ':memory:', workers: 4, rangeSize: 1 }), { events: 0, ok: true }, 'an in-memory log is checked in this thread')
})

/** `rows` callbacks signed with SECRET, appended to a new SQLite log in `file`. */
async function writeRows (file: string, rows: number): Promise<void> {
  const store = sqliteStore({ filename: file, synchronous: 'NORMAL', maxBatch: 5000 })
  try {
    for (let chunk = 0, written = 0; written < rows; chunk++) {
      const { deliveries } = randomSchedule(100 + chunk, { jobs: 1000, firstJobId: 1 + chunk * 1000 })
      const taken = deliveries.slice(0, rows - written)
      await Promise.all(taken.map(({ event }, i) => {
        const rawBody = Buffer.from(JSON.stringify(event))
        return store.append({ ...event, rawBody, signature: signBody(rawBody, SECRET), receivedAt: 1_700_000_000_000 + written + i })
      }))
      written += taken.length
    }
  } finally {
    await store.close()
  }
}

/** The CLI from source under tsx, as `npm run g2sentry` runs it. */
async function runUnderTsx (args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'), 'src/cli/bin.ts', ...args], { cwd: ROOT, env: withoutCoverage(process.env), timeout: 60_000 })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const { code, stdout = '', stderr = '' } = error as { code?: unknown; stdout?: string; stderr?: string }
    if (typeof code !== 'number') throw error
    return { code, stdout, stderr }
  }
}

t.test('g2sentry verify --workers: threads start from the built CLI and under tsx, and print what --workers 0 prints', async (t) => {
  const dir = t.testdir()
  // Two of the default ranges (20,000 seqs): the smallest log that verify checks in threads.
  const file = join(dir, 'two-ranges.db')
  await writeRows(file, 20_500)
  const edited = tampered(dir, file, 'edited', "UPDATE events SET job_name = 'Something else' WHERE seq = 20001")
  for (const [db, code, chain] of [[file, 0, /^chain: ok, 20500 rows linked$/m], [edited, 1, /^chain: BROKEN at seq 20001: a field parsed from the raw body differs from the body$/m]] as const) {
    const args = ['verify', '--db', db, '--secret', SECRET]
    const inProcess = await runCli([...args, '--workers', '0'], { timeout: 60_000 })
    t.equal(inProcess.code, code, `${db}: exit ${code}`)
    t.match(inProcess.stdout, chain)
    t.same(await runCli([...args, '--workers', '2'], { timeout: 60_000 }), inProcess, 'the built CLI, two threads')
    t.same(await runCli(args, { timeout: 60_000 }), inProcess, 'the built CLI, a thread per core')
    t.same(await runUnderTsx([...args, '--workers', '2']), inProcess, 'the CLI under tsx, two threads')
  }
  const usage = await runCli(['verify', '--db', file, '--workers', 'two'])
  t.equal(usage.code, 2)
  t.match(usage.stderr, /--workers must be a whole number, got "two"/)
})
