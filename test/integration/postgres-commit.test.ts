// What the PostgreSQL store's commit guarantees when the server or the network misbehaves: the
// commit is flushed whatever the server's default, and a COMMIT whose answer is lost (the
// connection cut after COMMIT was sent) never makes the store append a committed batch again.
// A real TCP proxy between the store and PostgreSQL cuts the connection at the chosen moment.
import t from 'tap'
import type { Test } from 'tap'
import { auditLog } from '../../src/log/audit.js'
import { postgresStore } from '../../src/store/postgres/postgres-store.js'
import type { G2SentryStore } from '../../src/store/contract.js'
import type { IncomingEvent } from '../../src/domain/types.js'
import { drop, freshSchema, pgUrl, requirePg, track, uniqueName, withClient } from '../helpers/pg.js'
import { commitProxy, type CommitProxy } from '../helpers/pg-commit-proxy.js'
import { assigned, completed, incoming, readWholeLog, started, T0 } from '../helpers/store-contract.js'

/** A store on a fresh schema through a COMMIT proxy, one event appended, and the three to append next. */
async function afterOneAppend (t: Test): Promise<{ proxy: CommitProxy; store: G2SentryStore; events: IncomingEvent[] }> {
  const proxy = await commitProxy(t)
  const store = await postgresStore({ connectionString: proxy.url, schema: freshSchema(t) })
  t.teardown(() => store.close())
  await store.append(incoming(assigned(1), T0))
  return { proxy, store, events: [incoming(started(1), T0 + 1), incoming(assigned(2), T0 + 2), incoming(completed(1), T0 + 3)] }
}

t.test('postgres commit', async (t) => {
  if (!await requirePg(t)) return

  for (const cut of ['after-commit', 'before-commit'] as const) {
    t.test(`a batch whose connection is cut ${cut.replace('-', ' ')} is in the log exactly once, and every caller gets its result`, async (t) => {
      const { proxy, store, events } = await afterOneAppend(t)
      proxy.cutNext(cut)
      const results = await Promise.all(events.map((event) => store.append(event)))
      t.equal(proxy.cuts(), 1, 'the connection was cut at the COMMIT')
      t.same(results.map((r) => [r.seq, r.jobId, r.outcome, r.status]),
        [[2, 1, 'applied', 'InProgress'], [3, 2, 'applied', 'Assigned'], [4, 1, 'applied', 'Completed']])
      t.same((await readWholeLog(store)).map((row) => [row.seq, row.jobId, row.outcome]),
        [[1, 1, 'applied'], [2, 1, 'applied'], [3, 2, 'applied'], [4, 1, 'applied']], 'no event appended twice')
      t.ok((await auditLog(store, { secrets: [] })).chain.ok, 'the chain links')
      t.equal((await store.getJob(1))?.eventCount, 3, 'each delivery counted once')
    })
  }

  t.test('a COMMIT whose answer is lost and whose outcome cannot be checked fails its appends, never runs them again', async (t) => {
    // The connection is cut once the server answers COMMIT (the batch committed), and the check of
    // the chain head that follows finds the server unreachable; the server is back just after.
    const { proxy, store, events } = await afterOneAppend(t)
    proxy.cutNext('after-commit', { thenRefuse: 1 })
    const outcomes = await Promise.allSettled(events.map((event) => store.append(event)))
    t.equal(proxy.cuts(), 1, 'the connection was cut at the COMMIT')
    t.same(outcomes.map((o) => o.status), ['rejected', 'rejected', 'rejected'], 'every caller is told its append failed (the route answers 503; the sender retries)')
    t.match((outcomes[0] as PromiseRejectedResult).reason, { code: 'FST_G2SENTRY_COMMIT_UNKNOWN', statusCode: 503 })
    t.same((await readWholeLog(store)).map((row) => [row.seq, row.jobId, row.eventType, row.outcome]),
      [[1, 1, 'JobAssigned', 'applied'], [2, 1, 'JobStarted', 'applied'], [3, 2, 'JobAssigned', 'applied'], [4, 1, 'JobCompleted', 'applied']],
      'the committed batch is in the log once: nothing was appended again')
    // The sender's retry of one of them is a duplicate of the committed row, as for any lost answer.
    t.match(await store.append(incoming(completed(1), T0 + 3)), { outcome: 'duplicate', seq: 5 })
    t.ok((await auditLog(store, { secrets: [] })).chain.ok, 'the chain links')
  })

  t.test('one append alone whose COMMIT answer is lost resolves with its result, in the log once', async (t) => {
    const proxy = await commitProxy(t)
    const schema = freshSchema(t)
    const store = await postgresStore({ connectionString: proxy.url, schema })
    t.teardown(() => store.close())
    proxy.cutNext('after-commit')
    const result = await store.append(incoming(assigned(7), T0))
    t.same([result.seq, result.outcome], [1, 'applied'])
    t.same((await readWholeLog(store)).map((row) => row.seq), [1])
  })

  t.test('appends commit with synchronous_commit on, even when the server\'s default is off', async (t) => {
    const role = uniqueName('r')
    const schema = uniqueName('s')
    // Dropped in this order (the role owns the schema), here or, if the run is cut short, later.
    track(schema, `DROP SCHEMA IF EXISTS ${schema} CASCADE`)
    track(role, `DROP ROLE IF EXISTS ${role}`)
    // Opened below, once its role exists; the teardown registered first closes it whatever happens.
    // eslint-disable-next-line prefer-const
    let store: G2SentryStore | undefined
    t.teardown(async () => {
      await store?.close()
      await drop(schema)
      await drop(role)
    })
    await withClient(async (client) => {
      await client.query(`CREATE ROLE ${role} LOGIN`)
      await client.query(`ALTER ROLE ${role} SET synchronous_commit = off`)
      await client.query(`CREATE SCHEMA ${schema} AUTHORIZATION ${role}`)
    })
    const url = new URL(pgUrl())
    url.username = role
    url.password = ''
    store = await postgresStore({ connectionString: url.toString(), schema })
    // A trigger records the setting each write statement ran under.
    await withClient(async (client) => {
      await client.query(`CREATE TABLE ${schema}.seen (setting text); GRANT INSERT ON ${schema}.seen TO ${role};
        CREATE FUNCTION ${schema}.note_setting() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN INSERT INTO ${schema}.seen VALUES (current_setting('synchronous_commit')); RETURN NULL; END $$;
        CREATE TRIGGER note AFTER INSERT ON ${schema}.events FOR EACH STATEMENT EXECUTE FUNCTION ${schema}.note_setting()`)
    })
    t.equal(await withClient(async (client) => (await client.query<{ synchronous_commit: string }>('SHOW synchronous_commit')).rows[0]?.synchronous_commit,
      url.toString()), 'off', 'the role\'s sessions default to off')
    await store.append(incoming(assigned(1), T0))
    await Promise.all([store.append(incoming(started(1), T0 + 1)), store.append(incoming(assigned(2), T0 + 2))])
    // A failing event makes the batch run again one event per transaction.
    const bad = { ...incoming(assigned(3), T0 + 3), jobName: null } as unknown as Parameters<G2SentryStore['append']>[0]
    await Promise.allSettled([store.append(bad), store.append(incoming(completed(1), T0 + 4))])
    const seen = await withClient(async (client) => (await client.query<{ setting: string }>(`SELECT setting FROM ${schema}.seen`)).rows)
    t.ok(seen.length >= 3, `${seen.length} write statements seen`)
    t.same(new Set(seen.map((row) => row.setting)), new Set(['on']), 'every one with synchronous_commit on')
  })
})
