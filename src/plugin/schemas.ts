import { Type, type TSchema } from '@sinclair/typebox'
import { JobStatusSchema } from '../domain/callback.js'
import { errors } from '../errors.js'

/** How the routes appear in an OpenAPI document (@fastify/swagger): their tags, or hidden. */
export interface OpenApiOptions {
  /** Tags on every route (default `['g2sentry']`). */
  tags: string[]
  /** Leave the plugin's routes out of the document (default false). */
  hide: boolean
}

/** A route's documentation: summary and description, with the plugin's tags or hidden. */
export function routeDocs (openapi: OpenApiOptions, summary: string, description?: string): { tags: string[]; summary: string; description?: string; hide?: boolean } {
  return { tags: openapi.tags, summary, ...(description === undefined ? {} : { description }), ...(openapi.hide ? { hide: true } : {}) }
}

/** The body of every error answer: Fastify's shape, with this plugin's code. */
export const ErrorResponse = Type.Object({
  statusCode: Type.Integer(),
  code: Type.String({ description: 'FST_G2SENTRY_*, one of the codes listed in the README' }),
  error: Type.String(),
  message: Type.String()
})

/** Error answers, each described. */
export const errorResponses = (described: Record<number, string>): Record<number, TSchema> =>
  Object.fromEntries(Object.entries(described).map(([status, description]) => [status, { ...ErrorResponse, description }]))

/** A response that is not JSON, documented by its media type (a hijacked stream, the metrics text). */
export const textResponse = (mediaType: string, description: string) => ({ description, content: { [mediaType]: { schema: Type.String() } } })

export const CallbackResponse = Type.Object({
  outcome: Type.Union([Type.Literal('applied'), Type.Literal('duplicate'), Type.Literal('stale'), Type.Literal('unsupported')]),
  seq: Type.Integer(),
  jobId: Type.Integer(),
  status: Type.Union([JobStatusSchema, Type.Null()])
})

/**
 * A job id in a URL, as text: digits only, no sign, no leading zero, no exponent, no decimal
 * point. Fastify's validator would coerce `0x1389`, `5e3`, `+5001`, `05001` or `5001.0` to a
 * number; a string pattern takes the text as written. `toJobId` adds the safe-integer bound.
 */
export const JobIdString = Type.String({ pattern: '^[1-9][0-9]{0,15}$' })

/** The job id a `JobIdString` names; a 400 when it is past `Number.MAX_SAFE_INTEGER`. */
export function toJobId (text: string, name = 'jobId'): number {
  const jobId = Number(text)
  if (!Number.isSafeInteger(jobId)) throw new errors.INVALID_REQUEST(`${name} must be at most ${Number.MAX_SAFE_INTEGER}`)
  return jobId
}

export const JobIdParams = Type.Object({ jobId: JobIdString })

/** A cursor (`after`) in a query, as text: a job id, or 0 for the start. Read with `toJobId`. */
export const CursorString = Type.String({ pattern: '^(0|[1-9][0-9]{0,15})$' })

/** A page size in a query, as text: 1 to 500, digits only (the bound is checked by the pattern). */
export const LimitString = Type.String({ pattern: '^([1-9][0-9]?|[1-4][0-9]{2}|500)$' })

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
  /** How many of the job's rows were moved to archive files (`g2sentry archive`): not listed in `events`. */
  archived: Type.Integer({ minimum: 0 }),
  events: Type.Array(Type.Object({
    seq: Type.Integer(),
    eventType: Type.String(),
    jobStatus: JobStatusSchema,
    jobName: Type.String(),
    guardianPhone: Type.Union([Type.String(), Type.Null()]),
    outcome: CallbackResponse.properties.outcome,
    /** `callback`, or `api` for a row the reconciler wrote from G2 Sentry's Partner API. */
    source: Type.Union([Type.Literal('callback'), Type.Literal('api')]),
    /** True once erasure removed the row's personal data (its body, its phone). */
    redacted: Type.Boolean(),
    receivedAt: Type.String({ format: 'date-time' })
  }))
})

export const ListJobsQuerystring = Type.Object({
  status: Type.Optional(JobStatusSchema),
  /** Default 50. */
  limit: Type.Optional(LimitString),
  after: Type.Optional(CursorString)
})

export const JobListView = Type.Object({
  jobs: Type.Array(JobView),
  /** Pass as `after` to get the next page; null on the last page. */
  next: Type.Union([Type.Integer(), Type.Null()])
})
