// Retention's candidates in a SQLite file (src/store/retention-sql.ts). Without statistics SQLite's
// planner prefers `jobs_by_status` and sorts; INDEXED BY walks `jobs_terminal` in order instead,
// and makes preparing the statement fail should the index ever stop applying.
import type Database from 'better-sqlite3'
import type { LogLifecycle, RetentionCandidate } from '../contract.js'
import { RETENTION_CANDIDATES, retentionParameters } from '../retention-sql.js'

/** The candidates' statement as SQLite runs it. */
export const SQLITE_RETENTION_CANDIDATES = RETENTION_CANDIDATES.replace('FROM jobs j', 'FROM jobs j INDEXED BY jobs_terminal')

/** `retentionCandidates` of the SQLite store over `db`. */
export function sqliteRetention (db: Database.Database): Pick<LogLifecycle, 'retentionCandidates'> {
  const select = db.prepare<[ReturnType<typeof retentionParameters>], RetentionCandidate>(SQLITE_RETENTION_CANDIDATES)
  return {
    async retentionCandidates (query) {
      return select.all(retentionParameters(query))
    }
  }
}
