import { exportLog } from '../../log/export.js'
import { defineCommand, UsageError, wholeNumber } from '../command.js'
import { withLog } from '../open-log.js'
import { progressLine } from '../render.js'

const SEQ = /^\d+$/
const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?$/

/** An export bound as given on the command line: a seq, or a received-at time in milliseconds. */
export type ExportBound = { seq: number } | { time: number }

/**
 * Reads `--from`/`--to`: a whole number is a seq; an ISO 8601 date or date-time is a received-at
 * time, UTC unless it carries an offset (the log prints UTC). Both ends are inclusive, so an
 * upper bound covers the whole unit it names: `--to 2026-11-26` takes that day to its last
 * millisecond, `--to 2026-11-26T23:15` that minute. Returns undefined for anything else.
 */
export function parseExportBound (text: string, end: 'from' | 'to'): ExportBound | undefined {
  if (SEQ.test(text)) {
    const seq = Number(text)
    return Number.isSafeInteger(seq) ? { seq } : undefined
  }
  const m = ISO_8601.exec(text)
  if (m === null) return undefined
  const [, year, month, day, hour, minute, second, fraction, offset] = m
  const ms = (fraction ?? '').padEnd(3, '0').slice(0, 3)
  const iso = `${year}-${month}-${day}T${hour ?? '00'}:${minute ?? '00'}:${second ?? '00'}.${ms}${offset ?? 'Z'}`
  const start = Date.parse(iso)
  // Date.parse rolls 2026-02-30 over to March; a date that does not exist is a typo.
  if (Number.isNaN(start) || new Date(Date.UTC(Number(year), Number(month) - 1, Number(day))).getUTCDate() !== Number(day) ||
    Number(hour ?? 0) > 23 || Number(minute ?? 0) > 59 || Number(second ?? 0) > 59) return undefined
  if (end === 'from') return { time: start }
  const unit = hour === undefined
    ? 86_400_000
    : second === undefined ? 60_000 : fraction === undefined ? 1000 : 10 ** Math.max(3 - fraction.length, 0)
  return { time: start + unit - 1 }
}

function bound (name: 'from' | 'to', value: string | undefined): ExportBound | undefined {
  if (value === undefined) return undefined
  const parsed = parseExportBound(value, name)
  if (parsed === undefined) throw new UsageError(`--${name} must be a seq or an ISO 8601 date or time, got "${value}"`)
  return parsed
}

export const exportCommand = defineCommand({
  summary: 'write the event log with outcomes and hash columns, as NDJSON or CSV, for an audit',
  usage: 'Usage: g2sentry export --db FILE|URL [--job N] [--from SEQ|TIME] [--to SEQ|TIME] [--format ndjson|csv]',
  help: `Writes the event log to stdout in seq order, one row per delivery, for an audit or a spreadsheet:
seq, receivedAt, jobId, eventType, jobStatus, jobName, guardianPhone, outcome, source (callback, or
api for a row from the Partner API), sameAs, signature, contentHash, prevHash, hash and body (the
raw body as received).
  --job     only this job's rows
  --from    the first row: a seq, or a received-at time in ISO 8601 (2026-11-26, 2026-11-26T23:15Z)
  --to      the last row, inclusive, given the same way; a date or a minute covers all of it
  --format  ndjson (default), or csv: a header row, RFC 4180 quoting and line ends, a UTF-8 byte
            order mark, and a ' before any cell that starts with = + - @, tab or CR, so that a
            spreadsheet shows it instead of running it as a formula (phone numbers show as '+1…;
            ndjson keeps every value exact)
Times without an offset are UTC. A retried quarantine row keeps the time it was first received.
On a terminal, a long export shows its progress on stderr. The rows hold guardian phone numbers:
personal data.`,
  options: {
    db: { type: 'string' },
    job: { type: 'string' },
    from: { type: 'string' },
    to: { type: 'string' },
    format: { type: 'string' }
  },
  async run (values, { write }) {
    const format = values.format ?? 'ndjson'
    if (format !== 'ndjson' && format !== 'csv') throw new UsageError('--format must be ndjson or csv')
    const jobId = wholeNumber('job', values.job)
    const from = bound('from', values.from)
    const to = bound('to', values.to)
    return withLog(values.db, 'read', async (store) => {
      // Progress is for a person watching a terminal; a pipe or a log file gets nothing.
      const bar = process.stderr.isTTY ? progressLine(process.stderr) : undefined
      try {
        await exportLog(store, {
          jobId,
          fromSeq: from !== undefined && 'seq' in from ? from.seq : undefined,
          toSeq: to !== undefined && 'seq' in to ? to.seq : undefined,
          fromTime: from !== undefined && 'time' in from ? from.time : undefined,
          toTime: to !== undefined && 'time' in to ? to.time : undefined,
          format,
          write,
          progress: bar?.update
        })
      } finally {
        bar?.clear()
      }
      return 0
    })
  }
})
