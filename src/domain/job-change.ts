import type { AppendResult, JobEvent, JobStatus, LogRow } from './types.js'

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
