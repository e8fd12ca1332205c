import type { FastifyError, FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { errorBody, errors } from '../errors.js'
import type { G2SentryRouteOptions, StreamLimits } from './options.js'
import {
  errorResponses, JobEventsView, JobIdParams, JobListView, JobView, ListJobsQuerystring, routeDocs, toJobId, type OpenApiOptions
} from './schemas.js'
import { jobStream } from './job-stream.js'
import type { ChangeFeed } from './change-feed.js'
import { readLogStream } from '../log/read-log.js'
import type { G2SentryStore } from '../store/contract.js'
import type { EventSource, JobState, LogRow, Outcome } from '../domain/types.js'
import { visiblePhone } from '../domain/redacted-phone.js'

const iso = (ms: number) => new Date(ms).toISOString()

const jobView = (job: JobState) => ({ ...job, guardianPhone: visiblePhone(job.guardianPhone), createdAt: iso(job.createdAt), updatedAt: iso(job.updatedAt) })

/**
 * A log row as the routes show it. A guardian's phone is personal data, valid only for the shift:
 * a row shows it only while it is the phone `GET /jobs/:jobId` shows (the job `Assigned` or
 * `InProgress` with that guardian), never a withdrawn guardian's or a finished job's. The CLI,
 * for auditors, shows every row as it is.
 */
const eventView = (row: LogRow, currentPhone: string | null) => ({
  seq: row.seq,
  eventType: row.eventType,
  jobStatus: row.jobStatus,
  jobName: row.jobName,
  guardianPhone: row.guardianPhone !== null && row.guardianPhone === currentPhone ? visiblePhone(row.guardianPhone) : null,
  // A job's rows are events: records (redactions, checkpoints) have job id 0.
  outcome: row.outcome as Outcome,
  source: row.source as EventSource,
  redacted: row.redactedBy !== null,
  receivedAt: iso(row.receivedAt)
})

/** `GET /jobs`, `GET /jobs/stream`, `GET /jobs/:jobId` and `GET /jobs/:jobId/events`, read from the projection and the log. */
export async function jobRoutes (instance: FastifyInstance, opts: {
  store: G2SentryStore
  feed: ChangeFeed
  routeOptions: G2SentryRouteOptions
  stream: StreamLimits
  openapi: OpenApiOptions
}): Promise<void> {
  const app = instance.withTypeProvider<TypeBoxTypeProvider>()
  const { store, feed, routeOptions, stream, openapi } = opts
  const notFound = errorResponses({ 400: 'The job id is not a positive integer', 404: 'The log has nothing for this job' })

  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error.validation !== undefined) {
      reply.code(400).send(new errors.INVALID_REQUEST(error.message))
      return
    }
    // A full stream is the cap doing its job, not a fault: the request's own log line shows the 503.
    if (error.code === 'FST_G2SENTRY_STREAM_FULL') return reply.code(503).send(errorBody(error))
    if (error.statusCode === undefined || error.statusCode >= 500) request.log.error({ err: error }, 'g2sentry: job route failed')
    reply.send(error)
  })

  jobStream(instance, { store, feed, routeOptions, limits: stream, openapi })

  app.get('/', {
    ...routeOptions,
    schema: {
      ...routeDocs(openapi, 'List jobs', 'The projection, a page at a time in job id order, optionally by status.'),
      querystring: ListJobsQuerystring,
      response: { 200: JobListView, ...errorResponses({ 400: 'A query parameter is not valid' }) }
    }
  }, async (request) => {
    const { status } = request.query
    const limit = request.query.limit === undefined ? 50 : Number(request.query.limit)
    const after = request.query.after === undefined ? undefined : toJobId(request.query.after, 'after')
    const jobs = await store.listJobs({ status, limit, after })
    const last = jobs[jobs.length - 1]
    return { jobs: jobs.map(jobView), next: jobs.length === limit && last !== undefined ? last.jobId : null }
  })

  app.get('/:jobId', {
    ...routeOptions,
    schema: {
      ...routeDocs(openapi, 'A job\'s current status', 'Projected from the event log; the guardian\'s phone only while the job is Assigned or InProgress.'),
      params: JobIdParams,
      response: { 200: JobView, ...notFound }
    }
  }, async (request) => {
    const jobId = toJobId(request.params.jobId)
    const job = await store.getJob(jobId)
    if (job === undefined) throw new errors.JOB_NOT_FOUND(jobId)
    return jobView(job)
  })

  app.get('/:jobId/events', {
    ...routeOptions,
    schema: {
      ...routeDocs(openapi, 'A job\'s deliveries', 'Every log row of the job in seq order, with its outcome (duplicates, stale and unsupported ones too); `archived` counts the rows moved to archive files.'),
      params: JobIdParams,
      response: { 200: JobEventsView, ...notFound }
    }
  }, async (request) => {
    const jobId = toJobId(request.params.jobId)
    const currentPhone = (await store.getJob(jobId))?.guardianPhone ?? null
    const events = []
    for await (const row of readLogStream(store, { jobId })) events.push(eventView(row, currentPhone))
    // Rows moved to an archive file are counted, not listed (docs/design.md, "Archiving").
    const archived = await store.archivedEvents?.(jobId) ?? 0
    if (events.length === 0 && archived === 0) throw new errors.JOB_NOT_FOUND(jobId)
    return { jobId, archived, events }
  })
}
