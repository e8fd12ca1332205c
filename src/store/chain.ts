import { createHmac, hash } from 'node:crypto'
import type { RowOutcome, RowSource } from '../domain/types.js'

/** The previous hash of the first row of a chain. */
export const GENESIS = ''

/**
 * The chain version every new row is written with (docs/design.md, "The chain's versions"):
 * 1 for rows written before erasure existed, 2 since.
 */
export const CHAIN_VERSION = 2

/** The fields of a log row that its hash covers, besides the previous row's hash. */
export interface ChainedFields {
  seq: number
  receivedAt: number
  /** Version 1 only: version 2 covers the signature through `contentHash`. */
  signature: string
  /**
   * Version 1: SHA-256 of the raw body. Version 2: `bodyCommitment` for a callback or an API
   * row, SHA-256 of the record for a redaction or a checkpoint.
   */
  contentHash: string
  outcome: RowOutcome
  sameAs: number | null
  /** Default `callback`. */
  source?: RowSource | undefined
  /** Default 1. */
  chainVersion?: number | undefined
  /** Version 2 covers the fields parsed from the body too, so that they survive its erasure. */
  jobId?: number | undefined
  eventType?: string | undefined
  jobStatus?: string | undefined
  jobName?: string | undefined
}

/**
 * A row's hash: SHA-256 over the previous row's hash and the row's own stored fields, encoded as
 * a JSON array so no two different rows encode alike.
 *
 * Version 1: fields parsed from the raw body (job id, type, status, name, phone) are not hashed;
 * verify checks them against the body instead. A callback row's array has no source, so rows
 * written before sources existed keep their hash; any other source is the array's last element.
 *
 * Version 2 starts with the number 2 (a version 1 array starts with a string) and covers the
 * parsed fields but the phone, so that they are still covered once the body is erased; the body
 * and the signature are covered through the salted `contentHash`, and the phone through the body.
 */
export function rowHash (prevHash: string, row: ChainedFields): string {
  if ((row.chainVersion ?? 1) === 1) {
    const fields: unknown[] = [prevHash, row.seq, row.receivedAt, row.signature, row.contentHash, row.outcome, row.sameAs]
    if (row.source !== undefined && row.source !== 'callback') fields.push(row.source)
    return hash('sha256', JSON.stringify(fields), 'hex')
  }
  return hash('sha256', JSON.stringify([2, prevHash, row.seq, row.receivedAt, row.contentHash, row.outcome, row.sameAs,
    row.source ?? 'callback', row.jobId, row.eventType, row.jobStatus, row.jobName]), 'hex')
}

/**
 * Version 2's commitment to a row's signature and raw body: HMAC-SHA256 keyed by the row's own
 * random salt. While the salt is stored, verify recomputes it from the body; erasure deletes the
 * salt with the body, and then nothing stored lets anyone test a guessed body against it, not
 * even with the callback secret.
 */
export function bodyCommitment (salt: Buffer, signature: string, rawBody: Buffer | string): string {
  return createHmac('sha256', salt).update(`${signature.length}:${signature}:`).update(rawBody).digest('hex')
}
