// What a batch of appends writes, decided in memory: the one place a live append runs the
// projection (the replay runs it too, src/store/replay-core.ts). Both stores' writers, on the
// batched and the one-event path, read what the plan needs inside their write transaction, call
// `planBatch`, and write what it returns (docs/design.md, "Group commit").
import { projectEvent } from '../domain/project-status.js'
import type { AppendResult, ConditionalEvent, IncomingEvent, JobState, SupersededResult } from '../domain/types.js'
import { appendResult, contentHash, eventParams, type ChainHead } from './rows.js'

/** What the store knows before the batch, read inside its write transaction. */
export interface PlanReads {
  /** A job's state before the batch; undefined when the log has no job row for it. */
  state: (jobId: number) => JobState | undefined
  /** The job's last seq before the batch (0 when none); asked only for a conditional event. */
  lastSeq: (jobId: number) => number
  /**
   * The first row before the batch of this job with this raw body, byte for byte (`bodyHash`: its
   * SHA-256, computed in memory, never stored); asked only for a duplicate.
   */
  firstSameContent: (jobId: number, rawBody: Buffer, bodyHash: string) => number | null
}

export interface BatchPlan {
  /** Each event's result, in order; a superseded event writes nothing. */
  results: Array<AppendResult | SupersededResult>
  /** The `events` rows to insert, in seq order (EVENT_INSERT_COLUMNS values). */
  rows: unknown[][]
  /** The state after the batch of each job it changed, in the order first changed. */
  jobs: JobState[]
  /** Each quarantined body the batch appends, with its seq (to mark it retried). */
  retried: Array<{ id: number; seq: number }>
  /** The chain's head after the batch (the head before it when nothing was written). */
  head: ChainHead | undefined
  /** The first row of each (job, body) this batch wrote, keyed `${jobId} ${bodyHash}`. */
  firsts: Map<string, number>
  /** The last seq of each job this batch wrote a row for. */
  lastSeqs: Map<number, number>
}

/**
 * Plans `events`, in order, appended after `head`: the projection of each on its job's state as
 * the batch left it, its row in the chain, and for a duplicate the first row with the same body
 * (earlier in the log, else earlier in the batch). `hashes`: the bodies' SHA-256 when the caller
 * computed them already (it needed them for its reads).
 */
export function planBatch (events: readonly IncomingEvent[], head: ChainHead | undefined, reads: PlanReads,
  hashes: readonly string[] = events.map((event) => contentHash(event.rawBody))): BatchPlan {
  const states = new Map<number, JobState | undefined>()
  const lastSeqs = new Map<number, number>()
  const firsts = new Map<string, number>()
  const changed = new Set<number>()
  const plan: BatchPlan = { results: [], rows: [], jobs: [], retried: [], head, firsts, lastSeqs }
  events.forEach((event, i) => {
    const { jobId } = event
    const { ifLastSeq } = event as Partial<ConditionalEvent>
    if (ifLastSeq !== undefined) {
      const lastSeq = lastSeqs.get(jobId) ?? reads.lastSeq(jobId)
      if (lastSeq !== ifLastSeq) {
        plan.results.push({ outcome: 'superseded', jobId, lastSeq })
        return
      }
    }
    const current = states.has(jobId) ? states.get(jobId) : reads.state(jobId)
    const decision = projectEvent(current, event)
    const bodyHash = hashes[i] as string
    const key = `${jobId} ${bodyHash}`
    const sameAs = decision.outcome === 'duplicate' ? reads.firstSameContent(jobId, event.rawBody, bodyHash) ?? firsts.get(key) ?? null : null
    const { params, next } = eventParams(event, plan.head, decision.outcome, sameAs)
    if (!firsts.has(key)) firsts.set(key, next.seq)
    // Every outcome but unsupported counts a delivery on the job (its eventCount): written too.
    if (decision.outcome !== 'unsupported') {
      states.set(jobId, decision.state)
      changed.add(jobId)
    }
    plan.rows.push(params)
    lastSeqs.set(jobId, next.seq)
    if (event.quarantineId !== undefined) plan.retried.push({ id: event.quarantineId, seq: next.seq })
    plan.head = next
    plan.results.push(appendResult(decision, next.seq, jobId))
  })
  for (const jobId of changed) plan.jobs.push(states.get(jobId) as JobState)
  return plan
}
