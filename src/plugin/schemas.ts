import { Type, type Static } from '@sinclair/typebox'
import { JobStatusSchema } from '../domain/callback.js'


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
