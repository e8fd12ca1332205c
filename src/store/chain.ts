import { hash } from 'node:crypto'
import type { Outcome } from '../domain/types.js'

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
}

/**
 * A row's hash: SHA-256 over the previous row's hash and the row's own stored fields, encoded as
 * a JSON array so no two different rows encode alike. Fields parsed from the raw body (job id,
 * type, status, name, phone) are not hashed; verify checks them against the body instead.
 */
export function rowHash (prevHash: string, row: ChainedFields): string {
  return hash('sha256', JSON.stringify([prevHash, row.seq, row.receivedAt, row.signature, row.contentHash, row.outcome, row.sameAs]), 'hex')
}
