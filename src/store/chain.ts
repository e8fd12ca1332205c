import { hash } from 'node:crypto'
import type { EventSource, Outcome } from '../domain/types.js'

/** The previous hash of the first row of a chain. */
export const GENESIS = ''

/** The fields of a log row that its hash covers, besides the previous row's hash. */
export interface ChainedFields {
  seq: number
  receivedAt: number
  signature: string
  /** SHA-256 of the raw body: the body is covered through it, and verify checks it against the bytes. */
  contentHash: string
  outcome: Outcome
  sameAs: number | null
  /** Default `callback`. */
  source?: EventSource | undefined
}

/**
 * A row's hash: SHA-256 over the previous row's hash and the row's own stored fields, encoded as
 * a JSON array so no two different rows encode alike. Fields parsed from the raw body (job id,
 * type, status, name, phone) are not hashed; verify checks them against the body instead.
 * A callback row's array has no source, so rows written before sources existed (migration 005)
 * keep their hash; any other source is the array's last element, so a row cannot change source
 * without breaking the chain.
 */
export function rowHash (prevHash: string, row: ChainedFields): string {
  const fields: unknown[] = [prevHash, row.seq, row.receivedAt, row.signature, row.contentHash, row.outcome, row.sameAs]
  if (row.source !== undefined && row.source !== 'callback') fields.push(row.source)
  return hash('sha256', JSON.stringify(fields), 'hex')
}
