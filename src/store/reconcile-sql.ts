// The reconciler's SQL (src/partner-api/reconciler.ts), shared by both backends: written with
// PostgreSQL's $n parameters; the SQLite store runs it through `namedParams`.
import type { JobStatus, ReconcileCandidate } from '../domain/types.js'

/** Statuses the reconciler never asks about: G2 Sentry's answer for them cannot change. */
export const TERMINAL_STATUSES = "('Completed', 'Canceled')"

// A job's last row, and when it was received (index events_by_job).
const LAST_SEQ = '(SELECT max(e.seq) FROM events e WHERE e.job_id = j.job_id)'
const LAST_AT = '(SELECT e.received_at FROM events e WHERE e.job_id = j.job_id ORDER BY e.seq DESC LIMIT 1)'

/**
 * Whether a job's history since its last check cannot be decided from callbacks alone: a
 * withdrawal applied after two or more assignments (it may undo a re-assignment it preceded), a
 * first event that is not an assignment (earlier callbacks were lost), or a stale event that
 * disagrees with the projection. Each looks only at the job's rows (index events_by_job).
 */
const AMBIGUOUS = `(
  EXISTS (SELECT 1 FROM events w WHERE w.job_id = j.job_id AND w.seq > coalesce(c.checked_seq, 0)
    AND w.event_type = 'JobWithdrawed' AND w.outcome = 'applied'
    AND (SELECT count(*) FROM events a WHERE a.job_id = j.job_id AND a.seq < w.seq AND a.event_type = 'JobAssigned') >= 2)
  OR (c.checked_seq IS NULL AND (SELECT f.event_type FROM events f WHERE f.job_id = j.job_id ORDER BY f.seq LIMIT 1) <> 'JobAssigned')
  OR EXISTS (SELECT 1 FROM events s WHERE s.job_id = j.job_id AND s.seq > coalesce(c.checked_seq, 0)
    AND s.outcome = 'stale' AND s.job_status <> j.status))`

const CANDIDATE_COLUMNS = `j.job_id, j.status, ${LAST_SEQ} AS last_seq, ${LAST_AT} AS last_at, c.checked_at`

/**
 * Open jobs to ask about, most urgent first: the ambiguous ones, then those with no event and no
 * check since $1 (now − quietFor), oldest news first. $2: how many.
 */
export const URGENT_CANDIDATES = `SELECT job_id, status, last_seq, last_at, checked_at, reason FROM (
    SELECT ${CANDIDATE_COLUMNS}, CASE WHEN ${AMBIGUOUS} THEN 'ambiguous' ELSE 'quiet' END AS reason
    FROM jobs j LEFT JOIN reconcile_checks c ON c.job_id = j.job_id
    WHERE j.status NOT IN ${TERMINAL_STATUSES}) AS open
  WHERE reason = 'ambiguous' OR (last_at <= $1 AND coalesce(checked_at, 0) <= $1)
  ORDER BY CASE reason WHEN 'ambiguous' THEN 0 ELSE 1 END, max_of(last_at, coalesce(checked_at, 0)), job_id
  LIMIT $2`

/** Every open job after job $1, in job order, $2 of them (the CLI's full pass). */
export const OPEN_CANDIDATES = `SELECT ${CANDIDATE_COLUMNS}, CASE WHEN ${AMBIGUOUS} THEN 'ambiguous' ELSE 'quiet' END AS reason
  FROM jobs j LEFT JOIN reconcile_checks c ON c.job_id = j.job_id
  WHERE j.status NOT IN ${TERMINAL_STATUSES} AND j.job_id > $1
  ORDER BY j.job_id LIMIT $2`

/** The named jobs, whatever their status (the CLI's --job), as a list of ids in $1. */
export const NAMED_CANDIDATES = (ids: readonly number[]): string => `SELECT ${CANDIDATE_COLUMNS}, 'requested' AS reason
  FROM jobs j LEFT JOIN reconcile_checks c ON c.job_id = j.job_id
  WHERE j.job_id IN (${ids.map((id) => String(Math.trunc(id))).join(', ')})
  ORDER BY j.job_id`

/** The age of the open job that has gone longest without an event or a check, at $1. */
export const OLDEST_UNCHECKED = `SELECT $1 - min(max_of(${LAST_AT}, coalesce(c.checked_at, 0))) AS age
  FROM jobs j LEFT JOIN reconcile_checks c ON c.job_id = j.job_id
  WHERE j.status NOT IN ${TERMINAL_STATUSES}`

export const RECORD_CHECK = `INSERT INTO reconcile_checks (job_id, checked_at, checked_seq) VALUES ($1, $2, $3)
  ON CONFLICT (job_id) DO UPDATE SET checked_at = excluded.checked_at, checked_seq = excluded.checked_seq`

export interface CandidateRow {
  job_id: number
  status: JobStatus
  last_seq: number
  last_at: number
  checked_at: number | null
  reason: ReconcileCandidate['reason']
}

export const toCandidate = (row: CandidateRow): ReconcileCandidate => ({
  jobId: row.job_id,
  status: row.status,
  lastSeq: row.last_seq,
  lastEventAt: row.last_at,
  checkedAt: row.checked_at,
  reason: row.reason
})

/** The larger of two values, as each dialect spells it. */
export const maxOf = (sql: string, dialect: 'sqlite' | 'postgres'): string =>
  sql.replaceAll('max_of(', dialect === 'sqlite' ? 'max(' : 'greatest(')

/** PostgreSQL's $n parameters as better-sqlite3's named ones (@p1), with the values to bind them. */
export function namedParams (sql: string, values: readonly unknown[]): { sql: string; params: Record<string, unknown> } {
  const params: Record<string, unknown> = {}
  values.forEach((value, i) => { params[`p${i + 1}`] = value })
  return { sql: sql.replace(/\$(\d+)/g, '@p$1'), params }
}
