// Retention's walk (docs/design.md, "Retention"), the same SQL for both stores: terminal jobs by the
// time of their last row, through the partial index `jobs_terminal` (migration 008), keeping those
// with a callback or API row not yet erased. Its `status IN (...)` is the index's own predicate,
// word for word, so that SQLite's planner sees the index applies.
import type { RetentionCandidate } from './contract.js'

export const RETENTION_CANDIDATES = `SELECT j.job_id AS "jobId", j.updated_at AS "updatedAt" FROM jobs j
  WHERE j.status IN ('Completed', 'Canceled') AND j.updated_at < $before AND (j.updated_at, j.job_id) > ($afterat, $afterjob)
    AND EXISTS (SELECT 1 FROM events e WHERE e.job_id = j.job_id AND e.redacted_by IS NULL AND e.source IN ('callback', 'api'))
  ORDER BY j.updated_at, j.job_id LIMIT $limit`

/** The query's parameters: `after` absent starts before every job. */
export function retentionParameters (query: { before: number; after?: RetentionCandidate | undefined; limit: number }): {
  before: number; afterat: number; afterjob: number; limit: number
} {
  const { before, after, limit } = query
  return { before, afterat: after?.updatedAt ?? Number.MIN_SAFE_INTEGER, afterjob: after?.jobId ?? Number.MIN_SAFE_INTEGER, limit }
}
