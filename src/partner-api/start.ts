import type { FastifyBaseLogger } from 'fastify'
import type { Registry } from 'prom-client'
import type { G2SentryStore } from '../store/contract.js'
import type { AppendResult, JobEvent } from '../domain/types.js'
import type { ResolvedReconcileOptions } from '../plugin/options.js'
import { PartnerApiClient } from './client.js'
import { sharedWindow } from './rate-limiter.js'
import { reconcileMetrics } from './reconcile-metrics.js'
import { startReconcileLoop, type ReconcileLoop } from './reconcile-loop.js'
import { Reconciler, reconcilingStore } from './reconciler.js'

/** G2 Sentry's window. */
export const WINDOW_MS = 60_000

/** A client whose request window is kept in the store, shared with every process on it. */
export function sharedClient (store: G2SentryStore, options: Pick<ResolvedReconcileOptions, 'baseUrl' | 'partnerKey' | 'partnerSecret' | 'requestsPerMinute'>,
  extra: Partial<ConstructorParameters<typeof PartnerApiClient>[0]> = {}): PartnerApiClient {
  const { state } = reconcilingStore(store)
  return new PartnerApiClient({
    ...options,
    window: sharedWindow(state, options.partnerKey, options.requestsPerMinute, WINDOW_MS),
    ...extra
  })
}

/** The plugin's reconciler: client, reconciler, metrics and the loop under the lease. */
export function startReconciling (store: G2SentryStore, options: ResolvedReconcileOptions, deps: {
  log: FastifyBaseLogger
  registry: Registry | undefined
  /** The metrics' name prefix (`g2sentry`, or `g2sentry_<namespace>`). */
  metricPrefix: string
  afterCommit: (result: AppendResult, event: JobEvent, receivedAt: number) => void | Promise<void>
}): ReconcileLoop {
  const { state } = reconcilingStore(store)
  const metrics = deps.registry === undefined ? undefined : reconcileMetrics(deps.registry, state, deps.metricPrefix)
  const client = sharedClient(store, options, { log: deps.log, onRequest: metrics?.request })
  const reconciler = new Reconciler({ store, client, quietForMs: options.quietForMs, log: deps.log, onAppend: deps.afterCommit, onCheck: metrics?.checked })
  // A round asks about as many jobs as the rate allows between two rounds.
  const budget = Math.max(1, Math.min(options.requestsPerMinute, Math.floor(options.requestsPerMinute * options.everyMs / WINDOW_MS)))
  return startReconcileLoop({ reconciler, store, everyMs: options.everyMs, budget, leaseTtlMs: options.leaseTtlMs, log: deps.log })
}
