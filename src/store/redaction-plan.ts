// What a redaction writes, decided in memory from what the store read inside its write
// transaction (docs/design.md, "Erasure"): both stores call `planRedaction` and write what it
// returns, as both call `planBatch` for appends.
import type { LogRow, QuarantineRow } from '../domain/types.js'
import { placeholderNumber, redactedPhone } from '../domain/redacted-phone.js'
import { errors } from '../errors.js'
import { rowProblem } from '../log/audit-check.js'
import { remainderDigest, type RedactedEntry, type RedactionRecord } from '../log/records.js'
import type { RedactRequest } from './contract.js'
import { recordParams, type ChainHead } from './rows.js'

/** What a redaction reads first, inside its write transaction. */
export interface RedactionReads {
  /** Every row of the jobs (records excluded), erased or not, in seq order. */
  rows: readonly LogRow[]
  /** Each job's phone in the projection (`jobs`) and in the projection at the latest checkpoint (`checkpoint_jobs`). */
  phones: ReadonlyArray<{ jobId: number; projection: string | null | undefined; checkpoint: string | null | undefined }>
  /** Quarantined bodies not erased yet (their job is found in the body here). */
  quarantine: readonly QuarantineRow[]
  head: ChainHead | undefined
}

/** What a redaction writes. */
export interface RedactionPlan {
  /** The redaction record's row (EVENT_INSERT_COLUMNS values) and the chain's head after it; none when nothing is left to erase. */
  record: { params: unknown[]; next: ChainHead; seq: number; body: RedactionRecord } | undefined
  /** Each row to erase: its placeholder phone (or null) and its content hash after erasure ('' for version 1). */
  rows: Array<{ seq: number; guardianPhone: string | null; contentHash: string }>
  /** Projection phones to replace, for `jobs` and for `checkpoint_jobs`. */
  projection: Array<{ jobId: number; guardianPhone: string }>
  checkpoint: Array<{ jobId: number; guardianPhone: string }>
  quarantine: number[]
  jobs: number[]
  version1Rows: number
}

/**
 * Plans the erasure of `request.jobIds`. Every row to erase is checked first (`rowProblem`):
 * one that does not verify refuses the whole redaction (FST_G2SENTRY_REDACTION_REFUSED), since
 * its record would vouch for what the row holds now.
 *
 * Phones become per-job placeholders, one number per distinct phone, continuing the job's
 * numbers from earlier redactions, so that every comparison the projection makes between two
 * phones of a job (and presence) comes out as before, and a replay decides every row as it was
 * decided live.
 */
export function planRedaction (request: RedactRequest, reads: RedactionReads, at: number): RedactionPlan {
  const jobs = new Set(request.jobIds)
  const plan: RedactionPlan = { record: undefined, rows: [], projection: [], checkpoint: [], quarantine: [], jobs: [], version1Rows: 0 }
  const maps = new Map<number, { next: number; of: Map<string, string> }>()
  const mapOf = (jobId: number) => {
    let map = maps.get(jobId)
    if (map === undefined) maps.set(jobId, map = { next: 1, of: new Map() })
    return map
  }
  // Numbers already used by the job's earlier redactions are not given again.
  const note = (jobId: number, phone: string | null | undefined) => {
    const n = placeholderNumber(phone)
    if (n !== undefined) mapOf(jobId).next = Math.max(mapOf(jobId).next, n + 1)
  }
  for (const row of reads.rows) note(row.jobId, row.guardianPhone)
  for (const { jobId, projection, checkpoint } of reads.phones) {
    note(jobId, projection)
    note(jobId, checkpoint)
  }
  const placeholder = (jobId: number, phone: string | null | undefined): string | null => {
    if (phone == null || placeholderNumber(phone) !== undefined) return phone ?? null
    const map = mapOf(jobId)
    let value = map.of.get(phone)
    if (value === undefined) map.of.set(phone, value = redactedPhone(map.next++))
    return value
  }

  const erased: LogRow[] = []
  const phoneOf = new Map(reads.phones.map((entry) => [entry.jobId, entry]))
  // The phone at the checkpoint came before the rows after it.
  for (const jobId of jobs) placeholder(jobId, phoneOf.get(jobId)?.checkpoint)
  for (const row of reads.rows) {
    if (!jobs.has(row.jobId) || row.redactedBy !== null || (row.source !== 'callback' && row.source !== 'api')) continue
    const problem = rowProblem(row)
    if (problem !== null) throw new errors.REDACTION_REFUSED(row.jobId, row.seq, problem)
    erased.push(row)
  }
  const quarantined = reads.quarantine.filter((entry) => entry.redactedBy === null && jobs.has(jobNamedIn(entry.rawBody) ?? -1))
  if (erased.length === 0 && quarantined.length === 0) return plan

  const seq = (reads.head?.seq ?? 0) + 1
  const entries: RedactedEntry[] = []
  for (const row of erased) {
    const after: LogRow = {
      ...row,
      rawBody: Buffer.alloc(0),
      signature: '',
      salt: null,
      guardianPhone: placeholder(row.jobId, row.guardianPhone),
      contentHash: row.chainVersion === 1 ? '' : row.contentHash,
      redactedBy: seq
    }
    if (row.chainVersion === 1) plan.version1Rows++
    plan.rows.push({ seq: row.seq, guardianPhone: after.guardianPhone, contentHash: after.contentHash })
    entries.push([row.seq, row.hash, remainderDigest(after)])
  }
  for (const jobId of jobs) {
    const phones = phoneOf.get(jobId)
    const projection = placeholder(jobId, phones?.projection)
    if (projection !== null && projection !== phones?.projection) plan.projection.push({ jobId, guardianPhone: projection })
    const checkpoint = placeholder(jobId, phones?.checkpoint)
    if (checkpoint !== null && checkpoint !== phones?.checkpoint) plan.checkpoint.push({ jobId, guardianPhone: checkpoint })
  }
  plan.quarantine = quarantined.map((entry) => entry.id)
  plan.jobs = [...new Set([...erased.map((row) => row.jobId), ...quarantined.map((entry) => jobNamedIn(entry.rawBody) as number)])].sort((a, b) => a - b)
  const body: RedactionRecord = { jobs: plan.jobs, reason: request.reason ?? null, by: request.by ?? 'request', rows: entries, quarantine: plan.quarantine }
  const { params, next } = recordParams('redaction', { redaction: body }, at, reads.head)
  plan.record = { params, next, seq, body }
  return plan
}

const JOB_ID = /"jobId"\s*:\s*"?(\d{1,16})\b/

/**
 * The job a quarantined body names, if it names one: its `jobId` when the body is JSON (a number,
 * or digits in a string), else the first `"jobId": N` in its text. A quarantined body did not
 * pass the callback's schema, so this reads it as loosely as a person would.
 */
export function jobNamedIn (body: Buffer): number | undefined {
  const text = body.toString('utf8')
  try {
    const value: unknown = JSON.parse(text)
    const jobId = typeof value === 'object' && value !== null ? (value as { jobId?: unknown }).jobId : undefined
    if (typeof jobId === 'number' && Number.isSafeInteger(jobId)) return jobId
    if (typeof jobId === 'string' && /^\d{1,16}$/.test(jobId)) return Number(jobId)
  } catch {}
  const match = JOB_ID.exec(text)
  return match === null ? undefined : Number(match[1])
}
