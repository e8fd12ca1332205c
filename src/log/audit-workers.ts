import type { Worker } from 'node:worker_threads'
import { openLogReader, type LogReader } from '../store/log-reader.js'
import type { ChainHead } from '../store/rows.js'
import { checkRange, type RangeReport } from './audit-check.js'
import { startWorker } from '../worker-thread.js'

/**
 * The ranges of a log to check: ranges of `rangeSize` seqs after `start` (the latest archive's
 * last row, or 0), the last running to the end of the log.
 */
export interface RangeJob {
  /** The seq the first range starts after; default 0. */
  start?: number | undefined
  /** Where the log is, as `openStore` takes it. */
  database: string
  secrets: readonly string[]
  ranges: number
  rangeSize: number
  pageSize: number
}

/** What each worker of audit-worker.ts is given: the job, and the next range to take, shared by the workers (Atomics.add). */
export interface AuditWorkerData extends RangeJob {
  next: Int32Array
}

/** What is posted for each range checked; the last range comes with the chain head. */
export interface RangeMessage {
  index: number
  report: RangeReport
  head?: ChainHead | null
}

/** The reports of every range, in seq order, and the chain head as of the last. */
export interface CheckedRanges {
  reports: RangeReport[]
  head: ChainHead | undefined
}

/** Checks a job's ranges; `result` resolves once every range is checked, `terminate` gives up. */
export type CheckRanges = (job: RangeJob) => { result: Promise<CheckedRanges>; terminate: () => Promise<void> }

/**
 * Checks the ranges that `take` hands out (an index past the last ends it), on `reader`, posting
 * each report: the loop of every worker thread.
 */
export async function checkTakenRanges (reader: LogReader, job: RangeJob, take: () => number, post: (message: RangeMessage) => void): Promise<void> {
  const { secrets, ranges, rangeSize, pageSize } = job
  for (let index = take(); index < ranges; index = take()) {
    const after = (job.start ?? 0) + index * rangeSize
    // The last range runs to the end of the log, in one snapshot with the chain head it is judged against.
    post(index < ranges - 1
      ? { index, report: await checkRange(reader, secrets, after, after + rangeSize, pageSize) }
      : await reader.snapshot(async (reads) => ({ index, report: await checkRange(reads, secrets, after, undefined, pageSize), head: await reads.head() ?? null })))
  }
}

/** Collects the messages of the ranges into their reports, in seq order. */
function collector (ranges: number): { add: (message: RangeMessage) => void; done: () => CheckedRanges } {
  const reports: Array<RangeReport | undefined> = new Array(ranges)
  let head: ChainHead | undefined
  return {
    add (message) {
      reports[message.index] = message.report
      if (message.head !== undefined) head = message.head ?? undefined
    },
    done () {
      const missing = reports.findIndex((report) => report === undefined)
      if (missing >= 0) throw new Error(`range ${missing} of the audit was not checked`)
      return { reports: reports as RangeReport[], head }
    }
  }
}

/**
 * Checks the ranges in `workers` threads, each on a read-only connection of its own. Each thread
 * takes the next range as it finishes one, so a thread slowed by other work takes fewer; ranges
 * are handed out through shared memory, so a main thread busy with a synchronous replay holds
 * no thread up.
 */
export const checkInWorkerThreads = (workers: number): CheckRanges => (job) => {
  const next = new Int32Array(new SharedArrayBuffer(4))
  const threads: Worker[] = []
  const result = new Promise<CheckedRanges>((resolve, reject) => {
    const collected = collector(job.ranges)
    let running = workers
    for (let i = 0; i < workers; i++) {
      // A young generation of 16 MB rather than V8's default: 30 MB less at peak for two threads
      // on a log of 1,000,000 rows, and no more time in the garbage collector that we could measure.
      const thread = startWorker(import.meta.url, 'audit-worker', { ...job, next } satisfies AuditWorkerData, { resourceLimits: { maxYoungGenerationSizeMb: 16 } })
      threads.push(thread)
      thread.on('message', collected.add)
      thread.on('error', reject)
      thread.on('exit', (code) => {
        if (code !== 0) reject(new Error(`an audit worker thread stopped with exit code ${code}`))
        if (--running > 0) return
        try {
          resolve(collected.done())
        } catch (error) {
          reject(error)
        }
      })
    }
  })
  return {
    result,
    terminate: async () => { await Promise.all(threads.map((thread) => thread.terminate())) }
  }
}

/** The ranges checked one after the other in this thread, as each worker thread checks its own: for the tests. */
export const checkInThisThread: CheckRanges = (job) => ({
  result: (async () => {
    const collected = collector(job.ranges)
    const reader = await openLogReader(job.database)
    try {
      let next = 0
      await checkTakenRanges(reader, job, () => next++, collected.add)
    } finally {
      await reader.close()
    }
    return collected.done()
  })(),
  terminate: async () => {}
})
