import { Type, type Static } from '@sinclair/typebox'
import { JOB_STATUSES } from './job-status.js'

export const JobStatusSchema = Type.Union(JOB_STATUSES.map((status) => Type.Literal(status)))

/**
 * A callback body as G2 Sentry documents it: the one definition of its shape, for the decoder,
 * the projection (`JobEvent`), the simulator and the tests. Unknown extra fields are allowed and
 * kept in the log's raw body.
 */
export const CallbackPayload = Type.Object({
  jobId: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
  eventType: Type.String({ minLength: 1 }),
  jobName: Type.String(),
  jobStatus: JobStatusSchema,
  guardianPhone: Type.Optional(Type.String())
})
export type CallbackPayload = Static<typeof CallbackPayload>
