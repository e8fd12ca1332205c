// The archive file's checks (src/log/archive-file.ts) on a file built in memory from rows the
// batch planner wrote: every edit of the header, a row line or the checkpoint line is named with
// its line, and an intact file passes.
import t from 'tap'
import { archiveLine, projectionHash, projectRow, readRowLine, verifyArchive } from '../../src/log/archive-file.js'
import { planBatch } from '../../src/store/batch-plan.js'
import { fromColumns } from '../../src/store/rows.js'
import type { JobState, LogRow } from '../../src/domain/types.js'
import { assigned, bytesOf, completed, incoming, SECRET, started, withdrawn } from '../helpers/fixtures.js'

/** Seqs 1…7: job 1 assigned, started, completed; job 2 assigned, withdrawn, assigned; then a redelivery. */
const rows = (): LogRow[] => LOG

/** Made once: each row's salt is random, and files of one log must hold the same rows. */
const LOG = makeRows()

function makeRows (): LogRow[] {
  const events = [assigned(1, { phone: '+15550000001' }), started(1), assigned(2), withdrawn(2), assigned(2), completed(1), started(1)]
    .map((payload, i) => incoming(payload, 1_700_000_000_000 + i))
  const { rows: planned } = planBatch(events, undefined, { state: () => undefined, lastSeq: () => 0, firstSameContent: () => null })
  return planned.map(fromColumns)
}

/** The archive of rows `from`…`to` (default every row): a header, a line per row, the checkpoint. */
function archive (from = 1, to = 7): string[] {
  const all = rows()
  const log = all.filter((row) => row.seq >= from && row.seq <= to)
  const states = new Map<number, JobState>()
  for (const row of all.filter((row) => row.seq <= to)) projectRow(states, row)
  const last = log[log.length - 1] as LogRow
  const prevHash = from === 1 ? null : (all[from - 2] as LogRow).hash
  return [
    JSON.stringify({ format: 'g2sentry-archive', version: 1, fromSeq: from, throughSeq: last.seq, prevHash, createdAt: '2026-12-07T00:00:00.000Z' }),
    ...log.map(archiveLine),
    JSON.stringify({ kind: 'checkpoint', throughSeq: last.seq, throughHash: last.hash, rows: log.length, projectionHash: projectionHash(states.values()), jobs: states.size })
  ]
}

/** The file with line `index` (0 is the header) changed by `edit`. */
const editLine = (index: number, edit: (value: Record<string, unknown>) => void) => (lines: string[]) => lines.map((line, i) => {
  if (i !== index) return line
  const value = JSON.parse(line) as Record<string, unknown>
  edit(value)
  return JSON.stringify(value)
})

const cases: Array<[string, (lines: string[]) => string[], RegExp | null]> = [
  ['an intact file', (lines) => lines, null],
  ['the header\'s format', editLine(0, (h) => { h.format = 'something-else' }), /^line 1: the first line is not a g2sentry-archive version 1 header$/],
  ['the header\'s version', editLine(0, (h) => { h.version = 2 }), /^line 1: the first line is not/],
  ['the header names a previous hash at the log\'s start', editLine(0, (h) => { h.prevHash = 'a'.repeat(64) }), /^line 1: the header starts the log/],
  ['the header continues an earlier archive', editLine(0, (h) => { h.fromSeq = 2 }), /^line 2: seq 1: seq 1 follows 1/],
  ['the header\'s last seq', editLine(0, (h) => { h.throughSeq = 6 }), /^line 9: the checkpoint says through seq 7, the header 6/],
  ['a row\'s body', editLine(3, (r) => { r.body = bytesOf(withdrawn(2, { name: 'x' })).toString('base64') }), /^line 4: seq 3: the raw body was changed/],
  ['a row\'s phone', editLine(1, (r) => { r.guardianPhone = '+15550000009' }), /^line 2: seq 1: a field parsed from the raw body differs from the body$/],
  ['a row\'s time', editLine(2, (r) => { r.receivedAt = '2030-01-01T00:00:00.000Z' }), /^line 3: seq 2: a stored field/],
  ['a row\'s outcome', editLine(7, (r) => { r.outcome = 'applied' }), /^line 8: seq 7: a stored field/],
  ['a row\'s salt', editLine(5, (r) => { r.salt = Buffer.alloc(32).toString('base64') }), /^line 6: seq 5: the raw body was changed \(or its signature, or its salt\)$/],
  ['a row\'s signature', editLine(4, (r) => { r.signature = 'ab'.repeat(32) }), /^line 5: seq 4: the raw body was changed/],
  ['a row that is not one', editLine(4, (r) => { r.seq = 'four' }), /^line 5: the line is not a log row$/],
  ['a row dropped', (lines) => lines.filter((_, i) => i !== 4), /^line 5: seq 5: seq 5 follows 3: rows 4…4 are missing$/],
  ['two rows swapped', (lines) => [lines[0], lines[2], lines[1], ...lines.slice(3)] as string[], /^line 2: seq 2: seq 2 follows 0/],
  ['a line that is not JSON', (lines) => [...lines.slice(0, 3), '{"seq": 3', ...lines.slice(4)], /^line 4: the line is not a JSON object$/],
  ['the checkpoint\'s hash', editLine(8, (c) => { c.throughHash = 'f'.repeat(64) }), /^line 9: the checkpoint's throughHash is not the last row's hash$/],
  ['the checkpoint\'s row count', editLine(8, (c) => { c.rows = 6 }), /^line 9: the checkpoint says 6 rows, the file holds 7$/],
  ['the checkpoint\'s projection', editLine(8, (c) => { c.projectionHash = '0'.repeat(64) }), /^line 9: the projection replayed from the rows does not have the checkpoint's projectionHash$/],
  ['the checkpoint\'s seq', editLine(8, (c) => { c.throughSeq = 8 }), /^line 9: the checkpoint says through seq 8/],
  ['the checkpoint malformed', editLine(8, (c) => { c.rows = 'seven' }), /^line 9: the checkpoint line is not well formed$/],
  ['no checkpoint line', (lines) => lines.slice(0, -1), /^line 9: the file ends without its checkpoint line/],
  ['a line after the checkpoint', (lines) => [...lines, lines[1] as string], /^line 10: a line after the checkpoint line$/],
  ['an empty file', () => [], /^line 1: the file is empty$/]
]

for (const [name, edit, expected] of cases) {
  t.test(name, async (t) => {
    const report = await verifyArchive(edit(archive()), [SECRET])
    if (expected === null) {
      t.same(report.problems, [])
      t.ok(report.ok)
      t.match(report, { rows: 7, signed: 7, unsigned: 0, projection: 'ok', checkpoint: { throughSeq: 7, rows: 7, jobs: 2 } })
      return
    }
    t.notOk(report.ok)
    t.match(`line ${report.problems[0]?.line}: ${report.problems[0]?.problem}`, expected)
  })
}

t.test('signatures: checked with the secrets given, every one of a rotation', async (t) => {
  t.match(await verifyArchive(archive(), ['old', SECRET]), { ok: true, signed: 7 })
  const other = await verifyArchive(archive(), ['other-secret'])
  t.match(other, { ok: false, signed: 0, unsigned: 7 })
  t.match(other.problems[0], { line: 2, problem: 'seq 1: signed by none of the given secrets' })
  t.match(await verifyArchive(archive()), { ok: true, unsigned: null }, 'without a secret, not checked')
})

t.test('a row line reads back as the row it was written from, byte for byte', async (t) => {
  for (const row of rows()) t.same(readRowLine(JSON.parse(archiveLine(row)) as Record<string, unknown>), row)
})

t.test('the projection hash leaves the phone out and does not depend on order', async (t) => {
  const job: JobState = { jobId: 1, jobName: 'a', status: 'Assigned', guardianPhone: '+15550000001', lastEventType: 'JobAssigned', version: 1, eventCount: 1, createdAt: 1, updatedAt: 1 }
  const other = { ...job, jobId: 2 }
  t.equal(projectionHash([job, other]), projectionHash([other, { ...job, guardianPhone: '[redacted 1]' }]))
  t.not(projectionHash([job]), projectionHash([{ ...job, version: 2 }]))
  t.equal(projectionHash([]), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 'no job: the SHA-256 of nothing')
})

t.test('files in order: the second continues the first, its projection replayed from the first\'s', async (t) => {
  const first = await verifyArchive(archive(1, 4), [SECRET])
  t.match(first, { ok: true, rows: 4, projection: 'ok' })
  t.match(await verifyArchive(archive(5, 7), [SECRET]), { ok: true, rows: 3, projection: 'not checked' }, 'alone, its projection cannot be replayed')
  const continued = await verifyArchive(archive(5, 7), [SECRET], first.next)
  t.same(continued.problems, [])
  t.match(continued, { ok: true, rows: 3, projection: 'ok' })
  const wrongOrder = await verifyArchive(archive(1, 4), [SECRET], (await verifyArchive(archive(5, 7), [SECRET])).next)
  t.match(wrongOrder.problems[0], { line: 1, problem: 'the file does not continue the one before it (which ends at seq 7)' })
  const edited = archive(5, 7).map((line, i) => i === 3 ? line.replace('"outcome":"stale"', '"outcome":"applied"') : line)
  t.notOk((await verifyArchive(edited, [SECRET], first.next)).ok)
})
