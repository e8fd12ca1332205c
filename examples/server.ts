// A small real app: the receiver, its job routes, a page that shows the jobs changing live
// (examples/live.html, at GET /), and a clean shutdown.
// In your own app, import from 'fastify-g2sentry' instead of '../src/index.js'.
import Fastify from 'fastify'
import { mkdirSync, readFileSync } from 'node:fs'
import { dirname } from 'node:path'
import g2sentry from '../src/index.js'
import { DEVELOPMENT_SECRET } from '../src/simulator/simulate.js'
import { isPostgresUrl } from '../src/store/open-store.js'
import { requestLogFields, requireReadToken, timeoutOptions } from './server-setup.js'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
const database = process.env.G2SENTRY_DB ?? './data/g2sentry.db'
const configured = process.env.G2SENTRY_CALLBACK_SECRET
// During a rotation in G2 Sentry's portal, keep the old secret here until the last retry is over.
const previous = process.env.G2SENTRY_CALLBACK_SECRET_PREVIOUS
const readToken = process.env.G2SENTRY_READ_TOKEN
const production = process.env.NODE_ENV === 'production'

// Slow clients cannot hold connections open (see examples/server-setup.ts), and the request log
// never shows the read token the live stream takes in its URL.
const app = Fastify({ logger: { serializers: { req: requestLogFields } }, ...timeoutOptions() })

if (configured === undefined || configured === '') {
  if (production) {
    app.log.fatal('G2SENTRY_CALLBACK_SECRET is not set; refusing to start in production')
    process.exit(1)
  }
  app.log.warn('*** G2SENTRY_CALLBACK_SECRET is not set: using the DEVELOPMENT secret. Anyone who reads this code can sign callbacks. Set the secret from G2 Sentry\'s partner portal before exposing this server. ***')
}
const secret = [configured || DEVELOPMENT_SECRET, ...(previous ? [previous] : [])]

// The job routes, the live stream and the metrics show jobs and guardians' phone numbers: with
// G2SENTRY_READ_TOKEN they answer only `Authorization: Bearer <token>` (the stream also
// `?token=`). The callback route never needs it: G2 Sentry signs its callbacks instead.
const protect = readToken ? { onRequest: requireReadToken(readToken, { queryTokenPaths: ['/jobs/stream'] }) } : {}
if (!readToken && production) {
  app.log.warn('*** G2SENTRY_READ_TOKEN is not set: the job routes, the live stream and /metrics (guardian phone numbers included) are open to anyone who can reach this port. Set it, or put these routes behind your own authentication. ***')
}
// Forwarding (optional): each job status change is POSTed to G2SENTRY_FORWARD_URL, signed with
// G2SENTRY_FORWARD_SECRET (X-Signature, hex HMAC-SHA256 of the body), in order, retried until a 2xx.
const forwardUrl = process.env.G2SENTRY_FORWARD_URL
const forwardSecret = process.env.G2SENTRY_FORWARD_SECRET
const forwardMaxBackoff = process.env.G2SENTRY_FORWARD_MAX_BACKOFF_MS
if (forwardUrl !== undefined && forwardUrl !== '' && (forwardSecret === undefined || forwardSecret === '')) {
  app.log.fatal('G2SENTRY_FORWARD_URL is set but G2SENTRY_FORWARD_SECRET is not; refusing to forward unsigned')
  process.exit(1)
}
const forward = forwardUrl === undefined || forwardUrl === ''
  ? undefined
  : { url: forwardUrl, secret: forwardSecret as string, maxBackoffMs: forwardMaxBackoff === undefined ? 60_000 : Number(forwardMaxBackoff) }
// Reconciliation with G2 Sentry's Partner API, when its URL and the partner's credentials are set:
// cancellations and lost or late withdrawals, which callbacks cannot tell, reach the log too.
const apiUrl = process.env.G2SENTRY_API_URL
const partnerKey = process.env.G2SENTRY_PARTNER_KEY
const partnerSecret = process.env.G2SENTRY_PARTNER_SECRET
const milliseconds = (name: string): number | undefined => process.env[name] === undefined || process.env[name] === '' ? undefined : Number(process.env[name])
const reconcile = apiUrl && partnerKey && partnerSecret
  ? {
      baseUrl: apiUrl,
      partnerKey,
      partnerSecret,
      quietFor: milliseconds('G2SENTRY_RECONCILE_QUIET_MS'),
      every: milliseconds('G2SENTRY_RECONCILE_EVERY_MS'),
      leaseTtl: milliseconds('G2SENTRY_RECONCILE_LEASE_MS')
    }
  : undefined
if (reconcile === undefined && (apiUrl || partnerKey || partnerSecret)) {
  app.log.warn('reconciliation is off: it needs G2SENTRY_API_URL, G2SENTRY_PARTNER_KEY and G2SENTRY_PARTNER_SECRET together')
}

// G2SENTRY_DB is a SQLite file (its folder is created) or a postgres:// URL.
if (database !== ':memory:' && !isPostgresUrl(database)) mkdirSync(dirname(database), { recursive: true })
await app.register(g2sentry, {
  secret,
  database,
  jobRoutes: protect,
  // Prometheus metrics on /metrics.
  metrics: protect,
  forward,
  reconcile,
  // Best-effort and in the request (a crash can lose it): for reactions that must not be lost,
  // use a consumer (docs/consumers.md).
  onEvent: ({ jobId, outcome, status, source }, request) => {
    if (outcome === 'applied') (request?.log ?? app.log).info({ jobId, status, source }, 'job status changed')
  }
})

// The live page: read once, served as it is (it follows GET /jobs/stream with EventSource).
const livePage = readFileSync(new URL('./live.html', import.meta.url))
app.get('/', (_request, reply) => reply.type('text/html; charset=utf-8').send(livePage))

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    app.log.info({ signal }, 'closing')
    app.close().then(() => process.exit(0), () => process.exit(1))
  })
}

try {
  await app.listen({ port, host })
} catch (error) {
  if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error
  app.log.fatal(`port ${port} on ${host} is already in use (another server is running?): stop it, or set PORT to another port`)
  await app.close()
  process.exit(1)
}
