import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { FastifyInstance } from 'fastify'
import type { G2SentryStore } from '../store/contract.js'
import type { Outcome } from '../domain/types.js'
import type { G2SentryRouteOptions } from './route-options.js'
import { routeDocs, textResponse, type OpenApiOptions } from './schemas.js'

/** Why a delivery was refused, as the `reason` label of `g2sentry_rejections_total`. */
export const REJECTION_REASONS: Readonly<Record<string, string>> = {
  FST_G2SENTRY_MISSING_SIGNATURE: 'missing_signature',
  FST_G2SENTRY_BAD_SIGNATURE: 'bad_signature',
  FST_G2SENTRY_INVALID_JSON: 'invalid_json',
  FST_G2SENTRY_INVALID_PAYLOAD: 'invalid_payload',
  FST_G2SENTRY_BODY_TOO_LARGE: 'body_too_large',
  FST_G2SENTRY_UNSUPPORTED_MEDIA_TYPE: 'unsupported_media_type',
  FST_G2SENTRY_STORAGE_UNAVAILABLE: 'storage_unavailable'
}

/** The receiver's metrics, registered in `registry` (its own by default, so it never clashes with the app's). */
export interface G2SentryMetrics {
  registry: Registry
  /** What each metric's name starts with: `g2sentry`, or `g2sentry_<namespace>`. */
  prefix: string
  delivered: (outcome: Outcome) => void
  rejected: (code: string) => void
  secretMatched: (index: number) => void
  /** A consumer's handler failed once (it will be retried, or the row was parked). */
  consumerFailed: (consumer: string) => void
  /** Stops observing the store. */
  close: () => void
}

/** The plugin's metrics in `registry`, each named `<prefix>_…` (`g2sentry_…`, or `g2sentry_<namespace>_…`). */
export function createMetrics (store: G2SentryStore, registry = new Registry(), prefix = 'g2sentry'): G2SentryMetrics {
  const deliveries = new Counter({
    name: `${prefix}_deliveries_total`,
    help: 'Signed callbacks committed to the log, by outcome',
    labelNames: ['outcome'] as const,
    registers: [registry]
  })
  const rejections = new Counter({
    name: `${prefix}_rejections_total`,
    help: 'Callbacks refused, by reason',
    labelNames: ['reason'] as const,
    registers: [registry]
  })
  const secrets = new Counter({
    name: `${prefix}_secret_matches_total`,
    help: 'Valid signatures by the position of the configured secret that matched (0 = the first); watch it during a rotation',
    labelNames: ['secret'] as const,
    registers: [registry]
  })
  // Read from the store when scraped, so every instance on a shared database reports the same.
  new Gauge({
    name: `${prefix}_quarantine_size`,
    help: 'Signed bodies in quarantine, not yet retried',
    registers: [registry],
    async collect () { this.set(await store.quarantineSize()) }
  })
  const batchSize = new Histogram({
    name: `${prefix}_commit_batch_size`,
    help: 'Appends committed together in one transaction (group commit)',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    registers: [registry]
  })
  const commitSeconds = new Histogram({
    name: `${prefix}_commit_duration_seconds`,
    help: 'Time to run and commit one batch of appends, disk flush included',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [registry]
  })
  // Consumers as the database has them, so every instance reports the same (the runner's too).
  const consumerRows = async () => {
    const [consumers, head] = await Promise.all([store.listConsumers(), store.chainHead()])
    return { consumers, last: head?.seq ?? 0 }
  }
  new Gauge({
    name: `${prefix}_consumer_checkpoint`,
    help: 'The last seq each durable consumer is done with',
    labelNames: ['consumer'] as const,
    registers: [registry],
    async collect () {
      this.reset()
      if (typeof store.listConsumers !== 'function') return
      for (const c of (await consumerRows()).consumers) this.set({ consumer: c.name }, c.checkpoint)
    }
  })
  new Gauge({
    name: `${prefix}_consumer_lag`,
    help: 'Rows in the log after each consumer\'s checkpoint (the log\'s last seq minus the checkpoint)',
    labelNames: ['consumer'] as const,
    registers: [registry],
    async collect () {
      this.reset()
      if (typeof store.listConsumers !== 'function') return
      const { consumers, last } = await consumerRows()
      for (const c of consumers) this.set({ consumer: c.name }, Math.max(0, last - c.checkpoint))
    }
  })
  new Gauge({
    name: `${prefix}_consumer_parked`,
    help: 'Rows each consumer parked after its attempts ran out',
    labelNames: ['consumer'] as const,
    registers: [registry],
    async collect () {
      this.reset()
      if (typeof store.listConsumers !== 'function') return
      for (const c of (await consumerRows()).consumers) this.set({ consumer: c.name }, c.parked)
    }
  })
  const consumerFailures = new Counter({
    name: `${prefix}_consumer_handler_failures_total`,
    help: 'Failed handler calls of the consumers this instance runs (each is retried, or its row parked)',
    labelNames: ['consumer'] as const,
    registers: [registry]
  })
  const unsubscribe = store.onCommit?.((size, seconds) => {
    batchSize.observe(size)
    commitSeconds.observe(seconds)
  })
  return {
    registry,
    prefix,
    delivered: (outcome) => deliveries.inc({ outcome }),
    rejected: (code) => {
      const reason = REJECTION_REASONS[code]
      if (reason !== undefined) rejections.inc({ reason })
    },
    secretMatched: (index) => secrets.inc({ secret: String(index) }),
    consumerFailed: (consumer) => consumerFailures.inc({ consumer }),
    close: () => unsubscribe?.()
  }
}

/** The metrics endpoint, in a scope of its own so its route options (an `onRequest` hook) stay on it. */
export async function metricsRoute (app: FastifyInstance, opts: { path: string; routeOptions: G2SentryRouteOptions; metrics: G2SentryMetrics; openapi: OpenApiOptions }): Promise<void> {
  const { path, routeOptions, metrics: { registry }, openapi } = opts
  app.get(path, {
    ...routeOptions,
    schema: {
      ...routeDocs(openapi, 'Prometheus metrics'),
      response: { 200: textResponse('text/plain', 'The Prometheus text exposition format') }
    }
  }, async (_request, reply) => {
    reply.type(registry.contentType)
    return registry.metrics()
  })
}
