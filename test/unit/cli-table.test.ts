// Table output shows what a signed body holds without letting it act on the terminal: control
// characters in any cell are written out (\x1b, \r), so a job name cannot change the terminal's
// title, erase a line or start a new row. Signed bodies through the plugin, then `main` in-process.
import t from 'tap'
import { join } from 'node:path'
import { main } from '../../src/cli/cli.js'
import { visible } from '../../src/cli/render.js'
import { assigned, buildApp, post } from '../helpers/helpers.js'

async function run (...argv: string[]): Promise<{ code: number, out: string[], err: string[] }> {
  const out: string[] = []
  const err: string[] = []
  const code = await main(argv, (line) => { out.push(line) }, (line) => { err.push(line) }, (chunk) => { out.push(chunk) })
  return { code, out, err }
}

// What reaches a terminal as something other than text: C0, DEL, C1, line and paragraph
// separators, bidirectional controls.
const ACTS_ON_TERMINAL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/ // eslint-disable-line no-control-regex

t.test('visible writes out every character that acts on a terminal, and nothing else', async (t) => {
  const cases: Array<[string, string]> = [
    ['Open House at 123 Main St', 'Open House at 123 Main St'],
    ['Café — 夜間警備 \\x1b', 'Café — 夜間警備 \\x1b'],
    ['\u001b]0;pwned\u0007', '\\x1b]0;pwned\\x07'],
    ['line\r\u001b[2Kerased', 'line\\r\\x1b[2Kerased'],
    ['two\nrows\tand a tab', 'two\\nrows\\tand a tab'],
    ['\u0000\u0008\u001f\u007f', '\\x00\\x08\\x1f\\x7f'],
    ['\u0080\u009b2J\u009f', '\\x80\\x9b2J\\x9f'],
    ['\u202egnp.exe\u202c \u2066x\u2069 \u200e\u200f', '\\u202egnp.exe\\u202c \\u2066x\\u2069 \\u200e\\u200f'],
    ['\u2028\u2029', '\\u2028\\u2029']
  ]
  for (const [text, shown] of cases) t.equal(visible(text), shown, `shown as ${shown}`)
})

t.test('replay --format table and quarantine list escape control characters in every cell', async (t) => {
  const db = join(t.testdir(), 'g2.db')
  const app = await buildApp(t, { database: db })
  const name = 'Gala\u001b]0;pwned\u0007\r\u001b[2K\nseq 99\u009b2J\u007f\u202eend'
  t.equal((await post(app, assigned(501, { name }))).statusCode, 200, 'a signed body with control characters in its job name is logged')
  const eventType = 'Job\u001b[31mRed\u001b[0m'
  t.equal((await post(app, { jobId: 502, eventType, jobName: 'Pier 4', jobStatus: 'Assigned' })).json().outcome, 'unsupported',
    'and one with them in its event type')
  // A signed body that is not JSON is quarantined with its Content-Type as sent (a tab and a C1 byte).
  const contentType = 'application/json; note="\t\u009b2J"'
  t.equal((await post(app, '{"jobId": 503, "jobName": "\u001b]0;x\u0007', { contentType })).statusCode, 400)
  await app.close()

  const table = await run('replay', '--db', db, '--format', 'table')
  t.equal(table.code, 0)
  t.equal(table.out.length, 3, 'a header and one line per row: no row is split')
  for (const line of table.out) t.notMatch(line, ACTS_ON_TERMINAL, `no control character reaches the terminal: ${visible(line)}`)
  t.ok(table.out[1]?.endsWith('Gala\\x1b]0;pwned\\x07\\r\\x1b[2K\\nseq 99\\x9b2J\\x7f\\u202eend'), 'the job name is shown written out')
  t.match(table.out[2], /^2 +\S+ +502 +Job\\x1b\[31mRed\\x1b\[0m Assigned +unsupported +callback +Pier 4$/, 'the event type too, and the columns after it stay in place')

  const quarantine = await run('quarantine', 'list', '--db', db)
  t.equal(quarantine.code, 0)
  t.equal(quarantine.out.length, 2, 'a header and the quarantined body')
  for (const line of quarantine.out) t.notMatch(line, ACTS_ON_TERMINAL, `no control character reaches the terminal: ${visible(line)}`)
  t.match(quarantine.out[1], 'application/json; note="\\t\\x9b2J"', 'the Content-Type is shown written out')

  const ndjson = await run('replay', '--db', db)
  t.equal(JSON.parse(ndjson.out[0] as string).jobName, name, 'NDJSON keeps the exact value')
})
