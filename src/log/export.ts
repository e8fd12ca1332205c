import { stringify } from 'csv-stringify/sync'
import { readLogStream } from './read-log.js'
import type { G2SentryStore } from '../store/contract.js'
import type { LogRow } from '../domain/types.js'

/** The columns of an export, in order: the CSV header and the NDJSON keys. */
export const EXPORT_COLUMNS = ['seq', 'receivedAt', 'jobId', 'eventType', 'jobStatus', 'jobName', 'guardianPhone',
  'outcome', 'source', 'sameAs', 'signature', 'contentHash', 'prevHash', 'hash', 'chainVersion', 'redactedBy', 'body'] as const

export interface ExportOptions {
  /** Only this job's rows. */
  jobId?: number | undefined
  /** First and last seq to export, inclusive. */
  fromSeq?: number | undefined
  toSeq?: number | undefined
  /** Received-at bounds in milliseconds since the epoch, inclusive. */
  fromTime?: number | undefined
  toTime?: number | undefined
  format: 'ndjson' | 'csv'
  /** Receives the export in chunks; when it returns a promise, the export waits for it (backpressure). */
  write: (chunk: string) => void | Promise<unknown>
  /** Called as rows are read: how far into the requested seq range the export is, and the range's size. */
  progress?: ((done: number, total: number) => void) | undefined
}

export interface ExportReport {
  /** Rows written. */
  rows: number
}

/** Chunks are gathered up to about this many characters, so a long export is not one write per row. */
const CHUNK_CHARS = 64 * 1024

/** One log row as the CLI prints it (replay and export NDJSON, export CSV columns). */
export const logRecord = (row: LogRow) => ({
  seq: row.seq,
  receivedAt: new Date(row.receivedAt).toISOString(),
  jobId: row.jobId,
  eventType: row.eventType,
  jobStatus: row.jobStatus,
  jobName: row.jobName,
  guardianPhone: row.guardianPhone,
  outcome: row.outcome,
  source: row.source,
  sameAs: row.sameAs,
  signature: row.signature,
  contentHash: row.contentHash,
  prevHash: row.prevHash,
  hash: row.hash,
  chainVersion: row.chainVersion,
  /** The seq of the redaction record that erased the row's body and phone (docs/design.md, "Erasure"), or null. */
  redactedBy: row.redactedBy,
  body: row.rawBody.toString('utf8')
})

const CSV_OPTIONS = {
  columns: [...EXPORT_COLUMNS],
  // RFC 4180 ends records with CRLF; spreadsheets read it either way.
  record_delimiter: 'windows',
  // Without a byte order mark, Excel reads a UTF-8 file as the local code page and garbles
  // every non-ASCII job name.
  bom: true,
  // A cell starting with = + - @ tab or CR runs as a formula in a spreadsheet: a guardian phone
  // "+1…" is one, and the job name comes from outside. Such cells get a leading apostrophe.
  escape_formulas: true
} as const

/**
 * Writes the event log, in seq order, as NDJSON or CSV (header row, RFC 4180 quoting, formula
 * injection defused), one row per delivery with its outcome and hash-chain columns. Rows are
 * read a page at a time and each chunk waits for `write`, so memory stays flat however long the
 * log is. Time bounds are checked row by row over the whole seq range: a retried quarantine row
 * keeps the time it was first received, so received-at does not always grow with seq.
 */
export async function exportLog (store: G2SentryStore, options: ExportOptions): Promise<ExportReport> {
  const { jobId, fromTime, toTime, format, write, progress } = options
  const afterSeq = Math.max((options.fromSeq ?? 1) - 1, 0)
  const head = (await store.chainHead())?.seq ?? 0
  const total = Math.max(Math.min(options.toSeq ?? head, head) - afterSeq, 0)

  let rows = 0
  let pending: Array<ReturnType<typeof logRecord>> = []
  let pendingText = ''
  let pendingChars = 0
  const flush = async () => {
    const first = rows === pending.length
    const chunk = format === 'csv' ? stringify(pending, { ...CSV_OPTIONS, header: first, bom: first }) : pendingText
    pending = []
    pendingText = ''
    pendingChars = 0
    if (chunk !== '') await write(chunk)
  }

  for await (const row of readLogStream(store, { jobId, afterSeq, toSeq: options.toSeq })) {
    progress?.(row.seq - afterSeq, total)
    if ((fromTime !== undefined && row.receivedAt < fromTime) || (toTime !== undefined && row.receivedAt > toTime)) continue
    const fields = logRecord(row)
    rows++
    if (format === 'csv') pending.push(fields)
    else pendingText += JSON.stringify(fields) + '\n'
    pendingChars += row.rawBody.length + 400
    if (pendingChars >= CHUNK_CHARS) await flush()
  }
  // A CSV export always has its header, even with no rows.
  if (rows === 0 && format === 'csv') await write(stringify([], { ...CSV_OPTIONS, header: true }))
  else await flush()
  return { rows }
}
