import { RECONCILED_EVENT_TYPE, SUPPORTED_EVENT_TYPES, type EventSource, type JobEvent, type JobState, type JobStatus, type Outcome } from './types.js'

const RANK: Record<JobStatus, number> = { New: 0, Assigned: 1, InProgress: 2, Completed: 3, Canceled: 3 }
const TERMINAL: ReadonlySet<JobStatus> = new Set(['Completed', 'Canceled'])
const SHOWS_PHONE: ReadonlySet<JobStatus> = new Set(['Assigned', 'InProgress'])
const SUPPORTED: ReadonlySet<string> = new Set(SUPPORTED_EVENT_TYPES)

/** An event as the projection sees it: the payload plus when it was received and where from. */
export interface ProjectedEvent extends JobEvent {
  receivedAt: number
  /** Default `callback`. */
  source?: EventSource | undefined
}

/**
 * Whether the projection reads the event: one of the four callbacks G2 Sentry pushes, or the
 * reconciler's `Reconciled` row from the Partner API. A signed callback of type `Reconciled` is
 * not one, so a sender cannot forge an API answer.
 */
function supported (event: ProjectedEvent): boolean {
  if (event.eventType === RECONCILED_EVENT_TYPE) return event.source === 'api'
  return event.source !== 'api' && SUPPORTED.has(event.eventType)
}

/**
 * What one event does to a job. `state` is the job afterwards: unchanged for `unsupported`,
 * only its delivery count and nothing else changed for `duplicate` and `stale`.
 */
export type Decision =
  | { outcome: Exclude<Outcome, 'unsupported'>; state: JobState }
  | { outcome: 'unsupported'; state: JobState | undefined }

type Move = 'apply' | 'update' | 'stale'

function move (current: JobStatus, next: JobStatus): Move {
  if (current === next) return 'update'
  if (TERMINAL.has(current)) return 'stale'
  if (RANK[next] > RANK[current]) return 'apply'
  if (current === 'Assigned' && next === 'New') return 'apply'
  return 'stale'
}

function phoneAfter (current: JobState | undefined, event: JobEvent): string | null {
  if (!SHOWS_PHONE.has(event.jobStatus)) return null
  if (event.guardianPhone !== undefined) return event.guardianPhone
  // The guardian who was assigned is the one who starts, so a start without a phone keeps theirs.
  const samePhase = current !== undefined && (current.status === event.jobStatus ||
    (current.status === 'Assigned' && event.jobStatus === 'InProgress'))
  return samePhase ? current.guardianPhone : null
}

/**
 * The projection rules of docs/design.md ("Projection rules") as one pure function. Live appends and replays both call it,
 * so a rebuild from the log always equals the live projection.
 */
export function projectEvent (current: JobState | undefined, event: ProjectedEvent): Decision {
  if (!supported(event)) return { outcome: 'unsupported', state: current }

  if (current === undefined) {
    return {
      outcome: 'applied',
      state: {
        jobId: event.jobId,
        jobName: event.jobName,
        status: event.jobStatus,
        guardianPhone: phoneAfter(undefined, event),
        lastEventType: event.eventType,
        version: 1,
        eventCount: 1,
        createdAt: event.receivedAt,
        updatedAt: event.receivedAt
      }
    }
  }

  const kind = move(current.status, event.jobStatus)
  if (kind === 'stale') return { outcome: 'stale', state: counted(current) }

  const jobName = event.jobName
  const guardianPhone = phoneAfter(current, event)
  if (kind === 'update' && jobName === current.jobName && guardianPhone === current.guardianPhone) {
    return { outcome: 'duplicate', state: counted(current) }
  }
  return {
    outcome: 'applied',
    state: {
      jobId: current.jobId,
      jobName,
      status: event.jobStatus,
      guardianPhone,
      lastEventType: event.eventType,
      version: current.version + 1,
      eventCount: current.eventCount + 1,
      createdAt: current.createdAt,
      updatedAt: event.receivedAt
    }
  }
}

/**
 * `current` with one more delivery counted. Every state is written out field by field, in one
 * order: a rebuild calls this for each log row, and object spreads cost it several times the
 * rest of the projection (measured on a 1,000,000-event log).
 */
function counted (current: JobState): JobState {
  return {
    jobId: current.jobId,
    jobName: current.jobName,
    status: current.status,
    guardianPhone: current.guardianPhone,
    lastEventType: current.lastEventType,
    version: current.version,
    eventCount: current.eventCount + 1,
    createdAt: current.createdAt,
    updatedAt: current.updatedAt
  }
}
