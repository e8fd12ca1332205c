// The public types as a user of the published package sees them (`fastify-g2sentry`, resolved
// through package.json's exports to dist/*.d.ts, so run after `npm run build`): what the README's
// TypeScript section promises type-checks, and what the options refuse does not.
import Fastify, { type FastifyRequest } from 'fastify'
import { expect, test } from 'tstyche'
import g2sentry, {
  errors, projectEvent, sqliteStore, postgresStore, type AppendResult, type AuditReport, type CommittedEvent,
  type Decision, type G2SentryDecorator, type G2SentryNamespaces, type G2SentryOptions, type G2SentryStore, type IncomingEvent, type JobState,
  type JobStatus, type LogRow, type Outcome, type RowOutcome, type ProjectedEvent, type QuarantineRow, type RebuildReport, type RetryReport
} from 'fastify-g2sentry'

const app = Fastify()

test('the plugin registers with a secret, or several during a rotation', () => {
  expect(app.register(g2sentry, { secret: 'portal-secret' })).type.not.toRaiseError()
  expect(app.register(g2sentry, { secret: ['new-secret', 'old-secret'], database: 'postgres://db/g2?schema=g2sentry' })).type.not.toRaiseError()
  expect(app.register(g2sentry, {
    secret: 'portal-secret',
    database: './data/g2sentry.db',
    callbackPath: '/hooks/g2',
    bodyLimit: 65_536,
    jobRoutes: { prefix: '/jobs', onRequest: async () => {} },
    metrics: { path: '/metrics', onRequest: async () => {} },
    onEvent: (event, request) => {
      expect(event).type.toBe<CommittedEvent>()
      expect(request).type.toBe<FastifyRequest | undefined>()
    }
  })).type.not.toRaiseError()
  expect(app.register(g2sentry, { secret: 's', jobRoutes: false, metrics: true })).type.not.toRaiseError()
})

test('options of the wrong type are refused', () => {
  expect(app.register(g2sentry, {})).type.toRaiseError()
  expect(app.register(g2sentry, { secret: 42 })).type.toRaiseError()
  expect(app.register(g2sentry, { secret: 's', bodyLimit: '64kb' })).type.toRaiseError()
  // Each option on its own, so that each is refused for its own reason.
  expect<{ database: 'x.db' }>().type.not.toBeAssignableTo<G2SentryOptions>()
  expect<{ secret: number }>().type.not.toBeAssignableTo<G2SentryOptions>()
  expect<{ secret: number[] }>().type.not.toBeAssignableTo<G2SentryOptions>()
  expect<{ secret: string, bodyLimit: string }>().type.not.toBeAssignableTo<G2SentryOptions>()
  expect<{ secret: string, database: boolean }>().type.not.toBeAssignableTo<G2SentryOptions>()
  expect<{ secret: string, onEvent: string }>().type.not.toBeAssignableTo<G2SentryOptions>()
  expect<{ secret: string, jobRoutes: { prefix: number } }>().type.not.toBeAssignableTo<G2SentryOptions>()
  expect<{ secret: string, store: Pick<G2SentryStore, 'append' | 'getJob'> }>().type.not.toBeAssignableTo<G2SentryOptions>()
  expect<{ secret: string, onEvent: (event: CommittedEvent) => number }>().type.not.toBeAssignableTo<G2SentryOptions>()
  expect<{ secret: string, retention: { everyMs: number } }>().type.not.toBeAssignableTo<G2SentryOptions>()
  expect<{ secret: string, retention: { personalDataMs: string } }>().type.not.toBeAssignableTo<G2SentryOptions>()
})

test('G2SentryOptions', () => {
  expect<G2SentryOptions['secret']>().type.toBe<string | string[]>()
  expect<{ secret: 's' }>().type.toBeAssignableTo<G2SentryOptions>()
  expect<{ secret: 's', retention: { personalDataMs: 1 } }>().type.toBeAssignableTo<G2SentryOptions>()
  expect<{ secret: string[], store: G2SentryStore, jobRoutes: false, metrics: true }>().type.toBeAssignableTo<G2SentryOptions>()
})

test('fastify.g2sentry', () => {
  expect(app.g2sentry).type.toBe<G2SentryDecorator & G2SentryNamespaces>()
  expect(app.g2sentry.store).type.toBe<G2SentryStore>()
  expect(app.g2sentry.readLog()).type.toBe<AsyncGenerator<LogRow>>()
  expect(app.g2sentry.readLog({ jobId: 101, afterSeq: 10 })).type.toBe<AsyncGenerator<LogRow>>()
  expect(app.g2sentry.rebuild()).type.toBe<Promise<RebuildReport>>()
  expect(app.g2sentry.checkProjection()).type.toBe<Promise<RebuildReport>>()
  expect(app.g2sentry.audit()).type.toBe<Promise<AuditReport>>()
  expect(app.g2sentry.retryQuarantine()).type.toBe<Promise<RetryReport>>()
  expect(app.g2sentry.retryQuarantine({ ids: [3, 9] })).type.toBe<Promise<RetryReport>>()
  expect(app.g2sentry.exportLog({ format: 'csv', write: (chunk: string) => { process.stdout.write(chunk) } })).type.toBe<Promise<{ rows: number }>>()
  expect(app.g2sentry.exportLog({ format: 'xml', write: () => {} })).type.toRaiseError('Type \'"xml"\' is not assignable to type \'"ndjson" | "csv"\'')
  expect(app.g2sentry.readLog({ jobId: '101' })).type.toRaiseError()
})

test('the G2SentryStore interface', () => {
  expect<G2SentryStore['append']>().type.toBe<(event: IncomingEvent) => Promise<AppendResult>>()
  expect<G2SentryStore['getJob']>().type.toBe<(jobId: number) => Promise<JobState | undefined>>()
  expect<G2SentryStore['readLog']>().type.toBe<(query: { jobId?: number | undefined, afterSeq?: number | undefined, limit: number }) => Promise<LogRow[]>>()
  expect<G2SentryStore['listQuarantine']>().type.toBe<(query: { afterId?: number | undefined, limit: number, pending?: boolean | undefined }) => Promise<QuarantineRow[]>>()
  expect<G2SentryStore['chainHead']>().type.toBe<() => Promise<{ seq: number, hash: string | null } | undefined>>()
  expect<G2SentryStore['rebuild']>().type.toBe<(options?: { dryRun?: boolean }) => Promise<RebuildReport>>()
  expect<G2SentryStore['close']>().type.toBe<() => Promise<void>>()
  expect(sqliteStore({ filename: 'g2.db' })).type.toBeAssignableTo<G2SentryStore>()
  expect(postgresStore({ connectionString: 'postgres://db/g2' })).type.toBe<Promise<G2SentryStore>>()
  // A store of one's own goes in the `store` option.
  const own = sqliteStore({ filename: ':memory:' }) satisfies G2SentryStore
  expect(app.register(g2sentry, { secret: 's', store: own })).type.not.toRaiseError()
})

test('exported types', () => {
  expect<JobStatus>().type.toBe<'New' | 'Assigned' | 'InProgress' | 'Completed' | 'Canceled'>()
  expect<Outcome>().type.toBe<'applied' | 'duplicate' | 'stale' | 'unsupported'>()
  expect<AppendResult>().type.toBe<{ outcome: Outcome, seq: number, jobId: number, status: JobStatus | null }>()
  expect<JobState>().type.toBe<{
    jobId: number
    jobName: string
    status: JobStatus
    guardianPhone: string | null
    lastEventType: string
    version: number
    eventCount: number
    createdAt: number
    updatedAt: number
  }>()
  expect<LogRow['rawBody']>().type.toBe<Buffer>()
  expect<LogRow['seq']>().type.toBe<number>()
  expect<RowOutcome>().type.toBe<Outcome | 'recorded'>()
  expect<LogRow['outcome']>().type.toBe<RowOutcome>()
  expect<LogRow['hash']>().type.toBe<string | null>()
  expect<LogRow['sameAs']>().type.toBe<number | null>()
  expect<CommittedEvent>().type.toBeAssignableTo<AppendResult>()
  expect(new errors.INVALID_OPTION('secret is required')).type.toBeAssignableTo<Error & { code: string, statusCode?: number }>()
})

test('projectEvent', () => {
  expect(projectEvent).type.toBe<(current: JobState | undefined, event: ProjectedEvent) => Decision>()
  const decision = projectEvent(undefined, { jobId: 1, eventType: 'JobAssigned', jobName: 'Gala', jobStatus: 'Assigned', receivedAt: 0 })
  if (decision.outcome === 'unsupported') expect(decision.state).type.toBe<JobState | undefined>()
  else expect(decision.state).type.toBe<JobState>()
  expect(projectEvent(undefined, { jobId: 1, eventType: 'JobAssigned', jobName: 'Gala', jobStatus: 'Done', receivedAt: 0 })).type.toRaiseError()
})
