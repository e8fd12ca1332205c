// The baseline for the replay benchmark: plain better-sqlite3 reading, in seq order, the columns
// a replay reads (REPLAY_COLUMNS in src/store/rows.ts), touching every row, on one thread, the
// fastest plain way measured on a 1,000,000-event log: rows as arrays (`raw()`), 1,000 at a time
// with `all()`. CPU seconds over three runs each: 1.63-1.72 for pages of 500 or 1,000 rows,
// 1.73-1.81 for 2,000, 1.80-1.85 for 5,000, 1.85-1.90 iterating arrays, 2.5 or more for objects
// (iterated or paged). With no file, it only loads better-sqlite3 (idle baseline).
import Database from 'better-sqlite3'

const PAGE = 1000
const [file] = process.argv.slice(2)
let events = 0
if (file !== undefined) {
  const db = new Database(file, { readonly: true })
  const page = db.prepare(`SELECT seq, job_id, event_type, job_status, job_name, guardian_phone, received_at, outcome, source
    FROM events WHERE seq > ? ORDER BY seq LIMIT ${PAGE}`).raw()
  for (let after = 0; ;) {
    const rows = page.all(after)
    if (rows.length === 0) break
    for (const row of rows) if (row[1] > 0) events++
    after = rows[rows.length - 1][0]
  }
  db.close()
}
process.stdout.write(`${events}\n`)
