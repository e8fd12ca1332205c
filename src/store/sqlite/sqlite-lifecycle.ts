// Erasure in a SQLite file (docs/design.md, "Erasure"): the rows to erase, read and planned
// (src/store/redaction-plan.ts) and written in one write transaction with the redaction record.
// The connection runs with `secure_delete` (sqlite-connection.ts), so the bytes an update frees
// are overwritten with zeros; after the commit the WAL is checkpointed and truncated, so the old
// pages leave it too.
import type Database from 'better-sqlite3'
import type { LogLifecycle } from '../contract.js'
import { planRedaction } from '../redaction-plan.js'
import { EVENT_INSERT_COLUMNS, EVENT_WIDTH, toLogRow, toQuarantine, type ChainHead, type EventRow, type QuarantineDbRow } from '../rows.js'
import { HEAD_SQL } from './sqlite-connection.js'

/** How long a redaction tries to empty the WAL while readers hold it. */
const WAL_WAIT_MS = 5000

/** Checkpoints the WAL into the file and truncates it, trying again every 10 ms for `waitMs`; false if readers kept it. */
async function truncateWal (db: Database.Database, waitMs: number): Promise<boolean> {
  const deadline = Date.now() + waitMs
  for (;;) {
    const [result] = db.pragma('wal_checkpoint(TRUNCATE)') as Array<{ busy: number }>
    if (result?.busy === 0) return true
    if (Date.now() >= deadline) return false
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

type LifecycleMethods = Pick<LogLifecycle, 'redact' | 'redactedBy' | 'readRecords' | 'countRedacted'>

/** The lifecycle methods of the SQLite store over `db`, its one writing connection. */
export function sqliteLifecycle (db: Database.Database): LifecycleMethods {
  const selectHead = db.prepare<[], ChainHead>(HEAD_SQL)
  const selectRows = db.prepare<[string], EventRow>(`SELECT * FROM events WHERE job_id IN (SELECT value FROM json_each(?))
    AND source IN ('callback', 'api') ORDER BY seq`)
  const selectPhones = db.prepare<[string], { jobId: number; projection: string | null | undefined; checkpoint: string | null | undefined }>(
    `SELECT ids.value AS jobId, j.guardian_phone AS projection, c.guardian_phone AS checkpoint FROM json_each(?) ids
      LEFT JOIN jobs j ON j.job_id = ids.value LEFT JOIN checkpoint_jobs c ON c.job_id = ids.value`)
  const selectQuarantine = db.prepare<[], QuarantineDbRow>('SELECT * FROM quarantine WHERE redacted_by IS NULL ORDER BY id')
  const insertRecord = db.prepare(`INSERT INTO events (${EVENT_INSERT_COLUMNS}) VALUES (${Array(EVENT_WIDTH).fill('?').join(', ')})`)
  const eraseRow = db.prepare(`UPDATE events SET raw_body = x'', signature = '', salt = NULL, guardian_phone = ?, content_hash = ?,
    redacted_by = ? WHERE seq = ?`)
  const eraseProjection = db.prepare('UPDATE jobs SET guardian_phone = ? WHERE job_id = ?')
  const eraseCheckpoint = db.prepare('UPDATE checkpoint_jobs SET guardian_phone = ? WHERE job_id = ?')
  const eraseQuarantined = db.prepare('UPDATE quarantine SET raw_body = x\'\', signature = \'\', detail = \'redacted\', redacted_by = ? WHERE id = ?')
  const selectRedacted = db.prepare<[number], EventRow>('SELECT * FROM events WHERE redacted_by = ? ORDER BY seq')
  const selectRecords = db.prepare<[string, number, number], EventRow>('SELECT * FROM events WHERE source = ? AND seq > ? ORDER BY seq LIMIT ?')
  const countRedacted = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM events WHERE redacted_by IS NOT NULL')

  const redact = db.transaction((request: Parameters<LogLifecycle['redact']>[0]) => {
    const ids = JSON.stringify([...new Set(request.jobIds)])
    const plan = planRedaction(request, {
      rows: selectRows.all(ids).map(toLogRow),
      phones: selectPhones.all(ids),
      quarantine: selectQuarantine.all().map(toQuarantine),
      head: selectHead.get()
    }, request.at ?? Date.now())
    const { record } = plan
    if (record === undefined) return plan
    insertRecord.run(record.params)
    for (const row of plan.rows) eraseRow.run(row.guardianPhone, row.contentHash, record.seq, row.seq)
    for (const { jobId, guardianPhone } of plan.projection) eraseProjection.run(guardianPhone, jobId)
    for (const { jobId, guardianPhone } of plan.checkpoint) eraseCheckpoint.run(guardianPhone, jobId)
    for (const id of plan.quarantine) eraseQuarantined.run(record.seq, id)
    return plan
  })

  return {
    async redact (request) {
      const plan = redact.immediate(request)
      // The pages as they were before are in the WAL until a checkpoint copies the new ones into
      // the file; TRUNCATE then empties it. A reader in the middle of a read (another process, the
      // live feed) keeps it from completing: tried again for a while, off the event loop.
      if (plan.record !== undefined) {
        // Rewrites the whole file: free pages of a log written before secure_delete was on included.
        if (request.vacuum === 'full') db.exec('VACUUM')
        await truncateWal(db, WAL_WAIT_MS)
      }
      return { recordSeq: plan.record?.seq ?? null, jobs: plan.jobs, rows: plan.rows.length, version1Rows: plan.version1Rows, quarantined: plan.quarantine.length }
    },
    async redactedBy (seq) {
      return selectRedacted.all(seq).map(toLogRow)
    },
    async readRecords ({ source, afterSeq, limit }) {
      return selectRecords.all(source, afterSeq ?? 0, limit).map(toLogRow)
    },
    async countRedacted () {
      return (countRedacted.get() as { n: number }).n
    }
  }
}
