import type { FastifyRequest } from 'fastify'
import { Registry } from 'prom-client'
import { errors } from '../errors.js'
import { missingMethods, type G2SentryStore, type STORE_ROLES } from '../store/contract.js'
import type { AppendResult, JobEvent } from '../domain/types.js'
import type { G2SentryRouteOptions } from './route-options.js'
import { checkForwardOptions, type ForwardOptions } from '../consumers/forwarder.js'
import type { OpenApiOptions } from './schemas.js'

/** Bounds of `GET /jobs/stream` (option `stream`). */
export interface StreamLimits {
  /** Clients connected at once; one more gets `503 FST_G2SENTRY_STREAM_FULL` (default 100). */
  maxClients: number
  /**
   * Bytes a client may leave unread (what the server keeps for it plus what its socket buffers)
   * before it is disconnected; it reconnects with Last-Event-ID and catches up from the log
   * (default 1 MiB).
   */
  maxBuffered: number
}

export type { G2SentryRouteOptions } from './route-options.js'

/** Where a committed event came from: a live callback, a retried quarantined body, or the reconciler. */
export type CommitSource = 'callback' | 'quarantine' | 'api'

/** What `onEvent` receives once an event is committed. */
export interface CommittedEvent extends AppendResult {
  event: JobEvent
  /** `callback` for a live delivery; `quarantine` for a quarantined body that a retry appended; `api` for a reconciliation. */
  source: CommitSource
}

export interface G2SentryOptions {
  /** The callback secret, or several during a rotation; a body signed with any of them is accepted. */
  secret: string | string[]
  /** SQLite file for the event log (default `./g2sentry.db`; `:memory:` allowed), or a `postgres://` URL. */
  database?: string
  /** A store implementing the store contract; the plugin does not close a store it did not open. */
  store?: G2SentryStore
  /** Path of the callback route (default `/callbacks/g2sentry`). */
  callbackPath?: string
  /** Largest callback body in bytes (default 64 KiB). */
  bodyLimit?: number
  /**
   * Route options for the callback route, e.g. `{ config: { rateLimit: false } }` to exempt G2
   * Sentry's deliveries from a global @fastify/rate-limit, or `logLevel: 'warn'`.
   */
  callbackRoute?: G2SentryRouteOptions
  /**
   * How the plugin's routes appear in an OpenAPI document made by @fastify/swagger: their `tags`
   * (default `['g2sentry']`), or `hide: true` to leave them out.
   */
  openapi?: Partial<OpenApiOptions>
  /** The job routes: `false` to leave them out, or their prefix and route options (default `{ prefix: '/jobs' }`). */
  jobRoutes?: boolean | ({ prefix?: string } & G2SentryRouteOptions)
  /**
   * A Prometheus endpoint (off by default): `true` serves `/metrics`; an object sets its `path`,
   * a prom-client `registry` to add the metrics to (default: a registry of their own) and route
   * options such as an `onRequest` hook.
   */
  metrics?: boolean | ({ path?: string; registry?: Registry } & G2SentryRouteOptions)
  /** Bounds of the live stream: `{ maxClients, maxBuffered }` (defaults 100 clients, 1 MiB). */
  stream?: Partial<StreamLimits>
  /**
   * Forwards each projection change to a URL of yours, signed, in seq order, retried until a 2xx,
   * across restarts (a durable consumer named `forwarder` unless `name` says otherwise).
   */
  forward?: ForwardOptions
  /**
   * Called after each event is committed (a callback, a retried quarantine body, a reconciliation),
   * with the request for a callback and `undefined` otherwise. Best-effort: it runs in the request,
   * so a crash before it finishes loses the reaction; an error in it is logged, never turned into a
   * failed delivery. Reactions that must not be lost read the log as a consumer.
   */
  onEvent?: (event: CommittedEvent, request: FastifyRequest | undefined) => void | Promise<void>
  /**
   * Reconciliation with G2 Sentry's Partner API (off by default): asks about jobs that callbacks
   * cannot settle (cancellations, lost or late withdrawals) and appends what differs to the log.
   */
  reconcile?: ReconcileOptions
  /**
   * Erases the personal data of jobs that ended (Completed, Canceled) more than
   * `personalDataMs` ago, in the background, in one process at a time (docs/operations.md,
   * "Erasure and retention"). Off by default.
   */
  retention?: RetentionOptions
  /**
   * How long closing the app waits for background work (consumers, the forwarder, the
   * reconciler, retention) to stop, in ms (default 5000): their requests and sleeps are aborted
   * at once, and past this bound the store is closed regardless, with a warning (a handler that
   * ignores its abort signal). What was not checkpointed is handed over again after the restart.
   */
  closeTimeoutMs?: number
  /**
   * Registers this instance under a name, for several G2 Sentry accounts or tenants in one app:
   * its API is `fastify.g2sentry.<namespace>` instead of `fastify.g2sentry`, and its metrics are
   * named `g2sentry_<namespace>_…`, so one registry holds every instance's. Give each its own
   * `prefix`, secrets and database. The same namespace twice is `FST_G2SENTRY_NAMESPACE_TAKEN`.
   */
  namespace?: string
  /** Passed by Fastify when the plugin is registered with a prefix. */
  prefix?: string
}

export interface ReconcileOptions {
  /** The Partner API's base URL, e.g. `https://partner-api-demo.g2sentry.com`. */
  baseUrl: string
  partnerKey: string
  partnerSecret: string
  /** Ask about an open job after this long without an event or a check (ms, default 30 minutes). */
  quietForMs?: number
  /** Between rounds (ms, default 60 s). */
  everyMs?: number
  /** The most Partner API requests in any 60 s, shared by every process on the database (default 50 of G2 Sentry's 60). */
  requestsPerMinute?: number
  /** How long a process holds the reconciler's lease unless it renews it (ms, default 30 s). */
  leaseTtlMs?: number
}

export type ResolvedReconcileOptions = Required<ReconcileOptions>

export interface RetentionOptions {
  /** How long a job's personal data is kept once it ended (ms): counted from its last applied change. */
  personalDataMs: number
  /** Between rounds (ms, default 60 s). */
  everyMs?: number
  /** Jobs read, and erased in one transaction, at a time (default 100, at most 10,000). */
  batchJobs?: number
  /** How long a process holds the retention lease unless it renews it (ms, default 30 s). */
  leaseTtlMs?: number
}

export type ResolvedRetentionOptions = Required<RetentionOptions>

export interface ResolvedOptions {
  secrets: string[]
  database: string
  store: G2SentryStore | undefined
  callbackPath: string
  bodyLimit: number
  callbackRoute: G2SentryRouteOptions
  openapi: OpenApiOptions
  jobRoutes: false | ({ prefix: string } & G2SentryRouteOptions)
  onEvent: G2SentryOptions['onEvent']
  forward: ForwardOptions | undefined
  metrics: false | ({ path: string; registry: Registry | undefined } & G2SentryRouteOptions)
  stream: StreamLimits
  reconcile: ResolvedReconcileOptions | undefined
  retention: ResolvedRetentionOptions | undefined
  closeTimeoutMs: number
  namespace: string | undefined
  prefix: string
}

function fail (message: string): never {
  throw new errors.INVALID_OPTION(message)
}

function path (name: string, value: unknown, fallback: string): string {
  if (value === undefined) return fallback
  if (typeof value !== 'string' || !value.startsWith('/')) fail(`${name} must be a path starting with "/"`)
  return value
}

/** Checks the options once, at registration, and fills in the defaults. */
export function resolveOptions (options: G2SentryOptions): ResolvedOptions {
  const { secret, database, store, bodyLimit, jobRoutes, onEvent } = options
  const secrets = typeof secret === 'string' ? [secret] : secret
  if (!Array.isArray(secrets) || secrets.length === 0) fail('secret is required: a string, or an array of strings during a rotation')
  if (!secrets.every((s) => typeof s === 'string' && s.length > 0)) fail('every secret must be a non-empty string')

  if (database !== undefined && (typeof database !== 'string' || database === '')) fail('database must be a SQLite file path, ":memory:" or a postgres:// URL')
  if (store !== undefined) {
    if (database !== undefined) fail('give either database or store, not both')
    // The roles the enabled features need (src/store/contract.ts): every store logs, projects and
    // quarantines; forwarding takes a lease and keeps checkpoints; the reconciler takes a lease,
    // appends conditionally and keeps its state. consume() checks its own roles when called.
    const roles: Array<keyof typeof STORE_ROLES> = ['eventLog', 'projection', 'quarantine']
    if (options.forward !== undefined) roles.push('leases', 'consumers')
    if (options.reconcile !== undefined) roles.push('leases', 'reconciler')
    if (options.retention !== undefined) roles.push('leases', 'lifecycle')
    const missing = missingMethods(store, roles)
    if (options.reconcile !== undefined && typeof (store as Partial<G2SentryStore>)?.reconcileState !== 'object') missing.push('reconciler: reconcileState')
    if (missing.length > 0) fail(`store does not implement what the options need (missing ${[...new Set(missing)].join(', ')})`)
  }
  if (bodyLimit !== undefined && !(Number.isSafeInteger(bodyLimit) && bodyLimit > 0)) fail('bodyLimit must be a positive integer (bytes)')
  if (onEvent !== undefined && typeof onEvent !== 'function') fail('onEvent must be a function')
  const openapi = options.openapi ?? {}
  if (typeof openapi !== 'object' || openapi === null) fail('openapi must be an object: { tags, hide }')
  const { tags = ['g2sentry'], hide = false } = openapi
  if (!Array.isArray(tags) || !tags.every((tag) => typeof tag === 'string' && tag !== '')) fail('openapi.tags must be an array of non-empty strings')
  if (typeof hide !== 'boolean') fail('openapi.hide must be true or false')
  const callbackRoute = options.callbackRoute ?? {}
  if (typeof callbackRoute !== 'object' || callbackRoute === null) fail('callbackRoute must be an object of route options')
  if (options.forward !== undefined) checkForwardOptions(options.forward)

  let routes: ResolvedOptions['jobRoutes']
  if (jobRoutes === false) routes = false
  else if (jobRoutes === undefined || jobRoutes === true) routes = { prefix: '/jobs' }
  else if (typeof jobRoutes === 'object' && jobRoutes !== null) routes = { ...jobRoutes, prefix: path('jobRoutes.prefix', jobRoutes.prefix, '/jobs') }
  else fail('jobRoutes must be true, false or an object of route options')

  let metrics: ResolvedOptions['metrics']
  const metricsOption = options.metrics
  if (metricsOption === undefined || metricsOption === false) metrics = false
  else if (metricsOption === true) metrics = { path: '/metrics', registry: undefined }
  else if (typeof metricsOption === 'object' && metricsOption !== null) {
    const { registry, ...rest } = metricsOption
    if (registry !== undefined && !(registry instanceof Registry)) fail('metrics.registry must be a prom-client Registry')
    metrics = { ...rest, registry, path: path('metrics.path', metricsOption.path, '/metrics') }
  } else fail('metrics must be true, false or an object of options')

  const streamOption = options.stream ?? {}
  if (typeof streamOption !== 'object' || streamOption === null) fail('stream must be an object: { maxClients, maxBuffered }')
  const { maxClients = 100, maxBuffered = 1024 * 1024 } = streamOption
  if (!(Number.isSafeInteger(maxClients) && maxClients > 0)) fail('stream.maxClients must be a positive integer')
  if (!(Number.isSafeInteger(maxBuffered) && maxBuffered > 0)) fail('stream.maxBuffered must be a positive integer (bytes)')

  return {
    secrets: [...secrets],
    stream: { maxClients, maxBuffered },
    metrics,
    database: database ?? './g2sentry.db',
    store,
    callbackPath: path('callbackPath', options.callbackPath, '/callbacks/g2sentry'),
    bodyLimit: bodyLimit ?? 64 * 1024,
    callbackRoute,
    openapi: { tags: [...tags], hide },
    jobRoutes: routes,
    onEvent,
    forward: options.forward,
    reconcile: resolveReconcile(options.reconcile),
    retention: resolveRetention(options.retention),
    closeTimeoutMs: positive('closeTimeoutMs', options.closeTimeoutMs, 5000),
    namespace: resolveNamespace(options.namespace),
    prefix: options.prefix ?? ''
  }
}

/** The members of `fastify.g2sentry`, which a namespace must not shadow. */
const DECORATOR_MEMBERS = new Set(['store', 'readLog', 'rebuild', 'checkProjection', 'audit', 'retryQuarantine', 'exportLog', 'consume', 'consumers', 'reconcile', 'health'])

function resolveNamespace (namespace: unknown): string | undefined {
  if (namespace === undefined) return undefined
  if (typeof namespace !== 'string' || !/^[A-Za-z][A-Za-z0-9_]{0,62}$/.test(namespace)) {
    fail('namespace must be a letter followed by up to 62 letters, digits or "_" (it names metrics too)')
  }
  if (DECORATOR_MEMBERS.has(namespace)) fail(`namespace ${namespace} is a member of fastify.g2sentry: choose another`)
  return namespace
}

const positive = (name: string, value: unknown, fallback: number, max = Number.MAX_SAFE_INTEGER): number => {
  if (value === undefined) return fallback
  if (!(Number.isSafeInteger(value) && (value as number) > 0 && (value as number) <= max)) fail(`${name} must be a positive integer${max < Number.MAX_SAFE_INTEGER ? ` up to ${max}` : ''}`)
  return value as number
}

function resolveReconcile (reconcile: ReconcileOptions | undefined): ResolvedReconcileOptions | undefined {
  if (reconcile === undefined) return undefined
  if (typeof reconcile !== 'object' || reconcile === null) fail('reconcile must be an object: { baseUrl, partnerKey, partnerSecret }')
  const { baseUrl, partnerKey, partnerSecret } = reconcile
  let url: URL | undefined
  try { url = new URL(String(baseUrl)) } catch {}
  if (typeof baseUrl !== 'string' || url === undefined || (url.protocol !== 'https:' && url.protocol !== 'http:')) {
    fail('reconcile.baseUrl must be the Partner API\'s http(s) URL, e.g. https://partner-api-demo.g2sentry.com')
  }
  if (typeof partnerKey !== 'string' || partnerKey === '') fail('reconcile.partnerKey must be a non-empty string')
  // The message never quotes the secret.
  if (typeof partnerSecret !== 'string' || partnerSecret === '') fail('reconcile.partnerSecret must be a non-empty string')
  return {
    baseUrl,
    partnerKey,
    partnerSecret,
    quietForMs: positive('reconcile.quietForMs', reconcile.quietForMs, 30 * 60_000),
    everyMs: positive('reconcile.everyMs', reconcile.everyMs, 60_000),
    // G2 Sentry allows 60 a minute per key; more could only earn 429s.
    requestsPerMinute: positive('reconcile.requestsPerMinute', reconcile.requestsPerMinute, 50, 60),
    leaseTtlMs: positive('reconcile.leaseTtlMs', reconcile.leaseTtlMs, 30_000)
  }
}

function resolveRetention (retention: RetentionOptions | undefined): ResolvedRetentionOptions | undefined {
  if (retention === undefined) return undefined
  if (typeof retention !== 'object' || retention === null) fail('retention must be an object: { personalDataMs, everyMs, batchJobs, leaseTtlMs }')
  if (retention.personalDataMs === undefined) fail('retention.personalDataMs is required: how long a job\'s personal data is kept once it ended (ms)')
  return {
    personalDataMs: positive('retention.personalDataMs', retention.personalDataMs, 0),
    everyMs: positive('retention.everyMs', retention.everyMs, 60_000),
    batchJobs: positive('retention.batchJobs', retention.batchJobs, 100, 10_000),
    leaseTtlMs: positive('retention.leaseTtlMs', retention.leaseTtlMs, 30_000)
  }
}
