// The write side of the PostgreSQL store: the group commit that appends a batch of events in one
// transaction (src/store/group-commit.ts gathers the batches), over a pool from
// postgres-connection.ts. Mirrors src/store/sqlite/sqlite-writer.ts.
import type { AppendResult, ConditionalEvent, IncomingEvent, JobState, QuarantineInput, SupersededResult } from '../../domain/types.js'
import { errors } from '../../errors.js'
import { planBatch } from '../batch-plan.js'
import type { BatchOutcome } from '../group-commit.js'
import { SELECT_HEAD, transaction } from './postgres-connection.js'
import type { Client, Pool, QueryResult } from './postgres-types.js'
import {
  contentHash, EVENT_INSERT_COLUMNS, EVENT_WIDTH, JOB_COLUMNS, jobParams, QUARANTINE_INSERT_COLUMNS, toJob,
  UPDATE_JOB_ON_CONFLICT, type ChainHead, type JobRow
} from '../rows.js'

// "Durable before 200" needs the commit flushed on the server whatever its default: tenant-pool.ts
// follows every BEGIN with SET LOCAL synchronous_commit = on, here in front of the transaction's
// first reads, in one round trip.
const BEGIN_APPEND = 'BEGIN'

// The event, and the projection row when the event has one ($18), in one statement.
const APPEND = `WITH event AS (
    INSERT INTO events (${EVENT_INSERT_COLUMNS})
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)),
  head AS (UPDATE g2sentry_chain SET seq = $1, hash = $14 WHERE id = 1)
  INSERT INTO jobs (${JOB_COLUMNS})
  SELECT $2, $19::text, $20::text, $21::text, $22::text, $23::int, $24::int, $25::bigint, $26::bigint WHERE $18::boolean
  ${UPDATE_JOB_ON_CONFLICT}`

const EVENTS_UNNEST = `unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[],
      $8::text[], $9::text[], $10::bigint[], $11::text[], $12::bigint[], $13::text[], $14::text[], $15::text[],
      $16::smallint[], $17::bytea[])`
const JOBS_UNNEST = 'unnest($20::bigint[], $21::text[], $22::text[], $23::text[], $24::text[], $25::int[], $26::int[], $27::bigint[], $28::bigint[])'

// A batch's events, its projection rows (the last state of each job it touched) and the new
// head, in one statement.
const APPEND_BATCH = `WITH event AS (INSERT INTO events (${EVENT_INSERT_COLUMNS}) SELECT * FROM ${EVENTS_UNNEST}),
  head AS (UPDATE g2sentry_chain SET seq = $18, hash = $19 WHERE id = 1)
  INSERT INTO jobs (${JOB_COLUMNS}) SELECT * FROM ${JOBS_UNNEST}
  ${UPDATE_JOB_ON_CONFLICT}`

// The same for a batch computed on the plan of the batch before it, which has not committed
// yet: the head moves only if it is still where that plan left it ($29, $30), and the events and
// jobs are written only if it moved. `WHERE id = 1` always matches, so the UPDATE waits for the
// earlier batch's lock on the head row and then (READ COMMITTED) computes SET on the row as that
// batch left it: committed, the row is where the plan said; rolled back, or followed by another
// instance's append, it is not, the head keeps its value and nothing else is written. (A WHERE
// on seq would be checked against this statement's snapshot, before the wait, and never match.)
const APPEND_BATCH_IF = `WITH head AS (UPDATE g2sentry_chain
    SET seq = CASE WHEN seq = $29 AND hash IS NOT DISTINCT FROM $30::text THEN $18::bigint ELSE seq END,
      hash = CASE WHEN seq = $29 AND hash IS NOT DISTINCT FROM $30::text THEN $19::text ELSE hash END
    WHERE id = 1 RETURNING seq = $18::bigint AND hash = $19::text AS moved),
  event AS (INSERT INTO events (${EVENT_INSERT_COLUMNS}) SELECT * FROM ${EVENTS_UNNEST} WHERE EXISTS (SELECT FROM head WHERE moved)),
  job AS (INSERT INTO jobs (${JOB_COLUMNS}) SELECT * FROM ${JOBS_UNNEST} WHERE EXISTS (SELECT FROM head WHERE moved)
    ${UPDATE_JOB_ON_CONFLICT})
  SELECT count(*)::int AS matched FROM head WHERE moved`

/** Rows as columns, for unnest. */
export const columnsOf = (rows: unknown[][], width: number): unknown[][] => Array.from({ length: width }, (_, c) => rows.map((row) => row[c]))

export interface PostgresWriter {
  /**
   * Appends `events` in one transaction, in order; if that fails, runs them again one per
   * transaction, so that one failing event fails only itself. Calls `release` once its rows are
   * written, before its COMMIT: the next batch may then be computed on this one's plan (see
   * `createWriter`). Batches settle in the order they were given.
   */
  appendBatch (events: IncomingEvent[], release: () => void): Promise<BatchOutcome[]>
  quarantine (entry: QuarantineInput): Promise<number>
  resolveQuarantine (id: number, seq: number): Promise<void>
}

/**
 * Locks the quarantined bodies `ids` for this append transaction; one already retried fails it
 * (run under the chain head's lock, so two instances retrying the same body take turns here).
 */
async function claimQuarantined (client: Client, ids: number[]): Promise<void> {
  const { rows } = await client.query<{ id: number; retried_seq: number | null }>(
    'SELECT id, retried_seq FROM quarantine WHERE id = ANY($1::bigint[]) FOR UPDATE', [ids])
  const done = rows.find((row) => row.retried_seq !== null)
  if (done !== undefined) throw new errors.QUARANTINE_ALREADY_RETRIED(done.id, done.retried_seq as number)
}

/** Marks the quarantined bodies `ids` retried as the rows `seqs`, in the append's transaction. */
async function markRetried (client: Client, ids: number[], seqs: number[]): Promise<void> {
  await client.query(`UPDATE quarantine SET retried_seq = v.seq FROM unnest($1::bigint[], $2::bigint[]) AS v(id, seq)
    WHERE quarantine.id = v.id`, [ids, seqs])
}

/** What a batch's rows change, for the next batch to be computed on before this one commits. */
interface Plan {
  /** The chain's head after the batch. */
  head: ChainHead
  /** The jobs the batch wrote, as it left them. */
  states: Map<number, JobState>
  /** `jobId contentHash` → seq, for the bodies whose first row of their job the batch wrote. */
  firsts: Map<string, number>
  /** The last seq of each job the batch wrote a row for, for a conditional append after it. */
  lastSeqs: Map<number, number>
}

/** A batch's committed transaction: each event's result, the rows written, and when it began. */
interface Appended { results: Array<AppendResult | SupersededResult>; written: number; started: bigint }

/** A batch given to the writer and not settled yet. */
interface Batch {
  /** Set when the batch's rows are written, just before its COMMIT. */
  plan?: Plan | undefined
  settled: boolean
  done: Promise<void>
}

/** A transaction that may have committed: its events must never be appended again. */
const commitUnknown = (error: unknown): boolean => error instanceof errors.COMMIT_UNKNOWN

/** A callback or an API row with no condition and no quarantine claim: the only kind computed on an earlier batch's plan. */
const plain = (event: IncomingEvent): boolean =>
  event.quarantineId === undefined && (event as Partial<ConditionalEvent>).ifLastSeq === undefined

/**
 * The group commit over `pool`. `committed` is told of every transaction that committed appends
 * (its size, when it began, and the last seq it wrote), in log order.
 *
 * Two batches may be in flight (docs/design.md, "The PostgreSQL write path"): a batch given while
 * the one before it is between its write and the answer to its COMMIT is computed on that
 * batch's plan and written with APPEND_BATCH_IF, which writes nothing unless the earlier batch
 * committed and nothing else was appended since. One that wrote nothing, or failed, waits for the
 * earlier batch to settle and runs again the safe way, under the head's lock from its first read.
 */
export function createWriter (pool: Pool, onBatchCommitted: (batchSize: number, started: bigint, lastSeq: number) => void): PostgresWriter {
  /**
   * Runs `work` in an append transaction; `work` sends BEGIN_APPEND itself, with its first reads.
   * When `work` returns undefined (a conditional write that wrote nothing), rolls back and returns
   * undefined. When the COMMIT fails, the transaction may still have committed (the connection
   * was lost after COMMIT was sent): the chain's head row it wrote tells, once whoever holds the
   * head's lock is done. Only a transaction known not to have committed fails, so a committed
   * batch is never appended again. When that cannot be checked either, it fails with
   * COMMIT_UNKNOWN, which no caller runs again.
   */
  async function appendTransaction<T> (work: (client: Client) => Promise<{ value: T; head: ChainHead } | undefined>): Promise<T | undefined> {
    const client = await pool.connect()
    let written: { value: T; head: ChainHead } | undefined
    try {
      written = await work(client)
      await client.query(written === undefined ? 'ROLLBACK' : 'COMMIT')
      client.release()
      return written?.value
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {})
      client.release(true)
      if (written === undefined) throw error
      let landed: boolean
      try {
        landed = await inLog(written.head)
      } catch (checkError) {
        // Committed or not, nobody can tell now: running the events again could append them twice.
        throw new errors.COMMIT_UNKNOWN((checkError as Error).message, { cause: error })
      }
      if (landed) return written.value
      throw error
    }
  }

  /** Whether the row `head` names is in the log, with that hash; waits for the head's lock first. */
  async function inLog (head: ChainHead): Promise<boolean> {
    return transaction(pool, 'BEGIN', async (client) => {
      const [, { rows: [row] }] = await client.query(`${SELECT_HEAD} FOR UPDATE; SELECT hash FROM events WHERE seq = ${head.seq}`) as
        unknown as [QueryResult<ChainHead>, QueryResult<{ hash: string | null }>]
      return row !== undefined && row.hash === head.hash
    })
  }

  /** One append in its own transaction: a batch that failed is run again this way. */
  async function appendOne (event: IncomingEvent): Promise<AppendResult | SupersededResult> {
    const started = process.hrtime.bigint()
    const result = await appendTransaction<AppendResult | SupersededResult>(async (client) => {
      // Two round trips besides the commit: begin, lock the chain's head and read the job and an
      // earlier row with the same body; write the event, the head and the projection in one
      // statement. The job id is a checked integer and the body hash is hex, both safe to inline.
      const bodyHash = contentHash(event.rawBody)
      // The last three answers: the statements in front of them are BEGIN and whatever SET LOCALs it carries.
      const [{ rows: [head] }, { rows: [current] }, { rows: [same] }] = (await client.query(`${BEGIN_APPEND}; ${SELECT_HEAD} FOR UPDATE;
        SELECT * FROM jobs WHERE job_id = ${event.jobId};
        SELECT seq FROM events WHERE job_id = ${event.jobId} AND sha256(raw_body) = '\\x${bodyHash}'::bytea ORDER BY seq LIMIT 1`
      ) as unknown as Array<QueryResult<unknown>>).slice(-3) as [QueryResult<ChainHead>, QueryResult<JobRow>, QueryResult<{ seq: number }>]
      if (event.quarantineId !== undefined) await claimQuarantined(client, [event.quarantineId])
      const { ifLastSeq } = event as Partial<ConditionalEvent>
      const lastSeq = ifLastSeq === undefined
        ? 0
        : (await client.query<{ seq: number | null }>(`SELECT max(seq) AS seq FROM events WHERE job_id = ${event.jobId}`)).rows[0]?.seq ?? 0
      const plan = planBatch([event], head, {
        state: () => current && toJob(current),
        lastSeq: () => lastSeq,
        firstSameContent: () => same?.seq ?? null
      }, [bodyHash])
      const result = plan.results[0] as AppendResult | SupersededResult
      const [params] = plan.rows
      if (params !== undefined) {
        const [job] = plan.jobs
        await client.query(APPEND, [...params, job !== undefined, ...(job !== undefined ? jobParams(job).slice(1) : Array(8).fill(null))])
      }
      if (plan.retried.length > 0) await markRetried(client, plan.retried.map((r) => r.id), plan.retried.map((r) => r.seq))
      return { value: result, head: plan.head ?? { seq: 0, hash: null } }
    }) as AppendResult | SupersededResult
    if (result.outcome !== 'superseded') onBatchCommitted(1, started, result.seq)
    return result
  }

  /**
   * A batch in one transaction. Safe (no `base`): the first round trip begins, locks the chain's
   * head and reads the batch's jobs and their earlier rows with the same bodies. On `base` (the
   * plan of the batch before, not committed yet): the same round trip without the lock, its
   * reads completed by the plan. Either way the projection runs in memory, in order, and one
   * statement writes every event, the last state of each job and the new head (on `base`, only
   * if the head is still where `base` left it; else this returns undefined, having written
   * nothing). `onWritten` gets the batch's plan before its COMMIT is sent.
   */
  async function appendMany (events: IncomingEvent[], base: Plan | undefined, onWritten: (plan: Plan) => void): Promise<Appended | undefined> {
    const started = process.hrtime.bigint()
    let written = 0
    const results = await appendTransaction(async (client) => {
      const hashes = events.map((event) => contentHash(event.rawBody))
      // Job ids are checked integers and hashes hex: both safe to inline.
      const jobIds = new Set(events.map((event) => event.jobId))
      const ids = [...jobIds].join(',')
      const reads = `SELECT * FROM jobs WHERE job_id = ANY('{${ids}}'::bigint[]);
        SELECT job_id, encode(sha256(raw_body), 'hex') AS body_hash, min(seq) AS seq FROM events
          WHERE job_id = ANY('{${ids}}'::bigint[]) AND encode(sha256(raw_body), 'hex') = ANY('{${[...new Set(hashes)].join(',')}}'::text[])
          GROUP BY job_id, body_hash`
      // Safe, the head is locked in the first round trip. On `base`, not: these reads run while
      // the batch before holds the head, so every append committed before it is visible here, and
      // what that batch wrote comes from its plan instead.
      const answers = await client.query(`${BEGIN_APPEND}; ${base === undefined ? `${SELECT_HEAD} FOR UPDATE; ` : ''}${reads}`) as
        unknown as Array<QueryResult<unknown>>
      const [{ rows: jobRows }, { rows: firsts }] = answers.slice(-2) as
        [QueryResult<JobRow>, QueryResult<{ job_id: number; body_hash: string; seq: number }>]
      const head = base === undefined ? (answers[answers.length - 3] as QueryResult<ChainHead>).rows[0] : base.head
      const states = new Map(jobRows.map((row) => [row.job_id, toJob(row)]))
      // The first row of each job with each body: from the log, else from earlier batches or this one.
      const firstSeq = new Map(firsts.map((row) => [`${row.job_id} ${row.body_hash}`, row.seq]))
      if (base !== undefined) {
        for (const [jobId, state] of base.states) if (jobIds.has(jobId)) states.set(jobId, state)
        for (const [key, seq] of base.firsts) if (!firstSeq.has(key)) firstSeq.set(key, seq)
      }
      const retries = events.filter((event) => event.quarantineId !== undefined)
      if (retries.length > 0) await claimQuarantined(client, retries.map((event) => event.quarantineId as number))
      // Conditional appends (the reconciler's) compare with each job's last seq, kept up to date
      // through the batch; a batch of callbacks alone never reads it.
      const conditional = events.filter((event) => (event as Partial<ConditionalEvent>).ifLastSeq !== undefined)
      const lastSeqs = new Map<number, number>()
      if (conditional.length > 0) {
        const { rows: lasts } = await client.query<{ job_id: number; seq: number }>(
          'SELECT job_id, max(seq) AS seq FROM events WHERE job_id = ANY($1::bigint[]) GROUP BY job_id', [conditional.map((e) => e.jobId)])
        for (const row of lasts) lastSeqs.set(row.job_id, row.seq)
        // Once every row of a job is archived, its last row is the one the checkpoint kept.
        const archived = conditional.map((e) => e.jobId).filter((jobId) => !lastSeqs.has(jobId))
        if (archived.length > 0) {
          const { rows: kept } = await client.query<{ job_id: number; last_seq: number }>(
            'SELECT job_id, last_seq FROM checkpoint_jobs WHERE job_id = ANY($1::bigint[])', [archived])
          for (const row of kept) lastSeqs.set(row.job_id, row.last_seq)
        }
      }
      const plan = planBatch(events, head, {
        state: (jobId) => states.get(jobId),
        lastSeq: (jobId) => base?.lastSeqs.get(jobId) ?? lastSeqs.get(jobId) ?? 0,
        firstSameContent: (jobId, _rawBody, bodyHash) => firstSeq.get(`${jobId} ${bodyHash}`) ?? null
      }, hashes)
      if (plan.rows.length > 0) {
        const params = [...columnsOf(plan.rows, EVENT_WIDTH), plan.head?.seq, plan.head?.hash, ...columnsOf(plan.jobs.map(jobParams), 9)]
        if (base === undefined) await client.query({ name: 'g2sentry_append_batch', text: APPEND_BATCH, values: params })
        else {
          const { rows: [check] } = await client.query<{ matched: number }>(
            { name: 'g2sentry_append_batch_if', text: APPEND_BATCH_IF, values: [...params, base.head.seq, base.head.hash] })
          if (check?.matched !== 1) return undefined
        }
      }
      if (plan.retried.length > 0) await markRetried(client, plan.retried.map((r) => r.id), plan.retried.map((r) => r.seq))
      written = plan.rows.length
      const after = plan.head ?? { seq: 0, hash: null }
      onWritten({ head: after, states: new Map(plan.jobs.map((job) => [job.jobId, job])), firsts: plan.firsts, lastSeqs: plan.lastSeqs })
      const results = plan.results
      return { value: results, head: after }
    })
    return results && { results, written, started }
  }

  /** The batch given last; the next one is computed on its plan if it is still in flight. */
  let last: Batch | undefined

  /** A batch's outcomes; `before` is the batch given before it, `me` this one. */
  async function commitBatch (events: IncomingEvent[], before: Batch | undefined, me: Batch, release: () => void): Promise<BatchOutcome[]> {
    const onWritten = (plan: Plan): void => {
      me.plan = plan
      release()
    }
    const done = (batch: Appended): BatchOutcome[] => {
      const seqs = batch.results.flatMap((result) => result.outcome === 'superseded' ? [] : [result.seq])
      if (batch.written > 0) onBatchCommitted(batch.written, batch.started, Math.max(...seqs))
      return batch.results.map((result) => ({ ok: true as const, result }))
    }
    if (before !== undefined && !before.settled && before.plan !== undefined && events.every(plain)) {
      let overlapped: Appended | undefined
      let unknown: unknown
      try {
        overlapped = await appendMany(events, before.plan, onWritten)
      } catch (error) {
        // Any other failure: run again the safe way, below.
        if (commitUnknown(error)) unknown = error
      }
      // Settled in log order: the batch before first, whatever this one came to.
      await before.done
      if (unknown !== undefined) return events.map(() => ({ ok: false as const, error: unknown }))
      if (overlapped !== undefined) return done(overlapped)
      me.plan = undefined
    } else if (before !== undefined) {
      await before.done
    }
    let appended: Appended
    try {
      appended = await appendMany(events, undefined, onWritten) as Appended
    } catch (error) {
      if (commitUnknown(error)) return events.map(() => ({ ok: false as const, error }))
      const outcomes: BatchOutcome[] = []
      for (const event of events) {
        outcomes.push(await appendOne(event).then((result) => ({ ok: true as const, result }), (error: unknown) => ({ ok: false as const, error })))
      }
      return outcomes
    } finally {
      release()
    }
    // Outside the try: once committed, nothing may send the batch to the per-event fallback.
    return done(appended)
  }

  return {
    async appendBatch (events, release) {
      const before = last
      let settle!: () => void
      const me: Batch = { settled: false, done: new Promise((resolve) => { settle = resolve }) }
      last = me
      try {
        return await commitBatch(events, before, me, release)
      } finally {
        me.settled = true
        if (last === me) last = undefined
        settle()
      }
    },
    async quarantine (entry) {
      const { rows: [row] } = await pool.query<{ id: number }>(
        `INSERT INTO quarantine (${QUARANTINE_INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
        [entry.reason, entry.detail, entry.rawBody, entry.signature, entry.contentType, entry.receivedAt])
      return (row as { id: number }).id
    },
    async resolveQuarantine (id, seq) {
      await pool.query('UPDATE quarantine SET retried_seq = $1 WHERE id = $2', [seq, id])
    }
  }
}
