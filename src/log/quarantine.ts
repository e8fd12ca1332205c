import { decodeCallback } from '../domain/decode-callback.js'
import { paged } from './paged.js'
import { readLogStream } from './read-log.js'
import type { G2SentryStore } from '../store/contract.js'
import type { AppendResult, JobEvent, Outcome, QuarantineReason, QuarantineRow } from '../domain/types.js'
import { verifySignature } from '../domain/verify-signature.js'

export interface RetryQuarantineOptions {
  /** The callback secrets in use; a body none of them signs is not appended, as in live delivery. */
  secrets: readonly string[]
  /** Retry only these quarantine ids (default: every pending one). */
  ids?: readonly number[] | undefined
  /** Called after each body is appended, as the callback route calls `onEvent` (e.g. to publish the change). */
  onAppend?: ((appended: AppendResult & { id: number; event: JobEvent; receivedAt: number }) => void | Promise<void>) | undefined
}

/** What `retryQuarantine` did with each quarantined body it looked at. */
export interface RetryReport {
  /** Bodies that now pass, each with the log row it became and the outcome that row got. */
  retried: Array<{ id: number; seq: number; jobId: number; outcome: Outcome }>
  /** Bodies the current schema still refuses; they stay quarantined. */
  stillInvalid: Array<{ id: number; reason: QuarantineReason; detail: string }>
  /** Ids of bodies that none of the given secrets signs; they stay quarantined. */
  unsigned: number[]
  /** Asked-for ids that an earlier retry already appended, with that seq; nothing is appended again. */
  alreadyRetried: Array<{ id: number; seq: number }>
  /** Asked-for ids that are not in the quarantine. */
  notFound: number[]
  /** Ids of bodies a redaction erased: nothing is left to retry. */
  redacted: number[]
}

/** The quarantined bodies in id order, a page at a time; `pending` leaves out those a retry appended. */
export function quarantineRows (store: G2SentryStore, options: { pending: boolean }): AsyncGenerator<QuarantineRow> {
  return paged((afterId: number | undefined, limit) => store.listQuarantine({ afterId, limit, pending: options.pending }), (row) => row.id, 500)
}

/**
 * Re-checks quarantined bodies with the rules of live delivery (the signature against `secrets`,
 * then the current decoder and schema) and appends each one that now passes, with its original
 * signature and received-at time. The append marks the body retried, with the seq it became, in
 * the same transaction (docs/design.md, "Decisions"): two processes retrying at once append each
 * body once, the second learning which seq the first made of it. Use it after a schema was too
 * strict. A body appended but never marked by an older version (a crash in between) is found in
 * its job's log and marked with that row instead.
 */
export async function retryQuarantine (store: G2SentryStore, options: RetryQuarantineOptions): Promise<RetryReport> {
  const report: RetryReport = { retried: [], stillInvalid: [], unsigned: [], alreadyRetried: [], notFound: [], redacted: [] }
  for await (const row of candidates(store, options.ids, report)) {
    if (row.redactedBy !== null) {
      report.redacted.push(row.id)
      continue
    }
    if (!verifySignature(row.rawBody, row.signature, options.secrets).valid) {
      report.unsigned.push(row.id)
      continue
    }
    const decoded = decodeCallback(row.rawBody)
    if (!decoded.ok) {
      report.stillInvalid.push({ id: row.id, reason: decoded.reason, detail: decoded.detail })
      continue
    }
    const earlier = await appendedBefore(store, row, decoded.event.jobId)
    if (earlier !== undefined) {
      // Either another process retried it since this one listed it (it is marked now), or an
      // older version appended it and crashed before marking it.
      const [now] = await store.listQuarantine({ afterId: row.id - 1, limit: 1 })
      if (now?.retriedSeq != null) {
        report.alreadyRetried.push({ id: row.id, seq: now.retriedSeq })
        continue
      }
      await store.resolveQuarantine(row.id, earlier.seq)
      report.retried.push({ id: row.id, seq: earlier.seq, jobId: earlier.jobId, outcome: earlier.outcome as Outcome })
      continue
    }
    let result
    try {
      result = await store.append({ ...decoded.event, rawBody: row.rawBody, signature: row.signature, receivedAt: row.receivedAt, quarantineId: row.id })
    } catch (error) {
      if ((error as { code?: string }).code !== 'FST_G2SENTRY_QUARANTINE_ALREADY_RETRIED') throw error
      const [marked] = await store.listQuarantine({ afterId: row.id - 1, limit: 1 })
      report.alreadyRetried.push({ id: row.id, seq: marked?.retriedSeq as number })
      continue
    }
    report.retried.push({ id: row.id, seq: result.seq, jobId: result.jobId, outcome: result.outcome })
    await options.onAppend?.({ ...result, id: row.id, event: decoded.event, receivedAt: row.receivedAt })
  }
  return report
}

/** The pending rows to retry, in id order: all of them, or the asked-for ids (others go to the report). */
async function * candidates (store: G2SentryStore, ids: readonly number[] | undefined, report: RetryReport): AsyncGenerator<QuarantineRow> {
  if (ids === undefined) {
    yield * quarantineRows(store, { pending: true })
    return
  }
  for (const id of [...new Set(ids)].sort((a, b) => a - b)) {
    const [row] = await store.listQuarantine({ afterId: id - 1, limit: 1 })
    if (row?.id !== id) report.notFound.push(id)
    else if (row.retriedSeq !== null) report.alreadyRetried.push({ id, seq: row.retriedSeq })
    else yield row
  }
}

/**
 * The log row a quarantined body already became, if any: same bytes, signature and received-at
 * time in its job's rows. A live redelivery of the same body has its own received-at time, so it
 * is not mistaken for this one.
 */
async function appendedBefore (store: G2SentryStore, row: QuarantineRow, jobId: number) {
  for await (const logged of readLogStream(store, { jobId })) {
    if (logged.receivedAt === row.receivedAt && logged.signature === row.signature && logged.rawBody.equals(row.rawBody)) return logged
  }
  return undefined
}
