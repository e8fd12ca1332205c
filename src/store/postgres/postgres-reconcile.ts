// The reconciler's state on PostgreSQL: its candidate queries, job checks and the shared
// rate-limit window. Taking a request slot locks the partner key's row, so instances take turns.
import type { ReconcileState } from '../contract.js'
import {
  CLEAR_FAILURE, COUNT_FAILURES, failureParams, LIST_FAILURES, maxOf, NAMED_CANDIDATES, nextFailure, OLDEST_UNCHECKED, OPEN_CANDIDATES,
  QUEUE_CHECKED, QUEUE_RETRY_AT, RECORD_CHECK, SELECT_FAILURE, toCandidate, toFailure, UPSERT_FAILURE, URGENT_CANDIDATES, type CandidateRow, type FailureRow
} from '../reconcile-sql.js'

interface Client {
  query: <R = Record<string, unknown>>(text: string, values?: unknown[]) => Promise<{ rows: R[] }>
  release: (error?: Error | boolean) => void
}
interface Pool {
  query: Client['query']
  connect: () => Promise<Client>
}
type Track = <A extends unknown[], R>(operation: (...args: A) => Promise<R>) => (...args: A) => Promise<R>

const URGENT = maxOf(URGENT_CANDIDATES, 'postgres')
const OPEN = maxOf(OPEN_CANDIDATES, 'postgres')
const OLDEST = maxOf(OLDEST_UNCHECKED, 'postgres')
const QUEUE_CHECKED_PG = maxOf(QUEUE_CHECKED, 'postgres')

/** `track` keeps the store's close waiting for operations under way. */
export function postgresReconcileState (pool: Pool, track: Track): ReconcileState {
  const state: ReconcileState = {
    async candidates (query) {
      if (query.jobIds !== undefined) {
        if (query.jobIds.length === 0) return []
        return (await pool.query<CandidateRow>(maxOf(NAMED_CANDIDATES(query.jobIds), 'postgres'))).rows.map(toCandidate)
      }
      const { rows } = query.allOpen === true
        ? await pool.query<CandidateRow>(OPEN, [query.afterJobId ?? 0, query.limit])
        : await pool.query<CandidateRow>(URGENT, [query.now - query.quietFor, query.limit, query.now])
      return rows.map(toCandidate)
    },
    async recordCheck (jobId, checkedAt, checkedSeq) {
      await pool.query(RECORD_CHECK, [jobId, checkedAt, checkedSeq])
      await pool.query(CLEAR_FAILURE, [jobId])
      await pool.query(QUEUE_CHECKED_PG, [jobId, checkedAt, checkedSeq])
    },
    async recordFailure (jobId, failedAt, answer) {
      // Only the lease holder writes failures, so reading the previous row first is safe.
      const { rows: [previous] } = await pool.query<FailureRow>(SELECT_FAILURE, [jobId])
      const failure = nextFailure(jobId, failedAt, answer, previous)
      await pool.query(UPSERT_FAILURE, failureParams(failure))
      await pool.query(QUEUE_RETRY_AT, [jobId, failure.retryAt])
      return failure
    },
    async failures (limit) {
      return (await pool.query<FailureRow>(LIST_FAILURES, [limit])).rows.map(toFailure)
    },
    async failingJobs () {
      const { rows: [row] } = await pool.query<{ n: string | number }>(COUNT_FAILURES)
      return Number(row?.n ?? 0)
    },
    async oldestUnchecked (now) {
      const { rows: [row] } = await pool.query<{ age: number | null }>(OLDEST, [now])
      return row?.age ?? null
    },
    async takeRequestSlot (key, now, limit, windowMs, heldUntil = now) {
      const client = await pool.connect()
      try {
        await client.query('BEGIN')
        await client.query('INSERT INTO partner_limits (partner_key) VALUES ($1) ON CONFLICT DO NOTHING', [key])
        const { rows: [limits] } = await client.query<{ paused_until: number }>(
          'SELECT paused_until FROM partner_limits WHERE partner_key = $1 FOR UPDATE', [key])
        let wait = 0
        const paused = limits?.paused_until ?? 0
        if (paused > now) wait = paused - now
        else {
          await client.query('DELETE FROM partner_requests WHERE partner_key = $1 AND sent_at <= $2', [key, now - windowMs])
          const { rows } = await client.query<{ sent_at: number }>(
            'SELECT sent_at FROM partner_requests WHERE partner_key = $1 ORDER BY sent_at', [key])
          // The slot frees when the request `limit` places before the next one leaves the window.
          if (rows.length >= limit) wait = Math.max((rows[rows.length - limit]?.sent_at ?? now) + windowMs - now, 1)
          else await client.query('INSERT INTO partner_requests (partner_key, sent_at) VALUES ($1, $2)', [key, heldUntil])
        }
        await client.query('COMMIT')
        client.release()
        return wait
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {})
        client.release(true)
        throw error
      }
    },
    async settleRequest (key, heldUntil, at) {
      await pool.query(`UPDATE partner_requests SET sent_at = $3
        WHERE ctid = (SELECT ctid FROM partner_requests WHERE partner_key = $1 AND sent_at = $2 LIMIT 1)`, [key, heldUntil, at])
    },
    async pauseRequests (key, until) {
      await pool.query(`INSERT INTO partner_limits (partner_key, paused_until) VALUES ($1, $2)
        ON CONFLICT (partner_key) DO UPDATE SET paused_until = greatest(partner_limits.paused_until, excluded.paused_until)`, [key, until])
    },
    async requestTimes (key, since) {
      const { rows } = await pool.query<{ sent_at: number }>(
        'SELECT sent_at FROM partner_requests WHERE partner_key = $1 AND sent_at >= $2 ORDER BY sent_at', [key, since])
      return rows.map((row) => row.sent_at)
    }
  }
  return {
    candidates: track(state.candidates),
    recordCheck: track(state.recordCheck),
    oldestUnchecked: track(state.oldestUnchecked),
    takeRequestSlot: track(state.takeRequestSlot),
    settleRequest: track(state.settleRequest),
    pauseRequests: track(state.pauseRequests),
    requestTimes: track(state.requestTimes),
    recordFailure: track(state.recordFailure),
    failures: track(state.failures),
    failingJobs: track(state.failingJobs)
  }
}
