import type { AppendResult, JobEvent, JobStatus } from '../domain/types.js'

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

/** The changes this instance commits, for the live stream's subscribers. */
export class ChangeFeed {
  readonly #listeners = new Set<Listener>()

  get subscribers (): number {
    return this.#listeners.size
  }

  subscribe (listener: Listener): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  publish (change: JobChange): void {
    for (const listener of this.#listeners) listener(change)
  }
}

/** The change an append made, or undefined when it changed no projection (not `applied`). */
export function changeOf (result: AppendResult, event: JobEvent, receivedAt: number): JobChange | undefined {
  if (result.outcome !== 'applied') return undefined
  const { jobId, eventType, jobStatus, jobName } = event
  return { seq: result.seq, jobId, eventType, status: jobStatus, jobName, receivedAt: new Date(receivedAt).toISOString() }
}
