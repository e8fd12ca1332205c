/**
 * Job lifecycles and the ways G2 Sentry can deliver them: the ground truth that the property
 * tests, the simulator and the benchmark all compare the projection with.
 *
 * Everything here is a pure function of explicit choices (which steps a job takes, when each
 * delivery arrives, which job speaks next), so fast-check can drive it in the tests and the small
 * seeded PRNG below can drive it where fast-check is not available. No runtime dependency.
 */
import type { JobEvent, JobStatus } from '../domain/types.js'

/**
 * One thing that happens to a job at G2 Sentry, named for the reader of a shrunk counterexample.
 * `cancel` (the client cancels) is never pushed: only the Partner API tells it.
 */
export type Step = 'assign' | 'assignWithPhone' | 'withdraw' | 'start' | 'complete' | 'cancel'

/** One POST the receiver sees. `attempt` counts the arrivals of the same event (1 = the first to arrive). */
export interface Delivery {
  event: JobEvent
  /** The event's place in its job's lifecycle. */
  index: number
  attempt: number
}

/** A job's steps, its true events and where it truly ends. */
export interface JobPlan {
  jobId: number
  steps: Step[]
  events: JobEvent[]
  finalStatus: JobStatus
}

/**
 * `none`: any arrival order. `withdrawals`: no delivery crosses a withdrawal — every delivery of
 * an event that truly happened before a withdrawal arrives before every delivery of it, and every
 * delivery of a later event after every delivery of it (docs/design.md, "Properties", 4).
 */
export type Bound = 'none' | 'withdrawals'

/** A source of uniform numbers in [0, 1), such as `mulberry32(seed)`. */
export type Rng = () => number

const EVENT: Record<Exclude<Step, 'cancel'>, { eventType: string; jobStatus: JobStatus; phone: boolean }> = {
  assign: { eventType: 'JobAssigned', jobStatus: 'Assigned', phone: false },
  assignWithPhone: { eventType: 'JobAssigned', jobStatus: 'Assigned', phone: true },
  withdraw: { eventType: 'JobWithdrawed', jobStatus: 'New', phone: false },
  // G2 Sentry's JobStarted example carries the guardian's phone.
  start: { eventType: 'JobStarted', jobStatus: 'InProgress', phone: true },
  complete: { eventType: 'JobCompleted', jobStatus: 'Completed', phone: false }
}

/** The status each step leaves the job in. */
const STATUS_AFTER: Record<Step, JobStatus> = {
  assign: 'Assigned', assignWithPhone: 'Assigned', withdraw: 'New', start: 'InProgress', complete: 'Completed', cancel: 'Canceled'
}

/** G2 Sentry's workflow, as the steps that may follow each status. Cancellation is never pushed. */
const NEXT: Record<JobStatus, readonly Step[]> = {
  New: ['assign', 'assignWithPhone', 'cancel'],
  Assigned: ['withdraw', 'start', 'cancel'],
  InProgress: ['complete'],
  Completed: [],
  Canceled: []
}

/** Waits between the sender's attempts (ms): it retries after 1 s, 5 s, 30 s, 2 min, 10 min and 1 h. */
export const RETRY_DELAYS_MS: readonly number[] = [1_000, 5_000, 30_000, 120_000, 600_000, 3_600_000]

/** The most deliveries one event gets: the first attempt and every retry. */
export const MAX_DELIVERIES = RETRY_DELAYS_MS.length + 1

const RANK: Record<JobStatus, number> = { New: 0, Assigned: 1, InProgress: 2, Completed: 3, Canceled: 3 }

/** The rank of the rules table (docs/design.md, "Projection rules"), for checking that a status never moves backwards. */
export function rank (status: JobStatus): number {
  return RANK[status]
}

/**
 * The first step that G2 Sentry's workflow would refuse, or -1 when every step is allowed. A
 * job starts `New`, because job creation is not pushed.
 */
export function invalidStepAt (steps: readonly Step[]): number {
  let status: JobStatus = 'New'
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i] as Step
    if (!NEXT[status].includes(step)) return i
    status = STATUS_AFTER[step]
  }
  return -1
}

/** A masked number that stays the same for one job, so a re-assignment can repeat an earlier body byte for byte. */
export function guardianPhoneOf (jobId: number): string {
  return `+1555***${String(jobId % 10_000).padStart(4, '0')}`
}

/**
 * The callbacks G2 Sentry pushes for a job that takes `steps`, in the order they happen (a
 * cancellation pushes none). The same guardian comes back after each withdrawal, so a
 * re-assignment is identical to an earlier one: the case where identical content must still be applied.
 */
export function lifecycle (jobId: number, steps: readonly Step[], jobName = `Job ${jobId}`): JobEvent[] {
  const bad = invalidStepAt(steps)
  if (bad !== -1) throw new RangeError(`step ${bad} (${String(steps[bad])}) is not allowed after ${steps.slice(0, bad).join(', ') || 'nothing'}`)
  return steps.filter((step): step is Exclude<Step, 'cancel'> => step !== 'cancel').map((step) => {
    const { eventType, jobStatus, phone } = EVENT[step]
    return { jobId, eventType, jobName, jobStatus, ...(phone ? { guardianPhone: guardianPhoneOf(jobId) } : {}) }
  })
}

/** Where a job truly is after its events: the last one's status, or `New` before any. */
export function finalStatus (events: readonly JobEvent[]): JobStatus {
  return events[events.length - 1]?.jobStatus ?? 'New'
}

/** Where a job truly is after its steps, cancellations included: what G2 Sentry's status endpoint answers. */
export function trueStatus (steps: readonly Step[]): JobStatus {
  const last = steps[steps.length - 1]
  return last === undefined ? 'New' : STATUS_AFTER[last]
}

/** A small seeded PRNG (mulberry32), so a simulated run can be replayed from its seed. */
export function mulberry32 (seed: number): Rng {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const pick = <T>(rng: Rng, items: readonly T[]): T => items[Math.floor(rng() * items.length)] as T

export interface RandomLifecycleOptions {
  /** Whether the guardian may withdraw (default true). */
  withdrawals?: boolean
  /** The most withdrawals in one job (default 3). */
  maxWithdrawals?: number
  /** The chance to stop after each step, leaving the job unfinished (default 0.2). */
  stopRate?: number
  /** The chance that the client cancels when it may (New or Assigned, after the first assignment; default 0: never). */
  cancelRate?: number
}

/** A random walk through the workflow: at least one step, ending anywhere the workflow allows. */
export function randomLifecycle (rng: Rng, options: RandomLifecycleOptions = {}): Step[] {
  const { withdrawals = true, maxWithdrawals = 3, stopRate = 0.2, cancelRate = 0 } = options
  const steps: Step[] = []
  let status: JobStatus = 'New'
  let withdrawn = 0
  for (;;) {
    const allowed: Step[] = NEXT[status].filter((s) => s !== 'cancel' && (s !== 'withdraw' || (withdrawals && withdrawn < maxWithdrawals)))
    if (allowed.length === 0 || (steps.length > 0 && rng() < stopRate)) return steps
    // A job the receiver never heard of cannot be reconciled, so a cancellation follows an assignment.
    if (steps.length > 0 && NEXT[status].includes('cancel') && cancelRate > 0 && rng() < cancelRate) return [...steps, 'cancel']
    const step: Step = pick(rng, allowed)
    if (step === 'withdraw') withdrawn++
    steps.push(step)
    status = STATUS_AFTER[step]
  }
}

/**
 * Which block of the job's schedule an event may arrive in so that no delivery crosses a
 * withdrawal: the events between two withdrawals share a block, and each withdrawal has a block
 * of its own between them (A₁ | W₁ | A₂ | W₂ | A₃ S C).
 */
function block (events: readonly JobEvent[], index: number): number {
  let withdrawals = 0
  for (let i = 0; i < index; i++) if (events[i]?.eventType === 'JobWithdrawed') withdrawals++
  return 2 * withdrawals + (events[index]?.eventType === 'JobWithdrawed' ? 1 : 0)
}

/**
 * One job's deliveries. `arrivals[i]` holds one arrival key per delivery of event i (1 to 7 of
 * them); deliveries arrive in key order, ties in true order, so any arrival order is one choice
 * of keys away, and no keys at all is the true order with no redelivery. An event without an
 * entry is delivered once with key 0. With the `withdrawals` bound the keys order deliveries only
 * inside their block.
 */
export function schedule (events: readonly JobEvent[], arrivals: ReadonlyArray<readonly number[]>, bound: Bound = 'none'): Delivery[] {
  const all: Array<{ index: number; block: number; key: number }> = []
  events.forEach((_, index) => {
    const keys = arrivals[index] ?? [0]
    if (keys.length < 1 || keys.length > MAX_DELIVERIES) throw new RangeError(`event ${index} has ${keys.length} deliveries; G2 Sentry makes 1 to ${MAX_DELIVERIES}`)
    const b = bound === 'withdrawals' ? block(events, index) : 0
    for (const key of keys) all.push({ index, block: b, key })
  })
  all.sort((x, y) => x.block - y.block || x.key - y.key || x.index - y.index)
  const seen = new Map<number, number>()
  return all.map(({ index }) => {
    const attempt = (seen.get(index) ?? 0) + 1
    seen.set(index, attempt)
    return { event: events[index] as JobEvent, index, attempt }
  })
}

/**
 * Arrival keys (ms) as the sender's retry ladder produces them: each event happens up to
 * `maxGapMs` after the previous one, each attempt is lost with probability `lossRate` and retried
 * after the next delay, and every arrival is late by up to `jitterMs`. Feed the result to `schedule`.
 */
export function randomArrivals (rng: Rng, events: readonly JobEvent[], options: { lossRate?: number; maxGapMs?: number; jitterMs?: number } = {}): number[][] {
  const { lossRate = 0.3, maxGapMs = 600_000, jitterMs = 2_000 } = options
  let happenedAt = 0
  return events.map(() => {
    happenedAt += Math.floor(rng() * maxGapMs)
    const keys = [happenedAt + Math.floor(rng() * jitterMs)]
    let sentAt = happenedAt
    for (const delay of RETRY_DELAYS_MS) {
      if (rng() >= lossRate) break
      sentAt += delay
      keys.push(sentAt + Math.floor(rng() * jitterMs))
    }
    return keys
  })
}

/** The deliveries without any of the events in `lost`: G2 Sentry gave up on those after its last retry. */
export function withoutLost (deliveries: readonly Delivery[], lost: ReadonlySet<number>): Delivery[] {
  return deliveries.filter((delivery) => !lost.has(delivery.index))
}

/**
 * Many jobs' schedules merged, each job's own order kept. `picks[k]` chooses, among the jobs
 * with deliveries left, which one speaks next; once the picks run out the rest follow job by job,
 * so no picks at all is one job after another.
 */
export function interleave (schedules: ReadonlyArray<readonly Delivery[]>, picks: readonly number[]): Delivery[] {
  const queues = schedules.map((s) => [...s]).filter((q) => q.length > 0)
  const merged: Delivery[] = []
  for (const choice of picks) {
    if (queues.length === 0) break
    const i = choice % queues.length
    const queue = queues[i] as Delivery[]
    merged.push(queue.shift() as Delivery)
    if (queue.length === 0) queues.splice(i, 1)
  }
  for (const queue of queues) merged.push(...queue)
  return merged
}

export interface RandomScheduleOptions extends RandomLifecycleOptions {
  /** How many jobs (default 10). */
  jobs?: number
  firstJobId?: number
  /** Default `none`; `withdrawals` keeps every delivery inside its withdrawal block. */
  bound?: Bound
  /** The chance that an attempt is lost and retried (default 0.3). */
  lossRate?: number
  /** The chance that every attempt of an event is lost: G2 Sentry gave up on it (default 0). */
  giveUpRate?: number
}

/** A whole run for the simulator and the benchmark: the jobs' truth and the deliveries, replayable from `seed`. */
export function randomSchedule (seed: number, options: RandomScheduleOptions = {}): { jobs: JobPlan[]; deliveries: Delivery[] } {
  const { jobs: count = 10, firstJobId = 1, bound = 'none', lossRate, giveUpRate = 0 } = options
  const rng = mulberry32(seed)
  const jobs: JobPlan[] = []
  const schedules: Delivery[][] = []
  for (let n = 0; n < count; n++) {
    const jobId = firstJobId + n
    const steps = randomLifecycle(rng, options)
    const events = lifecycle(jobId, steps)
    jobs.push({ jobId, steps, events, finalStatus: trueStatus(steps) })
    const arrivals = randomArrivals(rng, events, lossRate === undefined ? {} : { lossRate })
    // The first event always arrives, so the receiver knows the job; any later one may be lost for good.
    const lost = new Set(events.map((_, i) => i).filter((i) => i > 0 && giveUpRate > 0 && rng() < giveUpRate))
    schedules.push(withoutLost(schedule(events, arrivals, bound), lost))
  }
  const total = schedules.reduce((sum, s) => sum + s.length, 0)
  const picks = Array.from({ length: total }, () => Math.floor(rng() * count))
  return { jobs, deliveries: interleave(schedules, picks) }
}

/** `JobAssigned(Assigned, phone)`: an event as one reads it in a counterexample. */
export function describeEvent (event: JobEvent): string {
  return `${event.eventType}(${event.jobStatus}${event.guardianPhone === undefined ? '' : ', phone'})`
}

/**
 * The deliveries one per line, `job 3 JobAssigned(Assigned, phone) ×2`, runs of the same body
 * (with the same note) folded into one line, so a failing schedule reads as a story.
 */
export function formatSchedule (deliveries: readonly Delivery[], note?: (delivery: Delivery, position: number) => string): string {
  const lines: string[] = []
  let last = ''
  let times = 0
  const flush = () => { if (times > 0) lines.push(times > 1 ? `${last} ×${times}` : last) }
  deliveries.forEach((delivery, position) => {
    const extra = note === undefined ? '' : note(delivery, position)
    const line = `job ${delivery.event.jobId} ${describeEvent(delivery.event)}${extra === '' ? '' : ` ${extra}`}`
    if (line === last) {
      times++
      return
    }
    flush()
    last = line
    times = 1
  })
  flush()
  return lines.join('\n')
}
