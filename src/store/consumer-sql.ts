// SQL and row mapping for durable consumers (checkpoints and parked rows), shared by the SQLite
// and PostgreSQL stores. Parameters are `$name` markers: SQLite binds them by name, PostgreSQL
// by position (src/store/leases.ts `positional`). `$now` is the time in ms; `$head` is the
// backend's expression for the log's last seq.
import type { ConsumerCheckpoint, ConsumerDeletion, ConsumerSummary, ParkedRow } from './contract.js'

export interface CheckpointDbRow {
  name: string
  checkpoint: number
  created_at: number
  updated_at: number
  parked?: number
}

export interface ParkedDbRow {
  consumer: string
  seq: number
  job_id: number | null
  event_type: string | null
  attempts: number
  error: string
  parked_at: number
  retry_requested: number | boolean
}

export const OPEN_CONSUMER = `INSERT INTO consumer_checkpoints (name, checkpoint, created_at, updated_at)
  VALUES ($name, CASE WHEN $fromnow = 1 THEN $head ELSE 0 END, $now, $now)
  ON CONFLICT (name) DO NOTHING`

export const SELECT_CONSUMER = 'SELECT name, checkpoint, created_at, updated_at FROM consumer_checkpoints WHERE name = $name'

/** The lease row a fenced write needs: still `holder`'s, with the same token. */
export const FENCE = 'SELECT 1 AS held FROM leases WHERE name = $lease AND holder = $holder AND token = $token'

export const SAVE_CHECKPOINT = 'UPDATE consumer_checkpoints SET checkpoint = $seq, updated_at = $now WHERE name = $name'

export const PARK_ROW = `INSERT INTO consumer_parked (consumer, seq, attempts, error, parked_at)
  VALUES ($name, $seq, $attempts, $error, $now)
  ON CONFLICT (consumer, seq) DO UPDATE SET attempts = excluded.attempts, error = excluded.error,
    parked_at = excluded.parked_at, retry_requested = false`

export const UNPARK_ROW = 'DELETE FROM consumer_parked WHERE consumer = $name AND seq = $seq'

export const BUMP_LEASE = 'UPDATE leases SET token = token + 1 WHERE name = $lease'

/** The consumer's lease while it is live (`$now` is the database's time in ms). */
export const LIVE_LEASE = 'SELECT holder, expires_at FROM leases WHERE name = $lease AND expires_at > $now'

export const DELETE_PARKED = 'DELETE FROM consumer_parked WHERE consumer = $name'

export const DELETE_CONSUMER = 'DELETE FROM consumer_checkpoints WHERE name = $name'

/** Removes a lease nobody holds (an expired or released one), so a deleted consumer leaves nothing. */
export const DROP_IDLE_LEASE = 'DELETE FROM leases WHERE name = $lease AND expires_at <= $now'

export interface LiveLeaseDbRow {
  holder: string
  expires_at: number
}

/** What a deletion reports, from the lease found live (if any) and the parked rows removed. */
export const toDeletion = (found: boolean, live: LiveLeaseDbRow | undefined, deleted: boolean, parked: number): ConsumerDeletion =>
  ({ found, deleted, parked, holder: live?.holder ?? null, expiresAt: live === undefined ? null : Number(live.expires_at) })

export const LIST_CONSUMERS = `SELECT c.name, c.checkpoint, c.created_at, c.updated_at,
    (SELECT count(*) FROM consumer_parked p WHERE p.consumer = c.name) AS parked
  FROM consumer_checkpoints c ORDER BY c.name`

/**
 * Parked rows with their job and event type from the log. An empty `$consumer` means every
 * consumer; `$retry` is 1 or 0 to keep rows (not) asked to be retried, -1 for all.
 */
export const LIST_PARKED = `SELECT p.consumer, p.seq, e.job_id, e.event_type, p.attempts, p.error, p.parked_at, p.retry_requested
  FROM consumer_parked p LEFT JOIN events e ON e.seq = p.seq
  WHERE ($consumer = '' OR p.consumer = $consumer) AND p.seq > $after
    AND ($retry < 0 OR (CASE WHEN p.retry_requested THEN 1 ELSE 0 END) = $retry)
  ORDER BY p.consumer, p.seq LIMIT $limit`

/** Asks for a retry of the consumer's parked rows; each backend appends its own `seq` filter. */
export const RETRY_PARKED = 'UPDATE consumer_parked SET retry_requested = true WHERE consumer = $name'

export const toCheckpoint = (row: CheckpointDbRow): ConsumerCheckpoint =>
  ({ name: row.name, checkpoint: row.checkpoint, createdAt: row.created_at, updatedAt: row.updated_at })

export const toSummary = (row: CheckpointDbRow): ConsumerSummary => ({ ...toCheckpoint(row), parked: Number(row.parked ?? 0) })

export const toParked = (row: ParkedDbRow): ParkedRow => ({
  consumer: row.consumer,
  seq: row.seq,
  jobId: row.job_id,
  eventType: row.event_type,
  attempts: row.attempts,
  error: row.error,
  parkedAt: row.parked_at,
  retryRequested: row.retry_requested === true || row.retry_requested === 1
})

/** The longest handler error kept with a parked row. */
export const MAX_ERROR_LENGTH = 2000
