import { projectEvent } from '../domain/project-status.js'
import type { EventSource, JobState } from '../domain/types.js'
import type { RebuildReport } from './contract.js'
import type { ReplayTuple } from './rows.js'

/** Rows a backend reads per page when it replays the log. */
export const REPLAY_PAGE = 5000
/** Job states a replay keeps in memory; beyond that the least recently used are written out. */
export const REPLAY_CACHE = 100_000

/**
 * The job states of a replay: in memory up to a bound, least recently used first out, so memory
 * stays flat however long the log and however many jobs. A job's events cluster in time, so
 * in a real log the states a page needs are nearly always in memory.
 *
 * Recency is kept by generation rather than by moving each state to the end of one map on every
 * row (which cost a rebuild as much as the projection itself): a state is set in `#recent`;
 * eviction takes from `#older`, oldest first, and when that is empty the recent generation
 * becomes the older one. A state in both is the recent one; its older entry is stale and is
 * dropped, never written.
 */
export class ReplayCache {
  #recent = new Map<number, JobState>()
  #older = new Map<number, JobState>()
  /** Whether any state was written out: until then a job not in memory is a new one. */
  #spilled = false

  constructor (readonly capacity = REPLAY_CACHE) {}

  /**
   * Says that states are already written where the caller loads them from (a replay that starts
   * from the projection kept at a checkpoint): a job not in memory must be looked up there.
   */
  assumeStored (): void {
    this.#spilled = true
  }

  /** The job's state, if it is in memory. */
  get (jobId: number): JobState | undefined {
    return this.#recent.get(jobId) ?? this.#older.get(jobId)
  }

  /** Keeps `state` as the job's state (also for a state read back from where it was written out). */
  set (jobId: number, state: JobState): void {
    this.#recent.set(jobId, state)
  }

  /** The jobs of `page` whose state may have been written out and must be read back first. */
  toLoad (page: ReplayTuple[]): number[] {
    if (!this.#spilled) return []
    const ids = new Set<number>()
    for (const row of page) {
      const jobId = row[1]
      if (!this.#recent.has(jobId) && !this.#older.has(jobId)) ids.add(jobId)
    }
    return [...ids]
  }

  /** Removes and returns the least recently used states past the bound, for the caller to write. */
  evict (): JobState[] {
    // Stale entries count too, so memory stays within the bound even when many are stale.
    let excess = this.#recent.size + this.#older.size - this.capacity
    if (excess <= 0) return []
    // A tenth more than needed, so eviction does not run on every page.
    excess += Math.floor(this.capacity / 10)
    const out: JobState[] = []
    while (excess > 0) {
      if (this.#older.size === 0) {
        if (this.#recent.size === 0) break
        this.#older = this.#recent
        this.#recent = new Map()
      }
      for (const [jobId, state] of this.#older) {
        if (excess-- <= 0) break
        this.#older.delete(jobId)
        if (!this.#recent.has(jobId)) out.push(state)
      }
    }
    if (out.length > 0) this.#spilled = true
    return out
  }

  /** Every state in memory, once each: what is left to write when the replay ends. */
  * states (): IterableIterator<JobState> {
    yield * this.#recent.values()
    for (const [jobId, state] of this.#older) if (!this.#recent.has(jobId)) yield state
  }
}

/**
 * Runs one page of the log through the projection, in seq order, with every job of the page
 * already in `cache` if it has a state. Records rows whose replayed outcome differs from the
 * one logged live. Backends differ only in how they load and write states.
 */
export function replayPage (page: ReplayTuple[], cache: ReplayCache, report: RebuildReport): void {
  // Indexed rather than destructured: this loop runs for every row of the log.
  let records = 0
  for (let i = 0; i < page.length; i++) {
    const row = page[i] as ReplayTuple
    const source = row[8]
    // A redaction or a checkpoint records an act on the log: no job's state follows from it.
    if (source === 'redaction' || source === 'checkpoint') {
      records++
      continue
    }
    const jobId = row[1]
    const decision = projectEvent(cache.get(jobId), {
      jobId,
      eventType: row[2],
      jobStatus: row[3],
      jobName: row[4],
      guardianPhone: row[5] ?? undefined,
      receivedAt: row[6],
      source: source as EventSource
    })
    if (decision.outcome !== row[7]) {
      report.outcomeMismatches.push({ seq: row[0], stored: row[7], replayed: decision.outcome })
    }
    if (decision.state !== undefined) cache.set(jobId, decision.state)
  }
  report.events += page.length - records
}

export const emptyReport = (): RebuildReport => ({ events: 0, jobs: 0, outcomeMismatches: [], differingJobs: [] })
