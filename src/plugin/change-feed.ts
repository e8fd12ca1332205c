import type { AppendResult, JobEvent, JobStatus, LogRow } from '../domain/types.js'

/**
 * A change of a job's projection, as the live stream sends it. It names the change, not the
 * job's details: the guardian's phone stays behind the job routes.
 */
export interface JobChange {
  seq: number
  jobId: number
  eventType: string
  status: JobStatus
  jobName: string
  receivedAt: string
}

type Listener = (change: JobChange) => void

/**
 * The projection changes, for the live stream's subscribers. On its own it passes on what this
 * instance publishes after each commit; once it draws from the log (src/plugin/log-feed.ts) it
 * emits the log's changes of every instance, in seq order, and a publish only says that the log
 * grew.
 */
export class ChangeFeed {
  readonly #listeners = new Set<Listener>()
  #source: (() => void) | undefined

  get subscribers (): number {
    return this.#listeners.size
  }

  subscribe (listener: Listener): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  /** A change this instance committed. */
  publish (change: JobChange): void {
    if (this.#source !== undefined) this.#source()
    else this.emit(change)
  }

  /** Makes the log the only source: `publish` then calls `wake`, and the reader calls `emit`. */
  drawFrom (wake: () => void): void {
    this.#source = wake
  }

  /** Hands `change` to every subscriber. */
  emit (change: JobChange): void {
    for (const listener of this.#listeners) listener(change)
  }
}

/** The change an append made, or undefined when it changed no projection (not `applied`). */
export function changeOf (result: AppendResult, event: JobEvent, receivedAt: number): JobChange | undefined {
  if (result.outcome !== 'applied') return undefined
  const { jobId, eventType, jobStatus, jobName } = event
  return { seq: result.seq, jobId, eventType, status: jobStatus, jobName, receivedAt: new Date(receivedAt).toISOString() }
}

/** The change a log row made, or undefined when it changed no projection (not `applied`). */
export function changeOfRow (row: LogRow): JobChange | undefined {
  if (row.outcome !== 'applied') return undefined
  return { seq: row.seq, jobId: row.jobId, eventType: row.eventType, status: row.jobStatus, jobName: row.jobName, receivedAt: new Date(row.receivedAt).toISOString() }
}
