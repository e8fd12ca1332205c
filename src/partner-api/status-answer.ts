import { JOB_STATUSES, type JobStatus } from '../domain/types.js'

const STATUSES: ReadonlySet<string> = new Set(JOB_STATUSES)

/** The part of `GET /jobs/{jobId}/status` that the reconciler reads. */
export interface StatusAnswer {
  jobId: number
  status: JobStatus
}

/**
 * Reads a status answer tolerantly, as G2 Sentry's docs ask: `{ jobId, status }`, other fields
 * ignored, the job id as a number or a numeric string. Undefined when it is not one.
 */
export function readStatusAnswer (body: Buffer | string): StatusAnswer | undefined {
  let parsed: unknown
  try {
    parsed = JSON.parse(typeof body === 'string' ? body : body.toString('utf8'))
  } catch {
    return undefined
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined
  const { jobId, status } = parsed as Record<string, unknown>
  const id = typeof jobId === 'string' && /^\d+$/.test(jobId) ? Number(jobId) : jobId
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || typeof status !== 'string' || !STATUSES.has(status)) return undefined
  return { jobId: id, status: status as JobStatus }
}
