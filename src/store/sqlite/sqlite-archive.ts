// Archiving in a SQLite file (docs/design.md, "Archiving"): the checkpoint record appended and the
// projection at the checkpoint kept in one write transaction, then the archived rows deleted a
// batch per transaction and the freed pages given back. A file made by this version has
// auto_vacuum INCREMENTAL (sqlite-connection.ts), so `incremental_vacuum` returns its free pages
// to the file system; an older file keeps them free inside it until one VACUUM converts it.
import type Database from 'better-sqlite3'
import { setTimeout as sleep } from 'node:timers/promises'
import { errors } from '../../errors.js'
import { readCheckpoint } from '../../log/records.js'
import type { LogArchive } from '../contract.js'
import { EVENT_INSERT_COLUMNS, EVENT_WIDTH, JOB_COLUMNS, jobParams, recordParams, toCheckpointJob, type ChainHead, type CheckpointJobRow } from '../rows.js'
import { HEAD_SQL } from './sqlite-connection.js'

/** Seqs deleted per transaction by default. */
export const DELETE_BATCH = 1000
/** Pages `incremental_vacuum` gives back per step: each step holds the write lock. */
const VACUUM_STEP = 200
/**
 * The pause after each batch or step, at least: another process's append waiting for the lock
 * sleeps up to 25 ms between tries (busy-retry.ts), so a shorter gap may be missed and the
 * archive would hold the lock batch after batch.
 */
const GAP_MS = 30

/** Runs `work`, then waits as long as it took (GAP_MS at least): the lock is held half the time at most. */
async function withGap<T> (work: () => Promise<T>): Promise<T> {
  const started = performance.now()
  const result = await work()
  await sleep(Math.max(GAP_MS, performance.now() - started))
  return result
}

/** The latest checkpoint row's body, as the rebuild and the store read it. */
export const LATEST_CHECKPOINT_SQL = 'SELECT seq, raw_body FROM main.events WHERE source = \'checkpoint\' ORDER BY seq DESC LIMIT 1'

/** The latest checkpoint's `through` on `db` (0 when the log was never archived). */
export function archivedThrough (db: Database.Database): number {
  const row = db.prepare<[], { seq: number; raw_body: Buffer }>(LATEST_CHECKPOINT_SQL).get()
  return row === undefined ? 0 : readCheckpoint(row.raw_body)?.through ?? 0
}

/**
 * The archive methods of the SQLite store over `db`, its one writing connection. `step` runs one
 * statement or transaction, trying it again while another connection holds the lock: a deletion
 * in batches is tried again batch by batch, never from the start.
 */
export function sqliteArchive (db: Database.Database, step: <T>(work: () => T) => Promise<T> = async (work) => work()): LogArchive {
  const selectLatest = db.prepare<[], { seq: number; raw_body: Buffer }>(LATEST_CHECKPOINT_SQL)
  const selectHead = db.prepare<[], ChainHead>(HEAD_SQL)
  const redactionsAfter = db.prepare<[number], { n: number }>('SELECT count(*) AS n FROM events WHERE source = \'redaction\' AND seq > ?')
  const insertRecord = db.prepare(`INSERT INTO events (${EVENT_INSERT_COLUMNS}) VALUES (${Array(EVENT_WIDTH).fill('?').join(', ')})`)
  const clearJobs = db.prepare('DELETE FROM checkpoint_jobs')
  const insertJob = db.prepare(`INSERT INTO checkpoint_jobs (${JOB_COLUMNS}, archived, last_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
  const selectJobs = db.prepare<[], CheckpointJobRow>('SELECT * FROM checkpoint_jobs ORDER BY job_id')
  const selectArchived = db.prepare<[number], { archived: number }>('SELECT archived FROM checkpoint_jobs WHERE job_id = ?')
  const deleteRange = db.prepare<[number, number]>('DELETE FROM events WHERE seq > ? AND seq <= ?')
  const firstSeq = db.prepare<[], { seq: number | null }>('SELECT min(seq) AS seq FROM events')

  const latest = () => {
    const row = selectLatest.get()
    const record = row === undefined ? undefined : readCheckpoint(row.raw_body)
    return row === undefined || record === undefined ? undefined : { seq: row.seq, record }
  }

  const checkpoint = db.transaction((request: Parameters<LogArchive['checkpoint']>[0]) => {
    if ((latest()?.record.through ?? 0) !== request.after) throw new errors.ARCHIVE_REFUSED('another archive was made meanwhile')
    if ((redactionsAfter.get(request.readAt) as { n: number }).n > 0) {
      throw new errors.ARCHIVE_REFUSED('a redaction was made meanwhile, and the file holds what it erased; archive again')
    }
    const { params, next } = recordParams('checkpoint', { checkpoint: request.record }, request.at, selectHead.get())
    insertRecord.run(params)
    clearJobs.run()
    for (const job of request.jobs) insertJob.run([...jobParams(job), job.archived, job.lastSeq])
    return next.seq
  })

  return {
    latestCheckpoint: () => step(latest),
    checkpointJobs: () => step(() => selectJobs.all().map(toCheckpointJob)),
    async checkpoint (request) {
      return { seq: await step(() => checkpoint.immediate(request)) }
    },
    async deleteArchived (through, options) {
      const batch = options?.batchSize ?? DELETE_BATCH
      if (((await step(latest))?.record.through ?? 0) < through) throw new errors.ARCHIVE_REFUSED(`no checkpoint covers seq ${through}`)
      let deleted = 0
      // From the first row left, so a deletion that was cut short starts where it stopped.
      for (let from = (await step(() => firstSeq.get()?.seq) ?? through + 1) - 1; from < through; from += batch) {
        const upTo = Math.min(from + batch, through)
        // Appends waiting for the lock, in this process or another, commit between the batches.
        deleted += await withGap(async () => {
          const changes = await step(() => deleteRange.run(from, upTo).changes)
          // The WAL copied back here, by the archive, rather than by an append's commit that
          // crosses the autocheckpoint threshold (on the server's event loop).
          db.pragma('wal_checkpoint(PASSIVE)')
          return changes
        })
      }
      return deleted
    },
    async reclaimSpace () {
      if (Number(db.pragma('auto_vacuum', { simple: true })) !== 2) {
        db.pragma('wal_checkpoint(TRUNCATE)')
        return { method: 'kept', pagesFreed: 0 }
      }
      let pagesFreed = 0
      for (;;) {
        const free = Number(db.pragma('freelist_count', { simple: true }))
        if (free === 0) break
        await withGap(async () => {
          await step(() => db.pragma(`incremental_vacuum(${VACUUM_STEP})`))
          db.pragma('wal_checkpoint(PASSIVE)')
        })
        pagesFreed += Math.min(free, VACUUM_STEP)
      }
      // The file shrinks only once the WAL is copied back into it.
      db.pragma('wal_checkpoint(TRUNCATE)')
      return { method: 'incremental', pagesFreed }
    },
    archivedEvents: (jobId) => step(() => selectArchived.get(jobId)?.archived ?? 0)
  }
}
