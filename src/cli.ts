import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { auditLog } from './audit.js'
import { readLogStream } from './replay.js'
import { DEVELOPMENT_SECRET, simulate, simulateRandom } from './simulate.js'
import { isPostgresUrl, openStore } from './store/open-store.js'
import type { LogRow, RebuildReport } from './types.js'

const HELP: Record<string, string> = {
  main: `Usage: g2sentry <command> [options]

Commands:
  replay     print the event log, whole or for one job (NDJSON or a table)
  rebuild    recompute the job projection from the log and store it
  verify     check the hash chain, the signatures and the projection (exit 1 on any problem)
  simulate   send signed example callbacks to a running server

Run g2sentry <command> --help for its options.`,
  replay: `Usage: g2sentry replay --db FILE|URL [--job N] [--from SEQ] [--to SEQ] [--format ndjson|table]

Prints the event log in seq order, one row per delivery, with its outcome, the raw body and its
signature: what G2 Sentry told us, and when. The rows hold guardian phone numbers: personal data.`,
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

const NDJSON_ROW = (row: LogRow) => JSON.stringify({
  seq: row.seq,
  receivedAt: new Date(row.receivedAt).toISOString(),
  jobId: row.jobId,
  eventType: row.eventType,
  jobStatus: row.jobStatus,
  jobName: row.jobName,
  guardianPhone: row.guardianPhone,
  outcome: row.outcome,
  sameAs: row.sameAs,
  signature: row.signature,
  body: row.rawBody.toString('utf8')
})

const TABLE_COLUMNS = ['seq', 'receivedAt', 'jobId', 'eventType', 'jobStatus', 'outcome', 'jobName'] as const
const TABLE_WIDTHS = [8, 24, 8, 15, 10, 11, 0]
const tableLine = (cells: readonly string[]) => cells.map((cell, i) => (TABLE_WIDTHS[i] ?? 0) > 0 ? cell.padEnd(TABLE_WIDTHS[i] as number) : cell).join(' ').trimEnd()
const TABLE_ROW = (row: LogRow) => tableLine([String(row.seq), new Date(row.receivedAt).toISOString(), String(row.jobId),
  row.eventType, row.jobStatus, row.outcome, row.jobName])

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

async function run (argv: string[], out: Out): Promise<number> {
  const [command, ...rest] = argv
  if (command === undefined) throw new UsageError(`a command is required\n\n${HELP.main}`)
  if (command === '--help' || command === '-h' || command === 'help') {
    out(HELP.main as string)
    return 0
  }
  if (HELP[command] === undefined || command === 'main') throw new UsageError(`unknown command "${command}"\n\n${HELP.main}`)
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

/** Runs the CLI with `argv` (without node and script) and returns the exit code. */
// A reader that stops early (`| head`) is not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0)
  throw error
})

// Waits for a full pipe to drain, so a replay of any length runs in constant memory.
const stdout: Out = (line) => process.stdout.write(line + '\n') ? undefined : once(process.stdout, 'drain')

export async function main (argv: string[], out: Out = stdout,
  err = (line: string) => process.stderr.write(line + '\n')): Promise<number> {
  try {
    return await run(argv, out)
  } catch (error) {
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true) {
      err(`g2sentry: ${(error as Error).message}`)
      return 2
    }
    err(`g2sentry: ${(error as Error).message}`)
    return 1
  }
}
