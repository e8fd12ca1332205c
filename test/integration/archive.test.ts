// Archiving (docs/design.md, "Archiving"), on SQLite files and on PostgreSQL, through the CLI in
// child processes while the app keeps serving: the file proves itself; the checkpoint lets verify
// and rebuild start after it; the routes, the stream and redeliveries carry on; refusals leave
// everything as it was.
import t, { type Test } from 'tap'
import Database from 'better-sqlite3'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { runCli } from '../helpers/cli-process.js'
import { assigned, completed, incoming, post, SECRET, started } from '../helpers/helpers.js'
import { freshSchema, pgUrl, requirePg, withClient } from '../helpers/pg.js'
import { server, SseClient } from '../helpers/stream-helpers.js'
import { projectionHash } from '../../src/log/archive-file.js'
import { sqliteStore } from '../../src/index.js'
import { auditInRanges } from '../../src/log/audit.js'
import { archiveLog } from '../../src/log/archive.js'

const PHONE_A = '+15550100001'
const PHONE_B = '+15550100002'
const PHONE_C = '+15550100003'
const PHONE_D = '+15550100004'

/** Seqs 1…10; 1…8 are archived first. Job 1: 1, 3, 4 (stale), 8; job 2: 2, 5; job 3: 6, 7; job 4: 9, 10. */
const DELIVERIES = [
  assigned(1, { phone: PHONE_A }), assigned(2, { phone: PHONE_B }), started(1, { phone: PHONE_A }), assigned(1, { phone: PHONE_A }),
  completed(2), assigned(3, { phone: PHONE_C }), started(3, { phone: PHONE_C }), completed(1), assigned(4, { phone: PHONE_D }),
  started(4, { phone: PHONE_D })
]

interface Backend {
  name: string
  /** A new, empty log; `sql` runs a statement on its events table (named `events`). */
  open: (t: Test, dir: string) => Promise<{ database: string; sql: (statement: string) => Promise<void> }>
}

const sqlite: Backend = {
  name: 'SQLite',
  async open (_t, dir) {
    const database = join(dir, 'g2.db')
    return {
      database,
      async sql (statement) {
        const db = new Database(database)
        try { db.exec(statement) } finally { db.close() }
      }
    }
  }
}

const postgres: Backend = {
  name: 'PostgreSQL',
  async open (t) {
    const schema = freshSchema(t)
    return {
      database: `${pgUrl()}?schema=${schema}`,
      sql: (statement) => withClient(async (client) => { await client.query(`SET search_path TO ${schema}; ${statement}`) })
    }
  }
}

const cli = (...args: string[]) => runCli(args, { timeout: 60_000 })

async function jobsOf (app: FastifyInstance, ids: number[]) {
  return Promise.all(ids.map(async (id) => (await app.inject(`/jobs/${id}`)).json<Record<string, unknown>>()))
}

for (const backend of [sqlite, postgres]) {
  t.test(`${backend.name}: archive, then verify, rebuild, the routes, the stream and redeliveries`, async (t) => {
    if (backend === postgres && !await requirePg(t)) return
    const dir = t.testdir()
    const { database, sql } = await backend.open(t, dir)
    const { app, base } = await server(t, { database })
    for (const payload of DELIVERIES) t.equal((await post(app, payload)).statusCode, 200)
    const before = await jobsOf(app, [1, 2, 3, 4])
    // After the two redeliveries below: one more delivery each for jobs 1 and 3.
    const counted = before.map((job, i) => i === 0 || i === 2 ? { ...job, eventCount: (job.eventCount as number) + 1 } : job)
    const file = join(dir, 'archive-1.ndjson')

    t.test('refusals change nothing', async (t) => {
      const past = await cli('archive', '--db', database, '--through', '11', '--out', file)
      t.equal(past.code, 1)
      t.match(past.stderr, /the log was not archived: seq 11 is past the chain's head \(seq 10\)/)
      await app.g2sentry.store.openConsumer('audit-copy', 'beginning')
      const consumer = await cli('archive', '--db', database, '--through', '8', '--out', file)
      t.equal(consumer.code, 1)
      t.match(consumer.stderr, /consumer audit-copy has handled rows up to seq 0 only/, 'names the consumer')
      t.ok((await app.g2sentry.store.deleteConsumer('audit-copy', 'consumer:audit-copy')).deleted)
      await sql('UPDATE events SET received_at = received_at + 1 WHERE seq = 5')
      const tampered = await cli('archive', '--db', database, '--through', '8', '--out', file)
      t.equal(tampered.code, 1)
      t.match(tampered.stderr, /row 5 does not verify/)
      await sql('UPDATE events SET received_at = received_at - 1 WHERE seq = 5')
      const unsigned = await cli('archive', '--db', database, '--through', '8', '--out', file, '--secret', 'another-secret')
      t.equal(unsigned.code, 1)
      t.match(unsigned.stderr, /row 1 is signed by none of the given secrets/)
      t.notOk(existsSync(file), 'no file is left by a refusal')
      t.equal((await app.g2sentry.store.readLog({ limit: 100 })).length, 10, 'every row is still there')
    })

    t.test('the archive', async (t) => {
      const run = await cli('archive', '--db', database, '--through', '8', '--out', file, '--secret', SECRET, '--batch', '3')
      t.equal(run.code, 0, run.stderr)
      t.match(run.stdout, /archived rows 1…8 \(8 rows, 3 jobs\) to .*archive-1\.ndjson, \d+ bytes, sha256 [0-9a-f]{64}/)
      t.match(run.stdout, /checkpoint: seq 11; 8 rows deleted from the log/)
      t.match(run.stdout, backend === sqlite ? /space: \d+ pages returned to the file system/ : /space: VACUUM ran on the events table/)
      const lines = readFileSync(file, 'utf8').trimEnd().split('\n')
      t.equal(lines.length, 10, 'a header, 8 rows, the checkpoint')
      t.match(JSON.parse(lines[0] as string), { format: 'g2sentry-archive', version: 1, fromSeq: 1, throughSeq: 8, prevHash: null })
      t.match(JSON.parse(lines[1] as string), { seq: 1, jobId: 1, guardianPhone: PHONE_A, outcome: 'applied', chainVersion: 2 })
      t.match(JSON.parse(lines[9] as string), { kind: 'checkpoint', throughSeq: 8, rows: 8, jobs: 3 })
      const sha = run.stdout.match(/sha256 ([0-9a-f]{64})/)?.[1]
      const record = (await app.g2sentry.store.readLog({ limit: 100 })).find((row) => row.source === 'checkpoint')
      t.match(JSON.parse(record?.rawBody.toString() ?? '{}'), { checkpoint: { through: 8, rows: 8, file: 'archive-1.ndjson', sha256: sha, jobs: 3 } })
      t.same((await app.g2sentry.store.readLog({ limit: 100 })).map((row) => row.seq), [9, 10, 11], 'the archived rows are gone, the checkpoint row stays')

      const verified = await cli('verify', '--archive', file, '--secret', 'old-secret', '--secret', SECRET)
      t.equal(verified.code, 0, verified.stdout)
      t.match(verified.stdout, /archive: rows 1…8[\s\S]*signatures: 8 signed, 0 signed by none[\s\S]*projection: ok[\s\S]*ok: the archive is intact/)
    })

    t.test('verify and rebuild start at the checkpoint', async (t) => {
      const verify = await cli('verify', '--db', database, '--secret', SECRET, '--workers', '0')
      t.equal(verify.code, 0, verify.stdout)
      t.match(verify.stdout, /chain: ok, 3 rows linked[\s\S]*archive: rows 1…8 are in archive-1\.ndjson \(sha256 [0-9a-f]{64}\), checkpoint at seq 11; the chain is checked from seq 9/)
      const report = await app.g2sentry.audit()
      t.ok(report.ok)
      t.match(report.archive, { through: 8, checkpointSeq: 11, projectionOk: true })
      const ranged = await auditInRanges(app.g2sentry.store, { database, secrets: [SECRET], rangeSize: 1, pageSize: 1 })
      t.ok(ranged.ok, 'checked in ranges of one seq from the checkpoint on, as the worker threads check it')
      t.equal(ranged.events, 3)
      if (backend === sqlite) {
        const threads = sqliteStore({ filename: database, readOnly: true, replayThreads: 3 })
        t.teardown(() => threads.close())
        t.match(await threads.rebuild({ dryRun: true }), { events: 2, jobs: 4, differingJobs: [], outcomeMismatches: [] }, 'a rebuild on threads starts there too (the two rows after the checkpoint; the record is not an event)')
      }
      const rebuild = await cli('rebuild', '--db', database)
      t.equal(rebuild.code, 0, rebuild.stdout)
      t.match(rebuild.stdout, /rebuilt 2 events into 4 jobs/)
      t.same((await app.g2sentry.store.rebuild({ dryRun: true })).differingJobs, [])
      t.same(await jobsOf(app, [1, 2, 3, 4]), before, 'GET /jobs/:id unchanged')
    })

    t.test('GET /jobs/:id/events counts the archived rows', async (t) => {
      const job1 = (await app.inject('/jobs/1/events')).json<{ archived: number; events: unknown[] }>()
      t.same([job1.archived, job1.events.length], [4, 0], 'job 1: every row archived, still answered')
      const job4 = (await app.inject('/jobs/4/events')).json<{ archived: number; events: unknown[] }>()
      t.same([job4.archived, job4.events.length], [0, 2])
      t.equal((await app.inject('/jobs/99/events')).statusCode, 404)
    })

    t.test('a stream client from before the checkpoint is reset', async (t) => {
      const client = await SseClient.open(t, `${base}/jobs/stream`, { 'last-event-id': '5' })
      const deadline = Date.now() + 5000
      while (!client.events.some((event) => event.event === 'reset') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
      t.match(client.events[0], { event: 'reset', id: '11' })
      t.match(JSON.parse(client.events[0]?.data ?? '{}'), { lastEventId: 5, lastSeq: 11 })
      const later = await SseClient.open(t, `${base}/jobs/stream`, { 'last-event-id': '9' })
      await later.until(10)
      t.same(later.events.map((event) => event.event), ['job'], 'a client after the checkpoint catches up as before')
    })

    t.test('redeliveries of archived bodies', async (t) => {
      const stale = await post(app, DELIVERIES[0])
      t.equal(stale.statusCode, 200)
      t.match(stale.json(), { outcome: 'stale', seq: 12 })
      const duplicate = await post(app, DELIVERIES[6])
      t.match(duplicate.json(), { outcome: 'duplicate', seq: 13 })
      const rows = await app.g2sentry.store.readLog({ afterSeq: 11, limit: 10 })
      t.same(rows.map((row) => row.sameAs), [null, null], 'the first delivery is gone: sameAs is null')
      t.same(await jobsOf(app, [1, 2, 3, 4]), counted, 'and nothing changed but the deliveries counted')
    })

    t.test('a second archive continues the first', async (t) => {
      const again = await cli('archive', '--db', database, '--through', '8', '--out', join(dir, 'again.ndjson'))
      t.equal(again.code, 1)
      t.match(again.stderr, /seq 8 is archived already: the latest checkpoint \(seq 11\) covers rows up to 8/)
      const second = join(dir, 'archive-2.ndjson')
      const run = await cli('archive', '--db', database, '--through', '12', '--out', second)
      t.equal(run.code, 0, run.stderr)
      t.match(run.stdout, /archived rows 9…12 \(4 rows, 4 jobs\)/)
      const header = JSON.parse(readFileSync(second, 'utf8').split('\n')[0] as string) as { prevHash: string }
      t.match(header, { fromSeq: 9, throughSeq: 12 })
      t.equal(header.prevHash, JSON.parse(readFileSync(file, 'utf8').trimEnd().split('\n')[9] as string).throughHash, 'it links to the first file\'s last row')
      const verified = await cli('verify', '--archive', second, '--secret', SECRET)
      t.equal(verified.code, 0, verified.stdout)
      t.match(verified.stdout, /projection: not checked/)
      const both = await cli('verify', '--archive', file, '--archive', second, '--secret', SECRET)
      t.equal(both.code, 0, both.stdout)
      t.match(both.stdout, /archive-2\.ndjson:\narchive: rows 9…12[\s\S]*projection: ok\nok: the archives are intact/, 'both files in order: the second\'s projection replays from the first')
      const reversed = await cli('verify', '--archive', second, '--archive', file)
      t.equal(reversed.code, 1)
      t.match(reversed.stdout, /line 1: the file does not continue the one before it \(which ends at seq 12\)/)
      const verify = await cli('verify', '--db', database, '--secret', SECRET)
      t.equal(verify.code, 0, verify.stdout)
      t.same((await app.g2sentry.store.rebuild({ dryRun: true })).differingJobs, [])
      t.same((await app.inject('/jobs/1/events')).json<{ archived: number }>().archived, 5, 'job 1: its redelivery archived too')
      t.same(await jobsOf(app, [1, 2, 3, 4]), counted)
      const jobs = await app.g2sentry.store.checkpointJobs?.() ?? []
      t.equal(projectionHash(jobs), JSON.parse(readFileSync(second, 'utf8').trimEnd().split('\n').at(-1) as string).projectionHash)
    })

    t.test('erasure after an archive: the projection kept loses the phone, its hash still holds', async (t) => {
      const result = await app.g2sentry.redact({ jobId: 3 })
      t.match(result, { jobs: [3], rows: 1 }, 'the one row of job 3 left in the log')
      const kept = (await app.g2sentry.store.checkpointJobs?.() ?? []).find((job) => job.jobId === 3)
      t.equal(kept?.guardianPhone, '[redacted 1]', 'the projection kept at the checkpoint has the placeholder')
      const verify = await cli('verify', '--db', database, '--secret', SECRET)
      t.equal(verify.code, 0, verify.stdout)
      t.same((await app.g2sentry.store.rebuild({ dryRun: true })).differingJobs, [])
      const latest = await app.g2sentry.store.latestCheckpoint?.()
      const request = { record: latest?.record as NonNullable<typeof latest>['record'], jobs: [], at: Date.now() }
      await t.rejects(app.g2sentry.store.checkpoint?.({ ...request, after: 12, readAt: 14 }) as Promise<unknown>,
        { code: 'FST_G2SENTRY_ARCHIVE_REFUSED', message: /a redaction was made meanwhile/ }, 'a checkpoint over rows read before a redaction is refused')
      await t.rejects(app.g2sentry.store.checkpoint?.({ ...request, after: 8, readAt: 100 }) as Promise<unknown>,
        { code: 'FST_G2SENTRY_ARCHIVE_REFUSED', message: /another archive was made meanwhile/ })
    })

    t.test('an edit of the projection kept at the checkpoint fails verify', async (t) => {
      await sql('UPDATE checkpoint_jobs SET version = version + 1 WHERE job_id = 1')
      const verify = await cli('verify', '--db', database)
      t.equal(verify.code, 1)
      t.match(verify.stdout, /archive: BROKEN, the projection kept at the checkpoint does not have the hash the checkpoint names/)
      await sql('UPDATE checkpoint_jobs SET version = version - 1 WHERE job_id = 1')
      t.equal((await cli('verify', '--db', database)).code, 0)
    })

    t.test('an edited first row after the checkpoint fails verify', async (t) => {
      await sql('UPDATE events SET prev_hash = hash WHERE seq = 13')
      const verify = await cli('verify', '--db', database, '--workers', '0')
      t.equal(verify.code, 1)
      t.match(verify.stdout, /chain: BROKEN at seq 13/)
    })
  })
}

for (const backend of [sqlite, postgres]) {
  t.test(`${backend.name}: a deletion cut short is finished by archiving through the same seq again`, async (t) => {
    if (backend === postgres && !await requirePg(t)) return
    const dir = t.testdir()
    const { database } = await backend.open(t, dir)
    const { app } = await server(t, { database })
    for (const payload of DELIVERIES) await post(app, payload)
    const result = await archiveLog(app.g2sentry.store, { through: 6, out: join(dir, 'a.ndjson'), keepRows: true })
    t.match(result, { checkpointSeq: 11, deleted: 0, resumed: false })
    t.equal((await app.g2sentry.store.readLog({ limit: 100 })).length, 11, 'the checkpoint is written, the rows are still there')
    t.ok((await app.g2sentry.audit()).ok, 'verify passes meanwhile: it starts after the checkpoint')
    t.same((await app.g2sentry.store.rebuild({ dryRun: true })).differingJobs, [])
    const run = await cli('archive', '--db', database, '--through', '6', '--out', join(dir, 'b.ndjson'))
    t.equal(run.code, 0, run.stderr)
    t.match(run.stdout, /the checkpoint at seq 11 \(rows up to 6, in a\.ndjson\) was written, its deletion was cut short: finishing it[\s\S]*6 rows deleted/)
    t.notOk(existsSync(join(dir, 'b.ndjson')), 'no second file')
    t.same((await app.g2sentry.store.readLog({ limit: 100 })).map((row) => row.seq), [7, 8, 9, 10, 11])
    const again = await cli('archive', '--db', database, '--through', '6', '--out', join(dir, 'c.ndjson'))
    t.equal(again.code, 1, 'then it is archived already')
    t.ok((await app.g2sentry.audit()).ok)

    // Every row of job 4 (9, 10; InProgress) archived: the reconciler's conditional append compares with the kept last seq.
    await archiveLog(app.g2sentry.store, { through: 10, out: join(dir, 'd.ndjson') })
    const reconciled = (ifLastSeq: number) => app.g2sentry.store.appendIf?.({
      jobId: 4,
      eventType: 'Reconciled',
      jobName: 'Open House at 123 Main St',
      jobStatus: 'Completed',
      rawBody: Buffer.from('{}'),
      signature: '',
      receivedAt: Date.now(),
      source: 'api',
      ifLastSeq
    })
    t.match(await reconciled(9), { outcome: 'superseded', lastSeq: 10 }, 'an answer read before row 10 loses')
    t.match(await reconciled(10), { outcome: 'applied', status: 'Completed' }, 'an answer read after it is appended')
  })
}

t.test('a tampered archive file is caught, naming the line', async (t) => {
  const dir = t.testdir()
  const database = join(dir, 'g2.db')
  const { app } = await server(t, { database })
  for (const payload of DELIVERIES) await post(app, payload)
  const file = join(dir, 'a.ndjson')
  t.equal((await cli('archive', '--db', database, '--through', '10', '--out', file)).code, 0)
  const lines = readFileSync(file, 'utf8').trimEnd().split('\n')
  let edits = 0
  const edit = (index: number, change: (value: Record<string, unknown>) => void) => {
    const copy = [...lines]
    const value = JSON.parse(copy[index] as string) as Record<string, unknown>
    change(value)
    copy[index] = JSON.stringify(value)
    const target = join(dir, `edited-${++edits}.ndjson`)
    writeFileSync(target, copy.join('\n') + '\n')
    return target
  }
  const cases: Array<[string, string, RegExp]> = [
    ['a row\'s phone', edit(3, (row) => { row.guardianPhone = PHONE_D }), /line 4: seq 3: a field parsed from the raw body differs from the body/],
    ['a row\'s body', edit(3, (row) => { row.body = Buffer.from(JSON.stringify(started(1, { phone: PHONE_D }))).toString('base64') }), /line 4: seq 3: the raw body was changed/],
    ['the checkpoint\'s hash', edit(11, (line) => { line.throughHash = 'f'.repeat(64) }), /line 12: the checkpoint's throughHash is not the last row's hash/],
    ['the checkpoint\'s projection', edit(11, (line) => { line.projectionHash = 'f'.repeat(64) }), /line 12: the projection replayed from the rows does not have the checkpoint's projectionHash/]
  ]
  for (const [name, target, expected] of cases) {
    const run = await cli('verify', '--archive', target, '--secret', SECRET)
    t.equal(run.code, 1, name)
    t.match(run.stdout, expected, name)
  }
  writeFileSync(join(dir, 'cut.ndjson'), lines.slice(0, 8).join('\n') + '\n')
  const cut = await cli('verify', '--archive', join(dir, 'cut.ndjson'))
  t.equal(cut.code, 1)
  t.match(cut.stdout, /line 9: the file ends without its checkpoint line/)
})

t.test('SQLite: a new file gives archived space back; an older file keeps it', async (t) => {
  const dir = t.testdir()
  const database = join(dir, 'g2.db')
  const store = sqliteStore({ filename: database })
  const pad = 'x'.repeat(2000)
  // Ten jobs, renamed by each row: the rows are large, the projection small.
  await Promise.all(Array.from({ length: 2000 }, (_, i) => store.append(incoming(assigned(1 + (i % 10), { name: `${pad}${i}` })))))
  await store.close()
  const db = new Database(database)
  t.equal(db.pragma('auto_vacuum', { simple: true }), 2, 'a new file is made with auto_vacuum INCREMENTAL')
  db.close()
  const size = statSync(database).size
  const run = await cli('archive', '--db', database, '--through', '1900', '--out', join(dir, 'a.ndjson'))
  t.equal(run.code, 0, run.stderr)
  t.match(run.stdout, /space: [1-9]\d* pages returned to the file system/)
  t.ok(statSync(database).size < size / 4, `the file shrank: ${size} → ${statSync(database).size} bytes`)

  const old = join(dir, 'old.db')
  const none = new Database(old)
  none.pragma('auto_vacuum = NONE')
  none.exec('CREATE TABLE keep_me (x)')
  none.close()
  const oldStore = sqliteStore({ filename: old })
  await Promise.all(Array.from({ length: 200 }, (_, i) => oldStore.append(incoming(assigned(i + 1)))))
  await oldStore.close()
  const kept = await cli('archive', '--db', old, '--through', '100', '--out', join(dir, 'b.ndjson'))
  t.equal(kept.code, 0, kept.stderr)
  t.match(kept.stdout, /space: this file was made without auto_vacuum, so the freed pages stay in it/)
})
