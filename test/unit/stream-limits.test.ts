// GET /jobs/stream against hostile and unlucky clients, over a listening server: clients that
// never read (an HTTP client whose response is paused, so the kernel's buffers fill and the
// server's writes stop being accepted), catch-ups of a log larger than any buffer, the cap on
// clients, and a Last-Event-ID from a log that was since reset.
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { assigned, started } from '../helpers/helpers.js'
import { incoming } from '../helpers/store-contract.js'
import type { JobEvent } from '../../src/domain/types.js'
import { appliedChanges, deliver, server, SseClient, type Delivered } from '../helpers/stream-helpers.js'
import { until } from '../helpers/until.js'

t.setTimeout(120_000)

/** A job name long enough that a few thousand changes outgrow the kernel's socket buffers (about 4 MB on loopback). */
const longName = (i: number) => `shift ${i} ${'x'.repeat(4000)}`

/** The server's side of each connection, by the client's port. */
function serverSockets (app: FastifyInstance): Map<number, Socket> {
  const sockets = new Map<number, Socket>()
  app.server.on('connection', (socket: Socket) => { if (socket.remotePort !== undefined) sockets.set(socket.remotePort, socket) })
  return sockets
}

function serverSocketOf (sockets: Map<number, Socket>, client: SseClient): Socket {
  const socket = sockets.get(client.localPort ?? -1)
  if (socket === undefined) throw new Error('no server socket for the client')
  return socket
}

t.test('a client that never reads is cut off past stream.maxBuffered, and catches up from the log when it reconnects', async (t) => {
  // Large enough for a reading client to take a burst of changes committed together.
  const maxBuffered = 512 * 1024
  const { app, base } = await server(t, { stream: { maxBuffered } })
  const sockets = serverSockets(app)
  const reader = await SseClient.open(t, `${base}/jobs/stream`)
  const stalled = await SseClient.open(t, `${base}/jobs/stream`, {}, { paused: true })
  const stalledSocket = serverSocketOf(sockets, stalled)

  // New jobs, each one an applied change of about 4 KB on the stream, 8 at a time, until the
  // server drops the client that does not read (at most 4,000: about 16 MB for that client).
  const answers: Delivered[] = []
  for (let jobId = 1; jobId <= 4000 && !stalledSocket.destroyed; jobId += 8) {
    answers.push(...await Promise.all(Array.from({ length: 8 }, (_, k) => deliver(base, assigned(jobId + k, { name: longName(jobId + k) })))))
  }
  t.notOk(serverSocketOf(sockets, reader).destroyed, 'the client that reads is still connected')
  t.ok(stalledSocket.destroyed, `the server cut off the client that does not read, after ${answers.length} changes`)
  t.ok(answers.every((a) => a.httpStatus === 200 && a.outcome === 'applied'), 'every delivery was answered 200, applied')
  const lastSeq = Math.max(...answers.map((a) => a.seq))
  await reader.until(lastSeq)
  t.strictSame(reader.ids, answers.map((a) => a.seq).sort((a, b) => a - b), 'a client that reads got every change, in seq order')

  // The cut-off client reads what reached it, then reconnects with the last id it has, as
  // EventSource does, and catches up from the log.
  stalled.resume()
  await stalled.ended
  const lastSeen = stalled.ids.at(-1) ?? 0
  t.ok(lastSeen < lastSeq, `it had not been sent everything (last id ${lastSeen} of ${lastSeq})`)
  const again = await SseClient.open(t, `${base}/jobs/stream`, { 'last-event-id': String(lastSeen) })
  await again.until(lastSeq)
  t.strictSame([...stalled.ids, ...again.ids], reader.ids, 'before and after the reconnect together: every change once, in seq order')
  t.strictSame(again.changes, await appliedChanges(app.g2sentry.store, lastSeen), 'the catch-up is what the log holds')
})

t.test('catch-ups of a long log by clients that never read: bounded per client, other requests answered, nothing lost', async (t) => {
  const { app, base } = await server(t)
  const sockets = serverSockets(app)
  const store = app.g2sentry.store
  // About 13 MB of changes: three times what the kernel buffers for a client that does not read.
  const EVENTS = 3000
  await Promise.all(Array.from({ length: EVENTS }, (_, i) => store.append(incoming(assigned(i + 1, { name: longName(i + 1) }) as JobEvent, 1_790_000_000_000 + i))))
  const owed = await appliedChanges(store)
  t.equal(owed.length, EVENTS, `a log of ${EVENTS} applied changes`)

  const stalled = await Promise.all([1, 2, 3].map(() => SseClient.open(t, `${base}/jobs/stream`, { 'last-event-id': '0' }, { paused: true })))
  const stalledSockets = stalled.map((client) => serverSocketOf(sockets, client))
  // The catch-up has filled the kernel's buffers and waits for 'drain' once the server keeps data of its own.
  await until('the catch-ups wait for the socket', () => stalledSockets.every((socket) => socket.writableLength > 0))
  const written = stalledSockets.map((socket) => socket.bytesWritten)

  // Meanwhile the server answers as usual, and a change committed now comes after the catch-up.
  const live = await deliver(base, started(1))
  t.equal(live.httpStatus, 200, 'a callback during the catch-ups is answered 200')
  const job = await fetch(`${base}/jobs/1`)
  t.equal(job.status, 200, 'GET /jobs/1 during the catch-ups is answered')
  t.match(await job.json(), { jobId: 1, status: 'InProgress' })
  await sleep(200)
  for (const [i, socket] of stalledSockets.entries()) {
    t.ok(socket.writableLength < 64 * 1024, `client ${i}: the server keeps ${socket.writableLength} bytes for it (the socket's buffer and one change), not the rest of the log`)
    t.ok(socket.bytesWritten < 13_000_000 && socket.bytesWritten === written[i], `client ${i}: nothing more was written while it did not read (${socket.bytesWritten} bytes)`)
    t.notOk(socket.destroyed, `client ${i}: a slow catch-up is not cut off: it holds no more than its socket's buffer`)
  }

  for (const client of stalled) client.resume()
  for (const [i, client] of stalled.entries()) {
    await client.until(live.seq, 30_000)
    t.strictSame(client.ids, [...owed.map((c) => c.seq), live.seq], `client ${i}: the whole log, then the live change, each once, in seq order`)
  }
})

t.test('more clients than stream.maxClients: 503 FST_G2SENTRY_STREAM_FULL until one leaves', async (t) => {
  const { base } = await server(t, { stream: { maxClients: 2 } })
  const first = await SseClient.open(t, `${base}/jobs/stream`)
  const second = await SseClient.open(t, `${base}/jobs/stream?jobId=1`, { 'last-event-id': '0' })
  t.same([first.statusCode, second.statusCode], [200, 200])
  const third = await SseClient.open(t, `${base}/jobs/stream`)
  t.equal(third.statusCode, 503, 'the third client is refused')
  t.equal(third.headers['retry-after'], '10', 'with Retry-After')
  t.match(JSON.parse(await third.body()), { statusCode: 503, code: 'FST_G2SENTRY_STREAM_FULL', message: /2 clients/ })
  const job = await fetch(`${base}/jobs/1`)
  t.equal(job.status, 404, 'the other job routes still answer')

  first.close()
  await first.ended
  let fourth: SseClient | undefined
  for (let i = 0; i < 50 && fourth?.statusCode !== 200; i++) {
    fourth?.close()
    fourth = await SseClient.open(t, `${base}/jobs/stream`)
    if (fourth.statusCode !== 200) await sleep(20)
  }
  t.equal(fourth?.statusCode, 200, 'once a client has left, a new one gets in')
  const answer = await deliver(base, assigned(1))
  await second.until(answer.seq)
  await (fourth as SseClient).until(answer.seq)
})

/** Opens the stream with `Last-Event-ID: last` and waits for its `reset` event. */
async function resetClient (t: Test, base: string, last: number, query = ''): Promise<SseClient> {
  const client = await SseClient.open(t, `${base}/jobs/stream${query}`, { 'last-event-id': String(last) })
  t.equal(client.statusCode, 200)
  await until('the reset event', () => client.events.some((event) => event.event === 'reset'))
  return client
}

t.test('a Last-Event-ID beyond the end of the log: event reset (id = the last seq), then the live changes', async (t) => {
  const { base } = await server(t)
  const empty = await resetClient(t, base, 7)
  t.strictSame(empty.events, [{ id: '0', event: 'reset', data: JSON.stringify({ lastEventId: 7, lastSeq: 0 }) }], 'on an empty log: reset to 0')

  const answers = [await deliver(base, assigned(1)), await deliver(base, assigned(2)), await deliver(base, assigned(1))]
  t.same(answers.map((a) => [a.seq, a.outcome]), [[1, 'applied'], [2, 'applied'], [3, 'duplicate']])
  const behind = await resetClient(t, base, 5000)
  const filtered = await resetClient(t, base, 5000, '?jobId=2')
  const current = await SseClient.open(t, `${base}/jobs/stream`, { 'last-event-id': '3' })
  for (const client of [behind, filtered]) {
    t.strictSame(client.events, [{ id: '3', event: 'reset', data: JSON.stringify({ lastEventId: 5000, lastSeq: 3 }) }], 'reset says which id it forgets and where the log ends')
  }

  const next = [await deliver(base, started(1)), await deliver(base, started(2))]
  await behind.until(next[1]!.seq)
  await filtered.until(next[1]!.seq)
  await current.until(next[1]!.seq)
  await empty.until(next[1]!.seq)
  t.same(behind.ids, [3, 4, 5], 'then the live changes, as to any client')
  t.same(filtered.ids, [3, 5], '?jobId= keeps filtering after the reset')
  t.same(current.events.map((event) => event.event), ['job', 'job'], 'a Last-Event-ID at the end of the log is no reset')
  t.same(empty.ids, [0, 1, 2, 4, 5], 'the client reset on the empty log got everything committed since')
})

t.test('stream options are checked at registration', async (t) => {
  for (const [stream, message] of [
    ['yes', 'stream must be an object'],
    [{ maxClients: 0 }, 'stream.maxClients must be a positive integer'],
    [{ maxClients: 1.5 }, 'stream.maxClients must be a positive integer'],
    [{ maxBuffered: -1 }, 'stream.maxBuffered must be a positive integer (bytes)'],
    [{ maxBuffered: '1MB' }, 'stream.maxBuffered must be a positive integer (bytes)']
  ] as const) {
    await t.rejects(server(t, { stream: stream as never }), { code: 'FST_G2SENTRY_INVALID_OPTION', message: new RegExp(message.replace(/[()]/g, '\\$&')) }, JSON.stringify(stream))
  }
})
