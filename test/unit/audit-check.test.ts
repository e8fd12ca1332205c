// The audit's per-row checks and how ranges join (src/log/audit-check.ts), on rows built in
// memory by the batch planner: every kind of edit is named, and any split of the log into
// ranges reports what one pass over it reports.
import t from 'tap'
import { joinRanges, linkProblem, RangeCheck, rowProblem, type RangeReport } from '../../src/log/audit-check.js'
import { createHash } from 'node:crypto'
import { planBatch } from '../../src/store/batch-plan.js'
import { GENESIS, rowHash } from '../../src/store/chain.js'
import { fromColumns } from '../../src/store/rows.js'
import type { LogRow } from '../../src/domain/types.js'
import { assigned, bytesOf, completed, incoming, SECRET, started, withdrawn } from '../helpers/fixtures.js'

/** A log of `n` rows as a store would write them (EVENT_INSERT_COLUMNS are LOG_COLUMNS, in order). */
function log (): LogRow[] {
  const events = [assigned(1, { phone: '+15550000001' }), started(1), assigned(2), withdrawn(2), assigned(2), completed(1), started(1)]
    .map((payload, i) => incoming(payload, 1_700_000_000_000 + i))
  return planBatch(events, undefined, { state: () => undefined, lastSeq: () => 0, firstSameContent: () => null }).rows.map(fromColumns)
}

function checkAll (rows: LogRow[], secrets: string[] = [SECRET]): RangeReport {
  const check = new RangeCheck(secrets)
  for (const row of rows) check.add(row)
  return check.report()
}

const edits: Array<[string, (rows: LogRow[]) => LogRow[], number | null, RegExp | null]> = [
  ['an intact log', (rows) => rows, null, null],
  ['a raw body edited', (rows) => rows.map((r) => r.seq === 3 ? { ...r, rawBody: bytesOf(assigned(2, { phone: '+19999999999' })) } : r), 3, /raw body was changed/],
  ['an outcome edited', (rows) => rows.map((r) => r.seq === 7 ? { ...r, outcome: 'applied' } : r), 7, /stored field/],
  ['a time edited', (rows) => rows.map((r) => r.seq === 2 ? { ...r, receivedAt: r.receivedAt + 1 } : r), 2, /stored field/],
  ['a parsed field edited (the phone column)', (rows) => rows.map((r) => r.seq === 1 ? { ...r, guardianPhone: '+10000000000' } : r), 1, /parsed from the raw body differs/],
  ['a row deleted', (rows) => rows.filter((r) => r.seq !== 4), 5, /rows 4…4 are missing/],
  ['two rows swapped', (rows) => [rows[0], rows[2], rows[1], ...rows.slice(3)] as LogRow[], 3, /seq 3 follows 1/],
  ['a hash relinked', (rows) => rows.map((r) => r.seq === 5 ? { ...r, prevHash: 'f'.repeat(64) } : r), 5, /does not link/]
]

for (const [name, edit, seq, problem] of edits) {
  t.test(name, async (t) => {
    const rows = edit(log())
    const whole = checkAll(rows)
    const joined = joinRanges([whole], { seq: 7, hash: null })
    if (seq === null) t.equal(joined.broken, null, 'nothing broken')
    else t.match(joined.broken, { seq, problem }, `broken at seq ${seq}`)
    // Every split into two ranges reports what one pass reports.
    for (let cut = 1; cut < rows.length; cut++) {
      const split = joinRanges([checkAll(rows.slice(0, cut)), checkAll(rows.slice(cut))], { seq: 7, hash: null })
      t.same(split, joined, `split after row ${cut}`)
    }
  })
}

t.test('rows no configured secret signs are listed; a log without a secret checks none', async (t) => {
  t.same(checkAll(log(), ['another-secret']).unsigned, [1, 2, 3, 4, 5, 6, 7])
  t.same(checkAll(log(), [SECRET, 'another-secret']).unsigned, [])
  t.same(checkAll(log(), []).unsigned, [])
})

t.test('rows missing at the end show against the head', async (t) => {
  const rows = log().slice(0, 5)
  t.match(joinRanges([checkAll(rows)], { seq: 7, hash: null }).broken, { seq: 6, problem: /ends at seq 5 but seq 7 was written/ })
})

t.test('linkProblem and rowProblem on their own', async (t) => {
  const [first, second] = log() as [LogRow, LogRow]
  t.equal(linkProblem(first, undefined), null, 'the first row links to genesis')
  t.equal(linkProblem(second, first), null)
  t.match(linkProblem({ ...second, hash: null, prevHash: null }, first), /no hash/, 'an unchained row after the chain started')
  t.equal(linkProblem({ ...first, hash: null, prevHash: null }, undefined), undefined, 'a row from before the chain')
  t.equal(rowProblem(first), null)
  t.match(rowProblem({ ...first, rawBody: 42 as unknown as Buffer }), /raw body was changed/, 'a body that is not bytes')
})

t.test('rowHash: SHA-256 of the JSON array [prevHash, seq, receivedAt, signature, contentHash, outcome, sameAs], a source other than callback last', async (t) => {
  const sha = (text: string) => createHash('sha256').update(text).digest('hex')
  const fields = { seq: 3, receivedAt: 1_700_000_000_000, signature: 'ab12', contentHash: 'cd34', outcome: 'duplicate' as const, sameAs: 1 }
  const plain = sha('["prev",3,1700000000000,"ab12","cd34","duplicate",1]')
  t.equal(rowHash('prev', fields), plain)
  t.equal(rowHash('prev', { ...fields, source: 'callback' }), plain, 'a callback row hashes as rows from before sources existed')
  t.equal(rowHash('prev', { ...fields, source: 'api' }), sha('["prev",3,1700000000000,"ab12","cd34","duplicate",1,"api"]'))
  t.equal(rowHash(GENESIS, { ...fields, sameAs: null }), sha('["",3,1700000000000,"ab12","cd34","duplicate",null]'), 'the first row links to genesis, the empty string')
})
