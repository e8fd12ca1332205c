// The reconciler's state on SQLite: its candidate queries, job checks and the shared rate-limit
// window. Taking a request slot is one IMMEDIATE transaction, so processes on one file take turns.
import type Database from 'better-sqlite3'
import type { ReconcileState } from '../contract.js'
import {
  CLEAR_FAILURE, COUNT_FAILURES, failureParams, LIST_FAILURES, maxOf, NAMED_CANDIDATES, namedParams, nextFailure, OLDEST_UNCHECKED,
  OPEN_CANDIDATES, QUEUE_CHECKED, QUEUE_RETRY_AT, RECORD_CHECK, SELECT_FAILURE, toCandidate, toFailure, UPSERT_FAILURE, URGENT_CANDIDATES,
  type CandidateRow, type FailureRow
} from '../reconcile-sql.js'

export function sqliteReconcileState (db: Database.Database): ReconcileState {
  const prepare = <R>(sql: string) => {
    const statement = db.prepare(namedParams(maxOf(sql, 'sqlite'), []).sql)
    return (...values: unknown[]) => ({ statement: statement as Database.Statement<unknown[], R>, params: namedParams(sql, values).params })
  }
  const urgent = prepare<CandidateRow>(URGENT_CANDIDATES)
  const open = prepare<CandidateRow>(OPEN_CANDIDATES)
  const oldest = prepare<{ age: number | null }>(OLDEST_UNCHECKED)
  const record = prepare(RECORD_CHECK)
  const clearFailure = prepare(CLEAR_FAILURE)
  const queueChecked = prepare(QUEUE_CHECKED)
  const queueRetryAt = prepare(QUEUE_RETRY_AT)
  const selectFailure = prepare<FailureRow>(SELECT_FAILURE)
  const upsertFailure = prepare(UPSERT_FAILURE)
  const listFailures = prepare<FailureRow>(LIST_FAILURES)
  const countFailures = prepare<{ n: number }>(COUNT_FAILURES)
  const checked = db.transaction((jobId: number, checkedAt: number, checkedSeq: number) => {
    const check = record(jobId, checkedAt, checkedSeq)
    check.statement.run(check.params)
    const clear = clearFailure(jobId)
    clear.statement.run(clear.params)
    const queue = queueChecked(jobId, checkedAt, checkedSeq)
    queue.statement.run(queue.params)
  })
  const failed = db.transaction((jobId: number, failedAt: number, answer: string) => {
    const previous = selectFailure(jobId)
    const failure = nextFailure(jobId, failedAt, answer, previous.statement.get(previous.params))
    const upsert = upsertFailure(...failureParams(failure))
    upsert.statement.run(upsert.params)
    const queue = queueRetryAt(jobId, failure.retryAt)
    queue.statement.run(queue.params)
    return failure
  })

  const selectLimit = db.prepare<[string], { paused_until: number }>('SELECT paused_until FROM partner_limits WHERE partner_key = ?')
  const forget = db.prepare('DELETE FROM partner_requests WHERE partner_key = ? AND sent_at <= ?')
  const inWindow = db.prepare<[string], { sent_at: number }>('SELECT sent_at FROM partner_requests WHERE partner_key = ? ORDER BY sent_at')
  const insertRequest = db.prepare('INSERT INTO partner_requests (partner_key, sent_at) VALUES (?, ?)')
  const settle = db.prepare(`UPDATE partner_requests SET sent_at = ?
    WHERE rowid = (SELECT rowid FROM partner_requests WHERE partner_key = ? AND sent_at = ? LIMIT 1)`)
  const upsertPause = db.prepare(`INSERT INTO partner_limits (partner_key, paused_until) VALUES (?, ?)
    ON CONFLICT (partner_key) DO UPDATE SET paused_until = max(paused_until, excluded.paused_until)`)
  const selectTimes = db.prepare<[string, number], { sent_at: number }>(
    'SELECT sent_at FROM partner_requests WHERE partner_key = ? AND sent_at >= ? ORDER BY sent_at')

  const takeSlot = db.transaction((key: string, now: number, limit: number, windowMs: number, heldUntil: number): number => {
    const paused = selectLimit.get(key)?.paused_until ?? 0
    if (paused > now) return paused - now
    forget.run(key, now - windowMs)
    const times = inWindow.all(key).map((row) => row.sent_at)
    // The slot frees when the request `limit` places before the next one leaves the window.
    if (times.length >= limit) return Math.max((times[times.length - limit] as number) + windowMs - now, 1)
    insertRequest.run(key, heldUntil)
    return 0
  })

  return {
    async candidates (query) {
      if (query.jobIds !== undefined) {
        if (query.jobIds.length === 0) return []
        return (db.prepare(maxOf(NAMED_CANDIDATES(query.jobIds), 'sqlite')).all() as CandidateRow[]).map(toCandidate)
      }
      const { statement, params } = query.allOpen === true
        ? open(query.afterJobId ?? 0, query.limit)
        : urgent(query.now - query.quietFor, query.limit, query.now)
      return statement.all(params).map(toCandidate)
    },
    async recordCheck (jobId, checkedAt, checkedSeq) {
      checked.immediate(jobId, checkedAt, checkedSeq)
    },
    async recordFailure (jobId, failedAt, answer) {
      return failed.immediate(jobId, failedAt, answer)
    },
    async failures (limit) {
      const { statement, params } = listFailures(limit)
      return statement.all(params).map(toFailure)
    },
    async failingJobs () {
      const { statement, params } = countFailures()
      return statement.get(params)?.n ?? 0
    },
    async oldestUnchecked (now) {
      const { statement, params } = oldest(now)
      return statement.get(params)?.age ?? null
    },
    async takeRequestSlot (key, now, limit, windowMs, heldUntil = now) {
      return takeSlot.immediate(key, now, limit, windowMs, heldUntil)
    },
    async settleRequest (key, heldUntil, at) {
      settle.run(at, key, heldUntil)
    },
    async pauseRequests (key, until) {
      upsertPause.run(key, until)
    },
    async requestTimes (key, since) {
      return selectTimes.all(key, since).map((row) => row.sent_at)
    }
  }
}
