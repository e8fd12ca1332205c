/**
 * The one set of test fixtures: the secret the tests sign with, the four payloads G2 Sentry pushes
 * (shaped like the examples of its callback page), their exact bytes, and an event as the callback
 * route hands it to a store.
 */
import type { IncomingEvent, JobEvent, JobStatus } from '../../src/domain/types.js'
import { signBody } from '../../src/domain/verify-signature.js'

export const SECRET = 'test-secret'
export const JOB_NAME = 'Open House at 123 Main St'

/** A fixed epoch so that received-at times are predictable. */
export const T0 = 1_700_000_000_000

/** The exact bytes a payload is sent as: objects through JSON.stringify, strings as UTF-8. */
export function bytesOf (payload: unknown): Buffer {
  if (Buffer.isBuffer(payload)) return payload
  if (typeof payload === 'string') return Buffer.from(payload, 'utf8')
  return Buffer.from(JSON.stringify(payload), 'utf8')
}

/** A verified event as the route hands it to the store: the real bytes, their signature, a time. */
export function incoming (payload: JobEvent, receivedAt: number = T0): IncomingEvent {
  const rawBody = bytesOf(payload)
  return { ...payload, rawBody, signature: signBody(rawBody, SECRET), receivedAt }
}

/** A callback body as the builders below make it: the callback's one shape (src/domain/callback.ts). */
export type CallbackPayload = JobEvent

interface EventFields {
  phone?: string
  name?: string
}

function payload (jobId: number, eventType: string, jobStatus: JobStatus, { phone, name = JOB_NAME }: EventFields): CallbackPayload {
  const body: CallbackPayload = { jobId, eventType, jobName: name, jobStatus }
  if (phone !== undefined) body.guardianPhone = phone
  return body
}

/** `JobAssigned` → `Assigned`, with a guardian phone when given. */
export const assigned = (jobId: number, fields: EventFields = {}): CallbackPayload =>
  payload(jobId, 'JobAssigned', 'Assigned', fields)

/** `JobStarted` → `InProgress`, with a guardian phone when given. */
export const started = (jobId: number, fields: EventFields = {}): CallbackPayload =>
  payload(jobId, 'JobStarted', 'InProgress', fields)

/** `JobCompleted` → `Completed`. */
export const completed = (jobId: number, fields: Omit<EventFields, 'phone'> = {}): CallbackPayload =>
  payload(jobId, 'JobCompleted', 'Completed', fields)

/** `JobWithdrawed` → `New`: the guardian withdrew, the job is open again. */
export const withdrawn = (jobId: number, fields: Omit<EventFields, 'phone'> = {}): CallbackPayload =>
  payload(jobId, 'JobWithdrawed', 'New', fields)
