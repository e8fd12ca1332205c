import { JOB_STATUSES, type JobStatus } from './job-status.js'

const STATUSES: ReadonlySet<string> = new Set(JOB_STATUSES)

/** The part of `GET /jobs/{jobId}/status` that the reconciler reads. */
export interface StatusAnswer {
  jobId: number
  status: JobStatus
}

/**
 * A value G2 Sentry sent, fit for a log line and a database column: at most 40 characters,
 * quoted, control characters escaped. Only ever applied to fields that are not credentials.
 */
export function quoted (value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value) ?? String(value)
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text)
}

/**
 * Judges a status answer tolerantly, as G2 Sentry's docs ask: `{ jobId, status }`, other fields
 * ignored, the job id as a number or a numeric string. Either the answer, or a short description
 * of what was answered instead (for the job's failure record and the log; never the body itself).
 * With `jobId`, an answer about another job is refused too.
 */
export function judgeStatusAnswer (body: Buffer | string, jobId?: number): { answer: StatusAnswer } | { problem: string } {
  let parsed: unknown
  try {
    parsed = JSON.parse(typeof body === 'string' ? body : body.toString('utf8'))
  } catch {
    return { problem: 'a body that is not JSON' }
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return { problem: `JSON that is not an object (${Array.isArray(parsed) ? 'an array' : parsed === null ? 'null' : `a ${typeof parsed}`})` }
  }
  const { jobId: given, status } = parsed as Record<string, unknown>
  const id = typeof given === 'string' && /^\d+$/.test(given) ? Number(given) : given
  if (typeof id !== 'number' || !Number.isSafeInteger(id)) return { problem: `an answer without a usable jobId (${given === undefined ? 'none' : quoted(given)})` }
  if (jobId !== undefined && id !== jobId) return { problem: `the status of another job (jobId ${id})` }
  if (typeof status !== 'string') return { problem: `an answer without a status (${status === undefined ? 'none' : quoted(status)})` }
  if (!STATUSES.has(status)) return { problem: `an unknown status ${quoted(status)}` }
  return { answer: { jobId: id, status: status as JobStatus } }
}

/** Reads a status answer (see `judgeStatusAnswer`); undefined when it is not one. */
export function readStatusAnswer (body: Buffer | string): StatusAnswer | undefined {
  const judged = judgeStatusAnswer(body)
  return 'answer' in judged ? judged.answer : undefined
}
