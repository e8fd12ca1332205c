import { setTimeout as sleep } from 'node:timers/promises'
import type { JobStatus } from '../domain/types.js'
import { FakeG2Sentry } from './fake-g2sentry.js'
import { randomSchedule } from './schedules.js'
import { notFoundHint, post } from './simulate.js'

export interface ReconcileSimulationOptions {
  /** The callback URL of a server reconciling against `http://127.0.0.1:{apiPort}`. */
  url: string
  secret: string
  /** Where the fake G2 Sentry listens (its partner key and secret: $G2SENTRY_PARTNER_KEY/SECRET, else the fake's defaults). */
  apiPort: number
  seed: number
  jobs: number
  firstJobId: number
  /** How long to wait for every job to show its true status (ms). */
  waitMs: number
  print: (line: string) => void
  /** Sent as `Authorization: Bearer <token>` to the job routes, for a server that protects them ($G2SENTRY_READ_TOKEN). */
  readToken?: string | undefined
}

/**
 * Runs the fake G2 Sentry and delivers a schedule where some callbacks are lost for good and
 * some jobs are canceled (never pushed), in any order (late withdrawals included), then waits,
 * watching the job routes, until the server's reconciler has brought every job to its true
 * status. Returns whether all did, and the fake never saw more than 50 requests in 60 s.
 */
export async function simulateReconcile (options: ReconcileSimulationOptions): Promise<boolean> {
  const { print } = options
  const fake = await FakeG2Sentry.start({
    port: options.apiPort,
    partnerKey: process.env.G2SENTRY_PARTNER_KEY || undefined,
    partnerSecret: process.env.G2SENTRY_PARTNER_SECRET || undefined
  })
  try {
    print(`fake G2 Sentry Partner API on ${fake.url} (partner key ${fake.partnerKey})`)
    const { jobs, deliveries } = randomSchedule(options.seed, {
      jobs: options.jobs, firstJobId: options.firstJobId, bound: 'none', cancelRate: 0.25, giveUpRate: 0.2
    })
    for (const job of jobs) fake.setStatus(job.jobId, job.finalStatus)
    const outcomes = new Map<string, number>()
    for (const delivery of deliveries) {
      const { status, answer } = await post(options.url, options.secret, delivery.event)
      const key = status === 200 ? (answer as { outcome: string }).outcome : `HTTP ${status}`
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1)
    }
    const canceled = jobs.filter((j) => j.steps.includes('cancel')).length
    const sent = new Set(deliveries.map((d) => `${d.event.jobId} ${d.index}`)).size
    const lost = jobs.reduce((n, j) => n + j.events.length, 0) - sent
    print(`seed ${options.seed}: ${deliveries.length} deliveries for ${jobs.length} jobs (${canceled} canceled without a callback, ${lost} events lost for good) → ` +
      [...outcomes].map(([k, n]) => `${n} ${k}`).join(', '))
    if (outcomes.has('HTTP 404')) print(notFoundHint(options.url))

    const jobsUrl = new URL('/jobs/', options.url)
    const headers = options.readToken === undefined ? undefined : { authorization: `Bearer ${options.readToken}` }
    const started = Date.now()
    let wrong: Array<{ jobId: number; projected: string; truth: JobStatus }> = []
    let reported = -1
    for (;;) {
      wrong = []
      for (const job of jobs) {
        const response = await fetch(new URL(String(job.jobId), jobsUrl), { headers })
        const projected = response.ok ? (await response.json() as { status: JobStatus }).status : `HTTP ${response.status}`
        if (projected !== job.finalStatus) wrong.push({ jobId: job.jobId, projected, truth: job.finalStatus })
      }
      if (wrong.length !== reported) {
        print(`after ${Math.round((Date.now() - started) / 1000)} s: ${jobs.length - wrong.length} of ${jobs.length} jobs show their true status`)
        reported = wrong.length
      }
      if (wrong.length === 0 || Date.now() - started > options.waitMs) break
      await sleep(1000)
    }
    for (const w of wrong) print(`job ${w.jobId}: projected ${w.projected}, truly ${w.truth}`)
    const most = fake.maxInWindow(60_000)
    const refused = fake.requests.filter((r) => r.status === 429).length
    print(`the fake saw ${fake.requests.length} requests (${fake.counts.logins} logins, ${fake.counts.refreshes} refreshes), at most ${most} in any 60 s, ${refused} refused with 429`)
    if (wrong.length > 0 && fake.requests.length === 0) {
      print(`no request reached the fake: start the server with G2SENTRY_API_URL=${fake.url} G2SENTRY_PARTNER_KEY=${fake.partnerKey} G2SENTRY_PARTNER_SECRET=… (see the README)`)
    }
    return wrong.length === 0 && most <= 50 && refused === 0
  } finally {
    await fake.close()
  }
}
