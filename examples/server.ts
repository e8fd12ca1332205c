// A small real app: the receiver, its job routes, a page that shows the jobs changing live
// (examples/live.html, at GET /), and a clean shutdown.
// In your own app, import from 'fastify-g2sentry' instead of '../src/index.js'.
import Fastify from 'fastify'
import { mkdirSync, readFileSync } from 'node:fs'
import { dirname } from 'node:path'
import g2sentry from '../src/index.js'
import { DEVELOPMENT_SECRET } from '../src/simulator/simulate.js'
import { isPostgresUrl } from '../src/store/open-store.js'
import { EnvironmentError, integerVariable, requestLogFields, requireReadToken, timeoutOptions, urlVariable } from './server-setup.js'

const env = process.env
const database = env.G2SENTRY_DB ?? './data/g2sentry.db'
const configured = env.G2SENTRY_CALLBACK_SECRET
// During a rotation in G2 Sentry's portal, keep the old secret here until the last retry is over.
const previous = env.G2SENTRY_CALLBACK_SECRET_PREVIOUS
const readToken = env.G2SENTRY_READ_TOKEN
const production = env.NODE_ENV === 'production'
const host = env.HOST ?? '127.0.0.1'

// Slow clients cannot hold connections open (see examples/server-setup.ts), and the request log
// never shows the read token the live stream takes in its URL.
const app = Fastify({ logger: { serializers: { req: requestLogFields } }, ...timeoutOptions() })

/** Ends the process with one line that says what is wrong, without a stack trace. */
function refuse (message: string): never {
  app.log.fatal(message)
  process.exit(1)
}

/** Reads the environment's settings; a variable that cannot be used ends the process with one line naming it. */
function settings<T> (read: () => T): T {
  try {
    return read()
  } catch (error) {
    if (error instanceof EnvironmentError) refuse(error.message)
    throw error
  }
}

const port = settings(() => integerVariable(env, 'PORT', 3000, { min: 0, max: 65_535 }))

if (configured === undefined || configured === '') {
  if (production) refuse('G2SENTRY_CALLBACK_SECRET is not set; refusing to start in production')
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
// G2SENTRY_FORWARD_SECRET (X-Signature, hex HMAC-SHA256 of the body), in order, retried until a
// 2xx, or G2SENTRY_FORWARD_MAX_ATTEMPTS times before the change is parked (g2sentry consumers
// parked) and the next one goes. `https://user:password@host/path` sends Authorization: Basic.
const forward = settings(() => {
  const url = urlVariable(env, 'G2SENTRY_FORWARD_URL', 'https://example.com/g2sentry-changes')
  if (url === undefined) return undefined
  const forwardSecret = env.G2SENTRY_FORWARD_SECRET
  if (forwardSecret === undefined || forwardSecret === '') {
    throw new EnvironmentError('G2SENTRY_FORWARD_URL is set but G2SENTRY_FORWARD_SECRET is not; refusing to forward unsigned')
  }
  return {
    url,
    secret: forwardSecret,
    // At least the first retry's delay (100 ms).
    maxBackoffMs: integerVariable(env, 'G2SENTRY_FORWARD_MAX_BACKOFF_MS', 60_000, { min: 100 }),
    maxAttempts: integerVariable(env, 'G2SENTRY_FORWARD_MAX_ATTEMPTS', undefined)
  }
})
// Reconciliation with G2 Sentry's Partner API, when its URL and the partner's credentials are set:
// cancellations and lost or late withdrawals, which callbacks cannot tell, reach the log too.
const partnerKey = env.G2SENTRY_PARTNER_KEY
const partnerSecret = env.G2SENTRY_PARTNER_SECRET
const reconcile = settings(() => {
  const apiUrl = urlVariable(env, 'G2SENTRY_API_URL', 'https://partner-api-demo.g2sentry.com')
  const milliseconds = (name: string): number | undefined => integerVariable(env, name, undefined)
  return apiUrl && partnerKey && partnerSecret
    ? {
        baseUrl: apiUrl,
        partnerKey,
        partnerSecret,
        quietForMs: milliseconds('G2SENTRY_RECONCILE_QUIET_MS'),
        everyMs: milliseconds('G2SENTRY_RECONCILE_EVERY_MS'),
        leaseTtlMs: milliseconds('G2SENTRY_RECONCILE_LEASE_MS')
      }
    : undefined
})
if (reconcile === undefined && (env.G2SENTRY_API_URL || partnerKey || partnerSecret)) {
  app.log.warn('reconciliation is off: it needs G2SENTRY_API_URL, G2SENTRY_PARTNER_KEY and G2SENTRY_PARTNER_SECRET together')
}

// Retention, when G2SENTRY_REDACT_AFTER_MS is set: the guardians' phones (and the bodies that
// hold them) of jobs that ended longer ago than that are erased, in one process at a time.
const retention = settings(() => {
  const personalDataMs = integerVariable(env, 'G2SENTRY_REDACT_AFTER_MS', undefined)
  return personalDataMs === undefined
    ? undefined
    : {
        personalDataMs,
        everyMs: integerVariable(env, 'G2SENTRY_RETENTION_EVERY_MS', undefined),
        leaseTtlMs: integerVariable(env, 'G2SENTRY_RETENTION_LEASE_MS', undefined)
      }
})

// G2SENTRY_DB is a SQLite file (its folder is created) or a postgres:// URL.
if (database !== ':memory:' && !isPostgresUrl(database)) mkdirSync(dirname(database), { recursive: true })
try {
  await app.register(g2sentry, {
    secret,
    database,
    jobRoutes: protect,
    // Prometheus metrics on /metrics.
    metrics: protect,
    forward,
    reconcile,
    retention,
    // Best-effort and in the request (a crash can lose it): for reactions that must not be lost,
    // use a consumer (docs/consumers.md).
    onEvent: ({ jobId, outcome, status, source }, request) => {
      if (outcome === 'applied') (request?.log ?? app.log).info({ jobId, status, source }, 'job status changed')
    }
  })
} catch (error) {
  // An option the variables above gave that the plugin refuses (its message names the option), or
  // a database it cannot open (the message names the problem, never a password): one line each.
  const code = (error as { code?: string }).code
  if (code === 'FST_G2SENTRY_INVALID_OPTION' || code === 'FST_G2SENTRY_DATABASE_OPEN_FAILED' || code === 'FST_G2SENTRY_MISSING_DRIVER' ||
    code === 'FST_G2SENTRY_MIGRATION_REFUSED') refuse((error as Error).message)
  throw error
}

// Probes for an orchestrator, open like any health check (they show no job data). Liveness: the
// process answers. Readiness: the store answers and takes writes (app.g2sentry.health()), so a
// load balancer stops sending callbacks while another process holds the database's write lock.
app.get('/health', async () => ({ ok: true }))
app.get('/ready', async (_request, reply) => {
  const report = await app.g2sentry.health()
  return reply.code(report.ok ? 200 : 503).send(report)
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
