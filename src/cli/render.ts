// How the CLI shows things: table layout, NDJSON rows, and the reports of rebuild, verify and a
// quarantine retry.
import type { RedactionAudit } from '../log/audit-redactions.js'
import { isUtf8 } from 'node:buffer'
import { logRecord } from '../log/export.js'
import type { RetryReport } from '../log/quarantine.js'
import type { LogRow, QuarantineRow } from '../domain/types.js'
import type { RebuildReport } from '../store/contract.js'

// C0 controls, DEL and C1 controls (ESC starts a terminal command: a title change, a line erase),
// the line and paragraph separators, and the bidirectional controls that reorder what is shown.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g
const NAMED: Record<string, string> = { '\t': '\\t', '\n': '\\n', '\r': '\\r' }

/**
 * `text` with every character that would act on the terminal instead of showing written out
 * (`\x1b`, `\r`, `\u202e`): table cells come from signed bodies and request headers, which
 * are input from outside. A backslash is left as it is; --format ndjson has every value exact.
 */
export const visible = (text: string): string => text.replace(UNSAFE, (c) => {
  const code = c.charCodeAt(0)
  return NAMED[c] ?? (code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`)
})

/**
 * Cells padded to their column's width (0: the last column, as long as it is), joined by a
 * space, each with its control characters written out.
 */
export const padded = (widths: readonly number[], cells: readonly string[]): string =>
  cells.map(visible).map((cell, i) => (widths[i] ?? 0) > 0 ? cell.padEnd(widths[i] as number) : cell).join(' ').trimEnd()

// The table is for reading; --format ndjson has every detail whole. Clipped once written out,
// so the column keeps its width.
const clip = (text: string, width: number) => text.length > width ? text.slice(0, width - 1) + '…' : text

const LOG_COLUMNS = ['seq', 'receivedAt', 'jobId', 'eventType', 'jobStatus', 'outcome', 'source', 'jobName'] as const
const LOG_WIDTHS = [8, 24, 8, 15, 10, 11, 9, 0]

/** The header of `replay --format table`. */
export const logTableHeader = (): string => padded(LOG_WIDTHS, LOG_COLUMNS)

/** One log row as a line of `replay --format table`. */
export const logTableRow = (row: LogRow): string => padded(LOG_WIDTHS, [String(row.seq), new Date(row.receivedAt).toISOString(),
  String(row.jobId), row.eventType, row.jobStatus, row.outcome, row.source,
  row.redactedBy === null ? row.jobName : `${row.jobName} [erased by seq ${row.redactedBy}]`])

/** One log row as an NDJSON line (replay; the same record as an export's). */
export const logNdjsonRow = (row: LogRow): string => JSON.stringify(logRecord(row))

const QUARANTINE_COLUMNS = ['id', 'receivedAt', 'reason', 'detail', 'contentType', 'bytes', 'retriedSeq'] as const
const QUARANTINE_WIDTHS = [6, 24, 15, 40, 31, 7, 0]

/** The header of `quarantine list` as a table. */
export const quarantineTableHeader = (): string => padded(QUARANTINE_WIDTHS, QUARANTINE_COLUMNS)

/** One quarantined body as a line of `quarantine list`. */
export const quarantineTableRow = (row: QuarantineRow): string => padded(QUARANTINE_WIDTHS, [String(row.id),
  new Date(row.receivedAt).toISOString(), row.reason, clip(visible(row.detail), 40), row.contentType ?? '', String(row.rawBody.length),
  row.retriedSeq === null ? '' : String(row.retriedSeq)])

/** One quarantined body as an NDJSON line, with the body as text. */
export const quarantineNdjsonRow = (row: QuarantineRow): string => JSON.stringify({
  id: row.id,
  receivedAt: new Date(row.receivedAt).toISOString(),
  reason: row.reason,
  detail: row.detail,
  contentType: row.contentType,
  bytes: row.rawBody.length,
  signature: row.signature,
  retriedSeq: row.retriedSeq,
  body: row.rawBody.toString('utf8'),
  // A body refused as "not UTF-8" cannot be shown as text without losing bytes.
  ...(isUtf8(row.rawBody) ? {} : { bodyBase64: row.rawBody.toString('base64') })
})

/** What a rebuild (or verify's replay) found, line by line, the longest lists cut at 20. */
export function describeRebuild (report: RebuildReport, verb: string): string[] {
  const lines = [`${verb} ${report.events} events into ${report.jobs} jobs`]
  if (report.differingJobs.length > 0) {
    lines.push(`${report.differingJobs.length} jobs differ from the stored projection: ${report.differingJobs.slice(0, 20).join(', ')}${report.differingJobs.length > 20 ? ', …' : ''}`)
  }
  for (const m of report.outcomeMismatches.slice(0, 20)) lines.push(`seq ${m.seq}: logged as ${m.stored}, replays as ${m.replayed}`)
  if (report.outcomeMismatches.length > 20) lines.push(`… ${report.outcomeMismatches.length - 20} more outcome differences`)
  return lines
}

/** What a quarantine retry did with each body, and the totals. */
export function describeRetry (report: RetryReport): string[] {
  const lines = [
    ...report.retried.map((r) => `id ${r.id}: appended as seq ${r.seq} (job ${r.jobId}, ${r.outcome})`),
    ...report.stillInvalid.map((r) => `id ${r.id}: still invalid (${r.reason}: ${r.detail})`),
    ...report.unsigned.map((id) => `id ${id}: signed by none of the given secrets, not appended`),
    ...report.alreadyRetried.map((r) => `id ${r.id}: already retried as seq ${r.seq}`),
    ...report.notFound.map((id) => `id ${id}: not in the quarantine`),
    ...report.redacted.map((id) => `id ${id}: erased by a redaction, nothing to retry`)
  ]
  lines.push(`retried: ${report.retried.length} appended, ${report.stillInvalid.length} still invalid, ${report.unsigned.length} unsigned`)
  return lines
}

const LARGE_EXPORT = 10_000
const PROGRESS_EVERY_MS = 200

/** One line on a terminal, rewritten in place, for an export long enough to wait for. */
export function progressLine (tty: NodeJS.WriteStream) {
  let width = 0
  let drawnAt = 0
  return {
    update (done: number, total: number): void {
      if (total <= LARGE_EXPORT) return
      const now = Date.now()
      if (width > 0 && now - drawnAt < PROGRESS_EVERY_MS) return
      drawnAt = now
      const line = `exporting ${done.toLocaleString('en-US')} / ${total.toLocaleString('en-US')} (${Math.floor(done * 100 / total)}%)`
      tty.write('\r' + line.padEnd(width))
      width = Math.max(width, line.length)
    },
    clear (): void {
      if (width > 0) tty.write('\r' + ' '.repeat(width) + '\r')
    }
  }
}

/**
 * What verify says of erasure: how many rows the redaction records erased, the mismatches, and
 * plainly what remains of rows erased from before chain version 2.
 */
export function describeRedactions (redactions: RedactionAudit | null): string[] {
  if (redactions === null || (redactions.records === 0 && redactions.rows === 0)) return []
  const { records, rows, version1Rows, problems } = redactions
  const lines = problems.length === 0
    ? [`erasure: ok, ${rows} ${rows === 1 ? 'row' : 'rows'} erased by ${records} redaction ${records === 1 ? 'record' : 'records'}, each as its record says`]
    : [`erasure: BROKEN, ${problems.length} ${problems.length === 1 ? 'mismatch' : 'mismatches'} between the redaction records and the erased rows:`,
        ...problems.slice(0, 10).map(({ seq, problem }) => `  seq ${seq}: ${problem}`), ...(problems.length > 10 ? ['  …'] : [])]
  if (version1Rows > 0) {
    lines.push(`  ${version1Rows} erased ${version1Rows === 1 ? 'row was' : 'rows were'} written before chain version 2: pseudonymised, not erased. ` +
      'Their body, signature and body hash are gone, but each row\'s hash still commits to the body\'s hash and signature, so ' +
      'whoever holds the database and the callback secret can still confirm a guessed body (a phone) against it.')
  }
  return lines
}
