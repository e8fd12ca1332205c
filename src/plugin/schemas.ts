import { Type, type Static } from '@sinclair/typebox'
import { JOB_STATUSES } from '../domain/types.js'

const JobStatusSchema = Type.Union(JOB_STATUSES.map((status) => Type.Literal(status)))

/** A callback body as G2 Sentry documents it. Unknown extra fields are allowed and kept in the log. */
export const CallbackPayload = Type.Object({
  jobId: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
  eventType: Type.String({ minLength: 1 }),
  jobName: Type.String(),
  jobStatus: JobStatusSchema,
  guardianPhone: Type.Optional(Type.String())
})
export type CallbackPayload = Static<typeof CallbackPayload>

export const CallbackResponse = Type.Object({
  outcome: Type.Union([Type.Literal('applied'), Type.Literal('duplicate'), Type.Literal('stale'), Type.Literal('unsupported')]),
  seq: Type.Integer(),
  jobId: Type.Integer(),
  status: Type.Union([JobStatusSchema, Type.Null()])
})

export const JobIdParams = Type.Object({
  jobId: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })
})

export const JobView = Type.Object({
  jobId: Type.Integer(),
  jobName: Type.String(),
  status: JobStatusSchema,
  guardianPhone: Type.Union([Type.String(), Type.Null()]),
  lastEventType: Type.String(),
  version: Type.Integer(),
  eventCount: Type.Integer(),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' })
})

export const JobEventsView = Type.Object({
  jobId: Type.Integer(),
  events: Type.Array(Type.Object({
    seq: Type.Integer(),
    eventType: Type.String(),
    jobStatus: JobStatusSchema,
    jobName: Type.String(),
    guardianPhone: Type.Union([Type.String(), Type.Null()]),
    outcome: CallbackResponse.properties.outcome,
    /** `callback`, or `api` for a row the reconciler wrote from G2 Sentry's Partner API. */
    source: Type.Union([Type.Literal('callback'), Type.Literal('api')]),
    receivedAt: Type.String({ format: 'date-time' })
  }))
})

export const ListJobsQuerystring = Type.Object({
  status: Type.Optional(JobStatusSchema),
  limit: Type.Integer({ minimum: 1, maximum: 500, default: 50 }),
  after: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }))
})

export const JobListView = Type.Object({
  jobs: Type.Array(JobView),
  /** Pass as `after` to get the next page; null on the last page. */
  next: Type.Union([Type.Integer(), Type.Null()])
})
