import { randomSchedule } from './schedules.js'
import { signBody } from '../domain/verify-signature.js'
import type { JobEvent, JobStatus } from '../domain/types.js'
import { errors } from '../errors.js'

/** The secret the example server and the simulator share when none is configured. Never use it in production. */
export const DEVELOPMENT_SECRET = 'g2sentry-development-secret-not-for-production'

export interface SimulatedDelivery {
  /** What this delivery shows, for the printout. */
  note: string
  payload: JobEvent
}

const event = (jobId: number, jobName: string, eventType: string, jobStatus: JobStatus, guardianPhone?: string) =>
  ({ jobId, eventType, jobName, jobStatus, ...(guardianPhone === undefined ? {} : { guardianPhone }) })

/**
 * A few job lifecycles in a delivery order G2 Sentry can produce: a redelivery, a start that
 * overtakes its assignment, a late assignment after completion, a withdrawal and re-assignment,
 * and an event type the projection does not know.
 */
export function simulatedDeliveries (firstJobId = 101): SimulatedDelivery[] {
  const [a, b, c, d] = [firstJobId, firstJobId + 1, firstJobId + 2, firstJobId + 3]
  const house = 'Open House at 123 Main St'
  const gala = 'Charity Gala, Riverside Hall'
  const site = 'Night watch, 9 Dock Rd'
  return [
    { note: 'assigned with a guardian phone', payload: event(a, house, 'JobAssigned', 'Assigned', '+12345678901') },
    { note: 'started', payload: event(a, house, 'JobStarted', 'InProgress', '+12345678901') },
    { note: 'the same start again (a redelivery)', payload: event(a, house, 'JobStarted', 'InProgress', '+12345678901') },
    { note: 'completed', payload: event(a, house, 'JobCompleted', 'Completed') },
    { note: 'the assignment redelivered after completion (late)', payload: event(a, house, 'JobAssigned', 'Assigned', '+12345678901') },
    { note: 'started before its assignment arrived', payload: event(b, gala, 'JobStarted', 'InProgress', '+19876543210') },
    { note: 'the assignment, overtaken', payload: event(b, gala, 'JobAssigned', 'Assigned', '+19876543210') },
    { note: 'assigned', payload: event(c, site, 'JobAssigned', 'Assigned', '+15550001111') },
    { note: 'withdrawn by the guardian: open again', payload: event(c, site, 'JobWithdrawed', 'New') },
    { note: 're-assigned, no phone yet', payload: event(c, site, 'JobAssigned', 'Assigned') },
    { note: 'an event type the projection does not know', payload: event(d, 'Front desk, Pier 4', 'JobGuardianRate', 'New') }
  ]
}

export interface SimulateOptions {
  /** The callback URL, e.g. http://127.0.0.1:3000/callbacks/g2sentry. */
  url: string
  secret: string
  firstJobId?: number
  print?: (line: string) => void
}

/** `fetch`, but a server that cannot be reached is named in one line rather than "fetch failed". */
async function request (url: string | URL, init?: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init)
  } catch (error) {
    const cause = (error as { cause?: { code?: string, message?: string } }).cause
    throw new errors.UNREACHABLE(String(url), cause?.code ?? cause?.message ?? (error as Error).message)
  }
}

/** Signs `payload` with `secret` and POSTs it to the callback URL. */
export async function post (url: string, secret: string, payload: JobEvent): Promise<{ status: number; answer: unknown }> {
  const body = JSON.stringify(payload)
  const response = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-signature': signBody(body, secret) },
    body
  })
  return { status: response.status, answer: await response.json().catch(() => null) }
}

/** Said when the URL answers 404: usually the server's address was given, not the callback's. */
export const notFoundHint = (url: string): string =>
  `${url} answered 404: --url takes the callback URL itself, e.g. http://127.0.0.1:3000/callbacks/g2sentry`

/** Said when every delivery answered 401: the simulator signs with another secret than the server checks. */
const secretHint = (url: string): string =>
  `${url} answered 401 to every delivery: the server's callback secret and the simulator's differ ` +
  '(give the simulator the server\'s with --secret or G2SENTRY_CALLBACK_SECRET)'

/** Signs and posts the simulated deliveries one after another; returns each answer. */
export async function simulate (options: SimulateOptions): Promise<Array<{ delivery: SimulatedDelivery; status: number; body: unknown }>> {
  const print = options.print ?? (() => {})
  const answers = []
  for (const delivery of simulatedDeliveries(options.firstJobId)) {
    const { status, answer } = await post(options.url, options.secret, delivery.payload)
    const { jobId, eventType } = delivery.payload
    const summary = status === 200
      ? `${(answer as { outcome: string }).outcome} (seq ${(answer as { seq: number }).seq}, status ${(answer as { status: string | null }).status})`
      : `${(answer as { code?: string } | null)?.code ?? ''}`
    print(`job ${jobId} ${eventType.padEnd(15)} ${delivery.note.padEnd(52)} → ${status} ${summary}`)
    answers.push({ delivery, status, body: answer })
  }
  if (answers.some((a) => a.status === 404)) print(notFoundHint(options.url))
  if (answers.every((a) => a.status === 401)) print(secretHint(options.url))
  return answers
}

export interface RandomSimulationOptions extends SimulateOptions {
  seed: number
  jobs: number
  /** Where the job routes are (default: `/jobs` on the callback URL's host). */
  jobsUrl?: string
  /** Sent as `Authorization: Bearer <token>` to the job routes, for a server that protects them. */
  readToken?: string | undefined
}

/**
 * Delivers a generated schedule (redeliveries, reordering, withdrawals, none crossing a
 * withdrawal) and checks that every job ends in its true status. Returns whether all did.
 */
export async function simulateRandom (options: RandomSimulationOptions): Promise<boolean> {
  const print = options.print ?? (() => {})
  const { jobs, deliveries } = randomSchedule(options.seed, { jobs: options.jobs, firstJobId: options.firstJobId ?? 101, bound: 'withdrawals' })
  const outcomes = new Map<string, number>()
  for (const delivery of deliveries) {
    const { status, answer } = await post(options.url, options.secret, delivery.event)
    const key = status === 200 ? (answer as { outcome: string }).outcome : `HTTP ${status}`
    outcomes.set(key, (outcomes.get(key) ?? 0) + 1)
  }
  print(`seed ${options.seed}: ${deliveries.length} deliveries for ${jobs.length} jobs → ${[...outcomes].map(([k, n]) => `${n} ${k}`).join(', ')}`)
  if (outcomes.has('HTTP 404')) print(notFoundHint(options.url))
  if (outcomes.size === 1 && outcomes.has('HTTP 401')) {
    // Nothing was logged, so every job would be reported missing: the secret is the one thing to say.
    print(secretHint(options.url))
    return false
  }
  const jobsUrl = options.jobsUrl ?? new URL('/jobs/', options.url).href
  const headers = options.readToken === undefined ? undefined : { authorization: `Bearer ${options.readToken}` }
  let converged = 0
  for (const job of jobs) {
    const response = await request(new URL(String(job.jobId), jobsUrl), { headers })
    const projected = response.ok ? (await response.json() as { status: JobStatus }).status : `HTTP ${response.status}`
    if (projected === job.finalStatus) converged++
    else print(`job ${job.jobId}: projected ${projected}, truly ${job.finalStatus} (${job.steps.join(' → ')})`)
  }
  print(`${converged} of ${jobs.length} jobs show their true status`)
  const refused = [...outcomes.keys()].some((key) => key.startsWith('HTTP'))
  return converged === jobs.length && !refused
}
