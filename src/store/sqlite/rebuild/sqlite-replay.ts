// One share of a SQLite rebuild: the log rows of one partition of the jobs replayed on one
// connection, into that connection's own temp table, and compared there with the stored
// projection. A rebuild runs one share per thread (replay-threads.ts), or the one share that
// holds every job; docs/design.md ("Rebuild") says why the shares add up to the whole.
import type Database from 'better-sqlite3'
import type { JobState } from '../../../domain/types.js'
import type { RebuildReport } from '../../contract.js'
import { emptyReport, ReplayCache, replayPage } from '../../replay-core.js'
import { JOB_COLUMNS, jobParams, REPLAY_COLUMNS, toJob, UPDATE_JOB_ON_CONFLICT, type JobRow, type ReplayTuple } from '../../rows.js'
import { archivedThrough } from '../sqlite-archive.js'

/**
 * Log rows per page: smaller than the PostgreSQL store's, as there is no round trip to save and
 * a smaller page leaves the garbage collector less to move (fastest of 500 to 5,000 here).
 */
export const PAGE = 1000

/**
 * Which jobs a share replays: those whose id leaves a remainder from `from` to `to - 1` when
 * divided by RESIDUES. Share `part` of `parts`; the calling thread replays share 0.
 */
export interface Share { part: number; parts: number; from: number; to: number }

/** The remainders of job ids that shares are made of. */
const RESIDUES = 64
/**
 * Events of its own share a thread replays in the time a worker takes to start (some 0.15 s for
 * a thread, better-sqlite3 and a connection, against 1.9 µs an event, measured here).
 */
const WORKER_START_EVENTS = 80_000

/**
 * The shares of a rebuild of a log of about `events` events on `parts` threads. The calling
 * thread starts replaying at once and the workers only once started, so it takes that much more.
 */
export function splitShares (parts: number, events: number): Share[] {
  const extra = parts === 1 ? 0 : Math.min(0.25, (parts - 1) / parts * WORKER_START_EVENTS / Math.max(events, 1))
  const first = Math.round((1 / parts + extra) * RESIDUES)
  const shares: Share[] = [{ part: 0, parts, from: 0, to: first }]
  for (let part = 1; part < parts; part++) {
    const from = (shares[part - 1] as Share).to
    shares.push({ part, parts, from, to: first + Math.round((RESIDUES - first) * part / (parts - 1)) })
  }
  return shares
}

/** What one share found: its part of the report, with the ids of its differing jobs exact. */
export interface ShareReport extends Omit<RebuildReport, 'differingJobs'> {
  /** Ids of the jobs whose stored row differs from the rebuilt one, ascending, as SQLite holds them. */
  differing: bigint[]
}

/**
 * The SQL condition that puts a job in `share`: every integer job id, negative ones too, has
 * one remainder, so it falls in exactly one share. The log and the projection are split by the
 * same condition, so a job's rows and its stored row always land in the same share.
 */
export function inShare ({ parts, from, to }: Share): string {
  return parts === 1 ? '1' : `((job_id % ${RESIDUES}) + ${RESIDUES}) % ${RESIDUES} BETWEEN ${from} AND ${to - 1}`
}

/** The temp table a share's rebuilt job states go to, on the connection that replays it. */
export const rebuiltTable = ({ part }: Share): string => `temp.rebuilt_jobs_${part}`

/**
 * Replays `share` of the log on `db` into `rebuiltTable(share)` (created here, left for the
 * caller to drop), keeping at most `capacity` job states in memory, and compares the result with
 * the stored projection's rows of the same share. Runs inside the caller's transaction: every
 * share of one rebuild must read the same snapshot. `onPage` is called after each page of the log
 * and each batch of states written.
 */
export function replayShare (db: Database.Database, share: Share, capacity: number, onPage: () => void = () => {}): ShareReport {
  // The same definition as the projection table, so rows compare column for column.
  const { sql } = db.prepare<[], { sql: string }>("SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = 'jobs'").get() as { sql: string }
  const table = rebuiltTable(share)
  db.exec(`DROP TABLE IF EXISTS ${table}`)
  db.exec(sql.replace(/^CREATE TABLE jobs/, `CREATE TABLE ${table}`))
  const where = inShare(share)
  const readPage = db.prepare<[number, number], ReplayTuple>(
    `SELECT ${REPLAY_COLUMNS} FROM main.events WHERE seq > ? AND ${where} ORDER BY seq LIMIT ?`).raw()
  const readRebuilt = db.prepare<[number], JobRow>(`SELECT * FROM ${table} WHERE job_id = ?`)
  const write = stateWriter(db, table, onPage)
  const cache = new ReplayCache(capacity)
  const report = emptyReport()
  // After an archive the replay starts from the projection kept at its checkpoint, with the rows after it.
  const start = archivedThrough(db)
  if (start > 0) {
    db.exec(`INSERT INTO ${table} (${JOB_COLUMNS}) SELECT ${JOB_COLUMNS} FROM main.checkpoint_jobs WHERE ${where}`)
    cache.assumeStored()
  }
  for (let after = start; ;) {
    const page = readPage.all(after, PAGE) as ReplayTuple[]
    if (page.length === 0) break
    for (const jobId of cache.toLoad(page)) {
      const stored = readRebuilt.get(jobId)
      if (stored !== undefined) cache.set(jobId, toJob(stored))
    }
    replayPage(page, cache, report)
    write(cache.evict())
    after = (page[page.length - 1] as ReplayTuple)[0]
    onPage()
  }
  write(cache.states())
  const { jobs } = db.prepare<[], { jobs: number }>(`SELECT count(*) AS jobs FROM ${table}`).get() as { jobs: number }
  // Compound selects group left to right, so each difference needs its own subquery.
  const differing = db.prepare<[], bigint>(`SELECT job_id FROM (
      SELECT job_id FROM (SELECT * FROM main.jobs WHERE ${where} EXCEPT SELECT * FROM ${table})
      UNION
      SELECT job_id FROM (${replacedRows(share)}))
    ORDER BY job_id`).pluck().safeIntegers().all()
  return { events: report.events, jobs, outcomeMismatches: report.outcomeMismatches, differing }
}

/** Rows per statement when states are written out: a few times fewer statements to run. */
const WRITE_BATCH = 64

/** Writes job states to `table`, each replacing the job's earlier row if it has one; `tick` after each batch. */
function stateWriter (db: Database.Database, table: string, tick: () => void): (states: Iterable<JobState>) => void {
  const statement = (rows: number) => db.prepare(`INSERT INTO ${table} (${JOB_COLUMNS})
    VALUES ${Array.from({ length: rows }, () => '(?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')} ${UPDATE_JOB_ON_CONFLICT}`)
  const one = statement(1)
  const batch = statement(WRITE_BATCH)
  return (states) => {
    let params: unknown[] = []
    for (const state of states) {
      params.push(...jobParams(state))
      if (params.length === WRITE_BATCH * 9) {
        batch.run(params)
        params = []
        tick()
      }
    }
    for (let i = 0; i < params.length; i += 9) one.run(params.slice(i, i + 9))
  }
}

/**
 * The rebuilt rows of `share` that the stored projection does not hold as they are: what a
 * rebuild writes in place of the stored rows of its differing jobs.
 */
export const replacedRows = (share: Share): string =>
  `SELECT * FROM ${rebuiltTable(share)} EXCEPT SELECT * FROM main.jobs WHERE ${inShare(share)}`
