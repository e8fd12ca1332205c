// A SQLite rebuild: the log replayed in shares of the jobs, the first on this thread and the others
// on worker threads (replay-threads.ts, replay-worker.ts), each from the same snapshot, then the
// shares' reports put together and, unless a dry run, the differing jobs' rows replaced
// (docs/design.md, "Rebuild"). The store calls this one entry.
import type Database from 'better-sqlite3'
import { availableParallelism } from 'node:os'
import { debuglog } from 'node:util'
import type { RebuildReport } from '../../contract.js'
import { REPLAY_CACHE } from '../../replay-core.js'
import { JOB_COLUMNS, type ChainHead } from '../../rows.js'
import { MAX_THREADS } from './replay-protocol.js'
import { lastRebuild, ReplayWorkers } from './replay-threads.js'
import { rebuiltTable, replacedRows, replayShare, splitShares, type Share, type ShareReport } from './sqlite-replay.js'

const debug = debuglog('g2sentry')

/** A log this long or longer is rebuilt on several threads unless `replayThreads` says otherwise. */
const THREADED_FROM = 50_000

export interface RebuildSettings {
  /** The file the store opened (workers open it again). */
  filename: string
  busyTimeout?: number | undefined
  replayCacheSize?: number | undefined
  replayThreads?: number | undefined
  /** The log's head, read on the store's connection. */
  head: () => ChainHead | undefined
}

/** The rebuild of the SQLite store on `db`: `rebuild(dryRun)` replays the log and reports (and, unless a dry run, repairs) the projection. */
export function sqliteRebuild (db: Database.Database, options: RebuildSettings): (dryRun: boolean) => RebuildReport {
  // The file as SQLite opened it, absolute: the workers must open the same one, wherever the
  // process's working directory has moved since.
  const file = (db.pragma('database_list') as Array<{ name: string; file: string }>).find((d) => d.name === 'main')?.file ?? options.filename

  /** The shares of the jobs a rebuild replays, each on a thread of its own. */
  const sharesFor = (): Share[] => {
    // Another thread cannot open an in-memory database.
    if (db.memory) return splitShares(1, 0)
    // The length of the log as far as seq tells (rows deleted by hand aside).
    const { seq: events } = options.head() ?? { seq: 0 }
    if (options.replayThreads !== undefined) return splitShares(Math.max(1, Math.min(MAX_THREADS, Math.floor(options.replayThreads))), events)
    // Starting a worker costs tens of milliseconds: worth it only on a long log.
    return splitShares(events < THREADED_FROM ? 1 : Math.min(availableParallelism(), 4), events)
  }

  const rebuild = (dryRun: boolean): RebuildReport => {
    // The cache's bound holds for all the threads together.
    const capacityOf = (parts: number) => Math.max(1, Math.floor((options.replayCacheSize ?? REPLAY_CACHE) / parts))
    let shares = sharesFor()
    const workers = shares.length > 1 ? ReplayWorkers.start(file, shares, capacityOf(shares.length), options.busyTimeout ?? 5000, dryRun) : undefined
    if (workers === undefined) shares = splitShares(1, 0)
    const capacity = capacityOf(shares.length)
    try {
      // A dry run takes no lock, so its threads' snapshots agree only if they are taken close together.
      if (dryRun) workers?.waitReady()
      // A rebuild takes the write lock so no append slips in between the replay and the swap.
      return dryRun ? rebuildTx.deferred(true, shares, capacity, workers) : rebuildTx.immediate(false, shares, capacity, workers)
    } finally {
      workers?.close()
    }
  }

  /**
   * Replays every share of the jobs, the first here and the others on `workers` (or here, for a
   * share whose worker could not replay it from this transaction's snapshot), then puts the
   * shares' reports together and, unless `dryRun`, writes the rebuilt rows of the differing jobs.
   */
  const replayShares = (dryRun: boolean, shares: Share[], capacity: number, workers: ReplayWorkers | undefined): RebuildReport => {
    workers?.begin(() => db.prepare('SELECT count(*) FROM main.sqlite_master').get())
    const started = performance.now()
    const reports = [replayShare(db, shares[0] as Share, capacity, () => workers?.poll())]
    debug('rebuild: share 0 replayed in %d ms', Math.round(performance.now() - started))
    const here = [shares[0] as Share]
    const fromWorkers = workers?.reports() ?? []
    lastRebuild.threads = shares.length
    lastRebuild.onWorkers = fromWorkers.filter((report) => report !== undefined).length
    debug('rebuild: %d shares, %d of them replayed on worker threads', shares.length, lastRebuild.onWorkers)
    for (const share of shares.slice(1)) {
      const report = fromWorkers[share.part - 1]
      if (report === undefined) here.push(share)
      reports.push(report ?? replayShare(db, share, capacity))
    }
    const differing = reports.flatMap((r) => r.differing).sort((a, b) => a < b ? -1 : a > b ? 1 : 0)
    if (!dryRun && differing.length > 0) {
      const remove = db.prepare('DELETE FROM main.jobs WHERE job_id = ?')
      for (const jobId of differing) remove.run(jobId)
      // Once the differing rows are gone, the rebuilt rows missing from the projection are theirs.
      for (const share of here) db.exec(`INSERT INTO main.jobs ${replacedRows(share)}`)
      const insert = db.prepare(`INSERT INTO main.jobs (${JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
      for (const share of shares) {
        if (!here.includes(share) && (reports[share.part] as ShareReport).differing.length > 0) {
          workers?.rows(share.part, (rows) => { for (const row of rows) insert.run(row) })
        }
      }
    }
    for (const share of here) db.exec(`DROP TABLE ${rebuiltTable(share)}`)
    return {
      events: reports.reduce((n, r) => n + r.events, 0),
      jobs: reports.reduce((n, r) => n + r.jobs, 0),
      outcomeMismatches: reports.flatMap((r) => r.outcomeMismatches).sort((a, b) => a.seq - b.seq),
      differingJobs: differing.map(Number)
    }
  }
  const rebuildTx = db.transaction(replayShares)
  return rebuild
}
