// `g2sentry rebuild` and `verify` on a log long enough to be replayed on several threads, as the
// published CLI (dist/, through bin/g2sentry.js) and as `npm run g2sentry` (src/ under tsx) run
// them: the worker module loads next to the CLI's own, and the result is the one-thread rebuild's.
import t from 'tap'
import Database from 'better-sqlite3'
import { execFile } from 'node:child_process'
import { copyFileSync, cpSync, symlinkSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { sqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { cliEnv, ROOT, runCli } from '../helpers/cli-process.js'
import { withoutCoverage } from '../helpers/ts-loader.js'

const EVENTS = 60_000
// What a rebuild picks by default on a log this long (sqlite-store.ts).
const SHARES = Math.min(availableParallelism(), 4)

/**
 * A log of EVENTS rows written with plain SQL (fast, and without the hash chain, which a rebuild
 * does not read): per job an assignment with a phone, a start, the same start again (a duplicate)
 * and the completion. The jobs table is left empty, so a rebuild writes every job.
 */
function writeLog (file: string): void {
  sqliteStore({ filename: file }).close().catch(() => {})
  const db = new Database(file)
  db.exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${EVENTS})
    INSERT INTO events (seq, job_id, event_type, job_status, job_name, guardian_phone, raw_body, signature, content_hash, received_at, outcome, source)
    SELECT i, (i - 1) / 4 + 1,
      CASE (i - 1) % 4 WHEN 0 THEN 'JobAssigned' WHEN 3 THEN 'JobCompleted' ELSE 'JobStarted' END,
      CASE (i - 1) % 4 WHEN 0 THEN 'Assigned' WHEN 3 THEN 'Completed' ELSE 'InProgress' END,
      'Job ' || ((i - 1) / 4 + 1),
      CASE (i - 1) % 4 WHEN 0 THEN '+44 7700 ' || (900000 + i % 1000) END,
      x'7b7d', 'sig', 'hash', 1790000000000 + i,
      CASE (i - 1) % 4 WHEN 2 THEN 'duplicate' ELSE 'applied' END, 'callback'
    FROM n`)
  db.close()
}

const jobsTable = (file: string): unknown[][] => {
  const db = new Database(file, { readonly: true })
  try {
    return db.prepare('SELECT * FROM jobs ORDER BY job_id').raw().safeIntegers().all() as unknown[][]
  } finally {
    db.close()
  }
}

const dir = t.testdir()
const log = join(dir, 'log.db')
writeLog(log)
// The reference: the same log rebuilt in this process on one thread.
const reference = join(dir, 'reference.db')
copyFileSync(log, reference)
const store = sqliteStore({ filename: reference, replayThreads: 1 })
const referenceReport = await store.rebuild()
await store.close()
const truth = jobsTable(reference)

// NODE_DEBUG=g2sentry's line (src/store/sqlite/sqlite-store.ts).
const threadsLine = new RegExp(`^G2SENTRY \\d+: rebuild: ${SHARES} shares, ${SHARES - 1} of them replayed on worker threads$`, 'm')

t.test('the reference rebuild wrote every job', async (t) => {
  t.same(referenceReport, { events: EVENTS, jobs: EVENTS / 4, outcomeMismatches: [], differingJobs: Array.from({ length: EVENTS / 4 }, (_, i) => i + 1) })
  t.equal(truth.length, EVENTS / 4)
})

t.test('the published CLI: rebuild and verify on several threads', async (t) => {
  const file = join(dir, 'cli.db')
  copyFileSync(log, file)
  const env = cliEnv({ NODE_DEBUG: 'g2sentry' })
  const rebuild = await runCli(['rebuild', '--db', file], { env, timeout: 60_000 })
  t.equal(rebuild.code, 0, rebuild.stderr)
  t.match(rebuild.stdout, `rebuilt ${EVENTS} events into ${EVENTS / 4} jobs`)
  t.match(rebuild.stdout, `${EVENTS / 4} jobs differ from the stored projection`)
  t.match(rebuild.stderr, threadsLine, `replayed on ${SHARES} threads`)
  t.strictSame(jobsTable(file), truth, 'the jobs table a one-thread rebuild writes')

  const again = await runCli(['rebuild', '--db', file], { env, timeout: 60_000 })
  t.equal(again.code, 0)
  t.notMatch(again.stdout, /differ/, 'a second rebuild finds nothing to replace')
  const verify = await runCli(['verify', '--db', file], { env, timeout: 60_000 })
  t.equal(verify.code, 0, verify.stdout)
  t.match(verify.stdout, /^ok: /m)
  t.match(verify.stderr, threadsLine, 'verify\'s dry run too, on a read-only store')
})

t.test('npm run g2sentry (src/ under tsx): rebuild on several threads too', async (t) => {
  // tsx registers its hooks on the main thread only on Node 20 (privatenumber/tsx#354): the
  // workers' bootstrap registers them in each thread (src/worker-thread.ts).
  const file = join(dir, 'tsx.db')
  copyFileSync(log, file)
  const { stdout, stderr } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'src/cli/bin.ts', 'rebuild', '--db', file],
    { cwd: ROOT, env: withoutCoverage(cliEnv({ NODE_DEBUG: 'g2sentry' })), timeout: 60_000 })
  t.match(stdout, `rebuilt ${EVENTS} events into ${EVENTS / 4} jobs`)
  t.match(stderr, threadsLine, `replayed on ${SHARES} threads`)
  t.notMatch(stderr, /without its worker/, 'every worker loaded its module')
  t.strictSame(jobsTable(file), truth, 'the jobs table a one-thread rebuild writes')
})

t.test('a build whose worker module cannot load: each share goes back to the main thread at once', async (t) => {
  // A copy of what the package ships, whose replay-worker.js throws as it loads: the worker says so on its
  // port (the rebuild waits synchronously and would never see an 'error' event).
  const pkg = join(dir, 'broken-package')
  for (const part of ['bin', 'dist', 'migrations', 'package.json']) cpSync(join(ROOT, part), join(pkg, part), { recursive: true })
  symlinkSync(join(ROOT, 'node_modules'), join(pkg, 'node_modules'))
  writeFileSync(join(pkg, 'dist', 'store', 'sqlite', 'rebuild', 'replay-worker.js'), "throw new Error('a broken build')\n")
  const file = join(dir, 'broken.db')
  copyFileSync(log, file)
  const started = Date.now()
  const { stdout, stderr } = await promisify(execFile)(process.execPath, [join(pkg, 'bin', 'g2sentry.js'), 'rebuild', '--db', file],
    { cwd: pkg, env: cliEnv({ NODE_DEBUG: 'g2sentry' }), timeout: 60_000 })
  t.match(stdout, `rebuilt ${EVENTS} events into ${EVENTS / 4} jobs`)
  t.match(stderr, /rebuild: share \d+ of \d+ is replayed without its worker: cannot load .*replay-worker\.js: a broken build/)
  t.notMatch(stderr, /no sign for/, 'never waiting for a worker that will not come')
  t.ok(Date.now() - started < 30_000, 'well before a worker would be given up for not getting ready (30 s)')
  t.strictSame(jobsTable(file), truth, 'the jobs table a one-thread rebuild writes')
})
