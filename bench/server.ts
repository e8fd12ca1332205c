// One server under load, in its own process: `bare` (HMAC of the raw body, 204, nothing stored),
// `plugin FILE [maxBatch]` (the whole callback route, committed to SQLite before the answer),
// `postgres URL SCHEMA [unprepared]` (the same on PostgreSQL, at URL directly or through a pooler) or `stream FILE` (the plugin with its job routes
// and live stream, for the stream scenario). With G2SENTRY_BENCH_JOB_ROUTES=1 the job routes are
// on in the other modes too (the log-growth benchmark reads jobs).
import Fastify from 'fastify'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import g2sentry, { postgresStore, sqliteStore, verifySignature } from '../src/index.js'

const BENCH_SECRET = 'bench-secret'

const [mode = 'plugin', where = ':memory:', extra = '256'] = process.argv.slice(2)
const app = Fastify({ logger: false })
// Commits and the appends they held, for the mean batch size (group commit only).
let batches = 0
let batched = 0

if (mode === 'bare') {
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body, done) => done(null, body))
  app.post('/callbacks/g2sentry', async (request, reply) => {
    const check = verifySignature(request.body as Buffer, request.headers['x-signature'], [BENCH_SECRET])
    reply.code(check.valid ? 204 : 401).send()
  })
} else {
  await app.register(g2sentry, {
    secret: BENCH_SECRET,
    store: mode === 'postgres'
      ? await postgresStore({ connectionString: where, schema: extra, max: 20, preparedStatements: process.argv[5] !== 'unprepared' })
      : sqliteStore({ filename: where, maxBatch: Number(extra) }),
    jobRoutes: mode === 'stream' || process.env.G2SENTRY_BENCH_JOB_ROUTES === '1'
  })
  app.addHook('onClose', () => app.g2sentry.store.close())
  app.g2sentry.store.onCommit?.((size) => { batches++; batched += size })
}

// Counted where the answer is sent, so the runner can check every 2xx against the committed log
// (a callback hook: an async one costs the bare route a noticeable share of its time).
let sent2xx = 0
app.addHook('onResponse', (_request, reply, done) => {
  if (reply.statusCode < 300) sent2xx++
  done()
})
// The longest the event loop was held (stream scenario): what every request waited at worst.
const loopDelay = monitorEventLoopDelay({ resolution: 10 })
loopDelay.enable()
// The runner starts the measured part of a run with SIGUSR2: start-up and warm-up are not counted.
process.on('SIGUSR2', () => loopDelay.reset())
process.once('SIGTERM', () => {
  loopDelay.disable()
  app.close().then(() => {
    process.stdout.write(`sent2xx ${sent2xx}\nbatches ${batches} ${batched}\nloop-max-ms ${loopDelay.max / 1e6}\n`)
    process.exit(0)
  }, () => process.exit(1))
})
const address = await app.listen({ port: 0, host: '127.0.0.1' })
process.stdout.write(`listening ${address}\n`)
