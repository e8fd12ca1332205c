// npm run bench:reconcile -- [--open 25000] [--closed 0] [--runs 9] [--seconds 10] [--no-http]
//
// What reconciliation costs a SQLite log with many open jobs. Writes a log directly with SQL into
// a temporary file (--open jobs still open, 3 rows each; --closed jobs Completed, 4 rows each, to
// show whether the log's size matters), then reports the median time of the reconciler's
// queries: a round's candidates, a page of the CLI's full pass, and the oldest-unchecked gauge
// (read on every metrics scrape). Then, unless --no-http, GET /jobs/1 p99 and max on a real listening
// server (autocannon), without reconciliation and with a round every 500 ms against the fake
// G2 Sentry. The default run takes well under 2 minutes.
import autocannon from 'autocannon'
import Database from 'better-sqlite3'
import Fastify from 'fastify'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import g2sentry from '../src/index.js'
import { FakeG2Sentry } from '../src/simulator/fake-g2sentry.js'
import { sqliteStore } from '../src/store/sqlite/sqlite-store.js'

const { values } = parseArgs({
  options: {
    open: { type: 'string', default: '25000' },
    closed: { type: 'string', default: '0' },
    runs: { type: 'string', default: '9' },
    seconds: { type: 'string', default: '10' },
    'no-http': { type: 'boolean', default: false }
  }
})
const open = Number(values.open)
const closed = Number(values.closed)
const runs = Number(values.runs)
const NOW = 1_790_000_000_000

const dir = mkdtempSync(join(tmpdir(), 'g2sentry-bench-reconcile-'))
const filename = join(dir, 'g2.db')

/**
 * Open job n (1..open): JobAssigned, its redelivery, and on every tenth job a withdrawal after a
 * second assignment (ambiguous), else JobStarted. Closed jobs follow, with 4 rows each. One row a
 * second of received_at, in seq order; half the open jobs were checked an hour ago.
 */
function generate (): { events: number; ms: number } {
  const started = performance.now()
  // Migrated by the store itself, so the schema is this checkout's, triggers and indexes included.
  void sqliteStore({ filename }).close()
  const db = new Database(filename)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = OFF')
  const rows = `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${open * 3 + closed * 4})
    SELECT i AS seq,
      CASE WHEN i <= ${open * 3} THEN (i - 1) / 3 + 1 ELSE ${open} + (i - ${open * 3} - 1) / 4 + 1 END AS job_id,
      CASE WHEN i <= ${open * 3} THEN (i - 1) % 3 ELSE 10 + (i - ${open * 3} - 1) % 4 END AS step
    FROM n`
  const type = `CASE step WHEN 0 THEN 'JobAssigned' WHEN 1 THEN 'JobAssigned'
    WHEN 2 THEN CASE WHEN job_id % 10 = 5 THEN 'JobWithdrawed' ELSE 'JobStarted' END
    WHEN 10 THEN 'JobAssigned' WHEN 11 THEN 'JobStarted' WHEN 12 THEN 'JobCompleted' ELSE 'JobCompleted' END`
  const status = `CASE step WHEN 0 THEN 'Assigned' WHEN 1 THEN 'Assigned'
    WHEN 2 THEN CASE WHEN job_id % 10 = 5 THEN 'New' ELSE 'InProgress' END
    WHEN 10 THEN 'Assigned' WHEN 11 THEN 'InProgress' ELSE 'Completed' END`
  const outcome = "CASE WHEN step IN (1, 13) THEN 'duplicate' ELSE 'applied' END"
  db.transaction(() => {
    db.exec(`INSERT INTO events (seq, job_id, event_type, job_status, job_name, raw_body, signature, content_hash, received_at, outcome)
      SELECT seq, job_id, ${type}, ${status}, 'job', X'7B7D', 'sig', 'hash', ${NOW - 86_400_000} + seq * 1000, ${outcome} FROM (${rows})`)
    db.exec(`INSERT INTO jobs (job_id, job_name, status, guardian_phone, last_event_type, version, event_count, created_at, updated_at)
      SELECT job_id, 'job', job_status, NULL, event_type, 2, count(*) OVER (PARTITION BY job_id), min(received_at) OVER (PARTITION BY job_id), received_at
      FROM events e WHERE seq = (SELECT max(seq) FROM events x WHERE x.job_id = e.job_id)`)
    db.exec(`INSERT INTO reconcile_checks (job_id, checked_at, checked_seq)
      SELECT job_id, ${NOW - 3_600_000}, job_id * 3 FROM jobs WHERE job_id <= ${open} AND job_id % 2 = 0`)
  })()
  db.exec('ANALYZE')
  db.close()
  return { events: open * 3 + closed * 4, ms: performance.now() - started }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number
async function time (work: () => Promise<unknown>): Promise<number> {
  const ms: number[] = []
  for (let i = 0; i < runs; i++) {
    const started = performance.now()
    await work()
    ms.push(performance.now() - started)
  }
  return median(ms)
}

async function p99 (withReconcile: boolean, fake: FakeG2Sentry): Promise<{ p99: number; max: number; rounds: number }> {
  const app = Fastify({ logger: false })
  let rounds = 0
  await app.register(g2sentry, {
    secret: 'bench-secret',
    database: filename,
    ...(withReconcile
      ? { reconcile: { baseUrl: fake.url, partnerKey: fake.partnerKey, partnerSecret: fake.partnerSecret, quietForMs: 1, everyMs: 500, leaseTtlMs: 3000 } }
      : {})
  })
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  const before = fake.requests.length
  const result = await autocannon({ url: `${address}/jobs/1`, connections: 10, duration: Number(values.seconds) })
  rounds = fake.requests.length - before
  await app.close()
  return { p99: result.latency.p99, max: result.latency.max, rounds }
}

try {
  const made = generate()
  console.log(`log: ${open} open jobs, ${closed} closed, ${made.events} events, written in ${(made.ms / 1000).toFixed(1)} s (${filename})`)
  const store = sqliteStore({ filename })
  const state = store.reconcileState
  if (state === undefined) throw new Error('no reconcile state')
  const urgent = await time(() => state.candidates({ now: NOW, quietFor: 30 * 60_000, limit: 50 }))
  const page = await time(() => state.candidates({ now: NOW, quietFor: 0, limit: 100, allOpen: true, afterJobId: Math.floor(open / 2) }))
  const oldest = await time(() => state.oldestUnchecked(NOW))
  const sample = await state.candidates({ now: NOW, quietFor: 30 * 60_000, limit: 50 })
  await store.close()
  console.log(`median of ${runs}: a round's candidates (50) ${urgent.toFixed(2)} ms, a CLI page (100) ${page.toFixed(2)} ms, oldestUnchecked ${oldest.toFixed(2)} ms`)
  console.log(`first candidates: ${sample.slice(0, 3).map((c) => `${c.jobId} ${c.reason}`).join(', ')}`)
  if (values['no-http'] !== true) {
    const fake = await FakeG2Sentry.start()
    try {
      const without = await p99(false, fake)
      const within = await p99(true, fake)
      // The max too: a round that blocks the event loop for a second delays only the requests in
      // flight then, few enough to hide below the p99.
      console.log(`GET /jobs/1, ${values.seconds} s of autocannon (10 connections): p99 ${without.p99} ms (max ${without.max} ms) without reconciliation, ` +
        `p99 ${within.p99} ms (max ${within.max} ms) with a round every 500 ms (${within.rounds} Partner API requests)`)
    } finally {
      await fake.close()
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true })
}
