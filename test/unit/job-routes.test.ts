// GET /jobs, GET /jobs/:jobId and GET /jobs/:jobId/events, and the jobRoutes option.
import t from 'tap'
import type { Test } from 'tap'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { assigned, buildApp, completed, post, started, withdrawn, type CallbackPayload } from '../helpers/helpers.js'

const PHONE = '+12345678901'
const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

const get = (app: FastifyInstance, url: string, headers: Record<string, string> = {}) =>
  app.inject({ method: 'GET', url, headers })

async function deliver (t: Test, app: FastifyInstance, ...payloads: CallbackPayload[]): Promise<void> {
  for (const payload of payloads) {
    const res = await post(app, payload)
    t.equal(res.statusCode, 200, `${payload.eventType} for job ${payload.jobId} delivered`)
  }
}

t.test('GET /jobs/:jobId', async (t) => {
  t.test('the projected job', async (t) => {
    const app = await buildApp(t)
    const before = Date.now()
    await deliver(t, app, assigned(5, { phone: PHONE }))
    const afterFirst = Date.now()
    await new Promise((resolve) => setTimeout(resolve, 5))
    await deliver(t, app, started(5, { name: 'Open House, moved to 125 Main St' }))
    const after = Date.now()

    const res = await get(app, '/jobs/5')
    t.equal(res.statusCode, 200)
    t.match(res.headers['content-type'], /^application\/json/)
    const job = res.json()
    t.same(Object.keys(job).sort(), ['createdAt', 'eventCount', 'guardianPhone', 'jobId', 'jobName', 'lastEventType', 'status', 'updatedAt', 'version'])
    t.match(job, {
      jobId: 5,
      jobName: 'Open House, moved to 125 Main St',
      status: 'InProgress',
      guardianPhone: PHONE,
      lastEventType: 'JobStarted',
      version: 2,
      eventCount: 2
    })
    t.match(job.createdAt, ISO_8601)
    t.match(job.updatedAt, ISO_8601)
    const created = Date.parse(job.createdAt)
    const updated = Date.parse(job.updatedAt)
    t.ok(created >= before && created <= afterFirst, 'createdAt is when the first event arrived')
    t.ok(updated > created && updated <= after, 'updatedAt is when the last applied event arrived')
  })

  t.test('a duplicate or stale delivery counts, but changes neither version nor updatedAt', async (t) => {
    const app = await buildApp(t)
    await deliver(t, app, started(5, { phone: PHONE }))
    const first = (await get(app, '/jobs/5')).json()
    await new Promise((resolve) => setTimeout(resolve, 5))
    await deliver(t, app, started(5, { phone: PHONE }), assigned(5, { phone: PHONE }))
    const later = (await get(app, '/jobs/5')).json()
    t.same(later, { ...first, eventCount: 3 })
  })

  t.test('guardianPhone is null once the job is completed', async (t) => {
    const app = await buildApp(t)
    await deliver(t, app, assigned(5, { phone: PHONE }), started(5, { phone: PHONE }))
    t.equal((await get(app, '/jobs/5')).json().guardianPhone, PHONE)
    await deliver(t, app, completed(5))
    t.match((await get(app, '/jobs/5')).json(), { status: 'Completed', guardianPhone: null, lastEventType: 'JobCompleted' })
  })

  t.test('guardianPhone is null once the guardian withdrew', async (t) => {
    const app = await buildApp(t)
    await deliver(t, app, assigned(5, { phone: PHONE }))
    await deliver(t, app, withdrawn(5))
    t.match((await get(app, '/jobs/5')).json(), { status: 'New', guardianPhone: null, lastEventType: 'JobWithdrawed', version: 2 })
  })

  t.test('guardianPhone is null on a job assigned without one', async (t) => {
    const app = await buildApp(t)
    await deliver(t, app, assigned(5))
    t.match((await get(app, '/jobs/5')).json(), { status: 'Assigned', guardianPhone: null })
  })

  t.test('an unknown job: 404', async (t) => {
    const app = await buildApp(t)
    await deliver(t, app, assigned(5))
    const res = await get(app, '/jobs/6')
    t.equal(res.statusCode, 404)
    t.same(res.json(), { statusCode: 404, code: 'FST_G2SENTRY_JOB_NOT_FOUND', error: 'Not Found', message: 'Job 6 has no events' })
    t.equal((await get(app, `/jobs/${Number.MAX_SAFE_INTEGER}`)).statusCode, 404, 'the largest id is a valid id')
  })

  t.test('an id that is not a positive integer: 400', async (t) => {
    const app = await buildApp(t)
    for (const id of ['abc', '0', '-3', '1.5', '1e3x', String(2 ** 53), '%20']) {
      for (const url of [`/jobs/${id}`, `/jobs/${id}/events`]) {
        const res = await get(app, url)
        t.equal(res.statusCode, 400, url)
        t.match(res.json(), { statusCode: 400, code: 'FST_G2SENTRY_INVALID_REQUEST', error: 'Bad Request' }, url)
      }
    }
  })

  // Job 5001 exists: an id written any other way than its plain digits must not reach it (nor
  // another job) by number coercion.
  t.test('the id as written: digits only, no sign, leading zero, exponent, decimal point or hex', async (t) => {
    const app = await buildApp(t)
    await deliver(t, app, assigned(5001), assigned(5000))
    const rows: Array<[string, number]> = [
      ['5001', 200],
      ['5000', 200],
      [String(Number.MAX_SAFE_INTEGER), 404],
      ['0x1389', 400],
      ['0X1389', 400],
      ['0b1001110001001', 400],
      ['0o11611', 400],
      ['5e3', 400],
      ['5.001e3', 400],
      ['+5001', 400],
      ['%2B5001', 400],
      ['-5001', 400],
      ['05001', 400],
      ['005001', 400],
      ['0', 400],
      ['5001.0', 400],
      ['5001.', 400],
      ['5_001', 400],
      ['%205001', 400],
      ['5001%20', 400],
      ['Infinity', 400],
      [String(Number.MAX_SAFE_INTEGER + 1), 400],
      ['99999999999999999', 400]
    ]
    for (const [id, status] of rows) {
      for (const url of [`/jobs/${id}`, `/jobs/${id}/events`, `/jobs/stream?jobId=${id}`]) {
        // The stream answers 200 with a body that never ends: only its refusals are read here.
        if (url.includes('stream') && status !== 400) continue
        const res = await get(app, url)
        t.equal(res.statusCode, status, `${url} → ${status}`)
        if (status === 400) t.match(res.json(), { statusCode: 400, code: 'FST_G2SENTRY_INVALID_REQUEST' }, url)
        if (status === 200) t.equal(res.json().jobId, Number(id), `${url} is job ${id}`)
      }
    }
  })
})

t.test('GET /jobs/:jobId/events shows a phone only while GET /jobs/:jobId shows it', async (t) => {
  const OTHER = '+15559990000'
  const app = await buildApp(t)
  const phones = async () => ((await get(app, '/jobs/5/events')).json().events as Array<{ guardianPhone: string | null }>).map((e) => e.guardianPhone)
  await deliver(t, app, assigned(5, { phone: OTHER }), withdrawn(5))
  t.same(await phones(), [null, null], 'the guardian withdrew: the phone is gone')
  await deliver(t, app, assigned(5, { phone: PHONE }), started(5))
  t.same(await phones(), [null, null, PHONE, null], 'assigned again: only the current guardian\'s phone, not the one who withdrew')
  t.equal((await get(app, '/jobs/5')).json().guardianPhone, PHONE)
  await deliver(t, app, completed(5))
  t.same(await phones(), [null, null, null, null, null], 'completed: no phone at all')
})

t.test('GET /jobs/:jobId/events lists the job’s deliveries in seq order with their outcomes', async (t) => {
  const app = await buildApp(t)
  await deliver(t, app,
    assigned(5, { phone: PHONE }), // 1 applied
    assigned(6), // 2 applied, another job
    assigned(5, { phone: PHONE }), // 3 duplicate
    started(5), // 4 applied
    assigned(5, { phone: PHONE }), // 5 stale
    { jobId: 5, eventType: 'JobGuardianRate', jobName: 'Open House at 123 Main St', jobStatus: 'InProgress' }, // 6 unsupported
    completed(5) // 7 applied
  )
  const res = await get(app, '/jobs/5/events')
  t.equal(res.statusCode, 200)
  const { jobId, events } = res.json()
  t.equal(jobId, 5)
  t.same(events.map((e: { seq: number; eventType: string; jobStatus: string; outcome: string }) => [e.seq, e.eventType, e.jobStatus, e.outcome]), [
    [1, 'JobAssigned', 'Assigned', 'applied'],
    [3, 'JobAssigned', 'Assigned', 'duplicate'],
    [4, 'JobStarted', 'InProgress', 'applied'],
    [5, 'JobAssigned', 'Assigned', 'stale'],
    [6, 'JobGuardianRate', 'InProgress', 'unsupported'],
    [7, 'JobCompleted', 'Completed', 'applied']
  ])
  t.same(Object.keys(events[0]).sort(), ['eventType', 'guardianPhone', 'jobName', 'jobStatus', 'outcome', 'receivedAt', 'redacted', 'seq', 'source'])
  t.ok(events.every((e: { redacted: boolean }) => !e.redacted), 'none is redacted')
  t.match(events[0], { jobName: 'Open House at 123 Main St' })
  t.same(events.map((e: { guardianPhone: string | null }) => e.guardianPhone), events.map(() => null), 'the job is completed: no phone is shown')
  for (const event of events) t.match(event.receivedAt, ISO_8601)
  t.notOk('rawBody' in events[0], 'the raw body is not served')
  t.notOk('signature' in events[0], 'nor the signature')

  const unknown = await get(app, '/jobs/7/events')
  t.equal(unknown.statusCode, 404)
  t.equal(unknown.json().code, 'FST_G2SENTRY_JOB_NOT_FOUND')
})

t.test('GET /jobs', async (t) => {
  const app = await buildApp(t)
  // Seven jobs, delivered out of id order: 3, 11 and 40 completed, 25 in progress, the rest assigned.
  const ids = [40, 3, 99, 11, 25, 41, 10]
  for (const id of ids) await deliver(t, app, assigned(id, { phone: `+1555000${id}` }))
  await deliver(t, app, completed(3), completed(11), completed(40), started(25))

  t.test('pages follow `next` until it is null, in jobId order', async (t) => {
    const seen: number[][] = []
    let after: number | null = null
    let pages = 0
    do {
      const url: string = `/jobs?limit=3${after === null ? '' : `&after=${after}`}`
      const res = await get(app, url)
      t.equal(res.statusCode, 200, url)
      const body: { jobs: Array<{ jobId: number; createdAt: string }>; next: number | null } = res.json()
      t.ok(body.jobs.length <= 3)
      seen.push(body.jobs.map((job) => job.jobId))
      if (body.next !== null) t.equal(body.next, body.jobs[body.jobs.length - 1]?.jobId, 'next is the last jobId of the page')
      after = body.next
      pages++
    } while (after !== null && pages < 10)
    t.same(seen, [[3, 10, 11], [25, 40, 41], [99]])
  })

  t.test('a job in the list has the same shape as GET /jobs/:jobId', async (t) => {
    const list = (await get(app, '/jobs?limit=1&after=24')).json()
    t.equal(list.jobs.length, 1)
    t.same(list.jobs[0], (await get(app, '/jobs/25')).json())
    t.match(list.jobs[0], { jobId: 25, status: 'InProgress', guardianPhone: '+155500025' })
    t.equal(list.next, 25)
  })

  t.test('without a limit: up to 50', async (t) => {
    const res = await get(app, '/jobs')
    t.equal(res.statusCode, 200)
    t.same(res.json().jobs.map((job: { jobId: number }) => job.jobId), [3, 10, 11, 25, 40, 41, 99])
    t.equal(res.json().next, null)
  })

  t.test('an exact last page has a next, and the page after it is empty', async (t) => {
    const full = (await get(app, '/jobs?limit=7')).json()
    t.equal(full.jobs.length, 7)
    t.equal(full.next, 99)
    const empty = (await get(app, '/jobs?limit=7&after=99')).json()
    t.same(empty, { jobs: [], next: null })
  })

  t.test('the status filter', async (t) => {
    const completedJobs = (await get(app, '/jobs?status=Completed')).json()
    t.same(completedJobs.jobs.map((job: { jobId: number }) => job.jobId), [3, 11, 40])
    t.ok(completedJobs.jobs.every((job: { status: string; guardianPhone: unknown }) => job.status === 'Completed' && job.guardianPhone === null))

    const assignedIds: number[] = []
    let after: number | null = null
    let pages = 0
    do {
      const body: { jobs: Array<{ jobId: number; status: string }>; next: number | null } =
        (await get(app, `/jobs?status=Assigned&limit=2${after === null ? '' : `&after=${after}`}`)).json()
      t.ok(body.jobs.every((job) => job.status === 'Assigned'))
      assignedIds.push(...body.jobs.map((job) => job.jobId))
      after = body.next
      pages++
    } while (after !== null && pages < 10)
    t.same(assignedIds, [10, 41, 99], 'paging within a status')

    t.same((await get(app, '/jobs?status=InProgress')).json().jobs.map((job: { jobId: number }) => job.jobId), [25])
    t.same((await get(app, '/jobs?status=Canceled')).json(), { jobs: [], next: null })
    t.same((await get(app, '/jobs?status=New')).json(), { jobs: [], next: null })
  })

  t.test('an invalid query: 400', async (t) => {
    for (const query of ['status=Done', 'status=completed', 'limit=0', 'limit=501', 'limit=abc', 'limit=1.5', 'after=-1', 'after=x']) {
      const res = await get(app, `/jobs?${query}`)
      t.equal(res.statusCode, 400, query)
      t.equal(res.json().code, 'FST_G2SENTRY_INVALID_REQUEST', query)
    }
    t.equal((await get(app, '/jobs?limit=500')).statusCode, 200, 'the largest limit')
  })

  // As for a job id in the path: the numbers as written, never coerced (`after=0x18` would be 24).
  t.test('limit and after as written: digits only', async (t) => {
    const rows: Array<[string, number, number[]?]> = [
      ['after=24&limit=1', 200, [25]],
      ['after=0&limit=1', 200, [3]],
      ['limit=500', 200],
      ['after=0x18&limit=1', 400],
      ['after=2.4e1&limit=1', 400],
      ['after=%2B24&limit=1', 400],
      ['after=024&limit=1', 400],
      ['after=24.0&limit=1', 400],
      ['after=%2024&limit=1', 400],
      ['after=', 400],
      [`after=${Number.MAX_SAFE_INTEGER + 1}`, 400],
      ['limit=1e1', 400],
      ['limit=0x10', 400],
      ['limit=%2B5', 400],
      ['limit=05', 400],
      ['limit=5.0', 400],
      ['limit=', 400],
      ['limit=0', 400],
      ['limit=501', 400],
      ['limit=99999999999999999999', 400]
    ]
    for (const [query, status, ids] of rows) {
      const res = await get(app, `/jobs?${query}`)
      t.equal(res.statusCode, status, `${query} → ${status}`)
      if (status === 400) t.match(res.json(), { statusCode: 400, code: 'FST_G2SENTRY_INVALID_REQUEST' }, query)
      if (ids !== undefined) t.same(res.json().jobs.map((job: { jobId: number }) => job.jobId), ids, query)
    }
  })
})

t.test('jobRoutes: false leaves the job routes out', async (t) => {
  const app = await buildApp(t, { jobRoutes: false })
  await deliver(t, app, assigned(1))
  for (const url of ['/jobs/1', '/jobs/1/events', '/jobs']) {
    const res = await get(app, url)
    t.equal(res.statusCode, 404, url)
    t.match(res.json(), { statusCode: 404, error: 'Not Found', message: `Route GET:${url} not found` }, 'Fastify’s own not-found')
    t.not(res.json().code, 'FST_G2SENTRY_JOB_NOT_FOUND')
  }
  t.equal(await app.g2sentry.store.getJob(1).then((job) => job?.status), 'Assigned', 'the projection is still kept')
})

t.test('jobRoutes: true is the default', async (t) => {
  const app = await buildApp(t, { jobRoutes: true })
  await deliver(t, app, assigned(1))
  t.equal((await get(app, '/jobs/1')).statusCode, 200)
})

t.test('jobRoutes.prefix moves the job routes', async (t) => {
  const app = await buildApp(t, { jobRoutes: { prefix: '/g2/jobs' } })
  await deliver(t, app, assigned(1))
  t.equal((await get(app, '/g2/jobs/1')).statusCode, 200)
  t.equal((await get(app, '/g2/jobs/1/events')).statusCode, 200)
  t.same((await get(app, '/g2/jobs')).json().jobs.map((job: { jobId: number }) => job.jobId), [1])
  t.equal((await get(app, '/jobs/1')).statusCode, 404, 'not at the default prefix')
})

t.test('jobRoutes.onRequest protects the three job routes, not the callback route', async (t) => {
  // Auth hooks as users write them: a reply in Fastify's error shape, a reply with this plugin's
  // error shape, and a thrown HTTP error. Each must answer 401 on every job route.
  const hooks: Record<string, (request: FastifyRequest, reply: FastifyReply) => Promise<void>> = {
    'a hook that replies 401': async (request, reply) => {
      if (request.headers.authorization !== 'Bearer x') {
        await reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'Missing or wrong token' })
      }
    },
    'a hook that replies 401 with a code': async (request, reply) => {
      if (request.headers.authorization !== 'Bearer x') {
        await reply.code(401).send({ statusCode: 401, code: 'AUTH', error: 'Unauthorized', message: 'Missing or wrong token' })
      }
    },
    'a hook that throws a 401 error': async (request) => {
      if (request.headers.authorization !== 'Bearer x') {
        throw Object.assign(new Error('Missing or wrong token'), { statusCode: 401 })
      }
    }
  }
  for (const [name, hook] of Object.entries(hooks)) {
    t.test(name, async (t) => {
      let hookCalls = 0
      const app = await buildApp(t, {
        jobRoutes: {
          onRequest: async (request: FastifyRequest, reply: FastifyReply) => {
            hookCalls++
            await hook(request, reply)
          }
        }
      })
      const res = await post(app, assigned(1))
      t.equal(res.statusCode, 200, 'the callback route does not ask for authorization')
      t.equal(hookCalls, 0, 'the hook did not run for the callback')

      for (const url of ['/jobs/1', '/jobs/1/events', '/jobs', '/jobs?status=Assigned']) {
        const refused = await get(app, url)
        t.equal(refused.statusCode, 401, `${url} without the header`)
        t.match(refused.json(), { statusCode: 401, message: 'Missing or wrong token' }, `${url}: the hook’s answer`)
        t.notMatch(refused.body, '"jobName"', `${url}: no job data`)
        t.equal((await get(app, url, { authorization: 'Bearer y' })).statusCode, 401, `${url} with a wrong token`)
        t.equal((await get(app, url, { authorization: 'Bearer x' })).statusCode, 200, `${url} with the token`)
      }
      t.equal((await get(app, '/jobs/abc')).statusCode, 401, 'the hook runs before validation')
      t.equal((await get(app, '/jobs/2', { authorization: 'Bearer x' })).statusCode, 404)
      t.ok(hookCalls > 0)
    })
  }
})

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A route config key of this test's own, as an app's plugin would declare one. */
    tag?: string
  }
}

t.test('jobRoutes route options: config and preHandler reach the routes', async (t) => {
  const seen: unknown[] = []
  const app = await buildApp(t, {
    jobRoutes: {
      config: { tag: 'g2' },
      preHandler: async (request: FastifyRequest) => { seen.push(request.routeOptions.config) }
    }
  })
  await deliver(t, app, assigned(1))
  t.equal((await get(app, '/jobs/1')).statusCode, 200)
  t.match(seen, [{ tag: 'g2' }])
})
