// GET /jobs/stream (issue item 5): Server-Sent Events over a listening server, read by a real
// HTTP client (node:http, the SSE text parsed here as the WHATWG spec says), with deliveries
// signed and POSTed over HTTP too. One event per applied change, id: = seq; a reconnect with
// Last-Event-ID gets what it missed from the log, then the live changes, none twice, in order.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { join } from 'node:path'
import g2sentry from '../../src/index.js'
import { mulberry32 } from '../../src/simulator/schedules.js'
import { postgresStore } from '../../src/store/postgres/postgres-store.js'
import { sqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import type { G2SentryStore } from '../../src/store/contract.js'
import type { AppendResult } from '../../src/domain/types.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { assigned, CALLBACK_PATH, completed, SECRET, started, withdrawn, type CallbackPayload } from '../helpers/helpers.js'
import { freshSchema, pgUnavailable, pgUrl, redact } from '../helpers/pg.js'
import { readWholeLog } from '../helpers/store-contract.js'
import { appliedChanges, deliver, listen, server, SseClient, type Change, type Delivered } from '../helpers/stream-helpers.js'

t.setTimeout(120_000)

const PHONE = '+12345678901'
const OTHER_PHONE = '+15550001111'

const rated = (jobId: number): CallbackPayload => ({ jobId, eventType: 'JobGuardianRate', jobName: 'Front desk', jobStatus: 'New' })

/** Each id once, in increasing order. */
function assertOrdered (t: Test, ids: number[], label: string): void {
  t.ok(ids.every((id, i) => i === 0 || id > (ids[i - 1] as number)), `${label}: ids strictly increasing, none twice`)
}

t.test('a connected client gets one event per applied change, id = seq, without the phone', async (t) => {
  const { app, base } = await server(t)
  const before = await deliver(base, assigned(1, { phone: PHONE }))
  t.equal(before.outcome, 'applied')

  const client = await SseClient.open(t, `${base}/jobs/stream`)
  const other = await SseClient.open(t, `${base}/jobs/stream`)
  t.equal(client.statusCode, 200)
  t.equal(client.headers['content-type'], 'text/event-stream; charset=utf-8')
  t.match(client.headers['cache-control'], /no-cache/)

  const answers = [
    await deliver(base, started(1, { phone: PHONE })), // applied
    await deliver(base, started(1, { phone: PHONE })), // duplicate
    await deliver(base, assigned(1, { phone: PHONE })), // stale
    await deliver(base, rated(2)), // unsupported
    await deliver(base, completed(1)), // applied
    await deliver(base, assigned(3, { phone: OTHER_PHONE })), // applied
    await deliver(base, assigned(3, { phone: OTHER_PHONE })), // duplicate
    await deliver(base, withdrawn(3)), // applied
    await deliver(base, assigned(3, { phone: OTHER_PHONE, name: 'Renamed shift' })) // applied: re-assignment
  ]
  t.same(answers.map((a) => [a.httpStatus, a.outcome]), [
    [200, 'applied'], [200, 'duplicate'], [200, 'stale'], [200, 'unsupported'], [200, 'applied'],
    [200, 'applied'], [200, 'duplicate'], [200, 'applied'], [200, 'applied']
  ], 'the deliveries got the outcomes the test relies on')
  const last = (answers[answers.length - 1] as Delivered).seq
  await client.until(last)
  await other.until(last)

  const appliedSeqs = answers.filter((a) => a.outcome === 'applied').map((a) => a.seq)
  t.same(client.ids, appliedSeqs, 'one event per applied change, and only those; nothing from before the connection')
  t.ok(client.events.every((e) => e.event === 'job'), 'each event is named "job"')
  t.strictSame(client.changes, (await appliedChanges(app.g2sentry.store, before.seq)),
    'each data is {seq, jobId, eventType, status, jobName, receivedAt}, equal to what the log holds')
  t.ok(client.changes.every((c, i) => c.seq === client.ids[i]), 'data.seq equals the id')
  t.same(client.changes.map((c) => [c.jobId, c.eventType, c.status]), [
    [1, 'JobStarted', 'InProgress'],
    [1, 'JobCompleted', 'Completed'],
    [3, 'JobAssigned', 'Assigned'],
    [3, 'JobWithdrawed', 'New'],
    [3, 'JobAssigned', 'Assigned']
  ])
  t.equal(client.changes[4]?.jobName, 'Renamed shift', 'the new name travels with the change')
  t.notMatch(client.text, /guardianPhone|12345678901|15550001111/, 'no phone, nor its field, on the stream')
  t.strictSame(other.events, client.events, 'a second client got exactly the same events')
  t.match(client.text, /^retry: \d+\n\n/, 'the stream starts by telling the browser how soon to reconnect')
})

t.test('?jobId= sends only that job\'s changes', async (t) => {
  const { base } = await server(t)
  const all = await SseClient.open(t, `${base}/jobs/stream`)
  const one = await SseClient.open(t, `${base}/jobs/stream?jobId=1`)
  const none = await SseClient.open(t, `${base}/jobs/stream?jobId=999`)
  const answers: Delivered[] = []
  for (const payload of [assigned(1), assigned(2), started(2), started(1), started(1), completed(2), completed(1)]) {
    answers.push(await deliver(base, payload))
  }
  const applied = answers.filter((a) => a.outcome === 'applied')
  await all.until((applied[applied.length - 1] as Delivered).seq)
  await one.until((applied.filter((a) => a.jobId === 1).pop() as Delivered).seq)
  t.same(all.ids, applied.map((a) => a.seq), 'the unfiltered stream has every applied change')
  t.same(one.ids, applied.filter((a) => a.jobId === 1).map((a) => a.seq), '?jobId=1 has job 1\'s only')
  t.ok(one.changes.every((c) => c.jobId === 1))
  t.same(none.events, [], 'a job with no change gets nothing')
})

t.test('?jobId= that is not a job id is refused with 400', async (t) => {
  const { base } = await server(t)
  for (const query of ['abc', '0', '-1', '1.5', '9007199254740992']) {
    const client = await SseClient.open(t, `${base}/jobs/stream?jobId=${query}`)
    t.equal(client.statusCode, 400, `?jobId=${query} → 400`)
    t.match(client.headers['content-type'], /^application\/json/)
    t.match(JSON.parse(await client.body()), { statusCode: 400, code: 'FST_G2SENTRY_INVALID_REQUEST' })
  }
})

t.test('Last-Event-ID: the missed changes from the log, then the live ones, none twice', async (t) => {
  const { app, base } = await server(t)
  const answers: Delivered[] = []
  for (const payload of [
    assigned(1, { phone: PHONE }), assigned(2), assigned(1, { phone: PHONE }), withdrawn(1), rated(9),
    started(2), assigned(2), assigned(1), completed(2), started(1), started(1, { phone: OTHER_PHONE })
  ]) answers.push(await deliver(base, payload))
  const store = app.g2sentry.store
  const logged = await readWholeLog(store)
  t.same(logged.map((row) => row.outcome), ['applied', 'applied', 'duplicate', 'applied', 'unsupported', 'applied', 'stale', 'applied', 'applied', 'applied', 'applied'])

  // Reconnects from a duplicate (3), an applied change (4), the start and the end of the log.
  const cases: Array<{ last: number; jobId?: number }> = [
    { last: 3 }, { last: 4 }, { last: 0 }, { last: 11 }, { last: 3, jobId: 1 }, { last: 5, jobId: 2 }, { last: 0, jobId: 2 }
  ]
  const clients: SseClient[] = []
  for (const { last, jobId } of cases) {
    const client = await SseClient.open(t, `${base}/jobs/stream${jobId === undefined ? '' : `?jobId=${jobId}`}`, { 'last-event-id': String(last) })
    t.equal(client.statusCode, 200)
    clients.push(client)
  }
  for (const [i, { last, jobId }] of cases.entries()) {
    const client = clients[i] as SseClient
    const missed = await appliedChanges(store, last, jobId)
    if (missed.length > 0) await client.until((missed[missed.length - 1] as Change).seq)
    t.strictSame(client.changes, missed, `Last-Event-ID ${last}${jobId === undefined ? '' : ` ?jobId=${jobId}`}: exactly the ${missed.length} applied changes after it`)
  }

  // Then the live changes: job 1 completes, a redelivery, job 2 is renamed.
  const live = [
    await deliver(base, completed(1)),
    await deliver(base, completed(1)),
    await deliver(base, completed(2, { name: 'Renamed' }))
  ]
  t.same(live.map((a) => a.outcome), ['applied', 'duplicate', 'applied'])
  for (const [i, { last, jobId }] of cases.entries()) {
    const client = clients[i] as SseClient
    const owed = await appliedChanges(store, last, jobId)
    await client.until((owed[owed.length - 1] as Change).seq)
    const label = `Last-Event-ID ${last}${jobId === undefined ? '' : ` ?jobId=${jobId}`}`
    t.strictSame(client.changes, owed, `${label}: the missed changes, then the live ones`)
    assertOrdered(t, client.ids, label)
  }
})

t.test('a Last-Event-ID that is not a seq is ignored: live changes only', async (t) => {
  const { base } = await server(t)
  await deliver(base, assigned(1))
  const client = await SseClient.open(t, `${base}/jobs/stream`, { 'last-event-id': 'abc' })
  t.equal(client.statusCode, 200)
  const next = await deliver(base, started(1))
  await client.until(next.seq)
  t.same(client.ids, [next.seq], 'nothing replayed from the log')
})

/**
 * The change that is sure to be applied for a job: its current status again with a new name
 * (new content for the same status), or a first assignment for a job with none.
 */
async function renaming (store: G2SentryStore, jobId: number, name: string): Promise<CallbackPayload> {
  const job = await store.getJob(jobId)
  const fields = { name }
  switch (job?.status) {
    case undefined: return assigned(jobId, fields)
    case 'New': return withdrawn(jobId, fields)
    case 'Assigned': return assigned(jobId, fields)
    case 'InProgress': return started(jobId, fields)
    default: return completed(jobId, fields)
  }
}

const EVENTS = [
  (jobId: number) => assigned(jobId, { phone: PHONE }),
  (jobId: number) => assigned(jobId),
  (jobId: number) => started(jobId, { phone: PHONE }),
  (jobId: number) => completed(jobId),
  (jobId: number) => withdrawn(jobId)
]

/** A random mix of deliveries over `jobs` jobs: applied, duplicate and stale alike. */
function randomDeliveries (random: () => number, count: number, jobs: number, firstJob: number): CallbackPayload[] {
  return Array.from({ length: count }, () => {
    const jobId = firstJob + Math.floor(random() * jobs)
    return (EVENTS[Math.floor(random() * EVENTS.length)] as (jobId: number) => CallbackPayload)(jobId)
  })
}

/** Sends `payloads` over HTTP, `concurrency` at a time; `onAnswered(n)` after each answer. */
async function sendAll (base: string, payloads: CallbackPayload[], concurrency: number, onAnswered: (answered: number) => Promise<void> = async () => {}): Promise<Delivered[]> {
  const answers: Delivered[] = []
  let next = 0
  const worker = async () => {
    while (next < payloads.length) {
      const payload = payloads[next++] as CallbackPayload
      answers.push(await deliver(base, payload))
      await onAnswered(answers.length)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return answers
}

/**
 * Reconnecting clients open while deliveries are being committed, at different points of the
 * run, some with ?jobId=; once every delivery is answered, each must hold exactly the applied
 * changes after its Last-Event-ID, in seq order, each once.
 */
async function raceRounds (t: Test, app: FastifyInstance, base: string, seed: number, scale: { prefill: number; perRound: number; rounds: number; clients: number; workers: number }, reader = app.g2sentry.store): Promise<void> {
  const random = mulberry32(seed)
  const store = app.g2sentry.store
  const JOBS = 12
  t.comment(`seed ${seed}`)
  const prefill = await sendAll(base, randomDeliveries(random, scale.prefill, JOBS, 1), 16)
  t.ok(prefill.every((a) => a.httpStatus === 200), `${scale.prefill} deliveries already in the log`)

  for (let round = 0; round < scale.rounds; round++) {
    const head = (await store.chainHead())?.seq ?? 0
    const payloads = randomDeliveries(random, scale.perRound, JOBS, 1)
    // When each client connects (after how many answers), from where, and for which job: spread
    // over the round, from the start of the log, from the head, and from anywhere between.
    const plans = Array.from({ length: scale.clients }, (_, k) => {
      const from = k % 3 === 0 ? 0 : k % 3 === 1 ? Math.floor(random() * head) : Math.max(0, head - Math.floor(random() * 20))
      return { after: Math.floor(k * scale.perRound / scale.clients), last: from, jobId: k % 4 === 3 ? 1 + Math.floor(random() * JOBS) : undefined }
    })
    const opened: Array<Promise<SseClient>> = []
    const connect = (answered: number) => {
      for (const [i, plan] of plans.entries()) {
        if (plan.after !== answered) continue
        const query = plan.jobId === undefined ? '' : `?jobId=${plan.jobId}`
        // Not awaited: the catch-up runs while the workers keep delivering.
        opened[i] = SseClient.open(t, `${base}/jobs/stream${query}`, { 'last-event-id': String(plan.last) })
      }
    }
    connect(0)
    const answers = await sendAll(base, payloads, scale.workers, async (answered) => connect(answered))
    const clients = await Promise.all(opened)
    t.ok(answers.every((a) => a.httpStatus === 200), `round ${round}: ${answers.length} concurrent deliveries answered 200 (${answers.filter((a) => a.outcome === 'applied').length} applied)`)

    // A last change for every stream, so each one's end is known.
    const sentinels = new Map<number | undefined, number>()
    sentinels.set(undefined, (await deliver(base, await renaming(store, 1000 + round, `end of round ${round}`))).seq)
    for (const plan of plans) {
      if (plan.jobId !== undefined && !sentinels.has(plan.jobId)) {
        const answer = await deliver(base, await renaming(store, plan.jobId, `end of round ${round} for ${plan.jobId}`))
        t.equal(answer.outcome, 'applied')
        sentinels.set(plan.jobId, answer.seq)
      }
    }
    const lastSeq = Math.max(...sentinels.values())
    for (const [i, plan] of plans.entries()) {
      const client = clients[i] as SseClient
      const label = `round ${round}, client ${i} (after ${plan.after} answers, Last-Event-ID ${plan.last}${plan.jobId === undefined ? '' : `, ?jobId=${plan.jobId}`})`
      await client.until(plan.jobId === undefined ? lastSeq : sentinels.get(plan.jobId) as number)
      const owed = await appliedChanges(reader, plan.last, plan.jobId)
      t.equal(client.statusCode, 200)
      t.strictSame(client.ids, owed.map((c) => c.seq), `${label}: exactly the ${owed.length} applied changes after it, in seq order`)
      t.strictSame(client.changes, owed, `${label}: each as the log has it`)
      client.close()
    }
  }
}

const raceSeed = (): number => Number(process.env.G2SENTRY_TEST_SEED ?? Date.now() % 1_000_000)

// SQLite answers a read at once, in the same turn of the event loop, so a catch-up from it never
// has a commit land in the middle: these rounds prove the hand-over from log to live at the
// edges (commits just before and just after a client connects).
t.test('race: reconnects while deliveries commit concurrently (SQLite)', async (t) => {
  const { app, base } = await server(t)
  await raceRounds(t, app, base, raceSeed(), { prefill: 1500, perRound: 120, rounds: 4, clients: 8, workers: 8 })
})

/**
 * The real SQLite store, its log reads answered `ms` later as over a network: half the delay
 * before the query, half after it (commits land both before a page is read and after it was).
 * Everything else goes straight to the store.
 */
function withReadLatency (store: G2SentryStore, ms: number): G2SentryStore {
  const sleep = () => new Promise((resolve) => setTimeout(resolve, ms / 2))
  return new Proxy(store, {
    get (target, property, receiver) {
      if (property !== 'readLog') return Reflect.get(target, property, receiver)
      return async (query: Parameters<G2SentryStore['readLog']>[0]) => {
        await sleep()
        const rows = await target.readLog(query)
        await sleep()
        return rows
      }
    }
  })
}

// Here commits do land while a catch-up waits for its pages: a change committed then is both
// pushed live and (for the commits before a page is read) found in the log, and must be sent once.
t.test('race: reconnects while deliveries commit during the catch-up (SQLite, reads 20 ms late)', async (t) => {
  const store = sqliteStore({ filename: join(t.testdir(), 'g2.db') })
  t.teardown(() => store.close())
  const { app, base } = await server(t, { store: withReadLatency(store, 20) })
  await raceRounds(t, app, base, raceSeed(), { prefill: 2500, perRound: 120, rounds: 3, clients: 8, workers: 8 }, store)
})

const pgMissing = await pgUnavailable()
const pgRequired = (process.env.G2SENTRY_TEST_PG ?? '') !== ''
t.test('race: reconnects while deliveries commit concurrently (PostgreSQL: the catch-up reads over the network)', {
  skip: pgMissing !== undefined && !pgRequired ? `PostgreSQL not reachable at ${redact(pgUrl())}: skipping` : false
}, async (t) => {
  const schema = freshSchema(t)
  const store = await postgresStore({ connectionString: pgUrl(), schema })
  t.teardown(() => store.close())
  const app = Fastify({ logger: false })
  await app.register(g2sentry, { secret: SECRET, store })
  t.teardown(() => app.close())
  const base = await listen(app)
  // The catch-up reads 1000 rows a page: a log of 2500 rows takes several round trips.
  await raceRounds(t, app, base, raceSeed(), { prefill: 2500, perRound: 120, rounds: 3, clients: 12, workers: 24 })
})

t.test('the jobRoutes onRequest hook protects the stream too', async (t) => {
  const TOKEN = 'Bearer stream-token'
  const onRequest = async (request: FastifyRequest, reply: FastifyReply) => {
    if (request.headers.authorization !== TOKEN) await reply.code(401).send({ error: 'unauthorized' })
  }
  const { base } = await server(t, { jobRoutes: { onRequest } })
  const refused = await SseClient.open(t, `${base}/jobs/stream`)
  t.equal(refused.statusCode, 401, 'without the token: 401')
  t.same(JSON.parse(await refused.body()), { error: 'unauthorized' })
  const refusedReconnect = await SseClient.open(t, `${base}/jobs/stream?jobId=1`, { 'last-event-id': '0' })
  t.equal(refusedReconnect.statusCode, 401, 'a reconnect without the token gets nothing from the log either')
  t.notMatch(await refusedReconnect.body(), /JobAssigned/)

  const allowed = await SseClient.open(t, `${base}/jobs/stream`, { authorization: TOKEN })
  t.equal(allowed.statusCode, 200, 'with the token: the stream')
  const answer = await deliver(base, assigned(1))
  t.equal(answer.httpStatus, 200, 'the callback is not behind the job routes\' hook')
  await allowed.until(answer.seq)
})

t.test('the stream is under the plugin prefix and jobRoutes.prefix', async (t) => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(g2sentry, { prefix: '/g2', secret: SECRET, database: join(t.testdir(), 'g2.db'), jobRoutes: { prefix: '/shifts' } })
  const base = await listen(app)
  const client = await SseClient.open(t, `${base}/g2/shifts/stream`)
  t.equal(client.statusCode, 200)
  const body = JSON.stringify(assigned(1))
  const response = await fetch(`${base}/g2${CALLBACK_PATH}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-signature': signBody(body, SECRET) }, body })
  const { seq } = await response.json() as AppendResult
  await client.until(seq)
  t.same(client.ids, [seq])
})

t.test('app.close() ends open streams promptly', async (t) => {
  const app = Fastify({ logger: false })
  await app.register(g2sentry, { secret: SECRET, database: join(t.testdir(), 'g2.db') })
  const base = await listen(app)
  let closed = false
  t.teardown(() => closed ? undefined : app.close())
  const clients = [
    await SseClient.open(t, `${base}/jobs/stream`),
    await SseClient.open(t, `${base}/jobs/stream?jobId=1`, { 'last-event-id': '0' })
  ]
  const answer = await deliver(base, assigned(1))
  await Promise.all(clients.map((client) => client.until(answer.seq)))

  const started0 = Date.now()
  await app.close()
  closed = true
  const elapsed = Date.now() - started0
  t.ok(elapsed < 1000, `close resolved in ${elapsed} ms with two clients connected`)
  const ended = await Promise.race([
    Promise.all(clients.map((client) => client.ended)).then(() => true),
    new Promise((resolve) => setTimeout(() => resolve(false), 1000))
  ])
  t.ok(ended, 'both clients saw their stream end')
  await t.rejects(fetch(`${base}/jobs/stream`), 'nothing listens any more')
})

t.test('a client that goes away leaves the others and the server working', async (t) => {
  const { base } = await server(t)
  const leaving = await SseClient.open(t, `${base}/jobs/stream`)
  const staying = await SseClient.open(t, `${base}/jobs/stream`)
  const first = await deliver(base, assigned(1))
  await leaving.until(first.seq)
  leaving.close()
  await leaving.ended
  const answers = await Promise.all([assigned(2), assigned(3), started(1)].map((p) => deliver(base, p)))
  t.ok(answers.every((a) => a.httpStatus === 200), 'deliveries after the disconnect are answered 200')
  const lastSeq = Math.max(...answers.map((a) => a.seq))
  await staying.until(lastSeq)
  t.same(staying.ids, [first.seq, ...answers.map((a) => a.seq).sort((a, b) => a - b)], 'the other client gets every change')
  t.same(leaving.ids, [first.seq], 'the one that left got nothing more')
})
