// Verify through erasure (docs/design.md, "Verify through erasure"): each redaction record and the
// rows it erased must name each other exactly. The per-row checks (audit-check.ts) already found
// an erased row that holds something again, a version 2 row whose fields changed, and a row
// emptied with no record at all (its body no longer matches); this pass finds a record naming a
// row it did not erase, a row claiming a record that does not name it, and an erased row (of
// either version) whose hash or kept fields differ from what its record says.
import type { LogLifecycle } from '../store/contract.js'
import { readRedaction, remainderDigest } from './records.js'

/** What the pass found. */
export interface RedactionAudit {
  /** Redaction records in the log. */
  records: number
  /** Erased rows in the log, and how many of them were written in chain version 1. */
  rows: number
  version1Rows: number
  /** Every mismatch, by the seq of the row (or record) concerned. */
  problems: Array<{ seq: number; problem: string }>
}

const PAGE = 500

/**
 * Checks every redaction record against the rows that name it. Rows at or before
 * `archivedThrough` may be gone (moved to an archive file): a record naming one is not a problem.
 */
export async function auditRedactions (
  store: Pick<LogLifecycle, 'readRecords' | 'redactedBy' | 'countRedacted'>, archivedThrough = 0
): Promise<RedactionAudit> {
  const audit: RedactionAudit = { records: 0, rows: 0, version1Rows: 0, problems: [] }
  let matched = 0
  for (let after = 0; ;) {
    const records = await store.readRecords({ source: 'redaction', afterSeq: after, limit: PAGE })
    for (const row of records) {
      audit.records++
      const record = readRedaction(row.rawBody)
      // A record that is not one is reported by the row checks (the chain).
      if (record === undefined) continue
      const erased = new Map((await store.redactedBy(row.seq)).map((entry) => [entry.seq, entry]))
      matched += erased.size
      for (const [seq, hash, digest] of record.rows) {
        const target = erased.get(seq)
        erased.delete(seq)
        if (target === undefined) {
          if (seq > archivedThrough) audit.problems.push({ seq: row.seq, problem: `redaction record ${row.seq} names row ${seq}, which it did not erase` })
          continue
        }
        const problem = seq >= row.seq
          ? `row ${seq} comes after the redaction record ${row.seq} that names it`
          : !record.jobs.includes(target.jobId)
              ? `row ${seq} is of job ${target.jobId}, which redaction record ${row.seq} does not name`
              : target.hash !== hash
                ? `the hash of erased row ${seq} differs from its redaction record's`
                : remainderDigest(target) !== digest ? `a field of erased row ${seq} differs from what its redaction record kept` : null
        if (problem !== null) audit.problems.push({ seq, problem })
        if (target.chainVersion === 1) audit.version1Rows++
      }
      for (const seq of erased.keys()) audit.problems.push({ seq, problem: `row ${seq} names redaction record ${row.seq}, which does not name it` })
    }
    if (records.length < PAGE) break
    after = (records[records.length - 1] as { seq: number }).seq
  }
  audit.rows = await store.countRedacted()
  if (audit.rows !== matched) {
    audit.problems.push({ seq: 0, problem: `${audit.rows - matched} erased rows name no redaction record` })
  }
  return audit
}
