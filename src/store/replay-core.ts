import { projectEvent } from '../project-status.js'
import type { JobState, RebuildReport } from '../types.js'
import type { ReplayRow } from './rows.js'

/** Rows a backend reads per page when it replays the log. */
export const REPLAY_PAGE = 5000
/** Job states a replay keeps in memory before writing them out, so memory stays flat. */
export const REPLAY_CACHE = 50_000

/** The jobs of `page` whose state is neither in memory nor known to be new. */
export function jobsToLoad (page: ReplayRow[], cache: Map<number, JobState>): number[] {
  const ids = new Set<number>()
  for (const row of page) if (!cache.has(row.job_id)) ids.add(row.job_id)
  return [...ids]
}

/**
 * Runs one page of the log through the projection, in seq order, with every job of the page
 * already in `cache` if it has a state. Records rows whose replayed outcome differs from the
 * one logged live. Backends differ only in how they load and write states.
 */
export function replayPage (page: ReplayRow[], cache: Map<number, JobState>, report: RebuildReport): void {
  for (const row of page) {
    const decision = projectEvent(cache.get(row.job_id), {
      jobId: row.job_id,
      eventType: row.event_type,
      jobStatus: row.job_status,
      jobName: row.job_name,
      guardianPhone: row.guardian_phone ?? undefined,
      receivedAt: row.received_at
    })
    if (decision.outcome !== row.outcome) {
      report.outcomeMismatches.push({ seq: row.seq, stored: row.outcome, replayed: decision.outcome })
    }
    if (decision.state !== undefined) cache.set(row.job_id, decision.state)
  }
  report.events += page.length
}

export const emptyReport = (): RebuildReport => ({ events: 0, jobs: 0, outcomeMismatches: [], differingJobs: [] })
