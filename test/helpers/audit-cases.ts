/**
 * The audit's tamper cases on a log long enough to span several of verify's seq ranges (ranges of
 * RANGE_SIZE seqs, read PAGE_SIZE rows at a time), shared by the SQLite (test/audit.test.ts) and
 * PostgreSQL (test/audit-postgres.test.ts) runs. Most cases touch a row at a range's edge: the
 * first or last row of a range, a whole range, the last range.
 */
import type { G2SentryStore } from '../../src/store/contract.js'
import type { AppendResult, JobStatus } from '../../src/domain/types.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { randomSchedule, type Delivery } from '../../src/simulator/schedules.js'
import { SECRET, T0 } from './fixtures.js'

export const ROWS = 300
export const RANGE_SIZE = 50
export const PAGE_SIZE = 7
/** Every row whose seq is a multiple of 7 (but the API rows) is signed with this secret instead of SECRET. */
export const OLD_SECRET = 'old-secret'
/** Rows written from the Partner API: mid-range, the last row of a range, the first row of the last range. */
export const API_SEQS = [75, 150, 251]
/** How many rows of the old log were written before the chain existed: range 0 and into range 1. */
export const UNCHAINED = 60

/** Seqs of the rows that OLD_SECRET signs. */
export const oldSecretSeqs = (rows = ROWS): number[] =>
  Array.from({ length: rows }, (_, i) => i + 1).filter((seq) => seq % 7 === 0 && !API_SEQS.includes(seq))

/**
 * Appends ROWS rows to an empty `store`, seq 1 to ROWS in order: callbacks from a seeded schedule
 * and the API rows at API_SEQS. With `unchained`, the first UNCHAINED rows lose their hashes once
 * written, as rows written before the chain existed (migration 002) have none: `exec` runs that
 * SQL on the store's database, and the chain starts again from genesis after them.
 */
export async function writeLongLog (store: G2SentryStore, unchained?: (exec: string) => Promise<void>): Promise<void> {
  const { deliveries } = randomSchedule(14, { jobs: 80, lossRate: 0.3 })
  if (deliveries.length < ROWS) throw new Error(`the schedule has ${deliveries.length} deliveries, fewer than ${ROWS}`)
  const lastSeqOf = new Map<number, number>()
  const appendIf = store.appendIf?.bind(store)
  if (appendIf === undefined) throw new Error('the store has no appendIf')
  let next = 0
  let pending: Array<Promise<AppendResult>> = []
  // Appends queued together commit in call order, so seqs follow the order of the calls.
  const settle = async (): Promise<void> => {
    for (const result of await Promise.all(pending)) lastSeqOf.set(result.jobId, result.seq)
    pending = []
  }
  for (let seq = 1; seq <= ROWS; seq++) {
    if (API_SEQS.includes(seq)) {
      await settle()
      const previous = deliveries[next - 1]?.event
      if (previous === undefined) throw new Error('an API row needs a callback before it')
      const status: JobStatus = 'Canceled'
      const rawBody = Buffer.from(JSON.stringify({ jobId: previous.jobId, status }))
      const event = { jobId: previous.jobId, eventType: 'Reconciled', jobName: previous.jobName, jobStatus: status, rawBody, signature: '', receivedAt: T0 + seq, source: 'api' as const }
      const result = await appendIf({ ...event, ifLastSeq: lastSeqOf.get(previous.jobId) ?? 0 })
      if (result.outcome === 'superseded' || result.seq !== seq) throw new Error(`the API row meant for seq ${seq} was not appended there`)
      lastSeqOf.set(result.jobId, result.seq)
    } else {
      const { event } = deliveries[next++] as Delivery
      const rawBody = Buffer.from(JSON.stringify(event))
      pending.push(store.append({ ...event, rawBody, signature: signBody(rawBody, seq % 7 === 0 ? OLD_SECRET : SECRET), receivedAt: T0 + seq }))
    }
    if (unchained !== undefined && seq === UNCHAINED) {
      await settle()
      await unchained(`UPDATE events SET hash = NULL, prev_hash = NULL WHERE seq <= ${UNCHAINED}`)
    }
  }
  await settle()
}

export interface TamperCase {
  name: string
  /** Runs on a copy of the log; `postgres` replaces it there (null: a case SQLite alone can have). */
  sql: string
  postgres?: string | null
  /** The first broken seq, or null for a chain that holds. */
  seq: number | null
  problem?: RegExp
  /** Rows without a hash before the first break, when there are any. */
  unchainedRows?: number
}

const flipOutcome = "outcome = CASE outcome WHEN 'applied' THEN 'stale' ELSE 'applied' END"

/** Edits of the log written by `writeLongLog` (without `unchained`). */
export const TAMPER_CASES: TamperCase[] = [
  { name: 'nothing changed', sql: '', seq: null },
  { name: 'job name edited, first row of a range', sql: "UPDATE events SET job_name = 'Something else' WHERE seq = 51", seq: 51, problem: /parsed from the raw body/ },
  { name: 'status edited, last row of a range', sql: "UPDATE events SET job_status = 'Canceled' WHERE seq = 50", seq: 50, problem: /parsed from the raw body/ },
  { name: 'phone edited, first row of the log', sql: "UPDATE events SET guardian_phone = '+10000000000' WHERE seq = 1", seq: 1, problem: /parsed from the raw body/ },
  {
    name: 'raw body edited, last row of a range',
    sql: "UPDATE events SET raw_body = CAST(CAST(raw_body AS TEXT) || ' ' AS BLOB) WHERE seq = 100",
    postgres: "UPDATE events SET raw_body = raw_body || '\\x20'::bytea WHERE seq = 100",
    seq: 100,
    problem: /raw body was changed/
  },
  // SQLite keeps the type of the value written: the same bytes as text are no callback body.
  { name: 'raw body stored as text', sql: 'UPDATE events SET raw_body = CAST(raw_body AS TEXT) WHERE seq = 120', postgres: null, seq: 120, problem: /is not a callback \(not UTF-8\)/ },
  { name: 'outcome edited, first row of a range', sql: `UPDATE events SET ${flipOutcome} WHERE seq = 101`, seq: 101, problem: /stored field/ },
  { name: 'signature in upper case (still a valid signature)', sql: 'UPDATE events SET signature = upper(signature) WHERE seq = 149', seq: 149, problem: /its signature/ },
  { name: 'signature replaced', sql: "UPDATE events SET signature = 'x' WHERE seq = 200", seq: 200, problem: /its signature/ },
  { name: 'received-at edited, last row of a range', sql: 'UPDATE events SET received_at = received_at - 3600000 WHERE seq = 250', seq: 250, problem: /stored field/ },
  { name: 'hash edited, the next row still links to the old one', sql: "UPDATE events SET hash = 'ff' || substr(hash, 3) WHERE seq = 201", seq: 201, problem: /stored field/ },
  { name: 'a row deleted mid-range', sql: 'DELETE FROM events WHERE seq = 30', seq: 31, problem: /^seq 31 follows 29: rows 30…30 are missing$/ },
  { name: 'the first row of a range deleted', sql: 'DELETE FROM events WHERE seq = 51', seq: 52, problem: /^seq 52 follows 50: rows 51…51 are missing$/ },
  { name: 'the last row of a range deleted', sql: 'DELETE FROM events WHERE seq = 50', seq: 51, problem: /^seq 51 follows 49: rows 50…50 are missing$/ },
  { name: 'a whole range deleted', sql: 'DELETE FROM events WHERE seq BETWEEN 51 AND 100', seq: 101, problem: /^seq 101 follows 50: rows 51…100 are missing$/ },
  { name: 'the first row deleted', sql: 'DELETE FROM events WHERE seq = 1', seq: 2, problem: /^seq 2 follows 0: rows 1…1 are missing$/ },
  { name: 'the last rows deleted', sql: 'DELETE FROM events WHERE seq >= 290', seq: 290, problem: /^the log ends at seq 289 but seq 300 was written: rows 290…300 are missing$/ },
  { name: 'the last range deleted', sql: 'DELETE FROM events WHERE seq > 250', seq: 251, problem: /^the log ends at seq 250 but seq 300 was written/ },
  { name: 'every row deleted', sql: 'DELETE FROM events', seq: 1, problem: /^the log ends at seq 0 but seq 300 was written: rows 1…300 are missing$/ },
  {
    name: 'two rows swapped across a range boundary',
    sql: 'UPDATE events SET seq = -1 WHERE seq = 50; UPDATE events SET seq = 50 WHERE seq = 51; UPDATE events SET seq = 51 WHERE seq = -1',
    seq: 50,
    problem: /does not link|stored field/
  },
  {
    name: 'two rows swapped within a range',
    sql: 'UPDATE events SET seq = -1 WHERE seq = 10; UPDATE events SET seq = 10 WHERE seq = 11; UPDATE events SET seq = 11 WHERE seq = -1',
    seq: 10,
    problem: /does not link|stored field/
  },
  {
    name: 'a row appended by hand',
    sql: `INSERT INTO events (seq, job_id, event_type, job_status, job_name, raw_body, signature, content_hash, received_at, outcome, prev_hash, hash, source)
      SELECT 301, job_id, event_type, job_status, job_name, raw_body, signature, content_hash, received_at, 'duplicate', hash, 'forged', source FROM events WHERE seq = 300`,
    seq: 301,
    // Copied without its salt, the row reads as version 1, whose body hash is a plain SHA-256.
    problem: /stored field|raw body was changed/
  },
  {
    name: 'a row inserted after a gap',
    sql: `INSERT INTO events (seq, job_id, event_type, job_status, job_name, raw_body, signature, content_hash, received_at, outcome, prev_hash, hash, source)
      SELECT 310, job_id, event_type, job_status, job_name, raw_body, signature, content_hash, received_at, 'duplicate', hash, 'forged', source FROM events WHERE seq = 300`,
    seq: 310,
    problem: /^seq 310 follows 300: rows 301…309 are missing$/
  },
  { name: 'an API row\'s source flipped to callback, last row of a range', sql: "UPDATE events SET source = 'callback' WHERE seq = 150", seq: 150, problem: /the raw body is not a callback/ },
  { name: 'a callback row claimed as an API row', sql: "UPDATE events SET source = 'api' WHERE seq = 151", seq: 151, problem: /the raw body is not a Partner API status answer/ },
  {
    name: 'an API row\'s body edited, first row of the last range',
    sql: 'UPDATE events SET raw_body = CAST(\'{"jobId":1,"status":"New"}\' AS BLOB) WHERE seq = 251',
    postgres: 'UPDATE events SET raw_body = convert_to(\'{"jobId":1,"status":"New"}\', \'UTF8\') WHERE seq = 251',
    seq: 251,
    problem: /the raw body was changed/
  },
  // SQLite keeps any value in a blob column; a number cannot be hashed, nor its signature checked.
  { name: 'an API row\'s raw body replaced by a number', sql: 'UPDATE events SET raw_body = 5 WHERE seq = 75', postgres: null, seq: 75, problem: /^the raw body was changed$/ },
  { name: 'a raw body replaced by a number', sql: 'UPDATE events SET raw_body = 5 WHERE seq = 121', postgres: null, seq: 121, problem: /^the raw body was changed$/ },
  { name: 'an API row\'s status edited', sql: "UPDATE events SET job_status = 'New' WHERE seq = 75", seq: 75, problem: /differs from its body/ }
]

/** Edits of the log written by `writeLongLog` with `unchained`: the first UNCHAINED rows have no hash. */
export const UNCHAINED_CASES: TamperCase[] = [
  { name: 'an old log, untouched', sql: '', seq: null, unchainedRows: UNCHAINED },
  { name: 'an unchained row edited, last row of a range (nothing to check it against)', sql: "UPDATE events SET job_name = 'Something else' WHERE seq = 50", seq: null, unchainedRows: UNCHAINED },
  { name: 'a hash given to an unchained row', sql: "UPDATE events SET hash = 'ab' WHERE seq = 30", seq: 31, problem: /^the row has no hash$/, unchainedRows: 29 },
  { name: 'a hash removed after the chain started', sql: 'UPDATE events SET hash = NULL WHERE seq = 100', seq: 100, problem: /^the row has no hash$/, unchainedRows: UNCHAINED },
  { name: 'the first chained row deleted', sql: 'DELETE FROM events WHERE seq = 61', seq: 62, problem: /^seq 62 follows 60: rows 61…61 are missing$/, unchainedRows: UNCHAINED },
  { name: 'the first chained row linked elsewhere', sql: "UPDATE events SET prev_hash = 'ab' WHERE seq = 61", seq: 61, problem: /does not link/, unchainedRows: UNCHAINED }
]
