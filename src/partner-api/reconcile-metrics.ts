import { Counter, Gauge, type Registry } from 'prom-client'
import type { ReconcileState } from '../store/contract.js'
import type { Endpoint, RequestResult } from './client.js'
import type { JobCheck } from './reconciler.js'

/** The reconciler's metrics, in the plugin's registry. */
export interface ReconcileMetrics {
  request: (endpoint: Endpoint, result: RequestResult) => void
  checked: (check: JobCheck) => void
}

export function reconcileMetrics (registry: Registry, state: ReconcileState, prefix = 'g2sentry'): ReconcileMetrics {
  const requests = new Counter({
    name: `${prefix}_partner_api_requests_total`,
    help: 'Requests sent to G2 Sentry\'s Partner API by this process, by endpoint and result',
    labelNames: ['endpoint', 'result'] as const,
    registers: [registry]
  })
  const reconciled = new Counter({
    name: `${prefix}_reconciled_jobs_total`,
    help: 'Jobs whose projection the Partner API corrected (a Reconciled row appended), by status before and after',
    labelNames: ['from', 'to'] as const,
    registers: [registry]
  })
  const conflicts = new Counter({
    name: `${prefix}_reconcile_conflicts_total`,
    help: 'Partner API statuses the projection had moved past (logged, not applied): look at these jobs',
    registers: [registry]
  })
  const checks = new Counter({
    name: `${prefix}_reconcile_checks_total`,
    help: 'Jobs asked about, by what the answer came to (unusable: an answer that could not be used for that job)',
    labelNames: ['result'] as const,
    registers: [registry]
  })
  // Read from the database when scraped: every instance reports the same, whichever reconciles.

  new Gauge({
    name: `${prefix}_reconcile_oldest_unchecked_seconds`,
    help: 'How long the open job that has gone longest without an event or a check has waited; grows when the reconciler falls behind',
    registers: [registry],
    async collect () {
      const age = await state.oldestUnchecked(Date.now())
      this.set(age === null ? 0 : age / 1000)
    }
  })
  new Gauge({
    name: `${prefix}_reconcile_failing_jobs`,
    help: 'Jobs whose last status answer from G2 Sentry was unusable (unknown status, another job, not JSON, 4xx, 5xx, redirect, too large) and that have not closed since; each backs off',
    registers: [registry],
    async collect () {
      this.set(await state.failingJobs())
    }
  })
  return {
    request: (endpoint, result) => requests.inc({ endpoint, result }),
    checked: (check) => {
      checks.inc({ result: check.result })
      if (check.result === 'reconciled' && check.to !== null) reconciled.inc({ from: check.from, to: check.to })
      if (check.result === 'conflict') conflicts.inc()
    }
  }
}
