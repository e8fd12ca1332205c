import { decodeCallback } from '../domain/decode-callback.js'
import { readLogStream } from './read-log.js'
import { GENESIS, rowHash } from '../store/chain.js'
import { contentHash } from '../store/rows.js'
import type { G2SentryStore, LogRow, RebuildReport } from '../domain/types.js'
import { verifySignature } from '../domain/verify-signature.js'
import { RECONCILED_EVENT_TYPE } from '../domain/types.js'
import { readStatusAnswer } from '../partner-api/status-answer.js'

/** What `auditLog` found: the chain, the signatures and the projection. */
export interface AuditReport {
  events: number
  chain: {
    ok: boolean
    /** The first row that breaks the chain, and why. */
    firstBrokenSeq: number | null
    problem: string | null
    /** Rows written before the chain existed (migration 002), at the start of the log. */
    unchainedRows: number
  }
  /** Seqs of callback rows that none of the given secrets signs; null when no secret was given. */
  unsigned: number[] | null
  /** Rows the reconciler wrote from the Partner API's answers: chained, not signed. */
  apiRows: number
  projection: RebuildReport
  ok: boolean
}

/** Why a row breaks the chain, or null when it links correctly to `previous`. */
function chainProblem (row: LogRow, previous: LogRow | undefined, chainStarted: boolean): string | null {
  const expectedSeq = (previous?.seq ?? 0) + 1
  if (row.seq !== expectedSeq) return `seq ${row.seq} follows ${expectedSeq - 1}: rows ${expectedSeq}…${row.seq - 1} are missing`
  if (row.hash === null || row.prevHash === null) return chainStarted ? 'the row has no hash' : null
  if (row.prevHash !== (previous?.hash ?? GENESIS)) return 'the row does not link to the previous row\'s hash'
  if (row.contentHash !== contentHash(row.rawBody)) return 'the raw body was changed'
  if (row.hash !== rowHash(row.prevHash, row)) return 'a stored field (seq, time, signature, outcome or sameAs) was changed'
  if (row.source === 'api') return apiRowProblem(row)
  const decoded = decodeCallback(row.rawBody)
  if (!decoded.ok) return `the raw body is not a callback (${decoded.detail})`
  const { jobId, eventType, jobStatus, jobName, guardianPhone } = decoded.event
  if (jobId !== row.jobId || eventType !== row.eventType || jobStatus !== row.jobStatus || jobName !== row.jobName ||
    (guardianPhone ?? null) !== row.guardianPhone) return 'a field parsed from the raw body differs from the body'
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

/**
 * Checks the whole log, streaming it in seq order: that every row links to the one before it
 * and its stored fields match its hash and its raw body, that no row is missing (at the end
 * either), that a configured secret signs every callback row (rows from the Partner API are
 * counted apart), and that a rebuild equals the stored
 * projection with every row replaying to the outcome it was given live.
 */
export async function auditLog (store: G2SentryStore, options: { secrets?: readonly string[] } = {}): Promise<AuditReport> {
  const secrets = options.secrets ?? []
  const unsigned: number[] = []
  let events = 0
  let unchainedRows = 0
  let apiRows = 0
  let previous: LogRow | undefined
  let broken: { seq: number; problem: string } | undefined
  for await (const row of readLogStream(store)) {
    events++
    if (broken === undefined) {
      const problem = chainProblem(row, previous, previous?.hash != null)
      if (problem !== null) broken = { seq: row.seq, problem }
      else if (row.hash === null) unchainedRows++
    }
    // An API row has no signature: the chain is its evidence.
    if (row.source === 'api') apiRows++
    else if (secrets.length > 0 && !verifySignature(row.rawBody, row.signature, secrets).valid) unsigned.push(row.seq)
    previous = row
  }
  const head = await store.chainHead()
  if (broken === undefined && (head?.seq ?? 0) !== (previous?.seq ?? 0)) {
    const last = previous?.seq ?? 0
    broken = { seq: last + 1, problem: `the log ends at seq ${last} but seq ${head?.seq ?? 0} was written: rows ${last + 1}…${head?.seq ?? 0} are missing` }
  }
  const projection = await store.rebuild({ dryRun: true })
  const report: AuditReport = {
    events,
    chain: { ok: broken === undefined, firstBrokenSeq: broken?.seq ?? null, problem: broken?.problem ?? null, unchainedRows },
    unsigned: secrets.length > 0 ? unsigned : null,
    apiRows,
    projection,
    ok: false
  }
  report.ok = report.chain.ok && unsigned.length === 0 && projection.differingJobs.length === 0 && projection.outcomeMismatches.length === 0
  return report
}
