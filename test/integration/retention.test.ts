// Retention (docs/design.md, "Retention"), on SQLite files and on PostgreSQL: the plugin's
// background loop erases the personal data of jobs that ended longer ago than personalDataMs,
// and only theirs; verify keeps passing; the metrics follow; a job whose rows do not verify is
// skipped, logged without personal data, counted, and the others are still erased.
import t, { type Test } from 'tap'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import type { JobEvent } from '../../src/domain/types.js'
import type { RetentionOptions } from '../../src/plugin/options.js'
import { openStore } from '../../src/store/open-store.js'
import { assigned, buildApp, completed, incoming, memoryStream, post, started, withdrawn } from '../helpers/helpers.js'
import { freshSchema, pgUrl, requirePg, withClient } from '../helpers/pg.js'
import { until } from '../helpers/until.js'

const HOUR = 3_600_000
const phone = (jobId: number): string => `+1555010${String(jobId).padStart(4, '0')}`
const RETENTION: RetentionOptions = { personalDataMs: 10 * 60_000, everyMs: 50, leaseTtlMs: 2000 }

interface Backend {
  name: string
  /** A new, empty log: its `database` option, and how to edit a row's body behind the store's back. */
  open: (t: Test) => { database: string; tamper: (seq: number) => Promise<void> }
}

const sqlite: Backend = {
  name: 'SQLite',
  open (t) {
    const database = join(t.testdir(), 'g2.db')
    return {
      database,
      async tamper (seq) {
        const db = new Database(database)
        db.prepare('UPDATE events SET raw_body = CAST(replace(CAST(raw_body AS TEXT), \'Open House\', \'Open Hovse\') AS BLOB) WHERE seq = ?').run(seq)
        db.close()
      }
    }
  }
}

const postgres: Backend = {
  name: 'PostgreSQL',
  open (t) {
    const schema = freshSchema(t)
    return {
      database: `${pgUrl()}?schema=${schema}`,
      tamper: (seq) => withClient(async (client) => {
        await client.query(`UPDATE ${schema}.events SET raw_body = convert_to(replace(convert_from(raw_body, 'UTF8'), 'Open House', 'Open Hovse'), 'UTF8')
          WHERE seq = $1`, [seq])
      })
    }
  }
}

/** Appends `events` straight to the log at the given times (ms ago), before the app starts. */
async function seed (database: string, events: Array<[number, JobEvent | 'canceled']>): Promise<void> {
  const store = await openStore(database)
  const now = Date.now()
  for (const [ago, event] of events) {
    if (event === 'canceled') {
      const rawBody = Buffer.from(JSON.stringify({ jobId: 2, status: 'Canceled' }))
      await store.append({ jobId: 2, eventType: 'Reconciled', jobName: 'Job 2', jobStatus: 'Canceled', rawBody, signature: '', receivedAt: now - ago, source: 'api' })
    } else {
      await store.append(incoming(event, now - ago))
    }
  }
  await store.close()
}

type EventView = { redacted: boolean; guardianPhone: string | null }
const events = async (app: FastifyInstance, jobId: number) => (await app.inject(`/jobs/${jobId}/events`)).json<{ events: EventView[] }>().events
const erased = async (app: FastifyInstance, jobId: number) => (await events(app, jobId)).every((event) => event.redacted)
const untouched = async (app: FastifyInstance, jobId: number) => (await events(app, jobId)).every((event) => !event.redacted)
/** The value of an unlabelled metric in GET /metrics. */
async function metric (app: FastifyInstance, name: string): Promise<number> {
  const line = (await app.inject('/metrics')).body.split('\n').find((l) => l.startsWith(`${name} `))
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1))
}
/** Every trace of `jobId`'s phone in its stored rows and projection. */
async function phoneTraces (app: FastifyInstance, jobId: number): Promise<boolean> {
  const { store } = app.g2sentry
  const stored = JSON.stringify(await store.readLog({ jobId, limit: 100 })) + JSON.stringify(await store.getJob(jobId))
  return stored.includes(phone(jobId)) || stored.includes(phone(jobId).slice(2))
}

for (const backend of [sqlite, postgres]) {
  t.test(`${backend.name}: retention erases jobs that ended before the period, and nothing else`, async (t) => {
    if (backend === postgres && !await requirePg(t)) return
    const { database } = backend.open(t)
    await seed(database, [
      [HOUR, assigned(1, { phone: phone(1) })], [HOUR - 1, started(1)], [HOUR - 2, completed(1)], // Completed an hour ago
      [HOUR - 3, assigned(2, { phone: phone(2) })], [HOUR - 4, 'canceled'], // Canceled an hour ago, by the reconciler
      [HOUR - 5, assigned(3, { phone: phone(3) })], // open for an hour
      [HOUR - 6, assigned(4, { phone: phone(4) })], [HOUR - 7, withdrawn(4)] // withdrawn an hour ago: open again
    ])
    const app = await buildApp(t, { database, retention: RETENTION, metrics: true })
    for (const payload of [assigned(5, { phone: phone(5) }), completed(5)]) t.equal((await post(app, payload)).statusCode, 200) // Completed just now

    await until('jobs 1 and 2 erased', async () => await erased(app, 1) && await erased(app, 2))
    for (const jobId of [1, 2]) {
      t.notOk(await phoneTraces(app, jobId), `job ${jobId}: no phone left in its rows or its projection`)
      t.match((await app.inject(`/jobs/${jobId}`)).json(), { jobId, status: jobId === 1 ? 'Completed' : 'Canceled', guardianPhone: null }, `GET /jobs/${jobId}: status kept`)
      t.ok((await events(app, jobId)).every((event) => event.guardianPhone === null), `GET /jobs/${jobId}/events: every row redacted, no phone`)
    }
    const rows = await app.g2sentry.store.readLog({ limit: 100 })
    t.ok(rows.filter((row) => row.jobId === 1 || row.jobId === 2).every((row) => row.rawBody.length === 0 && row.signature === '' && row.salt === null), 'bodies, signatures and salts gone')
    const records = await app.g2sentry.store.readRecords?.({ source: 'redaction', limit: 10 }) ?? []
    t.equal(records.length, 1, 'one redaction record: both jobs in one batch')
    t.match(JSON.parse(records[0]?.rawBody.toString() ?? '{}'), { redaction: { jobs: [1, 2], reason: 'retention', by: 'retention' } })

    t.ok(await untouched(app, 3), 'an open job is untouched')
    t.equal((await app.inject('/jobs/3')).json<{ guardianPhone: string }>().guardianPhone, phone(3), 'and shows its guardian')
    t.ok(await untouched(app, 4), 'a withdrawn job is untouched: it may come back')
    t.ok(await untouched(app, 5), 'a job that ended within the period is untouched')
    t.ok(await phoneTraces(app, 5), 'and keeps its phone')

    t.equal(await metric(app, 'g2sentry_retention_redacted_rows_total'), 5, 'five rows erased: three of job 1, two of job 2')
    t.equal(await metric(app, 'g2sentry_retention_refused_jobs_total'), 0)
    const oldest = await metric(app, 'g2sentry_retention_oldest_unredacted_seconds')
    t.ok(oldest >= 0 && oldest < 60, `the oldest job holding personal data is job 5, which ended just now (${oldest} s)`)

    const report = await app.g2sentry.audit()
    t.ok(report.ok, 'verify passes')
    t.same(report.redactions, { records: 1, rows: 5, version1Rows: 0, problems: [] })
  })

  t.test(`${backend.name}: a job whose rows do not verify is skipped, logged and counted; the others are erased`, async (t) => {
    if (backend === postgres && !await requirePg(t)) return
    const { database, tamper } = backend.open(t)
    await seed(database, [
      [HOUR, assigned(7, { phone: phone(7) })], [HOUR - 1, completed(7)],
      [HOUR - 2, assigned(8, { phone: phone(8) })], [HOUR - 3, completed(8)],
      [HOUR - 4, assigned(9, { phone: phone(9) })], [HOUR - 5, completed(9)]
    ])
    await tamper(1)
    const { stream, lines } = memoryStream()
    // Two jobs a batch: 7 and 8 together (refused, so each alone), then 9.
    const app = await buildApp(t, { database, retention: { ...RETENTION, batchJobs: 2 }, metrics: true, logStream: stream })

    await until('jobs 8 and 9 erased', async () => await erased(app, 8) && await erased(app, 9))
    t.ok(await untouched(app, 7), 'the job with an edited row is left as it is')
    t.equal(await metric(app, 'g2sentry_retention_refused_jobs_total'), 1)
    t.equal(await metric(app, 'g2sentry_retention_redacted_rows_total'), 4)
    t.ok(await metric(app, 'g2sentry_retention_oldest_unredacted_seconds') >= HOUR / 1000 - 60, 'the skipped job shows as personal data held past the period')

    const warnings = lines.map((line) => JSON.parse(line) as { level: number; msg: string; jobId?: number; code?: string; reason?: string }).filter((line) => line.level === 40)
    t.match(warnings, [{ jobId: 7, code: 'FST_G2SENTRY_REDACTION_REFUSED', reason: /job 7 was not redacted: its row 1 does not verify/, msg: /retention skipped a job/ }])
    for (const jobId of [7, 8, 9]) t.notOk(lines.some((line) => line.includes(phone(jobId).slice(2))), `no log line holds job ${jobId}'s phone`)

    const report = await app.g2sentry.audit()
    t.equal(report.chain.firstBrokenSeq, 1, 'verify still points at the edited row')
    t.match(report.redactions, { records: 2, rows: 4, problems: [] }, 'and the erasures check')
  })
}
