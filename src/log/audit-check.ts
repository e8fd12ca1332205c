// The checks `auditLog` makes on each row, and how the checks of consecutive seq ranges join into
// the report one pass over the whole log gives (docs/design.md, "Verify in parallel"). A row's
// verdict depends on the row and the one before it only, so a range can be checked without the
// others, except for its first row's link to the last row of the range before it.
import { createSecretKey, type KeyObject } from 'node:crypto'
import { decodeCallback } from '../domain/decode-callback.js'
import { RECONCILED_EVENT_TYPE, type LogRow } from '../domain/types.js'
import { isSignedBy } from '../domain/verify-signature.js'
import { readStatusAnswer } from '../domain/status-answer.js'
import { bodyCommitment, CHAIN_VERSION, GENESIS, rowHash } from '../store/chain.js'
import { placeholderNumber } from '../domain/redacted-phone.js'
import { readCheckpoint, readRedaction } from './records.js'
import type { LogReads } from '../store/log-reader.js'
import { contentHash, RECORD_EVENT_TYPES, type ChainHead } from '../store/rows.js'

/** Where a row sits in the chain: its seq and its hash. */
export interface Link {
  seq: number
  hash: string | null
}

/**
 * Why `row` does not follow `previous` (a seq missing, no hash once the chain has started, a
 * link to another hash); null when it links, and its own checks (`rowProblem`) come next;
 * undefined for a row from before the chain existed, which has nothing more to check.
 */
export function linkProblem (row: Link & { prevHash: string | null }, previous: Link | undefined): string | null | undefined {
  const expectedSeq = (previous?.seq ?? 0) + 1
  if (row.seq !== expectedSeq) return `seq ${row.seq} follows ${expectedSeq - 1}: rows ${expectedSeq}…${row.seq - 1} are missing`
  if (row.hash === null || row.prevHash === null) return previous?.hash != null ? 'the row has no hash' : undefined
  if (row.prevHash !== (previous?.hash ?? GENESIS)) return 'the row does not link to the previous row\'s hash'
  return null
}

/**
 * Whether a raw body can be hashed: bytes, or text where SQLite was given text. One edited into a
 * number cannot, and a row's checks never throw, since the first row of each range is checked
 * before it is known whether anything broke before it.
 */
const isBytes = (body: unknown): boolean => typeof body === 'string' || Buffer.isBuffer(body)

/** Why a chained row does not match its own hash or its raw body, or null. */
export function rowProblem (row: LogRow): string | null {
  if (row.chainVersion !== 1 && row.chainVersion !== CHAIN_VERSION) return `the row's chain version (${String(row.chainVersion)}) is unknown`
  if (row.source === 'redaction' || row.source === 'checkpoint') return recordProblem(row)
  if (row.redactedBy !== null) return redactedProblem(row)
  if (!isBytes(row.rawBody)) return 'the raw body was changed'
  if (row.chainVersion === 1) {
    if (row.contentHash !== contentHash(row.rawBody)) return 'the raw body was changed'
  } else if (!Buffer.isBuffer(row.salt) || row.contentHash !== bodyCommitment(row.salt, row.signature, row.rawBody)) {
    return 'the raw body was changed (or its signature, or its salt)'
  }
  // The parsed fields before the hash: version 2 covers them in the hash too, and the body says
  // which one changed.
  const parsed = row.source === 'api' ? apiRowProblem(row) : callbackProblem(row)
  if (parsed !== null) return parsed
  if (row.hash !== rowHash(row.prevHash as string, row)) return 'a stored field (seq, time, signature, outcome, sameAs or a parsed field) was changed'
  return null
}

/** Why a callback row's fields differ from its body, or null. */
function callbackProblem (row: LogRow): string | null {
  const decoded = decodeCallback(row.rawBody)
  if (!decoded.ok) return `the raw body is not a callback (${decoded.detail})`
  const { jobId, eventType, jobStatus, jobName, guardianPhone } = decoded.event
  if (jobId !== row.jobId || eventType !== row.eventType || jobStatus !== row.jobStatus || jobName !== row.jobName ||
    (guardianPhone ?? null) !== row.guardianPhone) return 'a field parsed from the raw body differs from the body'
  return null
}

/**
 * Why an erased row is not what erasure leaves, or null. Its body, signature and salt are gone
 * and its phone, if it had one, is a placeholder; a version 2 row still matches its own hash
 * (its salted commitment stays). A version 1 row's hash covered its body's SHA-256, which is
 * gone: its hash and what it kept are checked against its redaction record instead
 * (`redactionProblems`).
 */
function redactedProblem (row: LogRow): string | null {
  if (!Buffer.isBuffer(row.rawBody) || row.rawBody.length > 0 || row.signature !== '' || row.salt !== null ||
    (row.guardianPhone !== null && placeholderNumber(row.guardianPhone) === undefined)) {
    return 'a redacted row holds a body, a signature, a salt or a phone again'
  }
  if (row.chainVersion === 1) return row.contentHash === '' ? null : 'a redacted version 1 row still holds its body\'s SHA-256'
  if (row.hash !== rowHash(row.prevHash as string, row)) return 'a stored field of a redacted row was changed'
  return null
}

/** Why a redaction or a checkpoint row is not a well-formed, unchanged record, or null. */
function recordProblem (row: LogRow): string | null {
  if (row.chainVersion === 1 || !isBytes(row.rawBody) || row.contentHash !== contentHash(row.rawBody)) return 'the record was changed'
  if (row.hash !== rowHash(row.prevHash as string, row)) return 'a stored field of the record was changed'
  const record = row.source === 'redaction' ? readRedaction(row.rawBody) : readCheckpoint(row.rawBody)
  if (record === undefined || row.jobId !== 0 || row.eventType !== RECORD_EVENT_TYPES[row.source as 'redaction' | 'checkpoint'] ||
    row.signature !== '' || row.salt !== null || row.redactedBy !== null || row.outcome !== 'recorded') return `the row is not a ${row.source} record`
  return null
}

/** Why a row from the Partner API does not match its body (the API's answer), or null. */
function apiRowProblem (row: LogRow): string | null {
  const answer = readStatusAnswer(row.rawBody)
  if (answer === undefined) return 'the raw body is not a Partner API status answer'
  if (row.eventType !== RECONCILED_EVENT_TYPE || answer.jobId !== row.jobId || answer.status !== row.jobStatus || row.signature !== '') {
    return 'a field of the Partner API row differs from its body'
  }
  return null
}

/** The first row of a range: what its link needs, and what its own checks found. */
export interface FirstRow extends Link {
  prevHash: string | null
  /** `rowProblem` of the row when it has a hash and a previous hash, else null. */
  problem: string | null
}

/** What the checks of one seq range found, for `joinRanges`; small whatever the range's length, but for `unsigned`. */
export interface RangeReport {
  events: number
  apiRows: number
  /** Rows whose personal data was erased, and records (redactions, checkpoints): none of them signed. */
  redactedRows: number
  records: number
  /** Seqs of callback rows that no secret signs, in order; empty when no secret was given. */
  unsigned: number[]
  first: FirstRow | null
  last: Link | null
  /** The first row after the range's first that breaks the chain (linked to the row before it in the range). */
  broken: { seq: number; problem: string } | null
  /** Rows after the range's first, before `broken`, that have no hash (from before the chain). */
  unchained: number
}

/** Checks the rows of one range, given in seq order, a row at a time: memory stays flat. */
export class RangeCheck {
  readonly #secrets: readonly KeyObject[]
  readonly #report: RangeReport = { events: 0, apiRows: 0, redactedRows: 0, records: 0, unsigned: [], first: null, last: null, broken: null, unchained: 0 }
  #lastSeq = 0
  #lastHash: string | null = null

  constructor (secrets: readonly string[]) {
    // A key made once rather than from the string for every row: a tenth less time per HMAC.
    this.#secrets = secrets.map((secret) => createSecretKey(Buffer.from(secret, 'utf8')))
  }

  add (row: LogRow): void {
    const report = this.#report
    if (report.events === 0) {
      report.first = { seq: row.seq, hash: row.hash, prevHash: row.prevHash, problem: row.hash !== null && row.prevHash !== null ? rowProblem(row) : null }
    } else if (report.broken === null) {
      // After the range's first break nothing more can be the log's first.
      const link = linkProblem(row, { seq: this.#lastSeq, hash: this.#lastHash })
      const problem = link === undefined ? null : link ?? rowProblem(row)
      if (problem !== null) report.broken = { seq: row.seq, problem }
      else if (row.hash === null) report.unchained++
    }
    report.events++
    // An API row has no signature, nor has a record or an erased row: the chain is their evidence.
    if (row.source === 'redaction' || row.source === 'checkpoint') report.records++
    else if (row.redactedBy !== null) report.redactedRows++
    else if (row.source === 'api') report.apiRows++
    else if (this.#secrets.length > 0 && !(isBytes(row.rawBody) && isSignedBy(row.rawBody, row.signature, this.#secrets))) report.unsigned.push(row.seq)
    this.#lastSeq = row.seq
    this.#lastHash = row.hash
  }

  report (): RangeReport {
    const report = this.#report
    return { ...report, last: report.events === 0 ? null : { seq: this.#lastSeq, hash: this.#lastHash } }
  }
}

/** What the ranges of the whole log found together. */
export interface JoinedRanges {
  events: number
  apiRows: number
  redactedRows: number
  records: number
  unsigned: number[]
  broken: { seq: number; problem: string } | null
  unchainedRows: number
}

/**
 * Joins the reports of consecutive ranges that together hold every row of the log (`ranges` in
 * seq order) into what one pass over the whole log finds: the first broken row is the first of
 * the first range that has one, once each range's first row is checked against the last row
 * before it. `head` is the chain head as of the last range's rows: a row missing at the end of
 * the log shows only there. `start` is the last row the latest archive moved out of the log
 * (its checkpoint's seq and hash), which the first range's first row follows.
 */
export function joinRanges (ranges: readonly RangeReport[], head: ChainHead | undefined, start?: Link): JoinedRanges {
  const joined: JoinedRanges = { events: 0, apiRows: 0, redactedRows: 0, records: 0, unsigned: [], broken: null, unchainedRows: 0 }
  // After an archive, the first row left links to the checkpoint's last archived row.
  let previous: Link | undefined = start
  for (const range of ranges) {
    joined.events += range.events
    joined.apiRows += range.apiRows
    joined.redactedRows += range.redactedRows
    joined.records += range.records
    for (const seq of range.unsigned) joined.unsigned.push(seq)
    if (range.first === null) continue
    if (joined.broken === null) {
      const link = linkProblem(range.first, previous)
      const problem = link === undefined ? null : link ?? range.first.problem
      if (problem !== null) {
        joined.broken = { seq: range.first.seq, problem }
      } else {
        if (range.first.hash === null) joined.unchainedRows++
        joined.unchainedRows += range.unchained
        joined.broken = range.broken
      }
    }
    previous = range.last ?? undefined
  }
  const last = previous?.seq ?? 0
  if (joined.broken === null && (head?.seq ?? 0) !== last) {
    joined.broken = { seq: last + 1, problem: `the log ends at seq ${last} but seq ${head?.seq ?? 0} was written: rows ${last + 1}…${head?.seq ?? 0} are missing` }
  }
  return joined
}

/**
 * Checks the rows with a seq above `after` (and at most `upTo`, when given), read `pageSize` at
 * a time from `reads`.
 */
export async function checkRange (
  reads: Pick<LogReads, 'page'>, secrets: readonly string[], after: number, upTo: number | undefined, pageSize: number
): Promise<RangeReport> {
  const check = new RangeCheck(secrets)
  for (let from = after; ;) {
    const page = await reads.page(from, upTo, pageSize)
    for (const row of page) check.add(row)
    if (page.length < pageSize) return check.report()
    from = (page[page.length - 1] as LogRow).seq
  }
}
