import { join } from 'node:path'
import { projectEvent } from '../../domain/project-status.js'
import type { AppendResult, ConditionalEvent, G2SentryStore, IncomingEvent, JobState, RebuildReport, SupersededResult } from '../../domain/types.js'
import { loadMigrations, MIGRATIONS_ROOT, pendingMigrations, type AppliedMigration } from '../migrations.js'
import { groupCommit, type BatchOutcome } from '../group-commit.js'
import { postgresConsumers } from './postgres-consumers.js'
import { ACQUIRE_LEASE, checkLeaseRequest, LIST_LEASES, positional, RELEASE_LEASE, SELECT_LEASE, toGrant, toLease, type LeaseDbRow } from '../leases.js'
import { emptyReport, REPLAY_PAGE, ReplayCache, replayPage } from '../replay-core.js'
import { postgresReconcileState } from './postgres-reconcile.js'
import {
  contentHash, EVENT_INSERT_COLUMNS, eventParams, JOB_COLUMNS, jobParams, QUARANTINE_INSERT_COLUMNS, REPLAY_COLUMNS,
  toJob, toLogRow, toQuarantine, UPDATE_JOB_ON_CONFLICT, type ChainHead, type EventRow, type JobRow, type QuarantineDbRow,
  type ReplayRow
} from '../rows.js'

export interface PostgresStoreOptions {
  /** e.g. `postgres://user@host:5432/db`. */
  connectionString: string
  /** Schema that holds the tables (default `public`); created if missing. */
  schema?: string
  /** Most connections in the pool (default 10). */
  max?: number
  /** The most appends that share one transaction (default 256). */
  maxBatch?: number
  /** Job states a rebuild keeps in memory before writing the least recently used out (default 100,000). */
  replayCacheSize?: number
}

// Minimal shapes of what this store uses from `pg`, so `pg` stays an optional peer dependency.
interface QueryResult<R> { rows: R[] }
interface Client {
  query: <R = Record<string, unknown>>(text: string, values?: unknown[]) => Promise<QueryResult<R>>
  release: (error?: Error | boolean) => void
}
interface Pool {
  query: Client['query']
  connect: () => Promise<Client>
  end: () => Promise<void>
  on: (event: 'error', listener: (error: Error) => void) => unknown
}

const INT8 = 20
// A fixed key for the migrations' advisory lock, so it does not collide with the app's own.
const LOCK_SEED = 0x6732_7365
// Every append links to the row before it, so appends from all instances take turns on the
// chain's head row (held for two round trips and the commit).
const SELECT_HEAD = 'SELECT seq, hash FROM g2sentry_chain WHERE id = 1'

// The event, and the projection row when the event has one ($15), in one statement.
const APPEND = `WITH event AS (
    INSERT INTO events (${EVENT_INSERT_COLUMNS})
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)),
  head AS (UPDATE g2sentry_chain SET seq = $1, hash = $14 WHERE id = 1)
  INSERT INTO jobs (${JOB_COLUMNS})
  SELECT $2, $17::text, $18::text, $19::text, $20::text, $21::int, $22::int, $23::bigint, $24::bigint WHERE $16::boolean
  ${UPDATE_JOB_ON_CONFLICT}`

// A batch's events, its projection rows (the last state of each job it touched) and the new
// head, in one statement.
const APPEND_BATCH = `WITH event AS (
    INSERT INTO events (${EVENT_INSERT_COLUMNS})
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[],
      $8::text[], $9::text[], $10::bigint[], $11::text[], $12::bigint[], $13::text[], $14::text[], $15::text[])),
  head AS (UPDATE g2sentry_chain SET seq = $16, hash = $17 WHERE id = 1)
  INSERT INTO jobs (${JOB_COLUMNS})
  SELECT * FROM unnest($18::bigint[], $19::text[], $20::text[], $21::text[], $22::text[], $23::int[], $24::int[], $25::bigint[], $26::bigint[])
  ${UPDATE_JOB_ON_CONFLICT}`

// Lease times come from the database's clock, so instances on several hosts agree on expiry.
const NOW_MS = '(extract(epoch FROM now()) * 1000)::bigint'
const CLOCK = { now: NOW_MS }
const PG_ACQUIRE_LEASE = positional(ACQUIRE_LEASE, ['name', 'holder', 'ttl'], CLOCK)
const PG_SELECT_LEASE = positional(SELECT_LEASE, ['name'], CLOCK)
const PG_RELEASE_LEASE = positional(RELEASE_LEASE, ['name', 'holder'], CLOCK)
const PG_LIST_LEASES = positional(LIST_LEASES, [], CLOCK)

/** Rows as columns, for unnest. */
const columnsOf = (rows: unknown[][], width: number): unknown[][] => Array.from({ length: width }, (_, c) => rows.map((row) => row[c]))

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/

/**
 * Opens (and migrates) a PostgreSQL event store, for several app instances sharing one log.
 * Every append transaction locks the chain's head row first, so appends from all instances take
 * turns: the read of the projection and the writes that follow it can never interleave with
 * another instance's, and seq follows commit order.
 */
export async function postgresStore (options: PostgresStoreOptions): Promise<G2SentryStore> {
  const schema = options.schema ?? 'public'
  if (!SCHEMA_NAME.test(schema)) throw new Error(`schema must be a lower-case SQL identifier, got "${schema}"`)
  let pg: Awaited<typeof import('pg')>['default']
  try {
    pg = (await import('pg')).default
  } catch {
    throw new Error('A PostgreSQL database needs the "pg" package: npm install pg')
  }
  const pool: Pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.max ?? 10,
    options: `-c search_path=${schema}`,
    // Sequence numbers, job ids and times are bigint columns that always fit in a double.
    types: { getTypeParser: (oid: number, format?: string) => oid === INT8 ? Number : pg.types.getTypeParser(oid, format as 'text') }
  }) as unknown as Pool
  // An idle client that loses its connection must not crash the app; the next query reconnects.
  pool.on('error', () => {})

  try {
    await migrate(pool, schema)
  } catch (error) {
    await pool.end()
    throw error
  }

  async function transaction<T> (begin: string, work: (client: Client) => Promise<T>): Promise<T> {
    const client = await pool.connect()
    try {
      await client.query(begin)
      const result = await work(client)
      await client.query('COMMIT')
      client.release()
      return result
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {})
      client.release(true)
      throw error
    }
  }

  const rebuild = async (client: Client, dryRun: boolean): Promise<RebuildReport> => {
    // Appends take ROW EXCLUSIVE on events; SHARE waits for those under way and holds off new ones.
    if (!dryRun) await client.query('LOCK TABLE events IN SHARE MODE')
    await client.query('CREATE TEMP TABLE rebuilt_jobs (LIKE jobs INCLUDING ALL) ON COMMIT DROP')
    const cache = new ReplayCache(options.replayCacheSize)
    const write = async (jobs: JobState[]) => {
      for (let i = 0; i < jobs.length; i += 1000) {
        const columns = Array.from({ length: 9 }, (_, c) => jobs.slice(i, i + 1000).map((job) => jobParams(job)[c]))
        await client.query(`INSERT INTO rebuilt_jobs (${JOB_COLUMNS})
          SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::bigint[], $9::bigint[])
          ${UPDATE_JOB_ON_CONFLICT}`, columns)
      }
    }
    const report = emptyReport()
    for (let after = 0; ;) {
      const { rows: page } = await client.query<ReplayRow>(`SELECT ${REPLAY_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2`, [after, REPLAY_PAGE])
      if (page.length === 0) break
      const missing = cache.toLoad(page)
      if (missing.length > 0) {
        const { rows } = await client.query<JobRow>('SELECT * FROM rebuilt_jobs WHERE job_id = ANY($1::bigint[])', [missing])
        for (const row of rows) cache.states.set(row.job_id, toJob(row))
      }
      replayPage(page, cache, report)
      await write(cache.evict())
      after = (page[page.length - 1] as ReplayRow).seq
    }
    await write([...cache.states.values()])
    report.jobs = (await client.query<{ n: number }>('SELECT count(*)::int AS n FROM rebuilt_jobs')).rows[0]?.n ?? 0
    const { rows: differing } = await client.query<{ job_id: number }>(`SELECT job_id FROM (
        SELECT job_id FROM (SELECT * FROM jobs EXCEPT SELECT * FROM rebuilt_jobs) AS stored_only
        UNION
        SELECT job_id FROM (SELECT * FROM rebuilt_jobs EXCEPT SELECT * FROM jobs) AS rebuilt_only) AS differing
      ORDER BY job_id`)
    report.differingJobs = differing.map((row) => row.job_id)
    if (!dryRun) {
      await client.query('DELETE FROM jobs')
      await client.query('INSERT INTO jobs SELECT * FROM rebuilt_jobs')
    }
    return report
  }

  let closed = false
  const commitListeners = new Set<(batchSize: number, seconds: number) => void>()
  const committed = (batchSize: number, started: bigint) => {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    for (const listener of commitListeners) listener(batchSize, seconds)
  }

  /** One append in its own transaction: a batch that failed is run again this way. */
  async function appendOne (event: IncomingEvent): Promise<AppendResult | SupersededResult> {
    const started = process.hrtime.bigint()
    const result = await transaction('BEGIN', async (client): Promise<AppendResult | SupersededResult> => {
      // Two round trips besides begin and commit: lock the chain's head and read the job and an
      // earlier row with the same body; write the event, the head and the projection in one
      // statement. The job id is a checked integer and the body hash is hex, both safe to inline.
      const bodyHash = contentHash(event.rawBody)
      const [{ rows: [head] }, { rows: [current] }, { rows: [same] }] = await client.query(`${SELECT_HEAD} FOR UPDATE;
        SELECT * FROM jobs WHERE job_id = ${event.jobId};
        SELECT seq FROM events WHERE job_id = ${event.jobId} AND content_hash = '${bodyHash}' ORDER BY seq LIMIT 1`
      ) as unknown as [QueryResult<ChainHead>, QueryResult<JobRow>, QueryResult<{ seq: number }>]
      const { ifLastSeq } = event as Partial<ConditionalEvent>
      if (ifLastSeq !== undefined) {
        const { rows: [last] } = await client.query<{ seq: number | null }>('SELECT max(seq) AS seq FROM events WHERE job_id = $1', [event.jobId])
        if ((last?.seq ?? 0) !== ifLastSeq) return { outcome: 'superseded', jobId: event.jobId, lastSeq: last?.seq ?? 0 }
      }
      const decision = projectEvent(current && toJob(current), event)
      const sameAs = decision.outcome === 'duplicate' ? same?.seq ?? null : null
      const { params, next } = eventParams(event, bodyHash, head, decision.outcome, sameAs)
      const writeJob = decision.outcome !== 'unsupported'
      await client.query(APPEND, [...params, writeJob, ...(writeJob ? jobParams(decision.state).slice(1) : Array(8).fill(null))])
      return { outcome: decision.outcome, seq: next.seq, jobId: event.jobId, status: decision.state?.status ?? null }
    })
    committed(1, started)
    return result
  }

  /**
   * A batch in one transaction, under one lock of the chain's head: one round trip reads the
   * head, the batch's jobs and their earlier rows with the same bodies; the projection runs in
   * memory, in order, on those states; one statement writes every event, the last state of each
   * job and the new head.
   */
  async function appendMany (events: IncomingEvent[]): Promise<Array<AppendResult | SupersededResult>> {
    const started = process.hrtime.bigint()
    const results = await transaction('BEGIN', async (client) => {
      const hashes = events.map((event) => contentHash(event.rawBody))
      // Job ids are checked integers and hashes hex: both safe to inline.
      const ids = [...new Set(events.map((event) => event.jobId))].join(',')
      const [{ rows: [head] }, { rows: jobRows }, { rows: firsts }] = await client.query(`${SELECT_HEAD} FOR UPDATE;
        SELECT * FROM jobs WHERE job_id = ANY('{${ids}}'::bigint[]);
        SELECT job_id, content_hash, min(seq) AS seq FROM events
          WHERE job_id = ANY('{${ids}}'::bigint[]) AND content_hash = ANY('{${[...new Set(hashes)].join(',')}}'::text[])
          GROUP BY job_id, content_hash`
      ) as unknown as [QueryResult<ChainHead>, QueryResult<JobRow>, QueryResult<{ job_id: number; content_hash: string; seq: number }>]
      const states = new Map(jobRows.map((row) => [row.job_id, toJob(row)]))
      // Conditional appends (the reconciler's) compare with each job's last seq, kept up to date
      // through the batch; a batch of callbacks alone never reads it.
      const conditional = events.filter((event) => (event as Partial<ConditionalEvent>).ifLastSeq !== undefined)
      const lastSeqs = new Map<number, number>()
      if (conditional.length > 0) {
        const { rows: lasts } = await client.query<{ job_id: number; seq: number }>(
          'SELECT job_id, max(seq) AS seq FROM events WHERE job_id = ANY($1::bigint[]) GROUP BY job_id', [conditional.map((e) => e.jobId)])
        for (const row of lasts) lastSeqs.set(row.job_id, row.seq)
      }
      const touched = new Set<number>()
      // The first row of each job with each body: from the log, else from this batch.
      const firstSeq = new Map(firsts.map((row) => [`${row.job_id} ${row.content_hash}`, row.seq]))
      const rows: unknown[][] = []
      const results: Array<AppendResult | SupersededResult> = []
      let at: ChainHead | undefined = head
      events.forEach((event, i) => {
        const { ifLastSeq } = event as Partial<ConditionalEvent>
        const lastSeq = lastSeqs.get(event.jobId) ?? 0
        if (ifLastSeq !== undefined && ifLastSeq !== lastSeq) {
          results.push({ outcome: 'superseded', jobId: event.jobId, lastSeq })
          return
        }
        const bodyHash = hashes[i] as string
        const decision = projectEvent(states.get(event.jobId), event)
        const key = `${event.jobId} ${bodyHash}`
        const sameAs = decision.outcome === 'duplicate' ? firstSeq.get(key) ?? null : null
        const { params, next } = eventParams(event, bodyHash, at, decision.outcome, sameAs)
        if (!firstSeq.has(key)) firstSeq.set(key, next.seq)
        if (decision.outcome !== 'unsupported') {
          states.set(event.jobId, decision.state)
          touched.add(event.jobId)
        }
        rows.push(params)
        if (conditional.length > 0) lastSeqs.set(event.jobId, next.seq)
        at = next
        results.push({ outcome: decision.outcome, seq: next.seq, jobId: event.jobId, status: decision.state?.status ?? null })
      })
      const jobs = [...touched].map((jobId) => jobParams(states.get(jobId) as JobState))
      if (rows.length > 0) await client.query(APPEND_BATCH, [...columnsOf(rows, 15), at?.seq, at?.hash, ...columnsOf(jobs, 9)])
      return results
    })
    committed(events.length, started)
    return results
  }

  // Group commit (src/store/group-commit.ts): a batch in one transaction; a batch that fails is
  // run again one event per transaction, in order, so one bad event fails only its own caller.
  const queue = groupCommit(options.maxBatch ?? 256, async (events) => {
    try {
      return (await appendMany(events)).map((result) => ({ ok: true as const, result }))
    } catch {
      const outcomes: BatchOutcome[] = []
      for (const event of events) {
        outcomes.push(await appendOne(event).then((result) => ({ ok: true as const, result }), (error: unknown) => ({ ok: false as const, error })))
      }
      return outcomes
    }
  })

  const consumers = postgresConsumers(pool, (work) => transaction('BEGIN', work))
  const store: G2SentryStore = {
    append (event: IncomingEvent): Promise<AppendResult> {
      if (!Number.isSafeInteger(event.jobId)) return Promise.reject(new TypeError('jobId must be a safe integer'))
      // An IncomingEvent has no ifLastSeq, so it is never superseded.
      return queue.append(event) as Promise<AppendResult>
    },
    appendIf (event: ConditionalEvent) {
      if (!Number.isSafeInteger(event.jobId)) return Promise.reject(new TypeError('jobId must be a safe integer'))
      return queue.append(event)
    },
    async quarantine (entry) {
      const { rows: [row] } = await pool.query<{ id: number }>(
        `INSERT INTO quarantine (${QUARANTINE_INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
        [entry.reason, entry.detail, entry.rawBody, entry.signature, entry.contentType, entry.receivedAt])
      return (row as { id: number }).id
    },
    async getJob (jobId) {
      const { rows: [row] } = await pool.query<JobRow>('SELECT * FROM jobs WHERE job_id = $1', [jobId])
      return row && toJob(row)
    },
    async listJobs ({ status, limit, after }) {
      const { rows } = status === undefined
        ? await pool.query<JobRow>('SELECT * FROM jobs WHERE job_id > $1 ORDER BY job_id LIMIT $2', [after ?? 0, limit])
        : await pool.query<JobRow>('SELECT * FROM jobs WHERE status = $1 AND job_id > $2 ORDER BY job_id LIMIT $3', [status, after ?? 0, limit])
      return rows.map(toJob)
    },
    async readLog ({ jobId, afterSeq, limit }) {
      const { rows } = jobId === undefined
        ? await pool.query<EventRow>('SELECT * FROM events WHERE seq > $1 ORDER BY seq LIMIT $2', [afterSeq ?? 0, limit])
        : await pool.query<EventRow>('SELECT * FROM events WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3', [jobId, afterSeq ?? 0, limit])
      return rows.map(toLogRow)
    },
    async listQuarantine ({ afterId, limit, pending }) {
      const { rows } = await pool.query<QuarantineDbRow>(`SELECT * FROM quarantine WHERE id > $1
        ${pending === true ? 'AND retried_seq IS NULL' : ''} ORDER BY id LIMIT $2`, [afterId ?? 0, limit])
      return rows.map(toQuarantine)
    },
    async resolveQuarantine (id, seq) {
      await pool.query('UPDATE quarantine SET retried_seq = $1 WHERE id = $2', [seq, id])
    },
    async quarantineSize () {
      return (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM quarantine WHERE retried_seq IS NULL')).rows[0]?.n ?? 0
    },
    async chainHead () {
      return (await pool.query<ChainHead>(SELECT_HEAD)).rows[0]
    },
    async acquireLease (name, holder, ttlMs) {
      checkLeaseRequest(name, holder, ttlMs)
      const { rows: [taken] } = await pool.query<LeaseDbRow>(PG_ACQUIRE_LEASE, [name, holder, ttlMs])
      if (taken !== undefined) return toGrant(taken, holder)
      const { rows: [other] } = await pool.query<LeaseDbRow>(PG_SELECT_LEASE, [name])
      return toGrant(other as LeaseDbRow, holder)
    },
    async releaseLease (name, holder) {
      checkLeaseRequest(name, holder)
      const { rows } = await pool.query(`${PG_RELEASE_LEASE} RETURNING name`, [name, holder])
      return rows.length > 0
    },
    async listLeases () {
      return (await pool.query<LeaseDbRow>(PG_LIST_LEASES)).rows.map(toLease)
    },
    ...consumers,
    async rebuild (rebuildOptions) {
      const dryRun = rebuildOptions?.dryRun === true
      return transaction(dryRun ? 'BEGIN ISOLATION LEVEL REPEATABLE READ' : 'BEGIN', (client) => rebuild(client, dryRun))
    },
    async close () {
      if (closed) return
      closed = true
      // The pool abandons waiting requests when it ends: let every started operation finish first.
      await Promise.allSettled(inFlight)
      await pool.end()
    }
  }

  const inFlight = new Set<Promise<unknown>>()
  const track = <A extends unknown[], R>(operation: (...args: A) => Promise<R>) => (...args: A): Promise<R> => {
    if (closed) return Promise.reject(new Error('The store is closed'))
    const running = operation(...args)
    inFlight.add(running)
    running.then(() => inFlight.delete(running), () => inFlight.delete(running))
    return running
  }
  return {
    append: track(store.append),
    appendIf: track(store.appendIf as NonNullable<G2SentryStore['appendIf']>),
    reconcileState: postgresReconcileState(pool, track),
    quarantine: track(store.quarantine),
    getJob: track(store.getJob),
    listJobs: track(store.listJobs),
    readLog: track(store.readLog),
    listQuarantine: track(store.listQuarantine),
    resolveQuarantine: track(store.resolveQuarantine),
    quarantineSize: track(store.quarantineSize),
    chainHead: track(store.chainHead),
    rebuild: track(store.rebuild),
    acquireLease: track(store.acquireLease),
    releaseLease: track(store.releaseLease),
    listLeases: track(store.listLeases),
    openConsumer: track(store.openConsumer),
    saveCheckpoint: track(store.saveCheckpoint),
    resetConsumer: track(store.resetConsumer),
    listConsumers: track(store.listConsumers),
    listParked: track(store.listParked),
    retryParked: track(store.retryParked),
    resolveParked: track(store.resolveParked),
    onCommit (listener) {
      commitListeners.add(listener)
      return () => { commitListeners.delete(listener) }
    },
    close: store.close
  }
}

async function migrate (pool: Pool, schema: string): Promise<void> {
  const all = loadMigrations(join(MIGRATIONS_ROOT, 'postgres'))
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    // Instances starting together migrate one at a time.
    await client.query('SELECT pg_advisory_xact_lock($1)', [LOCK_SEED])
    // CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege even when the schema exists.
    const { rows: [found] } = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema])
    if (found === undefined) await client.query(`CREATE SCHEMA ${schema}`)
    await client.query(`CREATE TABLE IF NOT EXISTS g2sentry_migrations (
      version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)`)
    const { rows: applied } = await client.query<AppliedMigration>('SELECT version, name, checksum FROM g2sentry_migrations ORDER BY version')
    for (const migration of pendingMigrations(all, applied)) {
      await client.query(migration.sql)
      await client.query('INSERT INTO g2sentry_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)',
        [migration.version, migration.name, migration.checksum, Date.now()])
    }
    await client.query('COMMIT')
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {})
    throw error
  } finally {
    client.release()
  }
}
