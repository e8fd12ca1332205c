// The PostgreSQL store: the shared store contract, then what only PostgreSQL has (schemas,
// migrations under an advisory lock, several pools on one log, plain-SQL tampering), the plugin
// on it, and the CLI with a postgres:// --db. Every test runs in a schema or database of its own
// (test/helpers/pg.ts) that is dropped when it ends. Without a reachable server the file skips, unless
// G2SENTRY_TEST_PG asks for PostgreSQL.
import t from 'tap'
import type { Test } from 'tap'
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { auditLog } from '../../src/log/audit.js'
import { projectEvent } from '../../src/domain/project-status.js'
import { mulberry32 } from '../../src/simulator/schedules.js'
import { MIGRATIONS_ROOT } from '../../src/store/migrations.js'
import { isPostgresUrl, openStore } from '../../src/store/open-store.js'
import { postgresStore } from '../../src/store/postgres/postgres-store.js'
import type { AppendResult, IncomingEvent, JobState } from '../../src/domain/types.js'
import type { G2SentryStore, RebuildReport } from '../../src/store/contract.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { cli, SIMULATED_OUTCOMES, writeSimulatedLog } from '../helpers/cli-process.js'
import * as http from '../helpers/helpers.js'
import { drop, freshDatabase, freshSchema, pgUrl, requirePg, track, uniqueName, withClient, withDatabase } from '../helpers/pg.js'
import { shuffle } from '../helpers/random.js'
import {
  assigned, completed, incoming, readWholeLog, SECRET as FIXTURE_SECRET, seedLog, started, storeContract, T0, withdrawn, withoutSalts
} from '../helpers/store-contract.js'

const PG_MIGRATIONS = join(MIGRATIONS_ROOT, 'postgres')
const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex')

/** A store on `schema` of the test server (or on `url`'s database, schema public). */
const open = (schema: string | undefined, url = pgUrl()): Promise<G2SentryStore> =>
  postgresStore(schema === undefined ? { connectionString: url } : { connectionString: url, schema })

/** A store on a fresh schema, closed (then the schema dropped) when `t` ends. */
async function freshStore (t: Test): Promise<{ store: G2SentryStore; schema: string }> {
  const schema = freshSchema(t)
  const store = await open(schema)
  t.teardown(() => store.close())
  return { store, schema }
}

/** Runs one statement on the test server (or on `url`) outside any store. */
const sql = <R = Record<string, unknown>>(text: string, values: unknown[] = [], url = pgUrl()): Promise<R[]> =>
  withClient(async (client) => (await client.query(text, values)).rows as R[], url)

/** The four fields of a rebuild report this suite checks (a backend may report more). */
const summary = ({ events, jobs, outcomeMismatches, differingJobs }: RebuildReport): RebuildReport =>
  ({ events, jobs, outcomeMismatches, differingJobs })

const GHOST = (schema: string) => `INSERT INTO ${schema}.jobs (job_id, job_name, status, guardian_phone, last_event_type, version, event_count, created_at, updated_at)
  VALUES (77, 'ghost', 'Assigned', NULL, 'JobAssigned', 1, 1, 0, 0)`

interface RecordedRow { version: number; name: string; checksum: string; applied_at: number }
const recorded = async (schema: string, url?: string): Promise<RecordedRow[]> =>
  (await sql<RecordedRow>(`SELECT version, name, checksum, applied_at::float8 AS applied_at FROM ${schema}.g2sentry_migrations ORDER BY version`, [], url))

const tablesIn = async (schema: string, url?: string): Promise<string[]> =>
  (await sql<{ table_name: string }>('SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name', [schema], url))
    .map((r) => r.table_name)

if (await requirePg(t)) {
  // Thousands of real appends (12 000 in one test) take longer than tap's default 30 s per file.
  t.setTimeout(180_000)

  t.test('postgres specifics', async (t) => {
    t.test('a fresh schema is created, migrated and every migration recorded with its checksum', async (t) => {
      const schema = freshSchema(t)
      const before = Date.now()
      await (await open(schema)).close()

      const expected = readdirSync(PG_MIGRATIONS).filter((f) => /^\d+_[\w-]+\.sql$/.test(f)).sort()
      t.ok(expected.length >= 1, 'at least one PostgreSQL migration ships')
      const rows = await recorded(schema)
      t.same(rows.map((r) => r.name), expected)
      for (const row of rows) {
        t.equal(row.version, Number(row.name.split('_')[0]), `${row.name}: version from the file name`)
        t.equal(row.checksum, sha256(readFileSync(join(PG_MIGRATIONS, row.name), 'utf8')), `${row.name}: sha256 of the file`)
        t.ok(row.applied_at >= before && row.applied_at <= Date.now(), `${row.name}: applied_at is a ms timestamp`)
      }
      const tables = await tablesIn(schema)
      t.ok(['events', 'g2sentry_migrations', 'jobs', 'quarantine'].every((table) => tables.includes(table)), `the tables live in the schema (${tables.join(', ')})`)

      // Reopening applies nothing new and keeps the recorded rows as they were.
      const again = await open(schema)
      await again.close()
      t.same(await recorded(schema), rows, 'same rows, same applied_at')
    })

    t.test('an existing schema opens for a role that owns it but may not create schemas', async (t) => {
      // The usual least-privilege setup: the DBA creates the schema for the app's role, which has
      // no CREATE on the database. The store's schema is "created if missing", so it must not
      // need that privilege when the schema is there.
      const role = uniqueName('r')
      const database = uniqueName('d')
      // Dropped in this order (the role owns the schema), here or, if the run is cut short, later.
      track(database, `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
      track(role, `DROP ROLE IF EXISTS ${role}`)
      t.teardown(async () => {
        await drop(database)
        await drop(role)
      })
      await sql(`CREATE ROLE ${role} LOGIN`)
      await sql(`CREATE DATABASE ${database}`)
      const adminUrl = withDatabase(pgUrl(), database)
      await sql(`REVOKE CREATE ON DATABASE ${database} FROM PUBLIC`, [], adminUrl)
      await sql(`CREATE SCHEMA app AUTHORIZATION ${role}`, [], adminUrl)
      const roleUrl = new URL(adminUrl)
      roleUrl.username = role
      roleUrl.password = ''
      const opened = await open('app', roleUrl.toString()).then((store) => store, (error: Error) => error)
      if (opened instanceof Error) {
        t.fail(`the store refused to open: ${opened.message}`)
        return
      }
      t.teardown(() => opened.close())
      t.equal((await opened.append(incoming(assigned(1), T0))).outcome, 'applied')
      t.ok((await tablesIn('app', adminUrl)).includes('events'), 'the store migrated the schema')
    })

    t.test('a schema name that is not a plain lower-case identifier is refused before connecting', async (t) => {
      for (const schema of ['Public', 'a-b', 'x; DROP TABLE events', '1abc', '', 'a'.repeat(64)]) {
        await t.rejects(open(schema), { message: /schema must be a lower-case SQL identifier/ }, JSON.stringify(schema))
      }
    })

    t.test('an append called before close() settles (committed), and close() waits for it', async (t) => {
      const { store, schema } = await freshStore(t)
      const queued = store.append(incoming(assigned(1), T0))
      const closed = store.close()
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<'neither resolved nor rejected within 3 s'>((resolve) => {
        timer = setTimeout(() => resolve('neither resolved nor rejected within 3 s'), 3000)
      })
      const settled = await Promise.race([queued.then(() => 'resolved', (error: Error) => `rejected: ${error.message}`), timeout])
      clearTimeout(timer)
      await closed
      t.equal(settled, 'resolved', 'the append accepted before close is committed and resolves')
      const reopened = await open(schema)
      t.teardown(() => reopened.close())
      t.equal((await reopened.getJob(1))?.status, 'Assigned', 'and its event is in the log after a reopen')
    })

    t.test('seq is never reused, even after the last rows are deleted by hand', async (t) => {
      const { store, schema } = await freshStore(t)
      await store.append(incoming(assigned(1), T0))
      const second = await store.append(incoming(assigned(2), T0))
      await sql(`DELETE FROM ${schema}.events WHERE seq = $1`, [second.seq])
      const third = await store.append(incoming(assigned(3), T0))
      t.ok(third.seq > second.seq, `${third.seq} > ${second.seq}`)
    })

    t.test('a changed, already applied migration is refused, and the refusal changes nothing', async (t) => {
      const schema = freshSchema(t)
      await (await open(schema)).close()
      const original = await recorded(schema)
      const [row] = original
      if (row === undefined) throw new Error('no migration recorded')
      await sql(`UPDATE ${schema}.g2sentry_migrations SET checksum = $1 WHERE version = $2`, ['0'.repeat(64), row.version])
      const edited = await recorded(schema)

      await t.rejects(open(schema), {
        code: 'FST_G2SENTRY_MIGRATION_REFUSED',
        message: new RegExp(row.name.replace(/\./g, '\\.') + '.*changed after it was applied')
      })
      t.same(await recorded(schema), edited, 'nothing was written')

      await sql(`UPDATE ${schema}.g2sentry_migrations SET checksum = $1 WHERE version = $2`, [row.checksum, row.version])
      const store = await open(schema)
      t.teardown(() => store.close())
      t.same(await recorded(schema), original, 'restoring the checksum opens again')
    })

    t.test('a recorded migration whose file is missing is refused', async (t) => {
      const schema = freshSchema(t)
      await (await open(schema)).close()
      await sql(`INSERT INTO ${schema}.g2sentry_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)`,
        [9999, '9999_from_a_newer_release.sql', 'f'.repeat(64), T0])
      await t.rejects(open(schema), { code: 'FST_G2SENTRY_MIGRATION_REFUSED', message: /9999_from_a_newer_release\.sql.*file is missing/ })
    })

    t.test('stores opening the same fresh schema at once all succeed: migrations run once, under the advisory lock', async (t) => {
      const schema = freshSchema(t)
      const opened = await Promise.allSettled(Array.from({ length: 5 }, () => open(schema)))
      const stores = opened.flatMap((s) => s.status === 'fulfilled' ? [s.value] : [])
      t.teardown(() => Promise.all(stores.map((s) => s.close())))
      t.same(opened.map((s) => s.status === 'rejected' ? String(s.reason) : s.status), Array(5).fill('fulfilled'), 'every open succeeded')
      const rows = await recorded(schema)
      t.same(rows.map((r) => r.name), readdirSync(PG_MIGRATIONS).filter((f) => /^\d+_[\w-]+\.sql$/.test(f)).sort(),
        'each migration recorded exactly once')

      if (stores.length < 2) return
      const [a, b] = stores as [G2SentryStore, G2SentryStore]
      const { seq } = await a.append(incoming(assigned(5, { phone: '+44 7700 900005' }), T0))
      t.same((await b.readLog({ limit: 10 })).map((r) => r.seq), [seq], 'all stores share one log')
      t.equal((await b.getJob(5))?.status, 'Assigned', 'and one projection')
    })

    t.test('stores on different fresh schemas opening at once each get their own tables', async (t) => {
      const schemas = [freshSchema(t), freshSchema(t), freshSchema(t)]
      const stores = await Promise.all(schemas.map((schema) => open(schema)))
      t.teardown(() => Promise.all(stores.map((s) => s.close())))
      await Promise.all(stores.map((store, i) => store.append(incoming(assigned(i + 1), T0))))
      for (const [i, store] of stores.entries()) {
        t.same((await store.listJobs({ limit: 10 })).map((j) => j.jobId), [i + 1], `schema ${i} holds only its own job`)
      }
    })

    t.test('rebuild repairs a projection tampered with plain SQL; a dry run only reports it', async (t) => {
      const { store, schema } = await freshStore(t)
      await seedLog(store)
      const truth = await store.listJobs({ limit: 100 })
      t.same(summary(await store.rebuild({ dryRun: true })), { events: 8, jobs: 3, outcomeMismatches: [], differingJobs: [] },
        'an untouched store replays clean')

      await sql(`UPDATE ${schema}.jobs SET status = 'New', version = 42 WHERE job_id = 1`)
      await sql(`DELETE FROM ${schema}.jobs WHERE job_id = 3`)
      await sql(GHOST(schema))
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
      t.same(summary(await store.rebuild({ dryRun: true })), { events: 8, jobs: 3, outcomeMismatches: [], differingJobs: [] })

      const after = await store.append(incoming(completed(1), T0 + 50))
      t.same(after, { outcome: 'applied', seq: after.seq, jobId: 1, status: 'Completed' }, 'appends continue on the repaired projection')
      t.equal((await store.getJob(1))?.version, 3)
    })

    t.test('a single changed field (the phone) is a difference too', async (t) => {
      const { store, schema } = await freshStore(t)
      await seedLog(store)
      await sql(`UPDATE ${schema}.jobs SET guardian_phone = NULL WHERE job_id = 1`)
      await sql(`UPDATE ${schema}.jobs SET updated_at = updated_at + 1 WHERE job_id = 2`)
      t.same((await store.rebuild({ dryRun: true })).differingJobs, [1, 2])
      t.same((await store.rebuild()).differingJobs, [1, 2])
      t.equal((await store.getJob(1))?.guardianPhone, '+44 7700 900001', 'the phone is back')
    })

    t.test('a projected job with no event in the log is reported by a dry run and removed by rebuild', async (t) => {
      const { store, schema } = await freshStore(t)
      await seedLog(store)
      const truth = await store.listJobs({ limit: 100 })
      await sql(GHOST(schema))
      t.same((await store.rebuild({ dryRun: true })).differingJobs, [77], 'the phantom job is reported')
      t.equal((await store.getJob(77))?.jobName, 'ghost', 'a dry run leaves it')
      t.same((await store.rebuild()).differingJobs, [77])
      t.same(await store.listJobs({ limit: 100 }), truth, 'rebuild removes it')
    })

    t.test('an outcome edited with plain SQL in the log shows up as an outcome mismatch', async (t) => {
      const { store, schema } = await freshStore(t)
      const results = await seedLog(store)
      const duplicate = results[4] as AppendResult
      const stale = results[3] as AppendResult
      t.equal(duplicate.outcome, 'duplicate')
      t.equal(stale.outcome, 'stale')
      await sql(`UPDATE ${schema}.events SET outcome = 'applied' WHERE seq = $1`, [duplicate.seq])
      await sql(`UPDATE ${schema}.events SET outcome = 'duplicate' WHERE seq = $1`, [stale.seq])
      const report = await store.rebuild({ dryRun: true })
      t.same(report.outcomeMismatches, [
        { seq: stale.seq, stored: 'duplicate', replayed: 'stale' },
        { seq: duplicate.seq, stored: 'applied', replayed: 'duplicate' }
      ])
      t.same(report.differingJobs, [], 'the projection itself still agrees')
      const real = await store.rebuild()
      t.equal(real.outcomeMismatches.length, 2, 'a real rebuild reports them too')
      t.same((await readWholeLog(store)).filter((r) => r.seq === duplicate.seq).map((r) => r.outcome), ['applied'],
        'and never rewrites the log')
    })

    t.test('group commit: appends made together share one transaction and come out as if made one by one', async (t) => {
      const [{ store: together }, { store: oneByOne }] = await Promise.all([freshStore(t), freshStore(t)])
      const redelivered = incoming(started(1), T0 + 1)
      // Redeliveries within the batch and of an earlier body, a stale event and a new job.
      const events = [
        redelivered, incoming(assigned(2), T0 + 2), redelivered, incoming(assigned(1, { phone: '+44 7700 900001' }), T0 + 3),
        incoming(completed(2), T0 + 4), incoming(completed(2), T0 + 5), incoming(withdrawn(1), T0 + 6)
      ]
      for (const store of [together, oneByOne]) await store.append(incoming(assigned(1, { phone: '+44 7700 900001' }), T0))
      const sizes: number[] = []
      together.onCommit?.((size) => { sizes.push(size) })
      const batched = await Promise.all(events.map((event) => together.append(event)))
      const sequential: AppendResult[] = []
      for (const event of events) sequential.push(await oneByOne.append(event))
      t.same(sizes, [events.length], 'one transaction for the batch')
      t.same(batched, sequential, 'the same outcomes, seqs and statuses')
      t.same(new Set(batched.map((r) => r.outcome)), new Set(['applied', 'duplicate', 'stale']))
      t.same(withoutSalts(await readWholeLog(together)), withoutSalts(await readWholeLog(oneByOne)), 'the same log, sameAs included')
      for (const store of [together, oneByOne]) t.ok((await auditLog(store, { secrets: [FIXTURE_SECRET] })).ok, 'each chain verifies')
      t.same(await together.listJobs({ limit: 10 }), await oneByOne.listJobs({ limit: 10 }), 'the same projection')
      t.ok((await auditLog(together, { secrets: [] })).chain.ok, 'the hash chain links through the batch')
    })

    t.test('a failing append rejects only its own caller and leaves nothing half-written', async (t) => {
      const { store } = await freshStore(t)
      await store.append(incoming(assigned(1, { phone: '+44 7700 900001' }), T0))
      const before = await store.getJob(1)
      const nullName = { ...incoming(started(1), T0 + 1), jobName: null } as unknown as IncomingEvent
      const nullNameNewJob = { ...incoming(assigned(3), T0 + 2), jobName: null } as unknown as IncomingEvent
      const settled = await Promise.allSettled([
        store.append(incoming(assigned(2), T0 + 3)), store.append(nullName), store.append(nullNameNewJob), store.append(incoming(completed(2), T0 + 4))
      ])
      t.same(settled.map((s) => s.status), ['fulfilled', 'rejected', 'rejected', 'fulfilled'])
      t.match((settled[1] as PromiseRejectedResult).reason, { code: '23502' }, 'a NOT NULL violation')
      t.same(await store.getJob(1), before, 'job 1 is untouched')
      t.equal(await store.getJob(3), undefined, 'no projection for the failed first event')
      t.same((await readWholeLog(store)).map((r) => r.jobId), [1, 2, 2], 'only the good events are in the log')
      const retry = await store.append(incoming(started(1), T0 + 5))
      t.equal(retry.outcome, 'applied', 'the sender\'s retry is applied, not taken for a duplicate')
      t.same(await store.rebuild({ dryRun: true }).then((r) => [r.outcomeMismatches, r.differingJobs]), [[], []])
    })

    t.test('two stores (two pools) appending to the same jobs at once never lose an update', async (t) => {
      const schema = freshSchema(t)
      const [one, two] = await Promise.all([open(schema), open(schema)])
      t.teardown(() => Promise.all([one.close(), two.close()]))
      const seedValue = Number(process.env.G2SENTRY_TEST_SEED ?? Date.now() % 1_000_000)
      t.comment(`seed ${seedValue} (G2SENTRY_TEST_SEED=${seedValue} replays it)`)
      const random = mulberry32(seedValue)

      // Job 1: a lifecycle without withdrawals. Job 2: assignments, withdrawals (with and without a
      // phone), start and completion. Job 3: withdrawals and assignments only, so it never ends.
      const lifecycles: Record<number, IncomingEvent[]> = {
        1: [incoming(assigned(1, { phone: '+44 7700 900001' })), incoming(started(1)), incoming(completed(1))],
        2: [incoming(assigned(2, { phone: '+44 7700 900002' })), incoming(withdrawn(2)), incoming(assigned(2)), incoming(assigned(2, { phone: '+44 7700 900022' })),
          incoming(started(2)), incoming(completed(2))],
        3: [incoming(assigned(3, { phone: '+44 7700 900003' })), incoming(withdrawn(3)), incoming(assigned(3)), incoming({ ...assigned(3), jobName: 'Renamed' })]
      }
      const deliveries: IncomingEvent[] = []
      for (const [jobId, count] of [[1, 200], [2, 200], [3, 100]] as const) {
        const events = lifecycles[jobId] as IncomingEvent[]
        const mine = [...events]
        while (mine.length < count) mine.push(events[Math.floor(random() * events.length)] as IncomingEvent)
        deliveries.push(...mine)
      }
      const schedule = shuffle(deliveries, random).map((event, i) => ({ ...event, receivedAt: T0 + i }))
      const results = await Promise.all(schedule.map((event, i) => (i % 2 === 0 ? one : two).append(event)))

      t.equal(new Set(results.map((r) => r.seq)).size, schedule.length, 'every append got its own seq')
      const log = await readWholeLog(one, undefined, 1000)
      t.same(log.map((r) => r.seq), results.map((r) => r.seq).sort((a, b) => a - b), 'the log holds exactly the returned seqs')
      const bySeq = new Map(log.map((row) => [row.seq, row]))
      const badRows = results.filter((result, i) => {
        const row = bySeq.get(result.seq)
        return row === undefined || row.outcome !== result.outcome || !row.rawBody.equals((schedule[i] as IncomingEvent).rawBody)
      })
      t.same(badRows, [], 'each answer matches its log row')

      const report = await two.rebuild({ dryRun: true })
      t.same(report.differingJobs, [], 'the projection equals a rebuild')
      t.same(report.outcomeMismatches, [], 'every live outcome replays (seq order within a job is the order the projection saw)')
      t.equal(report.events, 500)

      for (const jobId of [1, 2, 3]) {
        const job = await one.getJob(jobId) as JobState
        const rows = log.filter((r) => r.jobId === jobId)
        const applied = rows.filter((r) => r.outcome === 'applied').length
        t.equal(job.version, applied, `job ${jobId}: version ${job.version} = ${applied} applied rows`)
        t.equal(job.eventCount, rows.length, `job ${jobId}: every delivery counted`)
        t.same(await two.getJob(jobId), job, `job ${jobId}: both stores read the same row`)
      }
      t.equal((await one.getJob(1))?.status, 'Completed', 'the lifecycle without withdrawals converged')
      t.equal((await one.getJob(2))?.status, 'Completed', 'a completed job stays completed')
    })

    t.test('dry runs and rebuilds on a third pool while two stores append stay consistent', async (t) => {
      const schema = freshSchema(t)
      const [one, two, checker] = await Promise.all([open(schema), open(schema), open(schema)])
      t.teardown(() => Promise.all([one.close(), two.close(), checker.close()]))
      const random = mulberry32(7)
      const events: IncomingEvent[] = []
      for (let jobId = 1; jobId <= 60; jobId++) {
        const lifecycle = [incoming(assigned(jobId, { phone: `+44 7700 ${900000 + jobId}` })), incoming(withdrawn(jobId)), incoming(assigned(jobId)),
          incoming(started(jobId)), incoming(completed(jobId))]
        for (let i = 0; i < 20; i++) events.push(lifecycle[Math.floor(random() * lifecycle.length)] as IncomingEvent)
      }
      const schedule = shuffle(events, random).map((event, i) => ({ ...event, receivedAt: T0 + i }))
      // Eight appends at a time through each store, so the checker's own pool gets its turns mid-stream.
      let next = 0
      let done = false
      const results: AppendResult[] = []
      const appender = async (store: G2SentryStore) => {
        while (next < schedule.length) results.push(await store.append(schedule[next++] as IncomingEvent))
      }
      const appends = Promise.all(Array.from({ length: 16 }, (_, i) => appender(i % 2 === 0 ? one : two))).finally(() => { done = true })
      const dryRuns: RebuildReport[] = []
      const rebuilds: RebuildReport[] = []
      const checks = (async () => {
        while (!done) { // eslint-disable-line no-unmodified-loop-condition -- set by the appends running alongside
          dryRuns.push(await checker.rebuild({ dryRun: true }))
          if (!done) rebuilds.push(await checker.rebuild())
        }
      })()
      await Promise.all([appends, checks])
      const midStream = [...dryRuns, ...rebuilds].filter((r) => r.events > 0 && r.events < schedule.length).length
      t.ok(midStream >= 4, `${midStream} checks ran mid-stream (dry runs at ${dryRuns.map((r) => r.events).join(', ')} events; rebuilds at ${rebuilds.map((r) => r.events).join(', ')})`)
      t.same(dryRuns.filter((r) => r.outcomeMismatches.length > 0 || r.differingJobs.length > 0), [],
        'every dry run sees a consistent snapshot: no differences, no mismatches')
      t.same(rebuilds.filter((r) => r.outcomeMismatches.length > 0 || r.differingJobs.length > 0), [],
        'every rebuild during appends finds nothing to repair')
      t.same(summary(await checker.rebuild({ dryRun: true })), { events: schedule.length, jobs: 60, outcomeMismatches: [], differingJobs: [] },
        'afterwards the projection still equals a rebuild: no append was lost to a concurrent rebuild')
      t.equal((await readWholeLog(two, undefined, 1000)).length, results.length, 'every append is in the log')
    })

    t.test('rebuild replays a log longer than one replay page', async (t) => {
      const { store } = await freshStore(t)
      const results = await Promise.all(Array.from({ length: 12_000 }, (_, i) => {
        const jobId = 1 + (i % 300)
        const step = Math.floor(i / 300) % 4
        const event = step === 0 ? assigned(jobId, { phone: `+44 7700 ${900000 + jobId}` }) : step === 1 ? started(jobId) : step === 2 ? completed(jobId) : started(jobId)
        return store.append(incoming(event, T0 + i))
      }))
      t.equal(new Set(results.map((r) => r.seq)).size, 12_000)
      const jobs = await store.listJobs({ limit: 1000 })
      t.same(summary(await store.rebuild({ dryRun: true })), { events: 12_000, jobs: 300, outcomeMismatches: [], differingJobs: [] })
      t.same((await store.rebuild()).differingJobs, [])
      t.same(await store.listJobs({ limit: 1000 }), jobs)
    })

    t.test('rebuild agrees past its in-memory job cache (over 50 000 jobs), on a log written with plain SQL', async (t) => {
      // Appending 50 000 events one by one takes half a minute; the log is written in one INSERT
      // instead, each row with the outcome the projection function gives it live.
      // A cache of 500 job states for 550 jobs: states are written out and read back.
      const schema = freshSchema(t)
      const store = await postgresStore({ connectionString: pgUrl(), schema, replayCacheSize: 500 })
      t.teardown(() => store.close())
      const jobs = 550
      const events = [
        ...Array.from({ length: jobs }, (_, i) => incoming(assigned(i + 1, { phone: `+44 7700 ${900000 + (i % 1000)}` }), T0 + i)),
        // Later events for jobs whose state was spilled out of the cache and must be read back.
        ...Array.from({ length: 100 }, (_, i) => incoming(started(i + 1), T0 + jobs + i)),
        ...Array.from({ length: 100 }, (_, i) => incoming(assigned(i + 1, { phone: `+44 7700 ${900000 + i}` }), T0 + jobs + 100 + i)),
        ...Array.from({ length: 100 }, (_, i) => incoming(withdrawn(jobs - i), T0 + jobs + 200 + i))
      ]
      const expected = new Map<number, JobState>()
      const outcomes = events.map((event) => {
        const decision = projectEvent(expected.get(event.jobId), event)
        if (decision.state !== undefined) expected.set(event.jobId, decision.state)
        return decision.outcome
      })
      t.same([...new Set(outcomes)], ['applied', 'stale'], 'the late assignments are stale: only a reloaded state says so')
      await sql(`INSERT INTO ${schema}.events (job_id, event_type, job_status, job_name, guardian_phone, raw_body, signature, content_hash, received_at, outcome)
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[], $8::text[], $9::bigint[], $10::text[])`,
      [events.map((e) => e.jobId), events.map((e) => e.eventType), events.map((e) => e.jobStatus), events.map((e) => e.jobName),
        events.map((e) => e.guardianPhone ?? null), events.map((e) => e.rawBody), events.map((e) => e.signature),
        events.map((e) => createHash('sha256').update(e.rawBody).digest('hex')), events.map((e) => e.receivedAt), outcomes])

      const first = await store.rebuild()
      t.same(first.outcomeMismatches, [], 'every row replays to its outcome')
      t.equal(first.differingJobs.length, jobs, 'every job was missing from the empty projection')
      t.same([first.events, first.jobs], [events.length, jobs])

      const stored = await store.listJobs({ limit: jobs + 10 })
      t.equal(stored.length, jobs)
      const wrong = stored.filter((job) => JSON.stringify(job) !== JSON.stringify(expected.get(job.jobId)))
      t.same(wrong.slice(0, 5), [], 'every rebuilt job equals the projection function applied in order')
      t.same(await store.getJob(1), expected.get(1), 'a job spilled and read back (assigned, started, a stale assignment)')
      t.same(await store.getJob(jobs), expected.get(jobs), 'a job past the cache, then withdrawn')

      t.same(summary(await store.rebuild({ dryRun: true })), { events: events.length, jobs, outcomeMismatches: [], differingJobs: [] })
    })

    t.test('the plugin on a PostgreSQL store it was given', async (t) => {
      const { store, schema } = await freshStore(t)
      const app = await http.buildApp(t, { store })

      const first = await http.post(app, http.assigned(1, { phone: '+44 7700 900001' }))
      t.equal(first.statusCode, 200)
      t.match(first.json(), { outcome: 'applied', jobId: 1, status: 'Assigned' })
      const again = await http.post(app, http.assigned(1, { phone: '+44 7700 900001' }))
      t.match(again.json(), { outcome: 'duplicate', status: 'Assigned' })
      const start = await http.post(app, http.started(1))
      t.match(start.json(), { outcome: 'applied', status: 'InProgress' })

      const job = await app.inject({ method: 'GET', url: '/jobs/1' })
      t.equal(job.statusCode, 200)
      t.match(job.json(), { jobId: 1, status: 'InProgress', guardianPhone: '+44 7700 900001', version: 2, eventCount: 3 })
      const events = await app.inject({ method: 'GET', url: '/jobs/1/events' })
      t.same((events.json() as { events: Array<{ outcome: string }> }).events.map((e) => e.outcome), ['applied', 'duplicate', 'applied'])
      t.same(await app.g2sentry.checkProjection(), { events: 3, jobs: 1, outcomeMismatches: [], differingJobs: [] })

      // Unreadable but signed bodies are quarantined in PostgreSQL too.
      const bad = await http.post(app, '{not json')
      t.equal(bad.statusCode, 400)
      t.equal((await http.quarantineRows(app)).length, 1)

      // A storage failure answers 503 and keeps nothing; the sender's retry is then applied.
      await sql(`ALTER TABLE ${schema}.events ADD CONSTRAINT refuse_job_666 CHECK (job_id <> 666)`)
      const refused = await http.post(app, http.assigned(666))
      t.equal(refused.statusCode, 503)
      t.match(refused.json(), { code: 'FST_G2SENTRY_STORAGE_UNAVAILABLE' })
      t.equal(await store.getJob(666), undefined, 'nothing acknowledged, nothing kept')
      t.equal((await readWholeLog(store)).length, 3)
      await sql(`ALTER TABLE ${schema}.events DROP CONSTRAINT refuse_job_666`)
      const retried = await http.post(app, http.assigned(666))
      t.equal(retried.statusCode, 200)
      t.match(retried.json(), { outcome: 'applied', status: 'Assigned' })

      await app.close()
      t.equal((await store.getJob(1))?.status, 'InProgress', 'the plugin does not close a store it was given')
    })

    t.test('openStore and the plugin\'s database option take a postgres:// URL', async (t) => {
      for (const url of ['postgres://u@h:5432/db', 'postgresql://u@h/db', 'postgres://h', 'postgresql:///db?host=/run/postgresql']) {
        t.ok(isPostgresUrl(url), `${url} is a PostgreSQL URL`)
      }
      for (const file of ['g2sentry.db', ':memory:', 'postgres.db', './postgres://x', '/var/lib/postgres/g2.db', 'postgres:/x', 'mysql://u@h/db']) {
        t.notOk(isPostgresUrl(file), `${file} is a SQLite file`)
      }

      // A database of its own, so that its public schema is ours to use.
      const url = await freshDatabase(t)
      const store = await openStore(url)
      t.teardown(() => store.close())
      const { seq } = await store.append(incoming(assigned(9), T0))
      t.ok((await tablesIn('public', url)).includes('events'), 'a URL without a schema uses public')
      t.same((await sql<{ seq: number }>('SELECT seq::int AS seq FROM events', [], url)).map((r) => r.seq), [seq], 'the row is in that database')
      await store.close()

      const app = await http.buildApp(t, { database: url })
      const response = await http.post(app, http.started(9))
      t.match(response.json(), { outcome: 'applied', seq: seq + 1, status: 'InProgress' })
      t.equal((await app.inject({ method: 'GET', url: '/jobs/9' })).json().version, 2, 'the plugin reads the log it shares with the store')
      await app.close()

      const database = new URL(url).pathname.slice(1)
      let backends = -1
      for (let i = 0; i < 40 && backends !== 0; i++) {
        if (i > 0) await new Promise((resolve) => setTimeout(resolve, 50))
        backends = (await sql<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [database]))[0]?.n ?? -1
      }
      t.equal(backends, 0, 'closing the app closed the pool the plugin opened')
    })

    t.test('the CLI with a postgres:// --db', async (t) => {
      const url = await freshDatabase(t)
      // The plugin writes the log, as in test/integration/cli.test.ts, then the published entry reads it.
      const SECRET = 'cli-test-secret'
      const { bodies, outcomes } = await writeSimulatedLog(url, SECRET,
        (response, i) => t.equal(response.statusCode, 200, `delivery ${i + 1} accepted`))
      t.same(outcomes, SIMULATED_OUTCOMES, 'the simulated deliveries got their expected outcomes')

      const replay = await cli('replay', '--db', url)
      t.equal(replay.code, 0, `replay exits 0 ${replay.stderr}`)
      const rows = replay.stdout.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as { seq: number; body: string; outcome: string; signature: string })
      t.same(rows.map((r) => r.body), bodies, 'one NDJSON line per delivery, with the exact body')
      t.same(rows.map((r) => r.outcome), outcomes)
      t.same(rows.map((r) => r.signature), bodies.map((b) => signBody(b, SECRET)))
      t.ok(rows.every((r, i) => i === 0 || r.seq > (rows[i - 1] as { seq: number }).seq), 'in seq order')

      const table = await cli('replay', '--db', url, '--job', '101', '--format', 'table')
      t.equal(table.code, 0)
      t.match(table.stdout, /^seq\s+receivedAt\s+jobId/, 'a table with its header')

      const ok = await cli('verify', '--db', url)
      t.equal(ok.code, 0, `verify exits 0 on an untouched database ${ok.stderr}`)
      t.match(ok.stdout, /replayed 11 events into \d+ jobs/)
      t.match(ok.stdout, /^ok: /m, 'and says ok')

      await sql("UPDATE jobs SET status = 'Canceled' WHERE job_id = 101", [], url)
      const failed = await cli('verify', '--db', url)
      t.equal(failed.code, 1, 'verify exits 1 on a tampered projection')
      t.match(failed.stdout, /1 jobs differ from the stored projection: 101/)
      t.match(failed.stdout, /FAILED/)

      const rebuilt = await cli('rebuild', '--db', url)
      t.equal(rebuilt.code, 0, `rebuild exits 0 ${rebuilt.stderr}`)
      t.match(rebuilt.stdout, /rebuilt 11 events into \d+ jobs/)
      t.match(rebuilt.stdout, /differ from the stored projection: 101/, 'rebuild says what it repaired')
      t.equal((await cli('verify', '--db', url)).code, 0, 'verify is clean again')

      const unreachable = await cli('verify', '--db', 'postgres://postgres@127.0.0.1:1/none')
      t.equal(unreachable.code, 1, 'an unreachable server is an error, exit 1')
      t.match(unreachable.stderr, /^g2sentry: /)
    })

    // The CLI's --db (like the plugin's database option and G2SENTRY_DB) is one string, and the
    // store's schema option has no place in it: a schema named in the URL is ignored today and
    // the store falls back to public. This is the behaviour proposed in the report: a `schema`
    // query parameter that openStore passes on as postgresStore's schema option.
    t.test('the CLI reaches a non-public schema named in the --db URL (?schema=)', async (t) => {
      const url = await freshDatabase(t)
      const schema = 'g2s_cli'
      const store = await open(schema, url)
      await seedLog(store)
      await store.close()

      const target = `${url}?schema=${schema}`
      const verify = await cli('verify', '--db', target)
      t.equal(verify.code, 0, `verify exits 0 ${verify.stderr}`)
      t.match(verify.stdout, /replayed 8 events into 3 jobs/, 'the log of the named schema was replayed')
      const replay = await cli('replay', '--db', target)
      t.equal(replay.stdout.split('\n').filter((line) => line !== '').length, 8, 'replay prints the named schema\'s log')
      t.same(await tablesIn('public', url), [], 'nothing was created in public')
    })
  })

  // Last: the contract's final subtest (appends queued at close) leaves a promise that never
  // settles if the store drops them, and the process then ends with nothing left to run.
  storeContract(t, 'postgres', async (t) => open(freshSchema(t)), (t) => {
    const schema = freshSchema(t)
    return () => open(schema)
  })
}
