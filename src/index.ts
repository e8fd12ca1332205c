import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { auditLog, type AuditReport } from './log/audit.js'
import { callbackRoute } from './plugin/callback-route.js'
import { jobRoutes } from './plugin/job-routes.js'
import { exportLog, type ExportOptions } from './log/export.js'
import { ChangeFeed } from './plugin/change-feed.js'
import type { Consumer, ConsumerHandler, ConsumerOptions, Delivery } from './consumers/consumer.js'
import { consumerRegistry } from './consumers/registry.js'
import { forwardHandler, redactUrl } from './consumers/forwarder.js'
import { feedFromLog } from './plugin/log-feed.js'
import { retryQuarantine, type RetryReport } from './log/quarantine.js'
import { createMetrics, metricsRoute } from './plugin/metrics.js'
import { postCommitPath } from './plugin/post-commit.js'
import { resolveOptions, type G2SentryOptions } from './plugin/options.js'
import { readLogStream, type ReadLogOptions } from './log/read-log.js'
import { openStore } from './store/open-store.js'
import type { LogRow } from './domain/types.js'
import type { G2SentryStore, RebuildReport, RedactionResult } from './store/contract.js'
import { errors } from './errors.js'
import { startReconciling } from './partner-api/start.js'
import { startRetention } from './log/retention-loop.js'
import { stopWithin } from './plugin/stop-within.js'
import { healthOf, type HealthOptions, type HealthReport } from './plugin/health.js'
import { claimNamespace } from './plugin/namespaces.js'
import type { RoundReport } from './partner-api/reconciler.js'

/** What the plugin adds to the Fastify instance as `fastify.g2sentry`. */
export interface G2SentryDecorator {
  store: G2SentryStore
  /** The event log in seq order, streamed a page at a time. */
  readLog: (options?: ReadLogOptions) => AsyncGenerator<LogRow>
  /** Recomputes the projection from the log and replaces the stored one. */
  rebuild: () => Promise<RebuildReport>
  /**
   * Replays the log and reports where the stored projection differs from it, changing nothing
   * (a dry run of `rebuild`). `audit()` checks the log itself as well.
   */
  checkProjection: () => Promise<RebuildReport>
  /**
   * Checks the log as evidence, changing nothing: the hash chain, that a configured secret signs
   * every row, and that a rebuild equals the stored projection (what `g2sentry verify` prints).
   * On a log the plugin opened from `database` (not `:memory:`), longer than 20,000 rows, worker
   * threads check the rows (one per core).
   */
  audit: () => Promise<AuditReport>
  /**
   * Re-checks quarantined bodies with the rules of live delivery (the plugin's secrets, the
   * current schema) and appends those that now pass; for when a schema was too strict.
   */
  retryQuarantine: (options?: { ids?: readonly number[] }) => Promise<RetryReport>
  /** Streams the log as NDJSON or CSV, with outcome and hash columns, to `write`. */
  exportLog: (options: ExportOptions) => Promise<{ rows: number }>
  /**
   * Starts the durable consumer `name`: `handler` gets each projection change (or, with
   * `deliver: 'rows'`, each log row) in seq order, at least once, from a checkpoint kept in the
   * database; one instance at a time runs a name. Closed with the app.
   */
  consume: <D extends Delivery = 'changes'>(name: string, handler: ConsumerHandler<D>, options?: ConsumerOptions<D>) => Consumer
  /** The consumers this instance started (the forwarder among them), by name. */
  consumers: ReadonlyMap<string, Consumer>
  /**
   * Runs a reconciliation round now, if the `reconcile` option is on and this process holds the
   * reconciler's lease; resolves with what the round did, or undefined.
   */
  reconcile: () => Promise<RoundReport | undefined>
  /**
   * Whether this instance can take callbacks: the store answers and takes writes (each check
   * bounded by `timeoutMs`, default 1 s), with the consumers' lag and the reconciler's lease for
   * information. Plugs into @fastify/under-pressure's `healthCheck` or a readiness route.
   */
  health: (options?: HealthOptions) => Promise<HealthReport>
  /**
   * Erases the personal data of a job (docs/design.md, "Erasure"): its raw bodies, signatures and
   * phone in every log row, its projection row and quarantined bodies naming it, with a redaction
   * record (`reason`: never personal data) appended to the chain. Its status and history stay;
   * `audit()` keeps passing. Fails with FST_G2SENTRY_REDACTION_REFUSED, erasing nothing, when a
   * row of the job does not verify.
   */
  redact: (request: { jobId: number; reason?: string | undefined; vacuum?: 'plain' | 'full' | undefined }) => Promise<RedactionResult>
}

/**
 * The namespaced registrations of an app (option `namespace`), by name. Declare yours so that
 * `fastify.g2sentry.<name>` is typed:
 * `declare module 'fastify-g2sentry' { interface G2SentryNamespaces { tenantA: G2SentryDecorator } }`
 */
export interface G2SentryNamespaces {}

declare module 'fastify' {
  interface FastifyInstance {
    g2sentry: G2SentryDecorator & G2SentryNamespaces
  }
}

async function g2sentry (app: FastifyInstance, options: G2SentryOptions): Promise<void> {
  const resolved = resolveOptions(options)
  const publish = claimNamespace<G2SentryDecorator>(app, resolved.namespace)
  const log = resolved.namespace === undefined ? app.log : app.log.child({ namespace: resolved.namespace })
  const store = resolved.store ?? await openStore(resolved.database)
  if (resolved.store === undefined) app.addHook('onClose', () => store.close())

  const feed = new ChangeFeed()
  const metrics = resolved.metrics === false ? undefined : createMetrics(store, resolved.metrics.registry, resolved.namespace === undefined ? 'g2sentry' : `g2sentry_${resolved.namespace}`)
  if (metrics !== undefined) app.addHook('onClose', async () => metrics.close())
  const afterCommit = postCommitPath({ metrics, feed, onEvent: resolved.onEvent, log })
  const reconciling = resolved.reconcile === undefined
    ? undefined
    : startReconciling(store, resolved.reconcile, {
      log,
      registry: metrics?.registry,
      metricPrefix: metrics?.prefix ?? 'g2sentry',
      afterCommit: (result, event, receivedAt) => afterCommit({ result, event, receivedAt, source: 'api' })
    })

  const retaining = resolved.retention === undefined
    ? undefined
    : startRetention(store, resolved.retention, { log, registry: metrics?.registry, metricPrefix: metrics?.prefix ?? 'g2sentry' })

  const { consume, consumers, closeAll } = consumerRegistry(store, log, metrics)
  // Background work stops before the store closes (hooks run in reverse order of registration),
  // within a bound whatever a forward receiver or the Partner API does. A redaction under way
  // commits (or not) as a whole: retention stops between two.
  app.addHook('onClose', () => stopWithin(resolved.closeTimeoutMs, [reconciling?.stop(), retaining?.stop(), closeAll()], log))
  // The live feed reads the log, so it shows the commits of every instance on the database.
  const stopFeed = feedFromLog(feed, store, {
    pollMs: 1000,
    onError: (err) => log.error({ err }, 'g2sentry: the live feed could not read the log; will retry')
  })
  app.addHook('onClose', async () => stopFeed())
  publish({
    store,
    readLog: (readOptions?: ReadLogOptions) => readLogStream(store, readOptions),
    rebuild: () => store.rebuild(),
    checkProjection: () => store.rebuild({ dryRun: true }),
    // Worker threads open the log themselves when the plugin opened it from a location.
    audit: () => auditLog(store, { secrets: resolved.secrets, database: resolved.store === undefined ? resolved.database : undefined }),
    retryQuarantine: (retryOptions?: { ids?: readonly number[] }) => retryQuarantine(store, {
      secrets: resolved.secrets,
      ids: retryOptions?.ids,
      onAppend: ({ event, receivedAt, id: _id, ...result }) => afterCommit({ result, event, receivedAt, source: 'quarantine' })
    }),
    exportLog: (exportOptions: ExportOptions) => exportLog(store, exportOptions),
    consume,
    consumers,
    reconcile: async () => reconciling?.runNow(),
    redact: async ({ jobId, reason, vacuum = 'plain' }: { jobId: number; reason?: string | undefined; vacuum?: 'plain' | 'full' | undefined }) => {
      if (!Number.isSafeInteger(jobId) || jobId < 1) throw new errors.INVALID_OPTION(`jobId must be a positive whole number, got ${String(jobId)}`)
      if (store.redact === undefined) throw new errors.INVALID_OPTION('the store has no redact method (the lifecycle role)')
      if (vacuum !== 'plain' && vacuum !== 'full') throw new errors.INVALID_OPTION(`vacuum must be 'plain' or 'full', got ${String(vacuum)}`)
      const result = await store.redact({ jobIds: [jobId], reason: reason ?? null, vacuum })
      if (result.recordSeq !== null) log.info({ jobId, rows: result.rows, record: result.recordSeq }, 'g2sentry: erased a job\'s personal data')
      return result
    },
    health: healthOf(store, {
      consumers: () => new Set(consumers.keys()),
      reconciler: reconciling === undefined ? undefined : () => reconciling.holding
    })
  } satisfies G2SentryDecorator)

  if (resolved.forward !== undefined) {
    const { url, secret, timeoutMs, signing, name = 'forwarder', ...forwardOptions } = resolved.forward
    consume(name, forwardHandler({ url, secret, timeoutMs, signing }), forwardOptions)
    log.info({ consumer: name, url: redactUrl(url) }, 'g2sentry: forwarding each change')
  }

  if (resolved.metrics !== false && metrics !== undefined) {
    const { path, registry: _registry, ...routeOptions } = resolved.metrics
    await app.register(metricsRoute, { prefix: resolved.prefix, path, routeOptions, metrics, openapi: resolved.openapi })
  }

  await app.register(callbackRoute, { prefix: resolved.prefix, options: resolved, store, metrics, afterCommit })
  if (resolved.jobRoutes !== false) {
    const { prefix, ...routeOptions } = resolved.jobRoutes
    await app.register(jobRoutes, { prefix: resolved.prefix + prefix, store, feed, routeOptions, stream: resolved.stream, openapi: resolved.openapi })
  }
}

/** Receives signed G2 Sentry callbacks, keeps them in an event log and serves each job's projected status. */
const plugin = fp(g2sentry, { fastify: '5.x', name: 'fastify-g2sentry' })
export default plugin
export { plugin as g2sentry }

export { errors } from './errors.js'
export { projectEvent, type Decision, type ProjectedEvent } from './domain/project-status.js'
export { signBody, verifySignature, type SignatureCheck } from './domain/verify-signature.js'
export { sqliteStore, type SqliteStoreOptions } from './store/sqlite/sqlite-store.js'
export { postgresStore, type PostgresStoreOptions } from './store/postgres/postgres-store.js'
export { readLogStream, type ReadLogOptions } from './log/read-log.js'
export { auditLog, type AuditOptions, type AuditReport } from './log/audit.js'
export type { RedactionAudit } from './log/audit-redactions.js'
export { exportLog, type ExportOptions } from './log/export.js'
export { retryQuarantine, type RetryQuarantineOptions, type RetryReport } from './log/quarantine.js'
export type { G2SentryOptions, CommittedEvent, G2SentryRouteOptions, ReconcileOptions, RetentionOptions } from './plugin/options.js'
export {
  PartnerApiClient, MAX_ANSWER_BYTES, MAX_RETRY_AFTER_MS, type PartnerApiClientOptions, type RequestResult
} from './partner-api/client.js'
export { FAILURE_BACKOFF_CAP_MS, FAILURE_BACKOFF_MS } from './store/reconcile-sql.js'
export type { RoundReport, JobCheck, CheckResult } from './partner-api/reconciler.js'
export type { HealthCheck, HealthOptions, HealthReport } from './plugin/health.js'
export type { JobChange } from './domain/job-change.js'
export {
  backoffDelay, consumerLease, startConsumer, type Consumer, type ConsumerEvents, type ConsumerHandler, type ConsumerOptions,
  type ConsumerStatus, type Delivered, type Delivery, type HandlerContext
} from './consumers/consumer.js'
export { forwardHandler, type ForwardOptions } from './consumers/forwarder.js'
export * from './domain/types.js'
export * from './store/contract.js'
