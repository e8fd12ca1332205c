import t from 'tap'
import { sqliteConnection } from '../../src/store/sqlite/connection-of.js'
import type { Test } from 'tap'
import Database from 'better-sqlite3'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { sqliteStore, type SqliteStoreOptions } from '../../src/store/sqlite/sqlite-store.js'
import { holdWriteLock } from '../helpers/lock-holder.js'
import { retentionParameters } from '../../src/store/retention-sql.js'
import { SQLITE_RETENTION_CANDIDATES } from '../../src/store/sqlite/sqlite-retention.js'
import type { AppendResult, IncomingEvent, JobState } from '../../src/domain/types.js'
import {
  assigned, completed, incoming, readWholeLog, seedLog, started, storeContract, T0, withdrawn
} from '../helpers/store-contract.js'

type SqliteStore = ReturnType<typeof sqliteStore>

/** A store on a real file in the test's directory, closed when the test ends. */
function openStore (t: Test, options: Partial<SqliteStoreOptions> = {}): { store: SqliteStore; file: string } {
  const file = options.filename ?? join(t.testdir(), 'g2.db')
  const store = sqliteStore({ ...options, filename: file })
  t.teardown(() => store.close())
  return { store, file }
}

storeContract(t, 'sqlite', async (t) => sqliteStore({ filename: join(t.testdir(), 'g2.db') }), (t) => {
  const filename = join(t.testdir(), 'g2.db')
  return async () => sqliteStore({ filename })
})

t.test('sqlite specifics', async (t) => {
  t.test('the file is in WAL mode with synchronous FULL and a 5 s busy timeout by default', async (t) => {
    const { store, file } = openStore(t)
    t.equal(sqliteConnection(store).pragma('journal_mode', { simple: true }), 'wal')
    t.equal(sqliteConnection(store).pragma('synchronous', { simple: true }), 2, 'FULL')
    // The connection never sleeps in SQLite's busy handler: the store waits on a timer instead.
    t.equal(sqliteConnection(store).pragma('busy_timeout', { simple: true }), 0)
    await store.append(incoming(assigned(1), T0))
    t.ok(existsSync(`${file}-wal`), 'a write-ahead log sits beside the file')

    // WAL mode is a property of the file: another connection sees it too.
    const other = new Database(file, { readonly: true })
    t.teardown(() => other.close())
    t.equal(other.pragma('journal_mode', { simple: true }), 'wal')
  })

  t.test('synchronous and busyTimeout can be set; the wait for a lock leaves the event loop free', async (t) => {
    const { store, file } = openStore(t, { synchronous: 'NORMAL', busyTimeout: 200 })
    t.equal(sqliteConnection(store).pragma('synchronous', { simple: true }), 1, 'NORMAL')
    const lock = await holdWriteLock(t, file)
    let ticks = 0
    const ticker = setInterval(() => { ticks++ }, 10)
    const started = performance.now()
    await t.rejects(store.append(incoming(assigned(1), T0)), { code: 'SQLITE_BUSY' }, 'an append fails once busyTimeout has passed')
    const waited = performance.now() - started
    await t.rejects(store.acquireLease('some-lease', 'me', 1000), { code: 'SQLITE_BUSY' }, 'and so does a lease')
    clearInterval(ticker)
    t.ok(waited >= 195 && waited < 1000, `it waited busyTimeout (${Math.round(waited)} ms)`)
    t.ok(ticks >= 10, `timers kept firing meanwhile (${ticks} ticks of 10 ms)`)
    t.same(await store.getJob(1), undefined, 'reads answer while the lock is held')
    await lock.release()
    t.equal((await store.append(incoming(assigned(1), T0))).outcome, 'applied', 'and the next append succeeds once it is gone')
  })

  t.test('an acknowledged append is committed: another connection sees it at once', async (t) => {
    const { store, file } = openStore(t)
    const { seq } = await store.append(incoming(assigned(9, { phone: '+44 7700 900009' }), T0))
    const other = new Database(file, { readonly: true })
    t.teardown(() => other.close())
    t.same(other.prepare('SELECT seq, job_id, outcome FROM events').all(), [{ seq, job_id: 9, outcome: 'applied' }])
    t.same(other.prepare('SELECT job_id, status, version FROM jobs').all(), [{ job_id: 9, status: 'Assigned', version: 1 }])
  })

  t.test('a store sees every job state another writer committed in between (nothing stale is kept between batches)', async (t) => {
    const { store: first, file } = openStore(t)
    const second = sqliteStore({ filename: file })
    t.teardown(() => second.close())
    t.equal((await first.append(incoming(assigned(1), T0))).outcome, 'applied')
    t.equal((await first.append(incoming(started(1), T0 + 1))).outcome, 'applied')
    // Another connection on the same file completes the job.
    t.same(await second.append(incoming(completed(1), T0 + 2)).then((r) => [r.outcome, r.status]), ['applied', 'Completed'])
    // A later start is stale against Completed, not applied on top of the InProgress seen before.
    t.same(await first.append(incoming(started(1, { name: 'Job 1 again' }), T0 + 3)).then((r) => [r.outcome, r.status]), ['stale', 'Completed'])
    t.match(await first.getJob(1), { status: 'Completed', version: 3, eventCount: 4 }, 'every delivery counted once')
    // A write on the store's own connection, outside its appends (SQL run on store.db), counts too.
    sqliteConnection(first).prepare('UPDATE jobs SET job_name = ?, version = 10 WHERE job_id = 1').run('renamed by hand')
    await first.append(incoming(completed(1, { name: 'renamed by hand' }), T0 + 4))
    t.match(await first.getJob(1), { version: 10, eventCount: 5 }, 'the redelivery builds on the row as written by hand')
  })

  t.test('retention walks the partial index jobs_terminal in order: no sort, no scan of open jobs', async (t) => {
    const { store } = openStore(t)
    const plan = (sqliteConnection(store).prepare(`EXPLAIN QUERY PLAN ${SQLITE_RETENTION_CANDIDATES}`)
      .all(retentionParameters({ before: T0, limit: 10 })) as Array<{ detail: string }>).map((step) => step.detail)
    t.match(plan, [/^SEARCH j USING INDEX jobs_terminal \(updated_at>\? AND updated_at<\?\)$/, /^SEARCH e EXISTS USING INDEX events_by_job \(job_id=\?\)$/])
    t.notOk(plan.some((step) => step.includes('TEMP B-TREE')), 'the rows come in index order')
    t.same(await store.retentionCandidates?.({ before: T0, limit: 10 }), [], 'the store prepares that statement')
  })

  t.test('seq is never reused, even after the last rows are deleted by hand', async (t) => {
    const { store } = openStore(t)
    await store.append(incoming(assigned(1), T0))
    const second = await store.append(incoming(assigned(2), T0))
    sqliteConnection(store).prepare('DELETE FROM events WHERE seq = ?').run(second.seq)
    const third = await store.append(incoming(assigned(3), T0))
    t.ok(third.seq > second.seq, 'AUTOINCREMENT: a seq handed out once is never handed out again')
  })

  t.test('rebuild repairs a projection tampered with plain SQL; a dry run only reports it', async (t) => {
    const { store } = openStore(t)
    await seedLog(store)
    const truth = await store.listJobs({ limit: 100 })
    t.same(await store.rebuild({ dryRun: true }), { events: 8, jobs: 3, outcomeMismatches: [], differingJobs: [] },
      'an untouched store replays clean')

    sqliteConnection(store).prepare("UPDATE jobs SET status = 'New', version = 42 WHERE job_id = 1").run()
    sqliteConnection(store).prepare('DELETE FROM jobs WHERE job_id = 3').run()
    sqliteConnection(store).prepare(`INSERT INTO jobs (job_id, job_name, status, guardian_phone, last_event_type, version, event_count, created_at, updated_at)
      VALUES (77, 'ghost', 'Assigned', NULL, 'JobAssigned', 1, 1, 0, 0)`).run()
    const tampered = await store.listJobs({ limit: 100 })

    const dry = await store.rebuild({ dryRun: true })
    t.same(dry.differingJobs, [1, 3, 77], 'the changed, the missing and the extra job are reported')
    t.same(dry.outcomeMismatches, [])
    t.equal(dry.events, 8)
    t.equal(dry.jobs, 3)
    t.same(await store.listJobs({ limit: 100 }), tampered, 'a dry run changes nothing')

    const repair = await store.rebuild()
    t.same(repair.differingJobs, [1, 3, 77], 'the real run reports what it repaired')
    t.same(await store.listJobs({ limit: 100 }), truth, 'the projection equals the live one again')
    t.same(await store.rebuild({ dryRun: true }), { events: 8, jobs: 3, outcomeMismatches: [], differingJobs: [] })

    const after = await store.append(incoming(completed(1), T0 + 50))
    t.same(after, { outcome: 'applied', seq: after.seq, jobId: 1, status: 'Completed' }, 'appends continue on the repaired projection')
    t.equal((await store.getJob(1))?.version, 3)
  })

  t.test('a projected job with no event in the log is reported by a dry run and removed by rebuild', async (t) => {
    const { store } = openStore(t)
    await seedLog(store)
    const truth = await store.listJobs({ limit: 100 })
    sqliteConnection(store).prepare(`INSERT INTO jobs (job_id, job_name, status, guardian_phone, last_event_type, version, event_count, created_at, updated_at)
      VALUES (77, 'ghost', 'Assigned', NULL, 'JobAssigned', 1, 1, 0, 0)`).run()
    t.same((await store.rebuild({ dryRun: true })).differingJobs, [77], 'the phantom job is reported')
    t.equal((await store.getJob(77))?.jobName, 'ghost', 'a dry run leaves it')
    t.same((await store.rebuild()).differingJobs, [77])
    t.same(await store.listJobs({ limit: 100 }), truth, 'rebuild removes it')
  })

  t.test('an outcome edited with plain SQL in the log shows up as an outcome mismatch', async (t) => {
    const { store } = openStore(t)
    const results = await seedLog(store)
    const duplicate = results[4] as AppendResult
    const stale = results[3] as AppendResult
    t.equal(duplicate.outcome, 'duplicate')
    t.equal(stale.outcome, 'stale')
    sqliteConnection(store).prepare("UPDATE events SET outcome = 'applied' WHERE seq = ?").run(duplicate.seq)
    sqliteConnection(store).prepare("UPDATE events SET outcome = 'duplicate' WHERE seq = ?").run(stale.seq)
    const report = await store.rebuild({ dryRun: true })
    t.same(report.outcomeMismatches, [
      { seq: stale.seq, stored: 'duplicate', replayed: 'stale' },
      { seq: duplicate.seq, stored: 'applied', replayed: 'duplicate' }
    ])
    t.same(report.differingJobs, [], 'the projection itself still agrees')
  })

  t.test('rebuild replays a log longer than one replay page', async (t) => {
    const { store } = openStore(t)
    const results = await Promise.all(Array.from({ length: 12_000 }, (_, i) => {
      const jobId = 1 + (i % 300)
      const step = Math.floor(i / 300) % 4
      const event = step === 0 ? assigned(jobId, { phone: `+44 7700 ${900000 + jobId}` }) : step === 1 ? started(jobId) : step === 2 ? completed(jobId) : started(jobId)
      return store.append(incoming(event, T0 + i))
    }))
    t.equal(new Set(results.map((r) => r.seq)).size, 12_000)
    const jobs = await store.listJobs({ limit: 1000 })
    t.same(await store.rebuild({ dryRun: true }), { events: 12_000, jobs: 300, outcomeMismatches: [], differingJobs: [] })
    t.same((await store.rebuild()).differingJobs, [])
    t.same(await store.listJobs({ limit: 1000 }), jobs)
  })

  t.test('rebuild agrees with the live projection past its in-memory job cache', async (t) => {
    // A cache of 500 job states for 2 050 jobs: states are written out and read back.
    const { store } = openStore(t, { replayCacheSize: 500 })
    const jobs = 2_050
    const firsts = Array.from({ length: jobs }, (_, i) => incoming(assigned(i + 1, { phone: `+44 7700 ${900000 + (i % 1000)}` }), T0 + i))
    // Later events for jobs whose state was spilled out of the cache and must be read back.
    const laters = [
      ...Array.from({ length: 100 }, (_, i) => incoming(started(i + 1), T0 + jobs + i)),
      ...Array.from({ length: 100 }, (_, i) => incoming(assigned(i + 1, { phone: `+44 7700 ${900000 + i}` }), T0 + jobs + 100 + i)),
      ...Array.from({ length: 100 }, (_, i) => incoming(withdrawn(jobs - i), T0 + jobs + 200 + i))
    ]
    await Promise.all(firsts.map((event) => store.append(event)))
    const later = await Promise.all(laters.map((event) => store.append(event)))
    t.same([...new Set(later.map((r) => r.outcome))], ['applied', 'stale'])
    const sample = [await store.getJob(1), await store.getJob(jobs), await store.getJob(1_000)]
    t.same(await store.rebuild({ dryRun: true }), {
      events: jobs + laters.length, jobs, outcomeMismatches: [], differingJobs: []
    })
    t.same((await store.rebuild()).differingJobs, [])
    t.same([await store.getJob(1), await store.getJob(jobs), await store.getJob(1_000)], sample)
  })

  t.test('another connection holding the write lock makes append fail after busyTimeout; nothing half-written', async (t) => {
    const { store, file } = openStore(t, { busyTimeout: 50 })
    await store.append(incoming(assigned(1, { phone: '+44 7700 900001' }), T0))
    const before = await store.getJob(1)

    const other = new Database(file)
    t.teardown(() => other.close())
    other.exec('BEGIN IMMEDIATE')
    const blocked = incoming(started(1), T0 + 1)
    const blockedNew = incoming(assigned(2), T0 + 2)
    const settled = await Promise.allSettled([store.append(blocked), store.append(blockedNew)])
    for (const s of settled) {
      t.equal(s.status, 'rejected', 'the append rejects')
      if (s.status === 'rejected') t.match(s.reason, { code: 'SQLITE_BUSY' })
    }
    t.equal((await readWholeLog(store)).length, 1, 'the rejected events are not in the log')
    t.same(await store.getJob(1), before, 'the projection is unchanged')
    t.equal(await store.getJob(2), undefined)

    other.exec('ROLLBACK')
    const retried = await store.append(blocked)
    t.equal(retried.outcome, 'applied', 'the sender\'s retry is applied, not taken for a duplicate')
    t.equal(retried.status, 'InProgress')
    const log = await readWholeLog(store)
    t.same(log.map((r) => [r.jobId, r.outcome]), [[1, 'applied'], [1, 'applied']])
    t.equal((await store.getJob(1))?.version, 2)
  })

  t.test('one failing event in a batch fails only its own caller', async (t) => {
    const { store } = openStore(t)
    await store.append(incoming(assigned(1, { phone: '+44 7700 900001' }), T0))
    const good1 = incoming(started(1), T0 + 1)
    const good2 = incoming(assigned(2), T0 + 2)
    const good3 = incoming(completed(1), T0 + 3)
    // Injected faults: a NOT NULL column left null (fails inside SQL) and a body that is not bytes.
    const nullName = { ...incoming(assigned(3), T0 + 4), jobName: null } as unknown as IncomingEvent
    const notBytes = { ...incoming(assigned(4), T0 + 5), rawBody: 12345 } as unknown as IncomingEvent
    const nullNameOnKnownJob = { ...incoming(completed(2), T0 + 6), jobName: null } as unknown as IncomingEvent

    const settled = await Promise.allSettled([
      store.append(good1), store.append(nullName), store.append(good2), store.append(notBytes),
      store.append(nullNameOnKnownJob), store.append(good3)
    ])
    t.same(settled.map((s) => s.status), ['fulfilled', 'rejected', 'fulfilled', 'rejected', 'rejected', 'fulfilled'])
    t.match((settled[1] as PromiseRejectedResult).reason, { code: 'SQLITE_CONSTRAINT_NOTNULL' })
    const [r1, , r2, , , r3] = settled.map((s) => s.status === 'fulfilled' ? s.value : undefined)
    t.same([r1?.outcome, r2?.outcome, r3?.outcome], ['applied', 'applied', 'applied'])
    t.equal(r3?.status, 'Completed')

    const log = await readWholeLog(store)
    t.same(log.map((r) => r.seq), [log[0]?.seq, r1?.seq, r2?.seq, r3?.seq], 'only the good events are in the log')
    t.equal(await store.getJob(3), undefined, 'no projection for the failed first event')
    t.equal(await store.getJob(4), undefined)
    const job2 = await store.getJob(2) as JobState
    t.equal(job2.status, 'Assigned', 'the failed event on a known job left it alone')
    t.equal(job2.eventCount, 1)
    t.same(await store.rebuild({ dryRun: true }).then((r) => [r.outcomeMismatches, r.differingJobs]), [[], []])
  })

  t.test('group commit: appends from one turn of the event loop and the next share one commit', async (t) => {
    const { store } = openStore(t)
    const sizes: number[] = []
    store.onCommit?.((size) => { sizes.push(size) })
    const sameTurn = [store.append(incoming(assigned(1), T0)), store.append(incoming(assigned(2), T0 + 1))]
    const nextTurn = await new Promise<Promise<AppendResult>>((resolve) => {
      setImmediate(() => resolve(store.append(incoming(assigned(3), T0 + 2))))
    })
    const results = await Promise.all([...sameTurn, nextTurn])
    t.same(sizes, [3], 'one transaction for the three')
    t.same(results.map((r) => r.seq), [1, 2, 3], 'in arrival order')
    await store.append(incoming(assigned(4), T0 + 3))
    t.same(sizes, [3, 1], 'an append after that commit gets a commit of its own')
  })

  t.test('appends beyond maxBatch are spread over several transactions', async (t) => {
    const { store } = openStore(t, { maxBatch: 3 })
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => store.append(incoming(assigned(i + 1), T0 + i))))
    t.same(results.map((r) => r.outcome), Array(10).fill('applied'))
    const seqs = results.map((r) => r.seq)
    t.same(seqs, seqs.slice().sort((a, b) => a - b), 'the queue keeps arrival order')
    t.equal(new Set(seqs).size, 10)
    t.equal((await readWholeLog(store)).length, 10)
  })

  t.test('appends queued at close beyond one batch: each is either committed or rejected, never lost silently', async (t) => {
    const file = join(t.testdir(), 'g2.db')
    const store = sqliteStore({ filename: file, maxBatch: 2 })
    const events = Array.from({ length: 5 }, (_, i) => incoming(assigned(i + 1), T0 + i))
    const pending = events.map((event) => store.append(event))
    await store.close()
    const settled = await Promise.allSettled(pending)
    const reopened = sqliteStore({ filename: file })
    t.teardown(() => reopened.close())
    const logged = new Set((await readWholeLog(reopened)).map((r) => r.jobId))
    settled.forEach((s, i) => {
      t.equal(s.status === 'fulfilled', logged.has(i + 1), `append ${i + 1}: ${s.status}, ${logged.has(i + 1) ? 'in' : 'not in'} the log`)
    })
    t.equal(settled.filter((s) => s.status === 'fulfilled').length, 5, 'close commits every append accepted before it')
  })
})
