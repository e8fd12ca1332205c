// Overlapping batches on PostgreSQL (docs/design.md, "The PostgreSQL write path"): the next
// batch is read, computed and sent while the one before it commits, its head update conditional
// on that commit. These tests put a batch in flight behind one that is still committing (held by
// a slow or failing deferred trigger, or by a TCP proxy holding its COMMIT), check through
// pg_stat_activity that it really is waiting on the chain head, and then let the first one
// commit, fail or lose its connection. Whatever happens, every acknowledged event is in the log
// exactly once, in an order the batches could have had one after the other, and the chain and
// projection audit clean.
import t from 'tap'
import type { Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { auditLog } from '../../src/log/audit.js'
import { contentHash } from '../../src/store/rows.js'
import { postgresStore } from '../../src/store/postgres/postgres-store.js'
import type { G2SentryStore } from '../../src/store/contract.js'
import type { AppendResult, IncomingEvent } from '../../src/domain/types.js'
import { mulberry32 } from '../../src/simulator/schedules.js'
import { freshSchema, pgUrl, requirePg, uniqueName, withClient } from '../helpers/pg.js'
import { commitProxy } from '../helpers/pg-commit-proxy.js'
import { assigned, completed, incoming, readWholeLog, started, T0, withdrawn } from '../helpers/store-contract.js'

/** A connection string whose sessions carry `name`, so pg_stat_activity tells this test's own. */
function named (url: string, name: string): string {
  const parsed = new URL(url)
  parsed.searchParams.set('application_name', name)
  return parsed.toString()
}

/**
 * A deferred trigger on the schema's events: at COMMIT, a transaction that wrote a row of a job
 * listed in `commit_rules` sleeps that long, and fails if the rule says so.
 */
async function commitRules (schema: string): Promise<(jobId: number, seconds: number, fail: boolean) => Promise<void>> {
  await withClient((client) => client.query(`CREATE TABLE ${schema}.commit_rules (job_id bigint PRIMARY KEY, seconds float8, fail boolean);
    CREATE FUNCTION ${schema}.at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
      DECLARE rule record;
      BEGIN
        SELECT * INTO rule FROM ${schema}.commit_rules WHERE job_id = NEW.job_id;
        IF FOUND THEN
          PERFORM pg_sleep(rule.seconds);
          IF rule.fail THEN RAISE EXCEPTION 'refused at commit'; END IF;
        END IF;
        RETURN NULL;
      END $$;
    CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON ${schema}.events DEFERRABLE INITIALLY DEFERRED
      FOR EACH ROW EXECUTE FUNCTION ${schema}.at_commit()`))
  return (jobId, seconds, fail) => withClient(async (client) => {
    await client.query(`INSERT INTO ${schema}.commit_rules VALUES ($1, $2, $3)`, [jobId, seconds, fail])
  })
}

/** Waits until a session named `app` is in the state `where` says (a pg_stat_activity condition); fails after 10 s. */
async function waitForSession (t: Test, app: string, where: string, what: string): Promise<void> {
  for (let tries = 0; tries < 200; tries++) {
    const { rows } = await withClient((client) => client.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND ${where}`, [app]))
    if (rows.length > 0) return
    await sleep(50)
  }
  t.fail(`never saw ${what}`)
}

const committing = "query = 'COMMIT' AND wait_event = 'PgSleep'"
const waitingForHead = "wait_event_type = 'Lock' AND query LIKE '%g2sentry_chain%'"

/** Checks the whole log: each acknowledged result is its row, the chain and projection audit clean, and each repeat names its first row. */
async function checkLog (t: Test, store: G2SentryStore, results: Array<{ event: IncomingEvent; result: AppendResult }>): Promise<void> {
  const log = await readWholeLog(store)
  t.same(log.map((row) => row.seq), log.map((_, i) => i + 1), 'no seq missing or twice')
  const bySeq = new Map(log.map((row) => [row.seq, row]))
  for (const { event, result } of results) {
    const row = bySeq.get(result.seq)
    if (row?.signature !== event.signature || row.receivedAt !== event.receivedAt || row.outcome !== result.outcome) {
      t.fail(`seq ${result.seq} is not the acknowledged event`, { row, result })
      return
    }
  }
  const signatures = new Set(log.map((row) => `${row.signature} ${row.receivedAt}`))
  t.equal(signatures.size, log.length, 'no event appended twice')
  const first = new Map<string, number>()
  for (const row of log) {
    const key = `${row.jobId} ${contentHash(row.rawBody)}`
    if (row.outcome === 'duplicate' && row.sameAs !== (first.get(key) ?? null)) t.fail(`seq ${row.seq}: sameAs ${row.sameAs}, first row ${first.get(key)}`)
    if (!first.has(key)) first.set(key, row.seq)
  }
  const audit = await auditLog(store, { secrets: [] })
  t.ok(audit.chain.ok, `the chain links (${audit.chain.problem ?? 'no problem'})`)
  t.same(audit.projection.outcomeMismatches, [], 'every outcome is what the projection gives in seq order')
  t.same(audit.projection.differingJobs, [], 'the projection equals a rebuild')
}

/** Appends every event, keeping each one's result (or error) with it. */
function appendAll (store: G2SentryStore, events: IncomingEvent[]): Promise<Array<{ event: IncomingEvent; outcome: PromiseSettledResult<AppendResult> }>> {
  return Promise.all(events.map(async (event) => ({ event, outcome: (await Promise.allSettled([store.append(event)]))[0] as PromiseSettledResult<AppendResult> })))
}

const fulfilled = (settled: Array<{ event: IncomingEvent; outcome: PromiseSettledResult<AppendResult> }>) =>
  settled.flatMap(({ event, outcome }) => outcome.status === 'fulfilled' ? [{ event, result: outcome.value }] : [])

t.test('postgres overlapping batches', async (t) => {
  if (!await requirePg(t)) return

  t.test('a batch that fails at COMMIT while the next is in flight: the next is not acknowledged on its head, and is in the log once, after it', async (t) => {
    const schema = freshSchema(t)
    const app = uniqueName('s')
    const store = await postgresStore({ connectionString: named(pgUrl(), app), schema })
    t.teardown(() => store.close())
    const rule = await commitRules(schema)
    await store.append(incoming(assigned(1), T0))
    await rule(666, 0.5, true)
    const first = appendAll(store, [incoming(assigned(666), T0 + 1), incoming(started(1), T0 + 2), incoming(assigned(2), T0 + 3)])
    await waitForSession(t, app, committing, 'the first batch committing')
    const second = appendAll(store, [incoming(completed(1), T0 + 4), incoming(started(2), T0 + 5), incoming(started(1), T0 + 6)])
    await waitForSession(t, app, waitingForHead, 'the second batch waiting on the chain head')
    const [a, b] = await Promise.all([first, second])
    t.same(a.map(({ outcome }) => outcome.status), ['rejected', 'fulfilled', 'fulfilled'], 'only the refused event fails')
    t.same(fulfilled([...a, ...b]).map(({ result }) => [result.seq, result.jobId, result.outcome]),
      [[2, 1, 'applied'], [3, 2, 'applied'], [4, 1, 'applied'], [5, 2, 'applied'], [6, 1, 'stale']],
      'the second batch comes after what the first committed, projected on top of it')
    await checkLog(t, store, fulfilled([...a, ...b]))
  })

  t.test('a batch that commits slowly with the next in flight: both acknowledged, in order', async (t) => {
    const schema = freshSchema(t)
    const app = uniqueName('s')
    const store = await postgresStore({ connectionString: named(pgUrl(), app), schema })
    t.teardown(() => store.close())
    const rule = await commitRules(schema)
    await rule(5, 1, false)
    const first = appendAll(store, [incoming(assigned(5), T0), incoming(assigned(6), T0 + 1)])
    await waitForSession(t, app, committing, 'the first batch committing')
    // Job 5 again, with the same body: a duplicate naming the first batch's row, not yet committed when this one was computed.
    const second = appendAll(store, [incoming(assigned(5), T0 + 10), incoming(started(5), T0 + 2), incoming(withdrawn(6), T0 + 3)])
    await waitForSession(t, app, waitingForHead, 'the second batch waiting on the chain head')
    const results = fulfilled([...await first, ...await second])
    t.same(results.map(({ result }) => [result.seq, result.jobId, result.outcome, result.status]),
      [[1, 5, 'applied', 'Assigned'], [2, 6, 'applied', 'Assigned'], [3, 5, 'duplicate', 'Assigned'], [4, 5, 'applied', 'InProgress'],
        [5, 6, 'applied', 'New']])
    t.equal((await readWholeLog(store)).find((row) => row.seq === 3)?.sameAs, 1, 'the repeat names the row of the batch before it')
    await checkLog(t, store, results)
  })

  for (const cut of ['after-commit', 'before-commit'] as const) {
    t.test(`a COMMIT cut ${cut.replace('-', ' ')} with the next batch in flight: resolved from the chain head, each event once`, async (t) => {
      const proxy = await commitProxy(t)
      const schema = freshSchema(t)
      const app = uniqueName('s')
      const store = await postgresStore({ connectionString: named(proxy.url, app), schema })
      t.teardown(() => store.close())
      await store.append(incoming(assigned(1), T0))
      const hold = proxy.cutNext(cut, { hold: true })
      const first = appendAll(store, [incoming(started(1), T0 + 1), incoming(assigned(2), T0 + 2)])
      await hold.held
      const second = appendAll(store, [incoming(completed(1), T0 + 3), incoming(started(2), T0 + 4)])
      await waitForSession(t, app, waitingForHead, 'the second batch waiting on the chain head')
      hold.go()
      const [a, b] = await Promise.all([first, second])
      t.same([...a, ...b].map(({ outcome }) => outcome.status), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'])
      const results = fulfilled([...a, ...b])
      t.same(results.map(({ result }) => [result.seq, result.jobId, result.outcome, result.status]),
        [[2, 1, 'applied', 'InProgress'], [3, 2, 'applied', 'Assigned'], [4, 1, 'applied', 'Completed'], [5, 2, 'applied', 'InProgress']])
      await checkLog(t, store, results)
      t.equal((await store.getJob(1))?.eventCount, 3, 'each delivery counted once')
    })
  }

  t.test('the batch in flight loses its COMMIT answer and the check finds the server down: it fails, and is never appended again', async (t) => {
    const proxy = await commitProxy(t)
    const schema = freshSchema(t)
    const app = uniqueName('s')
    const store = await postgresStore({ connectionString: named(proxy.url, app), schema })
    t.teardown(() => store.close())
    const rule = await commitRules(schema)
    await rule(9, 0.4, false)
    const first = appendAll(store, [incoming(assigned(9), T0), incoming(assigned(10), T0 + 1)])
    await waitForSession(t, app, committing, 'the first batch committing')
    // The next COMMIT through the proxy is the second batch's: cut at its answer, then the check
    // of the chain head finds no server.
    proxy.cutNext('after-commit', { thenRefuse: 1 })
    const second = appendAll(store, [incoming(started(9), T0 + 2), incoming(started(10), T0 + 3)])
    await waitForSession(t, app, waitingForHead, 'the second batch waiting on the chain head')
    const [a, b] = await Promise.all([first, second])
    t.equal(proxy.cuts(), 1, 'the second batch\'s connection was cut at its COMMIT')
    t.same(a.map(({ outcome }) => outcome.status), ['fulfilled', 'fulfilled'], 'the first batch committed and was told so')
    t.same(b.map(({ outcome }) => outcome.status), ['rejected', 'rejected'], 'the second batch\'s callers are told it failed')
    t.match((b[0]?.outcome as PromiseRejectedResult).reason, { code: 'FST_G2SENTRY_COMMIT_UNKNOWN' })
    t.same((await readWholeLog(store)).map((row) => [row.seq, row.jobId, row.eventType]),
      [[1, 9, 'JobAssigned'], [2, 10, 'JobAssigned'], [3, 9, 'JobStarted'], [4, 10, 'JobStarted']],
      'the second batch committed and is in the log once: nothing was appended again')
    await checkLog(t, store, fulfilled(a))
  })

  t.test('close() with two batches in flight settles every accepted append, committed', async (t) => {
    const schema = freshSchema(t)
    const app = uniqueName('s')
    const store = await postgresStore({ connectionString: named(pgUrl(), app), schema })
    const rule = await commitRules(schema)
    await rule(9, 0.4, false)
    const first = appendAll(store, [incoming(assigned(9), T0), incoming(assigned(10), T0 + 1)])
    await waitForSession(t, app, committing, 'the first batch committing')
    const second = appendAll(store, [incoming(started(9), T0 + 2), incoming(started(10), T0 + 3)])
    await waitForSession(t, app, waitingForHead, 'the second batch waiting on the chain head')
    await store.close()
    const results = [...await first, ...await second]
    t.same(results.map(({ outcome }) => outcome.status), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'], 'close waited for both batches')
    const reopened = await postgresStore({ connectionString: pgUrl(), schema })
    t.teardown(() => reopened.close())
    t.same(fulfilled(results).map(({ result }) => result.seq), [1, 2, 3, 4])
    await checkLog(t, reopened, fulfilled(results))
  })

  t.test('two instances appending at once on one schema, overlapping jobs: one chain, a projection equal to a rebuild', async (t) => {
    const seed = Number(process.env.G2SENTRY_TEST_SEED ?? Date.now() % 1_000_000)
    t.comment(`seed ${seed} (G2SENTRY_TEST_SEED=${seed} replays this schedule)`)
    const random = mulberry32(seed)
    const schema = freshSchema(t)
    const stores = [await postgresStore({ connectionString: pgUrl(), schema }), await postgresStore({ connectionString: pgUrl(), schema })]
    t.teardown(() => Promise.all(stores.map((store) => store.close())))
    const builders = [assigned, started, completed, withdrawn]
    // Each instance sends a stream of appends over the same 12 jobs, a few at a time without
    // waiting for the answers, so batches overlap within each instance and race across the two;
    // some bodies repeat.
    const sent: IncomingEvent[] = []
    const waves = stores.map(async (store, s) => {
      const appends: Array<Promise<Array<{ event: IncomingEvent; outcome: PromiseSettledResult<AppendResult> }>>> = []
      for (let i = 0; i < 300; i++) {
        const repeat = sent.length > 0 && random() < 0.15 ? sent[Math.floor(random() * sent.length)] : undefined
        const build = builders[Math.floor(random() * builders.length)] as typeof assigned
        const event = repeat !== undefined
          ? { ...repeat, receivedAt: T0 + 1_000_000 * (s + 1) + i }
          : incoming(build(100 + Math.floor(random() * 12)), T0 + 1_000_000 * (s + 1) + i)
        sent.push(event)
        appends.push(appendAll(store, [event]))
        if (random() < 0.2) await sleep(Math.floor(random() * 4))
      }
      return (await Promise.all(appends)).flat()
    })
    const results = (await Promise.all(waves)).flat()
    t.same(results.filter(({ outcome }) => outcome.status === 'rejected').map(({ outcome }) => (outcome as PromiseRejectedResult).reason), [],
      'every append succeeded')
    t.equal(results.length, (await readWholeLog(stores[0] as G2SentryStore)).length, 'the log holds each of them')
    await checkLog(t, stores[0] as G2SentryStore, fulfilled(results))
  })
})
