// Retention's candidates in PostgreSQL (src/store/retention-sql.ts).
import type { LogLifecycle, RetentionCandidate } from '../contract.js'
import { positional } from '../leases.js'
import { RETENTION_CANDIDATES, retentionParameters } from '../retention-sql.js'

const NAMES = ['before', 'afterat', 'afterjob', 'limit'] as const
const PG_RETENTION_CANDIDATES = positional(RETENTION_CANDIDATES, NAMES)

/** `retentionCandidates` of the PostgreSQL store; `query` runs one statement on the pool. */
export function postgresRetention (query: <R>(text: string, values?: unknown[]) => Promise<{ rows: R[] }>): Pick<LogLifecycle, 'retentionCandidates'> {
  return {
    async retentionCandidates (request) {
      const parameters = retentionParameters(request)
      return (await query<RetentionCandidate>(PG_RETENTION_CANDIDATES, NAMES.map((name) => parameters[name]))).rows
    }
  }
}
