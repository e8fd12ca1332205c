// `g2sentry reconcile` as a user runs it (the built CLI in a child process) against the fake
// G2 Sentry, on a log written through the plugin, SQLite and PostgreSQL.
import t, { type Test } from 'tap'
import Database from 'better-sqlite3'
import { createHash } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildApp, post, assigned, started, withdrawn, completed } from '../helpers/helpers.js'
import { runCli, cliEnv } from '../helpers/cli-process.js'
import { startFake } from '../helpers/reconciler.js'
import { onSqliteAndPostgres } from '../helpers/pg.js'
import { openStore } from '../../src/store/open-store.js'

t.setTimeout(120_000)

async function writeLog (t: Test, database: string): Promise<void> {
  const app = await buildApp(t, { database })
  for (const payload of [assigned(11), assigned(12), assigned(13), assigned(13), withdrawn(13), started(14), assigned(15), completed(16), started(17)]) {
    t.equal((await post(app, payload)).statusCode, 200)
  }
  await app.close()
}

async function behaviour (t: Test, database: string): Promise<void> {
  await writeLog(t, database)
  const fake = await startFake(t)
  fake.setStatus(11, 'Canceled') // canceled, never pushed
  fake.setStatus(12, 'New') // the withdrawal's callback was lost
  fake.setStatus(13, 'Assigned') // the withdrawal arrived after the re-assignment
  fake.setStatus(14, 'InProgress') // agrees
  fake.setStatus(16, 'Completed') // terminal: not asked about
  fake.setStatus(17, 'Assigned') // the projection moved past it: a conflict
  // 15 is unknown to G2 Sentry.
  const env = cliEnv({ G2SENTRY_API_URL: fake.url, G2SENTRY_PARTNER_KEY: fake.partnerKey, G2SENTRY_PARTNER_SECRET: fake.partnerSecret })

  const dry = await runCli(['reconcile', '--db', database, '--dry-run'], { env })
  t.equal(dry.code, 0, dry.stderr)
  t.match(dry.stdout, /job 11: Assigned -> Canceled \(dry run, not appended\)/)
  t.match(dry.stdout, /asked about 6 jobs: 3 would be reconciled, 1 equal, 1 conflicts, 1 unknown, 0 superseded/)

  const run = await runCli(['reconcile', '--db', database], { env })
  t.equal(run.code, 0, run.stderr)
  const lines = run.stdout.trim().split('\n')
  t.same(lines.filter((l) => / -> /.test(l)), [
    'job 11: Assigned -> Canceled (seq 10)',
    'job 12: Assigned -> New (seq 11)',
    'job 13: New -> Assigned (seq 12)'
  ])
  t.ok(lines.includes('job 15: unknown to G2 Sentry'))
  t.ok(lines.includes('job 17: InProgress, but G2 Sentry says Assigned: the projection moved past it, not applied (conflict)'))
  t.equal(lines.at(-1), 'asked about 6 jobs: 3 reconciled, 1 equal, 1 conflicts, 1 unknown, 0 superseded')
  t.equal(fake.requests.filter((r) => r.path === '/jobs/16/status').length, 0, 'the completed job is never asked about')
  t.equal(fake.maxInWindow(), fake.requests.length, 'every request in one minute…')
  t.ok(fake.requests.length <= 50, '…and no more than 50 of them')

  const store = await openStore(database)
  t.same(await Promise.all([11, 12, 13, 14, 17].map(async (id) => (await store.getJob(id))?.status)), ['Canceled', 'New', 'Assigned', 'InProgress', 'InProgress'])
  await store.close()

  const verify = await runCli(['verify', '--db', database, '--secret', 'test-secret'], { env })
  t.equal(verify.code, 0, verify.stdout)
  t.match(verify.stdout, /signatures: ok, every callback row is signed by a given secret/)
  t.match(verify.stdout, /3 rows from the Partner API \(chained, not signed\)/)

  const replay = await runCli(['replay', '--db', database, '--job', '11'], { env })
  t.same(replay.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { source: string }).source), ['callback', 'api'], 'replay shows the source')
  const table = await runCli(['replay', '--db', database, '--job', '11', '--format', 'table'], { env })
  t.same(table.stdout.trim().split('\n').map((line) => line.split(/\s+/)[6]), ['source', 'callback', 'api'], 'and so does its table')

  const again = await runCli(['reconcile', '--db', database, '--job', '11', '--job', '99'], { env })
  t.equal(again.code, 0)
  t.match(again.stdout, /job 99: not in the log, not asked about/)
  t.match(again.stdout, /asked about 1 jobs: 0 reconciled, 1 equal/, 'a named job is asked about even when terminal')
}

await onSqliteAndPostgres({ sqlite: 'SQLite: every open job converges, one line per difference', postgres: 'PostgreSQL: the same' }, behaviour)

t.test('refused credentials: exit 1; missing ones: a usage error', async (t) => {
  const database = join(t.testdir(), 'g2.db')
  await writeLog(t, database)
  const fake = await startFake(t)
  const refused = await runCli(['reconcile', '--db', database], {
    env: cliEnv({ G2SENTRY_API_URL: fake.url, G2SENTRY_PARTNER_KEY: fake.partnerKey, G2SENTRY_PARTNER_SECRET: 'wrong-partner-secret' })
  })
  t.equal(refused.code, 1)
  t.match(refused.stdout, /stopped: G2 Sentry refused the partner key and secret \(HTTP 401 at \/access\/login\)/)
  t.notMatch(refused.stdout + refused.stderr, /wrong-partner-secret/, 'the secret is never printed')

  const env = cliEnv()
  for (const name of ['G2SENTRY_API_URL', 'G2SENTRY_PARTNER_KEY', 'G2SENTRY_PARTNER_SECRET']) delete env[name]
  const missing = await runCli(['reconcile', '--db', database], { env })
  t.equal(missing.code, 2)
  t.match(missing.stderr, /reconcile needs the Partner API's URL/)
  const withApi = await runCli(['reconcile', '--db', database, '--api', fake.url], { env })
  t.equal(withApi.code, 2)
  t.match(withApi.stderr, /reconcile needs \$G2SENTRY_PARTNER_KEY and \$G2SENTRY_PARTNER_SECRET/)
})

t.test('an unusable answer for one job: the run goes on, says what G2 Sentry answered, and exits 1 at the end', async (t) => {
  const database = join(t.testdir(), 'g2.db')
  await writeLog(t, database)
  const fake = await startFake(t)
  for (const jobId of [11, 12, 13, 14, 15, 17]) fake.setStatus(jobId, 'Canceled')
  fake.answer(/^\/jobs\/12\/status$/, { status: 403, body: { message: 'Forbidden' } })
  fake.answer(/^\/jobs\/13\/status$/, { status: 200, body: { jobId: 13, status: 'Expired' } })
  const env = cliEnv({ G2SENTRY_API_URL: fake.url, G2SENTRY_PARTNER_KEY: fake.partnerKey, G2SENTRY_PARTNER_SECRET: fake.partnerSecret })
  const run = await runCli(['reconcile', '--db', database], { env })
  t.equal(run.code, 1, 'exit 1: something failed')
  const lines = run.stdout.trim().split('\n')
  t.ok(lines.includes('job 12: G2 Sentry answered HTTP 403: not applied'), run.stdout)
  t.ok(lines.includes('job 13: G2 Sentry answered HTTP 200 and an unknown status "Expired": not applied'))
  t.ok(lines.includes('job 17: InProgress -> Canceled (seq 13)'), 'the jobs after them were asked and reconciled')
  t.equal(lines.at(-1), 'asked about 6 jobs: 4 reconciled, 0 equal, 0 conflicts, 0 unknown, 0 superseded, 2 unusable answers')

  const store = await openStore(database)
  t.match(await store.reconcileState?.failures(10), [{ jobId: 13, failures: 1 }, { jobId: 12, failures: 1, answer: 'HTTP 403' }], 'recorded for the server\'s rounds')
  await store.close()
})

t.test('a long run says how far it got, and why it waits, on stderr', async (t) => {
  const database = join(t.testdir(), 'g2.db')
  await writeLog(t, database)
  const fake = await startFake(t)
  fake.slow(2200, /status/)
  fake.answer(/^\/jobs\/11\/status$/, { status: 429, headers: { 'retry-after': '1' } }, 1)
  const env = cliEnv({ G2SENTRY_API_URL: fake.url, G2SENTRY_PARTNER_KEY: fake.partnerKey, G2SENTRY_PARTNER_SECRET: fake.partnerSecret })
  const run = await runCli(['reconcile', '--db', database], { env })
  t.equal(run.code, 0, run.stderr)
  t.match(run.stderr, /g2sentry reconcile: \d jobs asked about in 1\d s, 0 unusable answers so far/)
  t.match(run.stderr, /g2sentry reconcile: the Partner API answered 429; pausing every request \{"endpoint":"status","waitMs":1000/, 'a pause is said, not waited silently')
})

t.test('--api must be an http(s) URL: a usage error', async (t) => {
  const database = join(t.testdir(), 'g2.db')
  await writeLog(t, database)
  for (const api of ['foo', 'ftp://example.com', 'http://']) {
    const run = await runCli(['reconcile', '--db', database, '--api', api], { env: cliEnv({ G2SENTRY_PARTNER_KEY: 'k', G2SENTRY_PARTNER_SECRET: 's' }) })
    t.equal(run.code, 2, api)
    t.match(run.stderr, /the Partner API's URL must be an http\(s\) URL/)
    t.match(run.stderr, /Usage: g2sentry reconcile/)
  }
})

t.test('--dry-run writes nothing at all: not on a foreign SQLite file, not on a g2sentry log', async (t) => {
  const fake = await startFake(t)
  fake.setStatus(11, 'Canceled')
  const env = cliEnv({ G2SENTRY_API_URL: fake.url, G2SENTRY_PARTNER_KEY: fake.partnerKey, G2SENTRY_PARTNER_SECRET: fake.partnerSecret })
  const files = (dir: string) => readdirSync(dir).sort().map((name) => `${name} ${createHash('sha256').update(readFileSync(join(dir, name))).digest('hex')}`)

  const foreignDir = t.testdir()
  const foreign = new Database(join(foreignDir, 'other.db'))
  foreign.exec("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine')")
  foreign.close()
  const before = files(foreignDir)
  const refused = await runCli(['reconcile', '--db', join(foreignDir, 'other.db'), '--dry-run'], { env })
  t.not(refused.code, 0)
  t.match(refused.stderr, /no g2sentry log/)
  t.same(files(foreignDir), before, 'the foreign file is byte for byte the same, and nothing was added beside it')

  const logDir = join(t.testdir(), 'log')
  mkdirSync(logDir)
  await writeLog(t, join(logDir, 'g2.db'))
  const logBefore = files(logDir)
  const dry = await runCli(['reconcile', '--db', join(logDir, 'g2.db'), '--dry-run'], { env })
  t.equal(dry.code, 0, dry.stderr)
  t.match(dry.stdout, /job 11: Assigned -> Canceled \(dry run, not appended\)/)
  t.ok(fake.requests.length > 0, 'it asked G2 Sentry')
  t.same(files(logDir).filter((f) => !/-(wal|shm) /.test(f)), logBefore, 'the log\'s file is byte for byte the same: no check, no rate slot recorded')
  const store = await openStore(join(logDir, 'g2.db'), { readOnly: true })
  t.same(await store.reconcileState?.requestTimes(fake.partnerKey, 0), [], 'no request slot taken in the database')
  await store.close()
})
