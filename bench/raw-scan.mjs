// The baseline for the replay benchmark: plain better-sqlite3 reading, in seq order, the columns
// a replay reads, touching every row. With no file, it only loads better-sqlite3 (idle baseline).
import Database from 'better-sqlite3'

const [file] = process.argv.slice(2)
let events = 0
if (file !== undefined) {
  const db = new Database(file, { readonly: true })
  const rows = db.prepare('SELECT seq, job_id, event_type, job_status, job_name, guardian_phone, received_at, outcome FROM events ORDER BY seq')
  for (const row of rows.iterate()) if (row.job_id > 0) events++
  db.close()
}
process.stdout.write(`${events}\n`)
