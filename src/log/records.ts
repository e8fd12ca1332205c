// The records a log keeps of acts on itself (docs/design.md, "Personal data, erasure and
// archiving"): a redaction names every row whose personal data it erased, with the row's hash
// and a digest of what the row kept; a checkpoint names the last archived row, its hash, the
// archive file's SHA-256 and a hash of the projection at that row. Both are chained log rows
// (source `redaction` / `checkpoint`, job id 0) whose raw body is the record as JSON.
import { hash } from 'node:crypto'
import type { LogRow } from '../domain/types.js'

/** One erased row as its redaction record names it: seq, hash, and `remainderDigest` of the row after erasure. */
export type RedactedEntry = [seq: number, hash: string | null, digest: string]

export interface RedactionRecord {
  /** The jobs whose personal data was erased. */
  jobs: number[]
  /** Why, as the operator gave it (never personal data), or null. */
  reason: string | null
  /** `retention` when the retention option erased it, `request` when redact was asked for. */
  by: 'request' | 'retention'
  rows: RedactedEntry[]
  /** Quarantined bodies of those jobs that were erased too, by id. */
  quarantine: number[]
}

export interface CheckpointRecord {
  /** The last archived row: every row up to it was moved to the archive file. */
  through: number
  /** That row's hash, which the first row after it links to. */
  hash: string | null
  /** How many rows the file holds. */
  rows: number
  /** The file's name as it was written (no directory) and the SHA-256 of its bytes. */
  file: string
  sha256: string
  /** `projectionHash` of the projection as of `through`, kept in `checkpoint_jobs`. */
  projection: string
  /** How many jobs that projection has. */
  jobs: number
}

/**
 * A digest of what an erased row keeps, every stored field but the erased ones: its redaction
 * record holds it, so a version 1 row, whose hash can no longer be recomputed once its body's
 * SHA-256 is gone, is still covered field by field (and a version 2 row doubly).
 */
export function remainderDigest (row: LogRow): string {
  return hash('sha256', JSON.stringify([row.seq, row.chainVersion, row.receivedAt, row.outcome, row.sameAs, row.source,
    row.jobId, row.eventType, row.jobStatus, row.jobName, row.guardianPhone, row.contentHash, row.prevHash, row.hash]), 'hex')
}

const isInt = (value: unknown): value is number => Number.isSafeInteger(value)
const isHash = (value: unknown): value is string => typeof value === 'string' && /^[0-9a-f]{64}$/.test(value)

/** A redaction record read from a row's body, or undefined when the body is not one. */
export function readRedaction (body: Buffer): RedactionRecord | undefined {
  const value = parse(body)?.redaction as Partial<RedactionRecord> | undefined
  if (typeof value !== 'object' || value === null) return undefined
  const { jobs, reason, by, rows, quarantine } = value
  if (!Array.isArray(jobs) || !jobs.every(isInt) || !(reason === null || typeof reason === 'string') ||
    (by !== 'request' && by !== 'retention') || !Array.isArray(quarantine) || !quarantine.every(isInt) || !Array.isArray(rows) ||
    !rows.every((entry) => Array.isArray(entry) && entry.length === 3 && isInt(entry[0]) && (entry[1] === null || isHash(entry[1])) && isHash(entry[2]))) {
    return undefined
  }
  return { jobs, reason, by, rows, quarantine }
}

/** A checkpoint record read from a row's body, or undefined when the body is not one. */
export function readCheckpoint (body: Buffer): CheckpointRecord | undefined {
  const value = parse(body)?.checkpoint as Partial<CheckpointRecord> | undefined
  if (typeof value !== 'object' || value === null) return undefined
  const { through, hash: last, rows, file, sha256, projection, jobs } = value
  if (!isInt(through) || !(last === null || isHash(last)) || !isInt(rows) || typeof file !== 'string' || !isHash(sha256) ||
    !isHash(projection) || !isInt(jobs)) return undefined
  return { through, hash: last ?? null, rows, file, sha256, projection, jobs }
}

function parse (body: Buffer): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(body.toString('utf8'))
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}
