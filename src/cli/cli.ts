import { once } from 'node:events'
import { isUtf8 } from 'node:buffer'
import { existsSync } from 'node:fs'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { auditLog } from '../log/audit.js'
import { exportLog, logRecord, parseExportBound, type ExportBound } from '../log/export.js'
import { retryQuarantine, type RetryReport } from '../log/quarantine.js'
import { readLogStream } from '../log/read-log.js'
import { DEVELOPMENT_SECRET, simulate, simulateRandom } from '../simulator/simulate.js'
import { isPostgresUrl, openStore } from '../store/open-store.js'
import type { G2SentryStore, LogRow, QuarantineRow, RebuildReport } from '../domain/types.js'

const HELP: Record<string, string> = {
  main: `Usage: g2sentry <command> [options]

Commands:
  replay      print the event log, whole or for one job (NDJSON or a table)
  export      write the event log with outcomes and hash columns, as NDJSON or CSV, for an audit
  rebuild     recompute the job projection from the log and store it
  verify      check the hash chain, the signatures and the projection (exit 1 on any problem)
  quarantine  list the signed bodies refused as unreadable (400, 422), or retry them
  simulate    send signed example callbacks to a running server

Run g2sentry <command> --help for its options.`,
  replay: `Usage: g2sentry replay --db FILE|URL [--job N] [--from SEQ] [--to SEQ] [--format ndjson|table]

Prints the event log in seq order, one row per delivery, with its outcome, the raw body and its
signature: what G2 Sentry told us, and when. The rows hold guardian phone numbers: personal data.`,
  export: `Usage: g2sentry export --db FILE|URL [--job N] [--from SEQ|TIME] [--to SEQ|TIME] [--format ndjson|csv]

Writes the event log to stdout in seq order, one row per delivery, for an audit or a spreadsheet:
seq, receivedAt, jobId, eventType, jobStatus, jobName, guardianPhone, outcome, sameAs, signature,
contentHash, prevHash, hash and body (the raw body as received).
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
  quarantine: `Usage: g2sentry quarantine list  --db FILE|URL [--all] [--format table|ndjson]
       g2sentry quarantine retry --db FILE|URL [--secret SECRET]... [--id N]...

A signed body that is not a readable callback (400: not JSON, 422: failing the schema) is kept in
the quarantine, outside the log.
  list   the pending bodies (--all: also those retried, with the seq each became), as a table or
         as NDJSON with the body as text
  retry  checks each pending body (or only each --id) again as a live delivery would: its
         signature against the secrets (--secret, repeatable; default $G2SENTRY_CALLBACK_SECRET
         and $G2SENTRY_CALLBACK_SECRET_PREVIOUS), then the current schema. What now passes is
         appended to the log with the time it was first received; the rest stays quarantined.
         A body is never appended twice. Exit code 1 when an --id is not in the quarantine.`,
  rebuild: `Usage: g2sentry rebuild --db FILE|URL

Replays the whole log through the projection and replaces the jobs table with the result.`,
  verify: `Usage: g2sentry verify --db FILE|URL [--secret SECRET]...

Checks the log as evidence, changing nothing:
  - the hash chain: every row links to the one before it, its stored fields match its hash and
    its raw body, and no row is missing (the first broken seq is reported);
  - signatures: with --secret (repeat it for every secret in use over the log's lifetime), that
    one of them signs every row's raw body;
  - the projection: a replay of the whole log equals the stored jobs table, and every row
    replays to the outcome it was given live.
Exit code 0 when all hold, 1 otherwise.`,
  simulate: `Usage: g2sentry simulate [--url URL] [--secret SECRET] [--first-job N] [--seed S --jobs N]

Signs and posts a few job lifecycles (with a redelivery, a reordering, a late event and a
withdrawal) to a running receiver, printing what each delivery got. With --seed, generates
--jobs random lifecycles instead, delivers each event 1-7 times in a shuffled order, and checks
through the job routes that every job ends in its true status.
  --url        callback URL (default http://127.0.0.1:3000/callbacks/g2sentry)
  --secret     callback secret (default $G2SENTRY_CALLBACK_SECRET, else the development secret)
  --first-job  first job id to use (default 101)
  --seed       seed of a generated schedule (same seed, same deliveries)
  --jobs       jobs in a generated schedule (default 20)`
}

const OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  db: { type: 'string' },
  job: { type: 'string' },
  from: { type: 'string' },
  to: { type: 'string' },
  format: { type: 'string' },
  url: { type: 'string' },
  secret: { type: 'string', multiple: true },
  all: { type: 'boolean' },
  id: { type: 'string', multiple: true },
  'first-job': { type: 'string' },
  seed: { type: 'string' },
  jobs: { type: 'string' }
} satisfies ParseArgsConfig['options']

class UsageError extends Error {}

function positiveInteger (name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`--${name} must be a whole number, got "${value}"`)
  return n
}

async function open (db: string | undefined) {
  if (db === undefined) throw new UsageError('--db FILE|URL is required')
  if (!isPostgresUrl(db) && !existsSync(db)) throw new UsageError(`no database at ${db}`)
  return openStore(db)
}

const NDJSON_ROW = (row: LogRow) => JSON.stringify(logRecord(row))

const TABLE_COLUMNS = ['seq', 'receivedAt', 'jobId', 'eventType', 'jobStatus', 'outcome', 'jobName'] as const
const TABLE_WIDTHS = [8, 24, 8, 15, 10, 11, 0]
const padded = (widths: readonly number[], cells: readonly string[]) =>
  cells.map((cell, i) => (widths[i] ?? 0) > 0 ? cell.padEnd(widths[i] as number) : cell).join(' ').trimEnd()
const tableLine = (cells: readonly string[]) => padded(TABLE_WIDTHS, cells)
const TABLE_ROW = (row: LogRow) => tableLine([String(row.seq), new Date(row.receivedAt).toISOString(), String(row.jobId),
  row.eventType, row.jobStatus, row.outcome, row.jobName])

const QUARANTINE_COLUMNS = ['id', 'receivedAt', 'reason', 'detail', 'contentType', 'bytes', 'retriedSeq'] as const
const QUARANTINE_WIDTHS = [6, 24, 15, 40, 31, 7, 0]
// The table is for reading; --format ndjson has every detail whole.
const clip = (text: string, width: number) => text.length > width ? text.slice(0, width - 1) + '…' : text
const QUARANTINE_TABLE_ROW = (row: QuarantineRow) => padded(QUARANTINE_WIDTHS, [String(row.id), new Date(row.receivedAt).toISOString(),
  row.reason, clip(row.detail, 40), row.contentType ?? '', String(row.rawBody.length), row.retriedSeq === null ? '' : String(row.retriedSeq)])
const QUARANTINE_NDJSON_ROW = (row: QuarantineRow) => JSON.stringify({
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

async function * quarantineRows (store: G2SentryStore, pending: boolean): AsyncGenerator<QuarantineRow> {
  let afterId = 0
  for (;;) {
    const page = await store.listQuarantine({ afterId, limit: 500, pending })
    yield * page
    if (page.length < 500) return
    afterId = (page[page.length - 1] as QuarantineRow).id
  }
}

function describeRetry (report: RetryReport): string[] {
  const lines = [
    ...report.retried.map((r) => `id ${r.id}: appended as seq ${r.seq} (job ${r.jobId}, ${r.outcome})`),
    ...report.stillInvalid.map((r) => `id ${r.id}: still invalid (${r.reason}: ${r.detail})`),
    ...report.unsigned.map((id) => `id ${id}: signed by none of the given secrets, not appended`),
    ...report.alreadyRetried.map((r) => `id ${r.id}: already retried as seq ${r.seq}`),
    ...report.notFound.map((id) => `id ${id}: not in the quarantine`)
  ]
  lines.push(`retried: ${report.retried.length} appended, ${report.stillInvalid.length} still invalid, ${report.unsigned.length} unsigned`)
  return lines
}

function bound (name: 'from' | 'to', value: string | undefined): ExportBound | undefined {
  if (value === undefined) return undefined
  const parsed = parseExportBound(value, name)
  if (parsed === undefined) throw new UsageError(`--${name} must be a seq or an ISO 8601 date or time, got "${value}"`)
  return parsed
}

const LARGE_EXPORT = 10_000
const PROGRESS_EVERY_MS = 200

/** One line on a terminal, rewritten in place, for an export long enough to wait for. */
function progressLine (tty: NodeJS.WriteStream) {
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

function describe (report: RebuildReport, verb: string): string[] {
  const lines = [`${verb} ${report.events} events into ${report.jobs} jobs`]
  if (report.differingJobs.length > 0) {
    lines.push(`${report.differingJobs.length} jobs differ from the stored projection: ${report.differingJobs.slice(0, 20).join(', ')}${report.differingJobs.length > 20 ? ', …' : ''}`)
  }
  for (const m of report.outcomeMismatches.slice(0, 20)) lines.push(`seq ${m.seq}: logged as ${m.stored}, replays as ${m.replayed}`)
  if (report.outcomeMismatches.length > 20) lines.push(`… ${report.outcomeMismatches.length - 20} more outcome differences`)
  return lines
}

type Out = (line: string) => void | Promise<unknown>

async function run (argv: string[], out: Out, write: Out): Promise<number> {
  const [command, ...args] = argv
  if (command === undefined) throw new UsageError(`a command is required\n\n${HELP.main}`)
  if (command === '--help' || command === '-h' || command === 'help') {
    out(HELP.main as string)
    return 0
  }
  if (HELP[command] === undefined || command === 'main') throw new UsageError(`unknown command "${command}"\n\n${HELP.main}`)
  const subcommand = command === 'quarantine' && args[0]?.startsWith('-') === false ? args[0] : undefined
  const rest = subcommand === undefined ? args : args.slice(1)
  const { values } = parseArgs({ args: rest, options: OPTIONS, strict: true })
  if (values.help === true) {
    out(HELP[command] as string)
    return 0
  }

  switch (command) {
    case 'replay': {
      const format = values.format ?? 'ndjson'
      if (format !== 'ndjson' && format !== 'table') throw new UsageError('--format must be ndjson or table')
      const store = await open(values.db)
      try {
        if (format === 'table') out(tableLine(TABLE_COLUMNS))
        const rows = readLogStream(store, {
          jobId: positiveInteger('job', values.job),
          afterSeq: (positiveInteger('from', values.from) ?? 1) - 1,
          toSeq: positiveInteger('to', values.to)
        })
        for await (const row of rows) await out(format === 'table' ? TABLE_ROW(row) : NDJSON_ROW(row))
      } finally {
        await store.close()
      }
      return 0
    }
    case 'export': {
      const format = values.format ?? 'ndjson'
      if (format !== 'ndjson' && format !== 'csv') throw new UsageError('--format must be ndjson or csv')
      const jobId = positiveInteger('job', values.job)
      const from = bound('from', values.from)
      const to = bound('to', values.to)
      const store = await open(values.db)
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
        await store.close()
      }
      return 0
    }
    case 'quarantine': {
      if (subcommand !== 'list' && subcommand !== 'retry') {
        throw new UsageError(`${subcommand === undefined ? 'quarantine needs a subcommand' : `unknown quarantine subcommand "${subcommand}"`}: list or retry\n\n${HELP.quarantine}`)
      }
      if (subcommand === 'list') {
        const format = values.format ?? 'table'
        if (format !== 'ndjson' && format !== 'table') throw new UsageError('--format must be table or ndjson')
        const store = await open(values.db)
        try {
          if (format === 'table') out(padded(QUARANTINE_WIDTHS, QUARANTINE_COLUMNS))
          for await (const row of quarantineRows(store, values.all !== true)) {
            await out(format === 'table' ? QUARANTINE_TABLE_ROW(row) : QUARANTINE_NDJSON_ROW(row))
          }
        } finally {
          await store.close()
        }
        return 0
      }
      const fromEnv = [process.env.G2SENTRY_CALLBACK_SECRET, process.env.G2SENTRY_CALLBACK_SECRET_PREVIOUS]
        .filter((secret): secret is string => secret !== undefined && secret !== '')
      const secrets = values.secret ?? fromEnv
      if (secrets.length === 0) throw new UsageError('quarantine retry needs the callback secret: --secret SECRET or $G2SENTRY_CALLBACK_SECRET')
      const ids = values.id?.map((id) => positiveInteger('id', id) as number)
      const store = await open(values.db)
      try {
        const report = await retryQuarantine(store, { secrets, ids })
        describeRetry(report).forEach((line) => out(line))
        return report.notFound.length > 0 ? 1 : 0
      } finally {
        await store.close()
      }
    }
    case 'verify': {
      const store = await open(values.db)
      try {
        const report = await auditLog(store, { secrets: values.secret })
        const { chain, unsigned, projection } = report
        out(chain.ok
          ? `chain: ok, ${report.events - chain.unchainedRows} rows linked${chain.unchainedRows > 0 ? ` (${chain.unchainedRows} older rows have no hash)` : ''}`
          : `chain: BROKEN at seq ${chain.firstBrokenSeq}: ${chain.problem}`)
        if (unsigned === null) out('signatures: not checked (give --secret to check them)')
        else if (unsigned.length === 0) out(`signatures: ok, every row is signed by a given secret`)
        else out(`signatures: ${unsigned.length} rows are signed by none of the given secrets: seq ${unsigned.slice(0, 20).join(', ')}${unsigned.length > 20 ? ', …' : ''}`)
        describe(projection, 'projection: replayed').forEach((line) => out(line))
        out(report.ok ? 'ok: the log is intact and the stored projection equals a rebuild from it' : 'FAILED')
        return report.ok ? 0 : 1
      } finally {
        await store.close()
      }
    }
    case 'rebuild': {
      const store = await open(values.db)
      try {
        const report = await store.rebuild()
        describe(report, 'rebuilt').forEach((line) => out(line))
        // The log is never rewritten: rows whose recorded outcome does not replay are evidence to keep.
        if (report.outcomeMismatches.length > 0) out('FAILED: the projection was rebuilt, but log rows do not replay to their recorded outcome')
        return report.outcomeMismatches.length > 0 ? 1 : 0
      } finally {
        await store.close()
      }
    }
    default: {
      const secret = values.secret?.at(-1) ?? process.env.G2SENTRY_CALLBACK_SECRET
      if (secret === undefined) out('no --secret and no G2SENTRY_CALLBACK_SECRET: signing with the development secret')
      const common = {
        url: values.url ?? 'http://127.0.0.1:3000/callbacks/g2sentry',
        secret: secret ?? DEVELOPMENT_SECRET,
        firstJobId: positiveInteger('first-job', values['first-job']),
        print: out
      }
      const seed = positiveInteger('seed', values.seed)
      if (seed !== undefined) {
        return await simulateRandom({ ...common, seed, jobs: positiveInteger('jobs', values.jobs) ?? 20 }) ? 0 : 1
      }
      const answers = await simulate(common)
      return answers.every((a) => a.status === 200) ? 0 : 1
    }
  }
}

// A reader that stops early (`| head`) is not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0)
  throw error
})

// Waits for a full pipe to drain, so a replay or an export of any length runs in constant memory.
const stdoutChunk: Out = (chunk) => process.stdout.write(chunk) ? undefined : once(process.stdout, 'drain')
const stdout: Out = (line) => stdoutChunk(line + '\n')

/**
 * Runs the CLI with `argv` (without node and script) and returns the exit code. `out` takes
 * whole lines, `write` the chunks of an export as they are.
 */
export async function main (argv: string[], out: Out = stdout,
  err = (line: string) => process.stderr.write(line + '\n'), write: Out = stdoutChunk): Promise<number> {
  try {
    return await run(argv, out, write)
  } catch (error) {
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true) {
      err(`g2sentry: ${(error as Error).message}`)
      return 2
    }
    err(`g2sentry: ${(error as Error).message}`)
    return 1
  }
}
