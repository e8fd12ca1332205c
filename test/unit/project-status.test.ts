// Table-driven tests of the pure projection function against docs/design.md, "Projection rules".
import t from 'tap'
import { projectEvent, type Decision, type ProjectedEvent } from '../../src/domain/project-status.js'
import type { JobState, JobStatus, Outcome } from '../../src/domain/types.js'

type Current = JobStatus | 'none'
type Move = 'create' | 'apply' | 'update' | 'stale'

// The rules table of docs/design.md, written out: RULES[current status][event's jobStatus].
const RULES: Record<Current, Record<JobStatus, Move>> = {
  none: { New: 'create', Assigned: 'create', InProgress: 'create', Completed: 'create', Canceled: 'create' },
  New: { New: 'update', Assigned: 'apply', InProgress: 'apply', Completed: 'apply', Canceled: 'apply' },
  Assigned: { New: 'apply', Assigned: 'update', InProgress: 'apply', Completed: 'apply', Canceled: 'apply' },
  InProgress: { New: 'stale', Assigned: 'stale', InProgress: 'update', Completed: 'apply', Canceled: 'apply' },
  Completed: { New: 'stale', Assigned: 'stale', InProgress: 'stale', Completed: 'update', Canceled: 'stale' },
  Canceled: { New: 'stale', Assigned: 'stale', InProgress: 'stale', Completed: 'stale', Canceled: 'update' }
}

// The event type that leaves each status. Cancellation is not pushed today; the payload's jobStatus
// is authoritative, so a supported type carrying jobStatus 'Canceled' stands in for it.
const EVENT_TYPE: Record<JobStatus, string> = {
  New: 'JobWithdrawed',
  Assigned: 'JobAssigned',
  InProgress: 'JobStarted',
  Completed: 'JobCompleted',
  Canceled: 'JobCompleted'
}

const SHOWS_PHONE: readonly JobStatus[] = ['Assigned', 'InProgress']
const JOB_ID = 7
const NAME = 'Night shift, gate 3'
const PHONE = '+44 7*** ***123'
const OTHER_PHONE = '+44 7*** ***999'
const CREATED = 1_000
const UPDATED = 2_000
const RECEIVED = 9_000

/** A frozen existing job in `status`, with a phone only where the status shows one. */
function stateAt (status: JobStatus, overrides: Partial<JobState> = {}): JobState {
  return Object.freeze({
    jobId: JOB_ID,
    jobName: NAME,
    status,
    guardianPhone: SHOWS_PHONE.includes(status) ? PHONE : null,
    lastEventType: EVENT_TYPE[status],
    version: 3,
    eventCount: 5,
    createdAt: CREATED,
    updatedAt: UPDATED,
    ...overrides
  })
}

/** An event leaving `jobStatus`. Unless overridden it carries the job's name and PHONE. */
function eventFor (jobStatus: JobStatus, overrides: Partial<ProjectedEvent> = {}): ProjectedEvent {
  return {
    jobId: JOB_ID,
    eventType: EVENT_TYPE[jobStatus],
    jobName: NAME,
    jobStatus,
    guardianPhone: PHONE,
    receivedAt: RECEIVED,
    ...overrides
  }
}

/** Feeds events one after the other, as a live append or a replay does. */
function run (events: ProjectedEvent[]): { outcomes: Outcome[]; state: JobState | undefined } {
  const outcomes: Outcome[] = []
  let state: JobState | undefined
  for (const event of events) {
    const decision: Decision = projectEvent(state, event)
    outcomes.push(decision.outcome)
    state = decision.state
  }
  return { outcomes, state }
}

/** The state a delivery that is logged but not applied must leave: only eventCount grows. */
function countedOnly (current: JobState): JobState {
  return { ...current, eventCount: current.eventCount + 1 }
}

for (const [current, row] of Object.entries(RULES) as Array<[Current, Record<JobStatus, Move>]>) {
  for (const [jobStatus, expected] of Object.entries(row) as Array<[JobStatus, Move]>) {
    t.test(`${current} + ${jobStatus} → ${expected}`, async t => {
      const before = current === 'none' ? undefined : stateAt(current)
      const snapshot = structuredClone(before)
      const event = eventFor(jobStatus)
      const { outcome, state } = projectEvent(before, event)
      const phone = SHOWS_PHONE.includes(jobStatus) ? PHONE : null

      t.same(before, snapshot, 'current is not mutated')
      switch (expected) {
        case 'create':
          t.equal(outcome, 'applied')
          t.same(state, {
            jobId: JOB_ID,
            jobName: NAME,
            status: jobStatus,
            guardianPhone: phone,
            lastEventType: event.eventType,
            version: 1,
            eventCount: 1,
            createdAt: RECEIVED,
            updatedAt: RECEIVED
          })
          break
        case 'apply':
          if (before === undefined) throw new Error('apply needs a current job')
          t.equal(outcome, 'applied')
          t.same(state, {
            ...before,
            status: jobStatus,
            guardianPhone: phone,
            lastEventType: event.eventType,
            version: before.version + 1,
            eventCount: before.eventCount + 1,
            updatedAt: RECEIVED
          })
          break
        case 'update':
          // The same status with the same name and phone: nothing new, a redelivery.
          if (before === undefined) throw new Error('update needs a current job')
          t.equal(outcome, 'duplicate')
          t.same(state, countedOnly(before))
          break
        case 'stale':
          if (before === undefined) throw new Error('stale needs a current job')
          t.equal(outcome, 'stale')
          t.same(state, countedOnly(before))
          break
      }
    })
  }
}

t.test('update fields', async t => {
  for (const status of ['New', 'Assigned', 'InProgress', 'Completed', 'Canceled'] as const) {
    t.test(`${status}: a renamed job is applied`, async t => {
      const before = stateAt(status)
      const { outcome, state } = projectEvent(before, eventFor(status, { jobName: 'Day shift' }))
      t.equal(outcome, 'applied')
      t.same(state, {
        ...before,
        jobName: 'Day shift',
        version: before.version + 1,
        eventCount: before.eventCount + 1,
        updatedAt: RECEIVED
      })
    })
  }

  for (const status of ['Assigned', 'InProgress'] as const) {
    t.test(`${status}: a phone now present is applied`, async t => {
      const before = stateAt(status, { guardianPhone: null })
      const { outcome, state } = projectEvent(before, eventFor(status))
      t.equal(outcome, 'applied')
      t.equal(state?.guardianPhone, PHONE)
      t.equal(state?.version, before.version + 1)
      t.equal(state?.eventCount, before.eventCount + 1)
      t.equal(state?.updatedAt, RECEIVED)
    })

    t.test(`${status}: a different phone is applied`, async t => {
      const before = stateAt(status)
      const { outcome, state } = projectEvent(before, eventFor(status, { guardianPhone: OTHER_PHONE }))
      t.equal(outcome, 'applied')
      t.equal(state?.guardianPhone, OTHER_PHONE)
      t.equal(state?.version, before.version + 1)
    })

    t.test(`${status}: an absent phone does not clear the known one`, async t => {
      const before = stateAt(status)
      const { outcome, state } = projectEvent(before, eventFor(status, { guardianPhone: undefined }))
      t.equal(outcome, 'duplicate')
      t.same(state, countedOnly(before))
    })

    t.test(`${status}: no phone, none known, is a duplicate`, async t => {
      const before = stateAt(status, { guardianPhone: null })
      const { outcome, state } = projectEvent(before, eventFor(status, { guardianPhone: undefined }))
      t.equal(outcome, 'duplicate')
      t.same(state, countedOnly(before))
    })
  }

  for (const status of ['New', 'Completed', 'Canceled'] as const) {
    t.test(`${status}: a phone in the payload is not news`, async t => {
      const before = stateAt(status)
      const { outcome, state } = projectEvent(before, eventFor(status, { guardianPhone: OTHER_PHONE }))
      t.equal(outcome, 'duplicate')
      t.same(state, countedOnly(before))
    })
  }
})

t.test('guardianPhone is shown only while Assigned or InProgress', async t => {
  t.test('a withdrawal clears it', async t => {
    const { outcomes, state } = run([
      eventFor('Assigned', { receivedAt: 1 }),
      eventFor('New', { guardianPhone: undefined, receivedAt: 2 })
    ])
    t.same(outcomes, ['applied', 'applied'])
    t.equal(state?.status, 'New')
    t.equal(state?.guardianPhone, null)
  })

  t.test('completion clears it', async t => {
    const { outcomes, state } = run([
      eventFor('Assigned', { receivedAt: 1 }),
      eventFor('InProgress', { receivedAt: 2 }),
      eventFor('Completed', { guardianPhone: undefined, receivedAt: 3 })
    ])
    t.same(outcomes, ['applied', 'applied', 'applied'])
    t.equal(state?.status, 'Completed')
    t.equal(state?.guardianPhone, null)
  })

  for (const status of ['New', 'Completed', 'Canceled'] as const) {
    t.test(`an event for ${status} carrying a phone leaves none (first event)`, async t => {
      const { state } = projectEvent(undefined, eventFor(status))
      t.equal(state?.guardianPhone, null)
    })
    t.test(`an event for ${status} carrying a phone leaves none (from Assigned)`, async t => {
      const { outcome, state } = projectEvent(stateAt('Assigned'), eventFor(status, { guardianPhone: OTHER_PHONE }))
      t.equal(outcome, 'applied')
      t.equal(state?.guardianPhone, null)
    })
  }

  t.test('a start without a phone after an assignment with one keeps it', async t => {
    const { outcomes, state } = run([
      eventFor('Assigned', { receivedAt: 1 }),
      eventFor('InProgress', { guardianPhone: undefined, receivedAt: 2 })
    ])
    t.same(outcomes, ['applied', 'applied'])
    t.equal(state?.status, 'InProgress')
    t.equal(state?.guardianPhone, PHONE)
  })

  t.test('an early start from New without a phone has none', async t => {
    const { outcome, state } = projectEvent(stateAt('New'), eventFor('InProgress', { guardianPhone: undefined }))
    t.equal(outcome, 'applied')
    t.equal(state?.status, 'InProgress')
    t.equal(state?.guardianPhone, null)
  })

  t.test('an early start from New with a phone shows it', async t => {
    const { state } = projectEvent(stateAt('New'), eventFor('InProgress'))
    t.equal(state?.guardianPhone, PHONE)
  })
})

t.test('withdrawals and re-assignments are new occurrences', async t => {
  t.test('a second withdrawal after a re-assignment is applied', async t => {
    const withdrawal = eventFor('New', { guardianPhone: undefined })
    const { outcomes, state } = run([
      eventFor('Assigned', { receivedAt: 1 }),
      { ...withdrawal, receivedAt: 2 },
      eventFor('Assigned', { receivedAt: 3 }),
      { ...withdrawal, receivedAt: 4 }
    ])
    t.same(outcomes, ['applied', 'applied', 'applied', 'applied'])
    t.equal(state?.status, 'New')
    t.equal(state?.guardianPhone, null)
    t.equal(state?.version, 4)
    t.equal(state?.eventCount, 4)
  })

  t.test('an identical re-assignment after a withdrawal is applied', async t => {
    for (const phone of [PHONE, undefined]) {
      const assignment = eventFor('Assigned', { guardianPhone: phone })
      const { outcomes, state } = run([
        { ...assignment, receivedAt: 1 },
        eventFor('New', { guardianPhone: undefined, receivedAt: 2 }),
        { ...assignment, receivedAt: 3 }
      ])
      t.same(outcomes, ['applied', 'applied', 'applied'], `phone ${String(phone)}`)
      t.equal(state?.status, 'Assigned')
      t.equal(state?.guardianPhone, phone ?? null)
      t.equal(state?.version, 3)
    }
  })

  t.test('a redelivered withdrawal right after itself is a duplicate', async t => {
    const withdrawal = eventFor('New', { guardianPhone: undefined })
    const { outcomes, state } = run([
      eventFor('Assigned', { receivedAt: 1 }),
      { ...withdrawal, receivedAt: 2 },
      { ...withdrawal, receivedAt: 3 }
    ])
    t.same(outcomes, ['applied', 'applied', 'duplicate'])
    t.equal(state?.version, 2)
    t.equal(state?.eventCount, 3)
    t.equal(state?.updatedAt, 2)
  })
})

t.test('unsupported event types', async t => {
  for (const eventType of ['NewJob', 'JobGuardianRate', 'Whatever']) {
    t.test(`${eventType} as the first event`, async t => {
      const decision = projectEvent(undefined, eventFor('New', { eventType }))
      t.equal(decision.outcome, 'unsupported')
      t.equal(decision.state, undefined)
    })

    t.test(`${eventType} for an existing job`, async t => {
      const before = stateAt('Assigned')
      const snapshot = structuredClone(before)
      const decision = projectEvent(before, eventFor('Completed', { eventType }))
      t.equal(decision.outcome, 'unsupported')
      t.same(decision.state, snapshot, 'equal values, eventCount not incremented')
      t.same(before, snapshot, 'current is not mutated')
    })
  }
})

t.test('createdAt and updatedAt', async t => {
  const { outcomes, state } = run([
    eventFor('Assigned', { receivedAt: 100 }),
    eventFor('Assigned', { receivedAt: 200 }), // duplicate
    eventFor('InProgress', { receivedAt: 300 }),
    eventFor('Assigned', { receivedAt: 400 }), // stale
    eventFor('InProgress', { receivedAt: 500 }) // duplicate
  ])
  t.same(outcomes, ['applied', 'duplicate', 'applied', 'stale', 'duplicate'])
  t.equal(state?.createdAt, 100, 'the first event’s receivedAt')
  t.equal(state?.updatedAt, 300, 'the last applied event’s receivedAt')
  t.equal(state?.version, 2)
  t.equal(state?.eventCount, 5)
})

t.test('the payload’s jobStatus is authoritative, not the event type', async t => {
  const { outcome, state } = projectEvent(stateAt('Assigned'), eventFor('InProgress', { eventType: 'JobAssigned' }))
  t.equal(outcome, 'applied')
  t.equal(state?.status, 'InProgress')
  t.equal(state?.lastEventType, 'JobAssigned')
})
