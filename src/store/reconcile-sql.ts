// The reconciler's SQL (src/partner-api/reconciler.ts), shared by both backends: written with
// PostgreSQL's $n parameters; the SQLite store runs it through `namedParams`.
import type { JobStatus } from '../domain/types.js'
import type { JobFailure, ReconcileCandidate } from './contract.js'

/** A job whose answer was unusable is asked again after 1 minute, then 2, 4… */
export const FAILURE_BACKOFF_MS = 60_000
/** …up to 6 hours between two questions, however often it failed. */
export const FAILURE_BACKOFF_CAP_MS = 6 * 3_600_000

/** How long a job waits after its `failures`-th unusable answer in a row (ms). */
export function failureBackoffMs (failures: number): number {
  return Math.min(FAILURE_BACKOFF_CAP_MS, FAILURE_BACKOFF_MS * 2 ** Math.min(Math.max(failures - 1, 0), 20))
}

/** The most characters of a failure's description that are kept. */
export const FAILURE_ANSWER_LENGTH = 300

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

const QUEUED = (reason: 'ambiguous' | 'quiet', where: string): string => `SELECT * FROM (
    SELECT q.job_id, j.status, q.last_seq, q.last_at, q.checked_at, q.news_at, '${reason}' AS reason
    FROM reconcile_queue q JOIN jobs j ON j.job_id = q.job_id
    WHERE q.ambiguous = ${reason === 'ambiguous' ? 1 : 0} AND ${where} q.retry_at <= $3
    ORDER BY q.news_at, q.job_id LIMIT $2) AS ${reason}`

/**
 * Open jobs to ask about, most urgent first: the ambiguous ones, then those with no event and no
 * check since $1 (now − quietFor), oldest news first. $2: how many. $3: now; a job whose answer
 * was unusable waits until its retry time. Two walks of the index reconcile_queue_due, each
 * stopping after $2 rows: the cost does not grow with the open jobs or the log.
 */
export const URGENT_CANDIDATES = `SELECT job_id, status, last_seq, last_at, checked_at, reason FROM (
    ${QUEUED('ambiguous', '')}
    UNION ALL
    ${QUEUED('quiet', 'q.news_at <= $1 AND')}) AS due
  ORDER BY CASE reason WHEN 'ambiguous' THEN 0 ELSE 1 END, news_at, job_id
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

/** The age of the open job that has gone longest without an event or a check, at $1 (two index lookups). */
export const OLDEST_UNCHECKED = `SELECT $1 - min(oldest) AS age FROM (
    SELECT min(news_at) AS oldest FROM reconcile_queue WHERE ambiguous = 0
    UNION ALL SELECT min(news_at) FROM reconcile_queue WHERE ambiguous = 1) AS queue`

export const RECORD_CHECK = `INSERT INTO reconcile_checks (job_id, checked_at, checked_seq) VALUES ($1, $2, $3)
  ON CONFLICT (job_id) DO UPDATE SET checked_at = excluded.checked_at, checked_seq = excluded.checked_seq`

/** The job's queue row after a usable answer at $2 covering the log up to $3 (nothing for a closed job). */
export const QUEUE_CHECKED = `UPDATE reconcile_queue SET checked_at = $2, checked_seq = $3, news_at = max_of(last_at, $2),
  ambiguous = CASE WHEN ambiguous_seq > $3 THEN 1 ELSE 0 END, retry_at = 0 WHERE job_id = $1`
/** The job's queue row after an unusable answer: left alone until $2. */
export const QUEUE_RETRY_AT = 'UPDATE reconcile_queue SET retry_at = $2 WHERE job_id = $1'
export const CLEAR_FAILURE = 'DELETE FROM reconcile_failures WHERE job_id = $1'
export const SELECT_FAILURE = 'SELECT failures, first_failed_at, answer FROM reconcile_failures WHERE job_id = $1'
export const UPSERT_FAILURE = `INSERT INTO reconcile_failures (job_id, failures, first_failed_at, failed_at, retry_at, answer) VALUES ($1, $2, $3, $4, $5, $6)
  ON CONFLICT (job_id) DO UPDATE SET failures = excluded.failures, first_failed_at = excluded.first_failed_at,
    failed_at = excluded.failed_at, retry_at = excluded.retry_at, answer = excluded.answer`
export const LIST_FAILURES = `SELECT job_id, failures, first_failed_at, failed_at, retry_at, answer FROM reconcile_failures
  ORDER BY failed_at DESC, job_id LIMIT $1`
export const COUNT_FAILURES = 'SELECT count(*) AS n FROM reconcile_failures'

export interface FailureRow { job_id: number; failures: number; first_failed_at: number; failed_at: number; retry_at: number; answer: string }

export const toFailure = (row: FailureRow): JobFailure => ({
  jobId: Number(row.job_id),
  failures: Number(row.failures),
  firstFailedAt: Number(row.first_failed_at),
  failedAt: Number(row.failed_at),
  retryAt: Number(row.retry_at),
  answer: row.answer
})

/** The values of UPSERT_FAILURE for one more failure after `previous` (the job's row, if any). */
export function nextFailure (jobId: number, failedAt: number, answer: string, previous: Pick<FailureRow, 'failures' | 'first_failed_at' | 'answer'> | undefined): JobFailure {
  const failures = Number(previous?.failures ?? 0) + 1
  return {
    jobId,
    failures,
    firstFailedAt: previous === undefined ? failedAt : Number(previous.first_failed_at),
    failedAt,
    retryAt: failedAt + failureBackoffMs(failures),
    answer: answer.slice(0, FAILURE_ANSWER_LENGTH),
    previous: previous?.answer
  }
}

export const failureParams = (f: JobFailure): unknown[] => [f.jobId, f.failures, f.firstFailedAt, f.failedAt, f.retryAt, f.answer]

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
