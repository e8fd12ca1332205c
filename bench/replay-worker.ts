// One replay measurement in a fresh process, so its peak RSS is its own.
import Database from 'better-sqlite3'
import { sqliteStore } from '../src/index.js'

const [mode, file] = process.argv.slice(2) as [string, string]
const started = performance.now()
let events = 0
if (mode === 'idle') {
  // The same process with nothing to do: Node and the TypeScript loader alone.
} else if (mode === 'scan') {
  const db = new Database(file, { readonly: true })
  const rows = db.prepare('SELECT seq, job_id, event_type, job_status, job_name, guardian_phone, received_at, outcome FROM events ORDER BY seq')
  for (const row of rows.iterate() as IterableIterator<{ job_id: number }>) if (row.job_id > 0) events++
  db.close()
} else {
  const store = sqliteStore({ filename: file })
  const report = await store.rebuild({ dryRun: mode === 'verify' })
  if (report.differingJobs.length > 0 || report.outcomeMismatches.length > 0) throw new Error(`${mode}: the projection differs from the log`)
  events = report.events
  await store.close()
}
const ms = performance.now() - started
process.stdout.write(JSON.stringify({ mode, events, ms, maxRssMb: process.resourceUsage().maxRSS / 1024 }) + '\n')
