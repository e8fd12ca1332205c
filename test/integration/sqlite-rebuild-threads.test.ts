// A SQLite rebuild on several threads (src/store/sqlite/rebuild/replay-threads.ts) against the same
// rebuild on one: the same report and the same jobs table, on a generated log with withdrawals,
// redeliveries and stale rows, with the replay cache small enough to spill, and on a log whose
// outcomes and jobs table were tampered with. docs/design.md ("Rebuild").
import t from 'tap'
import type { Test } from 'tap'
import Database from 'better-sqlite3'
import { copyFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { sqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { lastRebuild, ReplayWorkers } from '../../src/store/sqlite/rebuild/replay-threads.js'
import { replayShare, splitShares, type Share } from '../../src/store/sqlite/rebuild/sqlite-replay.js'
import { randomSchedule } from '../../src/simulator/schedules.js'
import type { IncomingEvent } from '../../src/domain/types.js'
import type { RebuildReport } from '../../src/store/contract.js'
import { assigned, incoming, started, T0 } from '../helpers/fixtures.js'

/**
 * A log of generated deliveries (lifecycles with withdrawals, lost and repeated callbacks,
 * reordering) over 800 jobs, a hundred in flight at a time, plus rows every share must handle:
 * unsupported events, the reconciler's rows from the Partner API, and job ids of zero and below.
 */
function generatedEvents (): IncomingEvent[] {
  const events: IncomingEvent[] = []
  for (let chunk = 0; chunk < 8; chunk++) {
    const { deliveries } = randomSchedule(7_000 + chunk, { jobs: 100, firstJobId: 1 + chunk * 100, lossRate: 0.3, stopRate: 0.05 })
    for (const { event } of deliveries) events.push(incoming(event, T0 + events.length))
  }
  for (let jobId = 5; jobId <= 800; jobId += 37) {
    events.push(incoming({ jobId, eventType: 'JobPaused', jobName: `Job ${jobId}`, jobStatus: 'InProgress' }, T0 + events.length))
    const rawBody = Buffer.from(JSON.stringify({ jobId, status: 'Canceled' }))
    events.push({ jobId, eventType: 'Reconciled', jobName: `Job ${jobId}`, jobStatus: 'Canceled', rawBody, signature: '', receivedAt: T0 + events.length, source: 'api' })
  }
  for (const jobId of [0, -1, -2, -3, -7]) {
    events.push(incoming(assigned(jobId, { phone: '+44 7700 900000' }), T0 + events.length))
    events.push(incoming(started(jobId), T0 + events.length))
  }
  return events
}

/** A file holding the generated log, written once; each test copies it. */
async function writeLog (file: string): Promise<number> {
  const store = sqliteStore({ filename: file, synchronous: 'NORMAL', maxBatch: 5000 })
  const events = generatedEvents()
  await Promise.all(events.map((event) => store.append(event)))
  await store.close()
  return events.length
}

const dir = t.testdir()
const LOG = join(dir, 'log.db')
const EVENTS = await writeLog(LOG)

let copies = 0
function copyOf (file: string): string {
  const copy = join(dir, `copy-${++copies}.db`)
  copyFileSync(file, copy)
  return copy
}

/** The jobs table as SQLite holds it: integers as BigInt, so nothing is rounded on the way. */
function jobsTable (file: string): unknown[][] {
  const db = new Database(file, { readonly: true })
  try {
    return db.prepare('SELECT * FROM jobs ORDER BY job_id').raw().safeIntegers().all() as unknown[][]
  } finally {
    db.close()
  }
}

/** Rebuilds a copy of `file` on `threads` threads; the report, the jobs table after it, and how the shares ran. */
async function rebuildCopy (file: string, threads: number, replayCacheSize: number, dryRun: boolean) {
  const copy = copyOf(file)
  const store = sqliteStore({ filename: copy, replayThreads: threads, replayCacheSize })
  let report: RebuildReport
  try {
    report = await store.rebuild({ dryRun })
  } finally {
    await store.close()
  }
  return { report, jobs: jobsTable(copy), ran: { ...lastRebuild } }
}

/**
 * Compares rebuilds of `file` on each of `counts` threads with the rebuild on one; returns the
 * one-thread results. (A worker takes seconds to start under the test runner's TypeScript loader,
 * so the tests pick their combinations.)
 */
async function sameOnEveryThreadCount (t: Test, file: string, replayCacheSize: number, dryRun: boolean, counts = [2, 3]) {
  const one = await rebuildCopy(file, 1, replayCacheSize, dryRun)
  t.same(one.ran, { threads: 1, onWorkers: 0 })
  for (const threads of counts) {
    const many = await rebuildCopy(file, threads, replayCacheSize, dryRun)
    const label = `${threads} threads, cache ${replayCacheSize}, ${dryRun ? 'dry run' : 'rebuild'}`
    t.same(many.ran, { threads, onWorkers: threads - 1 }, `${label}: every share but the first replayed on a worker`)
    t.strictSame(many.report, one.report, `${label}: the same report as on one thread`)
    t.strictSame(many.jobs, one.jobs, `${label}: the same jobs table as on one thread`)
  }
  return one
}

t.test('an untouched generated log: the same clean report and jobs table on 1, 2 and 3 threads', async (t) => {
  const truth = jobsTable(LOG)
  t.ok(truth.some((row) => (row[0] as bigint) < 0n) && truth.some((row) => row[0] === 0n), 'job ids of zero and below are in the log')
  for (const [replayCacheSize, dryRun, counts] of [[40, true, [2]], [40, false, [3]], [100_000, true, [3]]] as const) {
    const { report, jobs } = await sameOnEveryThreadCount(t, LOG, replayCacheSize, dryRun, [...counts])
    t.same(report, { events: EVENTS, jobs: truth.length, outcomeMismatches: [], differingJobs: [] })
    t.strictSame(jobs, truth, 'the projection is unchanged')
  }
})

t.test('the log holds every outcome, so each share replays applied, duplicate, stale and unsupported rows', async (t) => {
  const db = new Database(LOG, { readonly: true })
  t.teardown(() => db.close())
  const outcomes = db.prepare('SELECT outcome, count(*) AS n FROM events GROUP BY outcome ORDER BY outcome').all() as Array<{ outcome: string; n: number }>
  t.same(outcomes.map((o) => o.outcome), ['applied', 'duplicate', 'stale', 'unsupported'])
  t.ok(outcomes.every((o) => o.n >= 20), `enough of each: ${outcomes.map((o) => `${o.outcome} ${o.n}`).join(', ')}`)
  const withdrawals = db.prepare("SELECT count(*) FROM events WHERE event_type = 'JobWithdrawed' AND outcome = 'applied'").pluck().get() as number
  t.ok(withdrawals >= 20, `${withdrawals} applied withdrawals`)
})

t.test('tampered outcomes and a tampered jobs table: the same mismatches, differing jobs and repair on every thread count', async (t) => {
  const truth = jobsTable(LOG)
  const file = copyOf(LOG)
  const db = new Database(file)
  // Outcomes claimed for rows of every share (ids below zero too).
  const tampered = db.prepare(`UPDATE events SET outcome = CASE outcome WHEN 'applied' THEN 'duplicate' ELSE 'applied' END
    WHERE seq % 97 = 3 OR job_id = -3 RETURNING seq, job_id`).all() as Array<{ seq: number; job_id: number }>
  const shareOf = (jobId: number) => splitShares(3, EVENTS).findIndex((s) => s.from <= ((jobId % 64) + 64) % 64 && ((jobId % 64) + 64) % 64 < s.to)
  t.equal(new Set(tampered.map((r) => shareOf(r.job_id))).size, 3, 'rows of every one of three shares')
  db.exec(`UPDATE jobs SET version = version + 1 WHERE job_id % 50 = 7;
    UPDATE jobs SET guardian_phone = 'not the phone' WHERE job_id = -2;
    DELETE FROM jobs WHERE job_id % 61 = 4 OR job_id = 0`)
  // Rows for jobs with no event in the log, one with an id past what a double holds exactly.
  const ghost = db.prepare(`INSERT INTO jobs (job_id, job_name, status, guardian_phone, last_event_type, version, event_count, created_at, updated_at)
    VALUES (?, 'ghost', 'Assigned', NULL, 'JobAssigned', 1, 1, 0, 0)`)
  for (const jobId of [9_007_199_254_740_993n, 100_001n, 100_002n, -100n]) ghost.run(jobId)
  db.close()

  for (const [replayCacheSize, dryCounts, realCounts] of [[40, [3], [2]], [100_000, [2], [3]]] as const) {
    const dry = await sameOnEveryThreadCount(t, file, replayCacheSize, true, [...dryCounts])
    t.same(dry.report.outcomeMismatches.map((m) => m.seq), tampered.map((r) => r.seq).sort((a, b) => a - b),
      'every tampered outcome is reported, in seq order')
    t.ok(dry.report.differingJobs.includes(9_007_199_254_740_992) && dry.report.differingJobs.includes(-100), 'the ghost rows are reported')
    t.same(dry.report.differingJobs, [...dry.report.differingJobs].sort((a, b) => a - b), 'differing jobs in id order')
    t.ok(dry.report.differingJobs.length > 30, `${dry.report.differingJobs.length} differing jobs`)

    const real = await sameOnEveryThreadCount(t, file, replayCacheSize, false, [...realCounts])
    t.strictSame(real.report, dry.report, 'the real rebuild reports what the dry run did')
    t.strictSame(real.jobs, truth, 'and leaves the projection a rebuild of the log: the ghosts gone, to the last digit of the id')
  }
})

t.test('an in-memory database is rebuilt on one thread, to the same report', async (t) => {
  const events = generatedEvents()
  const memory = sqliteStore({ filename: ':memory:', replayThreads: 3, replayCacheSize: 40 })
  t.teardown(() => memory.close())
  await Promise.all(events.map((event) => memory.append(event)))
  const report = await memory.rebuild({ dryRun: true })
  t.same(lastRebuild, { threads: 1, onWorkers: 0 }, 'no worker: another thread cannot open it')
  const onFile = await rebuildCopy(LOG, 1, 40, true)
  t.strictSame(report, onFile.report, 'the same report as the file')
  t.strictSame(await memory.rebuild(), report)
})

t.test('by default, a short log is rebuilt on one thread', async (t) => {
  const store = sqliteStore({ filename: copyOf(LOG) })
  t.teardown(() => store.close())
  t.same(await store.rebuild({ dryRun: true }).then((r) => r.events), EVENTS)
  t.same(lastRebuild, { threads: 1, onWorkers: 0 })
})

t.test('the workers open the file the store has open, wherever the working directory has moved since', async (t) => {
  const cwd = process.cwd()
  t.teardown(() => process.chdir(cwd))
  process.chdir(dir)
  const store = sqliteStore({ filename: basename(copyOf(LOG)), replayThreads: 2 })
  t.teardown(() => store.close())
  process.chdir(cwd)
  const report = await store.rebuild({ dryRun: true })
  t.same(lastRebuild, { threads: 2, onWorkers: 1 })
  t.same(report, { events: EVENTS, jobs: jobsTable(LOG).length, outcomeMismatches: [], differingJobs: [] })
})

t.test('WAL: a reader opened while another connection holds the write lock reads what it reads', async (t) => {
  // The claim a non-dry rebuild rests on: its workers open their snapshots after it took the
  // write lock, and nobody can commit in between.
  const file = copyOf(LOG)
  const holder = new Database(file)
  const other = new Database(file)
  other.pragma('busy_timeout = 0')
  t.teardown(() => { holder.close(); other.close() })
  holder.exec('BEGIN IMMEDIATE')
  const read = (db: Database.Database) => db.prepare('SELECT count(*) AS n, max(seq) AS last, sum(received_at) AS sum FROM events').get()
  const held = read(holder)
  // The holder's own temp tables change nothing a reader sees.
  holder.exec('CREATE TEMP TABLE scratch (x); INSERT INTO scratch VALUES (1)')
  t.throws(() => other.exec("UPDATE events SET outcome = 'stale' WHERE seq = 1"), { code: 'SQLITE_BUSY' }, 'no other connection can commit')
  const reader = new Database(file, { readonly: true })
  t.teardown(() => reader.close())
  t.same(read(reader), held, 'a reader opened after the lock was taken reads the same rows')
  holder.exec('ROLLBACK')
})

t.test('a dry run replays on one thread the shares whose worker may have read a later snapshot', async (t) => {
  const file = copyOf(LOG)
  const db = new Database(file)
  const writer = new Database(file)
  t.teardown(() => { db.close(); writer.close() })
  const single = (() => {
    db.exec('BEGIN')
    try {
      return replayShare(db, splitShares(1, 0)[0]!, 1000)
    } finally {
      db.exec('ROLLBACK')
    }
  })()

  const [mine, theirs] = splitShares(2, EVENTS) as [Share, Share]
  const workers = ReplayWorkers.start(file, [mine, theirs], 500, 5000, true)
  if (workers === undefined) throw new Error('no workers')
  t.teardown(() => workers.close())
  workers.waitReady()
  db.exec('BEGIN')
  workers.begin(() => {
    db.prepare('SELECT count(*) FROM main.sqlite_master').get()
    // Committed after this thread's snapshot and before the workers take theirs.
    writer.prepare("UPDATE events SET outcome = 'stale' WHERE seq = 1").run()
  })
  const own = replayShare(db, mine, 500, () => workers.poll())
  t.same(workers.reports(), [undefined], 'the worker\'s share is not used')
  const rest = replayShare(db, theirs, 500)
  db.exec('ROLLBACK')
  t.equal(own.events + rest.events, single.events, 'replayed here, the shares add up to the whole snapshot')
  t.same([...own.outcomeMismatches, ...rest.outcomeMismatches], [], 'the snapshot from before the commit: seq 1 still as it was')
})

t.test('a worker that fails leaves its share to the rebuild\'s own thread', async (t) => {
  // A file without a log: the worker's replay fails on its first statement.
  const empty = join(dir, 'empty.db')
  new Database(empty).close()
  const workers = ReplayWorkers.start(empty, splitShares(3, 0), 500, 5000, true)
  if (workers === undefined) throw new Error('no workers')
  t.teardown(() => workers.close())
  workers.begin(() => {})
  t.same(workers.reports(), [undefined, undefined])
})
