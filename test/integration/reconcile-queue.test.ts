// The reconciler's queue (migration 007): kept by a trigger as rows are appended, and built by
// the migration from the log for a log written before it. Both must agree, on SQLite and
// PostgreSQL: the queue is rebuilt by running the migration again on a log whose queue was kept
// live, and compared row for row.
import t, { type Test } from 'tap'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { buildApp, post, assigned, started, withdrawn, completed } from '../helpers/helpers.js'
import { startFake } from '../helpers/reconciler.js'
import { openStore } from '../../src/store/open-store.js'
import { freshSchema, pgAvailable, pgUrl, withClient } from '../helpers/pg.js'

t.setTimeout(120_000)

/** Writes jobs of every shape the queue distinguishes and runs one round over them. */
async function writeLog (t: Test, database: string): Promise<void> {
  const fake = await startFake(t)
  const app = await buildApp(t, {
    database,
    reconcile: { baseUrl: fake.url, partnerKey: fake.partnerKey, partnerSecret: fake.partnerSecret, quietForMs: 1, everyMs: 3_600_000 }
  })
  const deliveries = [
    assigned(1), // open, quiet
    assigned(2), assigned(2), withdrawn(2), // a withdrawal after two assignments: ambiguous
    started(3), // a first row that is not an assignment: ambiguous
    started(4), assigned(4), // a stale row: ambiguous
    completed(5), // closed: never queued
    assigned(6), completed(6), started(6), // closed, then a stale row: not queued again
    assigned(7), // checked: G2 Sentry agrees
    assigned(8) // G2 Sentry's answer is unusable: it backs off
  ]
  for (const payload of deliveries) t.equal((await post(app, payload)).statusCode, 200)
  for (const jobId of [1, 2, 3, 4, 7]) fake.setStatus(jobId, jobId === 2 ? 'New' : jobId === 3 || jobId === 4 ? 'InProgress' : 'Assigned')
  fake.answer(/^\/jobs\/8\/status$/, { status: 403 })
  // Every job quiet for its 1 ms (quietForMs) before the round asks.
  await new Promise((resolve) => setTimeout(resolve, 2))
  await app.g2sentry.reconcile()
  t.equal((await post(app, started(7))).statusCode, 200, 'news after the check')
  await app.close()
}

const QUEUE = 'SELECT job_id, last_seq, last_at, assignments, ambiguous_seq, checked_at, checked_seq, news_at, ambiguous, retry_at FROM reconcile_queue ORDER BY job_id'

t.test('SQLite: the migration builds the queue the trigger kept', async (t) => {
  const database = join(t.testdir(), 'g2.db')
  await writeLog(t, database)
  const db = new Database(database)
  const live = db.prepare(QUEUE).all() as Array<{ job_id: number; ambiguous: number }>
  t.same(live.map((r) => [r.job_id, r.ambiguous]), [[1, 0], [2, 0], [3, 0], [4, 0], [7, 0], [8, 0]], 'open jobs only; every ambiguity checked')
  db.exec("DROP TRIGGER reconcile_queue_on_event; DROP TRIGGER reconcile_queue_on_applied; DROP TRIGGER reconcile_queue_on_closed; DROP TABLE reconcile_queue; DELETE FROM g2sentry_migrations WHERE name = '007_reconcile_queue.sql'")
  db.close()
  const store = await openStore(database)
  await store.close()
  const rebuilt = new Database(database)
  t.same(rebuilt.prepare(QUEUE).all(), live)
  rebuilt.close()
})

t.test('PostgreSQL: the same', { skip: !(await pgAvailable()) && process.env.G2SENTRY_TEST_PG === undefined ? 'no PostgreSQL' : false }, async (t) => {
  const schema = freshSchema(t)
  const url = new URL(pgUrl())
  url.searchParams.set('schema', schema)
  await writeLog(t, url.href)
  const run = async (text: string) => withClient(async (client) => {
    await client.query(`SET search_path = ${schema}`)
    return client.query(text)
  })
  const query = async (text: string) => ((await run(text)).rows as Array<Record<string, unknown>>)
    .map((row) => Object.fromEntries(Object.entries(row).map(([k, v]) => [k, v === null ? null : Number(v)])))
  const live = await query(QUEUE)
  t.same(live.map((r) => [r.job_id, r.ambiguous]), [[1, 0], [2, 0], [3, 0], [4, 0], [7, 0], [8, 0]], 'open jobs only; every ambiguity checked')
  await run("DROP TRIGGER reconcile_queue_on_event ON events; DROP FUNCTION reconcile_queue_on_event(); DROP TABLE reconcile_queue; DELETE FROM g2sentry_migrations WHERE name = '007_reconcile_queue.sql'")
  const store = await openStore(url.href)
  await store.close()
  t.same(await query(QUEUE), live)
})
