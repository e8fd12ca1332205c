// What the threads of one SQLite rebuild say to each other (replay-threads.ts, replay-worker.ts).
import type { ShareReport } from './sqlite-replay.js'

/** The most threads one rebuild runs on. */
export const MAX_THREADS = 16

/**
 * Slots of the Int32Array the threads share. `go` and `stop` are set by the rebuild's thread;
 * the others are counters per share (index `base + part`): messages a worker has posted, pages
 * it has replayed, and batches of rows the rebuild's thread has written.
 */
export const CONTROL = {
  go: 0,
  stop: 1,
  posted: 2,
  progress: 2 + MAX_THREADS,
  acked: 2 + 2 * MAX_THREADS,
  size: 2 + 3 * MAX_THREADS
} as const

/** From a worker, in this order: ready, begun, report, any rows, end; or failed at any point. */
export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'begun' }
  | { type: 'report'; report: ShareReport }
  | { type: 'rows'; rows: unknown[][] }
  | { type: 'end' }
  /** `loading` when the worker module itself could not be loaded. */
  | { type: 'failed'; message: string; loading?: boolean }
