import { Counter, Gauge, type Registry } from 'prom-client'
import type { LogLifecycle } from '../store/contract.js'

/** Retention's metrics, in the plugin's registry: registered only where the `retention` option is on. */
export interface RetentionMetrics {
  redacted: (rows: number) => void
  refused: () => void
}

export function retentionMetrics (registry: Registry, store: Pick<LogLifecycle, 'retentionCandidates'>, prefix = 'g2sentry'): RetentionMetrics {
  const rows = new Counter({
    name: `${prefix}_retention_redacted_rows_total`,
    help: 'Log rows whose personal data retention erased in this process',
    registers: [registry]
  })
  const refusals = new Counter({
    name: `${prefix}_retention_refused_jobs_total`,
    help: 'Jobs retention skipped because one of their rows does not verify (FST_G2SENTRY_REDACTION_REFUSED): run g2sentry verify',
    registers: [registry]
  })
  // Read from the database when scraped: every retaining instance reports the same.
  new Gauge({
    name: `${prefix}_retention_oldest_unredacted_seconds`,
    help: 'How long ago the terminal job that has held personal data longest ended (0 when none); stays above the retention period while retention falls behind or skips a job',
    registers: [registry],
    async collect () {
      const now = Date.now()
      const [oldest] = await store.retentionCandidates({ before: now + 1, limit: 1 })
      this.set(oldest === undefined ? 0 : Math.max(0, now - oldest.updatedAt) / 1000)
    }
  })
  return {
    redacted: (count) => rows.inc(count),
    refused: () => refusals.inc()
  }
}
