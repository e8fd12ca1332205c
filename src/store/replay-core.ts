import { projectEvent } from '../domain/project-status.js'
import type { JobState, RebuildReport } from '../domain/types.js'
import type { ReplayRow } from './rows.js'

/** Rows a backend reads per page when it replays the log. */
export const REPLAY_PAGE = 5000
/** Job states a replay keeps in memory; beyond that the least recently used are written out. */
export const REPLAY_CACHE = 100_000

/**
 * The job states of a replay: in memory up to a bound, least recently used first out, so memory
 * stays flat however long the log and however many jobs. A job's events cluster in time, so
 * in a real log the states a page needs are nearly always in memory.
 */
export class ReplayCache {
  readonly states = new Map<number, JobState>()
  /** Whether any state was written out: until then a job not in memory is a new one. */
  #spilled = false

  constructor (readonly capacity = REPLAY_CACHE) {}

  /** The jobs of `page` whose state may have been written out and must be read back first. */
  toLoad (page: ReplayRow[]): number[] {
    if (!this.#spilled) return []
    const ids = new Set<number>()
    for (const row of page) if (!this.states.has(row.job_id)) ids.add(row.job_id)
    return [...ids]
  }

  /** Removes and returns the least recently used states past the bound, for the caller to write. */
  evict (): JobState[] {
    const excess = this.states.size - this.capacity
    if (excess <= 0) return []
    this.#spilled = true
    const out: JobState[] = []
    // A tenth more than needed, so eviction does not run on every page.
    for (const [jobId, state] of this.states) {
      if (out.length >= excess + this.capacity / 10) break
      out.push(state)
      this.states.delete(jobId)
    }
    return out
  }
}

/**
 * Runs one page of the log through the projection, in seq order, with every job of the page
 * already in `cache` if it has a state. Records rows whose replayed outcome differs from the
 * one logged live. Backends differ only in how they load and write states.
 */
export function replayPage (page: ReplayRow[], cache: ReplayCache, report: RebuildReport): void {
  const { states } = cache
  for (const row of page) {
    const decision = projectEvent(states.get(row.job_id), {
      jobId: row.job_id,
      eventType: row.event_type,
      jobStatus: row.job_status,
      jobName: row.job_name,
      guardianPhone: row.guardian_phone ?? undefined,
      receivedAt: row.received_at,
      source: row.source
    })
    if (decision.outcome !== row.outcome) {
      report.outcomeMismatches.push({ seq: row.seq, stored: row.outcome, replayed: decision.outcome })
    }
    if (decision.state !== undefined) {
      // Re-inserted, so the map's order stays least recently used first.
      states.delete(row.job_id)
      states.set(row.job_id, decision.state)
    }
  }
  report.events += page.length
}

export const emptyReport = (): RebuildReport => ({ events: 0, jobs: 0, outcomeMismatches: [], differingJobs: [] })
