// The PostgreSQL store behind a real PgBouncer in transaction mode with its default settings
// (test/helpers/pgbouncer.ts), where each transaction may run on another server connection and nothing
// session-level survives: tenants in their own schemas, durability, prepared statements, LISTEN,
// and the errors of a connection that cannot be opened.
import t from 'tap'
import type { Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { readdirSync, readFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import g2sentry from '../../src/index.js'
import { archiveLog } from '../../src/log/archive.js'
import type { G2SentryStore } from '../../src/store/contract.js'
import type { IncomingEvent } from '../../src/domain/types.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { MIGRATIONS_ROOT } from '../../src/store/migrations.js'
import { openStore } from '../../src/store/open-store.js'
import { postgresStore } from '../../src/store/postgres/postgres-store.js'
import { G2SENTRY_TABLES } from '../../src/store/postgres/tenant-pool.js'
import { drop, freshSchema, pgUrl, requirePg, track, uniqueName, withClient } from '../helpers/pg.js'
import { requirePgBouncer, startPgBouncer } from '../helpers/pgbouncer.js'
import { assigned, completed, fenceFor, incoming, readWholeLog, started, T0 } from '../helpers/store-contract.js'
import { SseClient } from '../helpers/stream-helpers.js'
import { until } from '../helpers/until.js'

const SECRET = 'pooler-secret'

/** Node warnings with `code` emitted while `t` runs. */
function warnings (t: Test, code: string): Array<Error & { code?: string }> {
  const seen: Array<Error & { code?: string }> = []
  const listener = (warning: Error & { code?: string }): void => { if (warning.code === code) seen.push(warning) }
  process.on('warning', listener)
  t.teardown(() => { process.off('warning', listener) })
  return seen
}

async function listen (t: Test, database: string): Promise<{ app: FastifyInstance; url: string }> {
  const app = Fastify({ logger: false })
  await app.register(g2sentry, { secret: SECRET, database, jobRoutes: true })
  t.teardown(() => app.close())
  await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` }
}

async function deliver (url: string, payload: unknown): Promise<{ status: number; body: any }> {
  const body = JSON.stringify(payload)
  const response = await fetch(`${url}/callbacks/g2sentry`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-signature': signBody(body, SECRET) }, body
  })
  return { status: response.status, body: await response.json() }
}

const publicEvents = async (): Promise<number | null> => withClient(async (client) => {
  const { rows: [found] } = await client.query<{ t: string | null }>("SELECT to_regclass('public.events')::text AS t")
  if (found?.t == null) return null
  return (await client.query<{ n: number }>('SELECT count(*)::int AS n FROM public.events')).rows[0]?.n ?? 0
})

t.test('the tables the store qualifies with its schema are every table the migrations create', async (t) => {
  const dir = join(MIGRATIONS_ROOT, 'postgres')
  const created = readdirSync(dir).flatMap((file) => [...readFileSync(join(dir, file), 'utf8').matchAll(/CREATE TABLE (?:IF NOT EXISTS )?(\w+)/g)].map((m) => m[1]))
  t.same([...G2SENTRY_TABLES].sort(), [...created, 'g2sentry_migrations'].sort(), 'a table missing here would be read and written through search_path')
})

t.test('behind PgBouncer in transaction mode', async (t) => {
  if (!await requirePg(t) || !requirePgBouncer(t)) return
  t.setTimeout(120_000)

  for (const [label, settings] of [['its default settings', {}], ['ignore_startup_parameters = options', { ignore_startup_parameters: 'options' }]] as const) {
    t.test(`two tenants (two schemas) behind one PgBouncer with ${label} never see each other's rows`, async (t) => {
      const bouncer = await startPgBouncer(t, { settings })
      const before = await publicEvents()
      const [a, b] = [freshSchema(t), freshSchema(t)]
      const tenantA = await listen(t, `${bouncer.url}?schema=${a}`)
      const tenantB = await listen(t, `${bouncer.url}?schema=${b}`)
      // Interleaved, so both tenants' transactions share PgBouncer's server connections.
      const sent = await Promise.all(Array.from({ length: 20 }, (_, i) => [
        deliver(tenantA.url, assigned(100 + i, { name: `A ${i}` })),
        deliver(tenantB.url, assigned(100 + i, { name: `B ${i}` })),
        deliver(tenantB.url, started(100 + i, { name: `B ${i}` }))
      ]).flat())
      t.same(new Set(sent.map((r) => r.status)), new Set([200]), 'every callback answered 200')

      const rowsOf = (schema: string) => withClient(async (client) =>
        (await client.query<{ body: string }>(`SELECT convert_from(raw_body, 'UTF8') AS body FROM ${schema}.events ORDER BY seq`)).rows.map((r) => JSON.parse(r.body).jobName as string))
      const inA = await rowsOf(a)
      const inB = await rowsOf(b)
      t.equal(inA.length, 20, 'tenant A\'s schema holds its 20 rows')
      t.ok(inA.every((name) => name.startsWith('A ')), 'and only tenant A\'s')
      t.equal(inB.length, 40, 'tenant B\'s schema holds its 40 rows')
      t.ok(inB.every((name) => name.startsWith('B ')), 'and only tenant B\'s')
      t.equal(await publicEvents(), before, 'nothing was written to public')
      const head = (schema: string) => withClient(async (client) => (await client.query<{ seq: string }>(`SELECT seq FROM ${schema}.g2sentry_chain`)).rows[0]?.seq)
      t.same([await head(a), await head(b)], ['20', '40'], 'each tenant has its own chain')
      const jobA = await (await fetch(`${tenantA.url}/jobs/100`)).json()
      const jobB = await (await fetch(`${tenantB.url}/jobs/100`)).json()
      t.match([jobA, jobB], [{ jobName: 'A 0', status: 'Assigned' }, { jobName: 'B 0', status: 'InProgress' }], 'each reads its own projection')
    })
  }

  t.test('a store opened read-only through the pooler reads the schema it was given', async (t) => {
    const bouncer = await startPgBouncer(t)
    const [a, b] = [freshSchema(t), freshSchema(t)]
    for (const [schema, jobId] of [[a, 1], [b, 2]] as const) {
      const store = await postgresStore({ connectionString: bouncer.url, schema })
      await store.append(incoming(assigned(jobId), T0))
      await store.close()
    }
    const reader = await openStore(`${bouncer.url}?schema=${b}`, { readOnly: true })
    t.teardown(() => reader.close())
    t.same((await readWholeLog(reader)).map((row) => row.jobId), [2], 'schema b\'s log, not a\'s or public\'s')
  })

  t.test('prepared statements through a pooler that does not carry them', async (t) => {
    // One server connection for everyone: the second store to prepare the append statement there
    // meets the first one's, which its client never prepared.
    const bouncer = await startPgBouncer(t, { settings: { default_pool_size: 1 } })
    for (const preparedStatements of [true, false]) {
      t.test(`preparedStatements: ${preparedStatements}`, async (t) => {
        const off = warnings(t, 'FST_G2SENTRY_PREPARED_STATEMENTS_OFF')
        const schema = freshSchema(t)
        const stores = [
          await postgresStore({ connectionString: bouncer.url, schema, preparedStatements }),
          await postgresStore({ connectionString: bouncer.url, schema, preparedStatements })
        ]
        t.teardown(() => Promise.all(stores.map((store) => store.close())))
        const sizes: number[] = []
        for (const store of stores) store.onCommit?.((size) => sizes.push(size))
        let jobId = 0
        const results = []
        for (let round = 0; round < 6; round++) {
          results.push(...await Promise.all(stores.flatMap((store) =>
            Array.from({ length: 20 }, () => store.append(incoming(assigned(++jobId), T0 + jobId))))))
          // The first round may find out the hard way (a batch run again one event at a time).
          if (round === 0) sizes.length = 0
        }
        t.equal(results.length, 240, 'every append succeeded')
        const log = await readWholeLog(stores[0] as G2SentryStore)
        t.same(log.map((row) => row.seq), results.map((r) => r.seq).sort((x, y) => x - y), 'each in the log once')
        if (preparedStatements) t.ok(off.length >= 1 && off.length <= 2, 'the stores noticed the pooler does not carry them, and each said so once at most')
        else t.equal(off.length, 0, 'no statement was ever prepared by name')
        t.ok(sizes.reduce((n, s) => n + s, 0) / sizes.length >= 5, `then group commit batches as it does directly (${JSON.stringify(sizes)})`)
      })
    }
  })

  t.test('LISTEN/NOTIFY behind a transaction pooler', async (t) => {
    const bouncer = await startPgBouncer(t)
    t.test('without listenUrl, the store finds notifications do not arrive and says so', async (t) => {
      const lost = warnings(t, 'FST_G2SENTRY_LISTEN_NOT_CARRIED')
      const schema = freshSchema(t)
      const store = await postgresStore({ connectionString: bouncer.url, schema })
      t.teardown(() => store.close())
      const stop = store.watchCommits?.(() => {})
      t.teardown(() => stop?.())
      await until('the LISTEN warning', () => lost.length > 0, 10_000)
      t.equal(lost.length, 1, 'one warning')
      t.match(lost[0]?.message, /listenUrl/, 'that names the fix')
      t.notMatch(lost[0]?.message, /password/)
    })
    t.test('with listen_url in the database URL, another instance\'s commit reaches the watcher without waiting for a poll', async (t) => {
      const lost = warnings(t, 'FST_G2SENTRY_LISTEN_NOT_CARRIED')
      const schema = freshSchema(t)
      const writer = await openStore(`${bouncer.url}?schema=${schema}`)
      const watcher = await openStore(`${bouncer.url}?schema=${schema}&listen_url=${encodeURIComponent(pgUrl())}`)
      t.teardown(() => Promise.all([writer.close(), watcher.close()]))
      const heard: Array<number | undefined> = []
      const stop = watcher.watchCommits?.((seq) => heard.push(seq))
      t.teardown(() => stop?.())
      await until('the listener to start', () => heard.length > 0, 5000)
      const { seq } = await writer.append(incoming(assigned(1), T0))
      const sent = Date.now()
      await until('the announcement', () => heard.includes(seq), 2000)
      t.ok(Date.now() - sent < 900, `announced in ${Date.now() - sent} ms, sooner than the 1 s poll`)
      t.equal(lost.length, 0, 'no warning')
    })
    t.test('with listen_url, the live stream and a consumer polling once a minute on one instance get another instance\'s callbacks', async (t) => {
      const schema = freshSchema(t)
      const a = await listen(t, `${bouncer.url}?schema=${schema}`)
      const b = await listen(t, `${bouncer.url}?schema=${schema}&listen_url=${encodeURIComponent(pgUrl())}`)
      const seen: number[] = []
      b.app.g2sentry.consume('mailer', (change) => { seen.push(change.seq) }, { pollMs: 60_000 })
      const stream = await SseClient.open(t, `${b.url}/jobs/stream`)
      const first = await deliver(a.url, assigned(1))
      await until('the consumer\'s first pass', () => seen.includes(first.body.seq), 10_000)
      // Now the consumer waits: only a notification wakes it before a minute is up.
      const second = await deliver(a.url, started(1))
      await until('the consumer to be woken', () => seen.includes(second.body.seq), 10_000)
      await stream.until(second.body.seq)
      t.same(stream.ids, [first.body.seq, second.body.seq], 'the live stream sent both')
      t.same(seen, [first.body.seq, second.body.seq], 'the consumer got both, in order')
    })
  })

  t.test('a connection that cannot be opened is a coded error that names the problem, never the password', async (t) => {
    const code = 'FST_G2SENTRY_DATABASE_OPEN_FAILED'
    t.test('the pooler refuses a startup parameter', async (t) => {
      const bouncer = await startPgBouncer(t)
      const url = new URL(bouncer.url)
      url.searchParams.set('options', '-c statement_timeout=0')
      await t.rejects(postgresStore({ connectionString: url.toString(), schema: freshSchema(t) }), { code, message: /refused a startup parameter.*options/ })
    })
    t.test('a wrong password', async (t) => {
      const bouncer = await startPgBouncer(t, { settings: { auth_type: 'plain' }, password: 'right-Password' })
      const url = new URL(bouncer.url)
      url.password = 'hunter2-Wrong'
      const error = await postgresStore({ connectionString: url.toString(), schema: freshSchema(t) }).then(() => undefined, (e: Error) => e)
      t.match(error, { code, message: /refused the password/ })
      t.notMatch(`${error?.message} ${JSON.stringify(error)} ${error?.stack}`, /hunter2/, 'the password is nowhere in the error')
    })
    t.test('a database that does not exist', async (t) => {
      const url = new URL(pgUrl())
      url.pathname = '/g2s_no_such_database'
      await t.rejects(postgresStore({ connectionString: url.toString() }), { code, message: /g2s_no_such_database.*does not exist/ })
    })
    t.test('a schema that does not hold every g2sentry table', async (t) => {
      const bouncer = await startPgBouncer(t)
      const schema = freshSchema(t)
      await (await postgresStore({ connectionString: bouncer.url, schema })).close()
      await withClient((client) => client.query(`DROP TABLE ${schema}.partner_requests`))
      await t.rejects(postgresStore({ connectionString: bouncer.url, schema }), { code, message: new RegExp(`schema ${schema} does not hold the g2sentry tables partner_requests`) },
        'refused at open, not at the first write that would miss it')
    })
    t.test('TLS required (sslmode passes through to pg)', async (t) => {
      // PgBouncer here has no TLS: a client that requires it is refused.
      const bouncer = await startPgBouncer(t)
      await t.rejects(openStore(`${bouncer.url}?sslmode=require&schema=${freshSchema(t)}`), { code, message: /TLS.*SSL/ })
    })
  })

  t.test('every write commits with synchronous_commit on, whatever the role\'s default, through the pooler and directly', async (t) => {
    const role = uniqueName('r')
    track(role, `DROP ROLE IF EXISTS ${role}`)
    await withClient((client) => client.query(`CREATE ROLE ${role} LOGIN; ALTER ROLE ${role} SET synchronous_commit = off`))
    t.teardown(() => drop(role))
    const bouncer = await startPgBouncer(t, { users: [role] })
    const as = (url: string) => { const u = new URL(url); u.username = role; u.password = ''; return u.toString() }
    for (const [where, url] of [['PgBouncer', as(bouncer.url)], ['direct', as(pgUrl())]] as const) {
      t.test(where, async (t) => {
        const schema = uniqueName('s')
        track(schema, `DROP SCHEMA IF EXISTS ${schema} CASCADE`)
        // Opened below, once its schema exists; the teardown registered first closes it whatever happens.
        // eslint-disable-next-line prefer-const
        let store: G2SentryStore | undefined
        t.teardown(async () => {
          await store?.close()
          await drop(schema)
        })
        await withClient((client) => client.query(`CREATE SCHEMA ${schema} AUTHORIZATION ${role}`))
        t.equal(await withClient(async (client) => (await client.query<{ s: string }>('SELECT current_setting(\'synchronous_commit\') AS s')).rows[0]?.s, url),
          'off', `the role's sessions default to off (${where})`)
        store = await postgresStore({ connectionString: url, schema })
        // A trigger on every table records the setting each write ran under.
        await withClient(async (client) => {
          await client.query(`CREATE TABLE ${schema}.seen (tbl text, setting text); GRANT INSERT ON ${schema}.seen TO ${role};
            CREATE FUNCTION ${schema}.note_setting() RETURNS trigger LANGUAGE plpgsql AS $$
              BEGIN INSERT INTO ${schema}.seen VALUES (TG_TABLE_NAME, current_setting('synchronous_commit')); RETURN NULL; END $$`)
          for (const table of G2SENTRY_TABLES.filter((name) => name !== 'g2sentry_migrations')) {
            await client.query(`CREATE TRIGGER note AFTER INSERT OR UPDATE OR DELETE ON ${schema}.${table} FOR EACH STATEMENT EXECUTE FUNCTION ${schema}.note_setting()`)
          }
        })
        const s = store
        await s.append(incoming(assigned(1), T0))
        await Promise.all([s.append(incoming(started(1), T0 + 1)), s.append(incoming(assigned(2), T0 + 2))])
        // A failing event makes the batch run again one event per transaction.
        const bad = { ...incoming(assigned(3), T0 + 3), jobName: null } as unknown as IncomingEvent
        await Promise.allSettled([s.append(bad), s.append(incoming(completed(1), T0 + 4))])
        const id = await s.quarantine({ reason: 'invalid_payload', detail: 'x', rawBody: Buffer.from('{}'), signature: 'none', contentType: 'application/json', receivedAt: T0 })
        await s.resolveQuarantine(id, 1)
        await s.openConsumer('c', 'beginning')
        const fence = await fenceFor(s, 'consumer:c', 'me')
        await s.saveCheckpoint('c', 1, fence, { seq: 2, attempts: 1, error: 'boom' })
        await s.retryParked('c')
        await s.resolveParked('c', 2, fence)
        await s.resetConsumer('c', 0, 'consumer:c')
        await s.releaseLease('consumer:c', 'me')
        const reconcile = s.reconcileState
        if (reconcile === undefined) throw new Error('no reconcileState')
        await reconcile.recordCheck(1, T0, 1)
        await reconcile.takeRequestSlot('key', T0, 10, 60_000)
        await reconcile.settleRequest('key', T0, T0 + 1)
        await reconcile.pauseRequests('key', T0 + 10)
        await s.rebuild()
        const redacted = await s.redact?.({ jobIds: [1], reason: 'test', vacuum: 'plain' })
        t.equal(redacted?.rows, 3, 'a redaction through the pooler, its VACUUM included')
        await s.deleteConsumer('c', 'consumer:c')
        const archived = await archiveLog(s, { through: 2, out: join(t.testdir(), 'archive.ndjson') })
        t.equal(archived.rows, 2, 'an archive through the pooler: checkpoint, deletion and VACUUM')
        const seen = await withClient(async (client) => (await client.query<{ tbl: string; setting: string }>(`SELECT tbl, setting FROM ${schema}.seen`)).rows)
        const tables = new Set(seen.map((row) => row.tbl))
        t.same([...tables].sort(), G2SENTRY_TABLES.filter((name) => name !== 'g2sentry_migrations').sort(), 'every table was written')
        const off = seen.filter((row) => row.setting !== 'on')
        t.same(off, [], `all ${seen.length} write statements ran with synchronous_commit on`)
      })
    }
  })
})
