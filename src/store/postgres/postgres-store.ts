import type { AppendResult, ConditionalEvent, IncomingEvent, JobState } from '../../domain/types.js'
import type { G2SentryStore, RebuildReport } from '../contract.js'
import { errors } from '../../errors.js'
import { commitListeners } from '../commit-listeners.js'
import { groupCommit } from '../group-commit.js'
import { postgresConsumers } from './postgres-consumers.js'
import { postgresLifecycle } from './postgres-lifecycle.js'
import { postgresRetention } from './postgres-retention.js'
import { latestCheckpointOf, postgresArchive } from './postgres-archive.js'
import { commitAnnouncer, commitChannel, commitListener, PROBE_MS, type NotifyClient } from './commit-channel.js'
import { ACQUIRE_LEASE, checkLeaseRequest, LIST_LEASES, positional, RELEASE_LEASE, SELECT_LEASE, toGrant, toLease, type LeaseDbRow } from '../leases.js'
import { emptyReport, REPLAY_PAGE, ReplayCache, replayPage } from '../replay-core.js'
import { logLocation } from './postgres-read-only.js'
import { postgresReconcileState } from './postgres-reconcile.js'
import {
  JOB_COLUMNS, jobParams, REPLAY_COLUMNS, toJob, toLogRow, toQuarantine, UPDATE_JOB_ON_CONFLICT, type ChainHead,
  type EventRow, type JobRow, type QuarantineDbRow, type ReplayTuple
} from '../rows.js'
import { openPool, SELECT_HEAD, transaction, type Client, type PoolSettings } from './postgres-connection.js'
import { columnsOf, createWriter } from './postgres-writer.js'

export interface PostgresStoreOptions extends PoolSettings {
  /** The most appends that share one transaction (default 256). */
  maxBatch?: number
  /** Job states a rebuild keeps in memory before writing the least recently used out (default 100,000). */
  replayCacheSize?: number
  /**
   * Where to LISTEN for other instances' commits (default: `connectionString`). Behind a pooler
   * in transaction mode, which does not carry LISTEN, give a direct (or session-mode) URL here;
   * without one the store finds out, warns (FST_G2SENTRY_LISTEN_NOT_CARRIED) and the live feed
   * and consumers see other instances' commits only when they poll (every second by default).
   */
  listenUrl?: string | undefined
}

// Lease times come from the database's clock, so instances on several hosts agree on expiry.
const NOW_MS = '(extract(epoch FROM now()) * 1000)::bigint'
const CLOCK = { now: NOW_MS }
const PG_ACQUIRE_LEASE = positional(ACQUIRE_LEASE, ['name', 'holder', 'ttl'], CLOCK)
const PG_SELECT_LEASE = positional(SELECT_LEASE, ['name'], CLOCK)
const PG_RELEASE_LEASE = positional(RELEASE_LEASE, ['name', 'holder'], CLOCK)
const PG_LIST_LEASES = positional(LIST_LEASES, [], CLOCK)

/**
 * Opens (and, unless `readOnly`, migrates) a PostgreSQL event store, for several app instances sharing one log.
 * Every append transaction holds the chain's head row when it writes, so appends from all
 * instances take turns and seq follows commit order; a batch whose reads ran before it held the
 * head writes only if the head is still where it expected (docs/design.md, "The PostgreSQL
 * write path"), so the reads of the projection and the writes that follow them never interleave
 * with another instance's.
 */
export async function postgresStore (options: PostgresStoreOptions): Promise<G2SentryStore> {
  const pool = await openPool(options)
  const schema = options.schema ?? 'public'
  // Loaded already by openPool; the commit listener needs a client of its own, outside the pool.
  const pg = (await import('pg')).default

  const rebuild = async (client: Client, dryRun: boolean): Promise<RebuildReport> => {
    // Appends take ROW EXCLUSIVE on events; SHARE waits for those under way and holds off new ones.
    if (!dryRun) await client.query('LOCK TABLE events IN SHARE MODE')
    await client.query('CREATE TEMP TABLE rebuilt_jobs (LIKE jobs INCLUDING ALL) ON COMMIT DROP')
    const cache = new ReplayCache(options.replayCacheSize)
    const write = async (jobs: JobState[]) => {
      for (let i = 0; i < jobs.length; i += 1000) {
        const columns = columnsOf(jobs.slice(i, i + 1000).map(jobParams), 9)
        await client.query(`INSERT INTO rebuilt_jobs (${JOB_COLUMNS})
          SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::bigint[], $9::bigint[])
          ${UPDATE_JOB_ON_CONFLICT}`, columns)
      }
    }
    const report = emptyReport()
    // After an archive the replay starts from the projection kept at its checkpoint, with the rows after it.
    const start = (await latestCheckpointOf((text, values) => client.query(text, values)))?.record.through ?? 0
    if (start > 0) {
      await client.query(`INSERT INTO rebuilt_jobs (${JOB_COLUMNS}) SELECT ${JOB_COLUMNS} FROM checkpoint_jobs`)
      cache.assumeStored()
    }
    for (let after = start; ;) {
      const { rows: page } = await client.query<ReplayTuple>({
        text: `SELECT ${REPLAY_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2`, values: [after, REPLAY_PAGE], rowMode: 'array'
      })
      if (page.length === 0) break
      const missing = cache.toLoad(page)
      if (missing.length > 0) {
        const { rows } = await client.query<JobRow>('SELECT * FROM rebuilt_jobs WHERE job_id = ANY($1::bigint[])', [missing])
        for (const row of rows) cache.set(row.job_id, toJob(row))
      }
      replayPage(page, cache, report)
      await write(cache.evict())
      after = (page[page.length - 1] as ReplayTuple)[0]
    }
    await write([...cache.states()])
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
  const listeners = commitListeners()
  const channel = commitChannel(schema)
  const announce = commitAnnouncer((text, values) => pool.query(text, values), channel)
  const listenUrl = options.listenUrl ?? options.connectionString
  const commits = commitListener(() => new pg.Client({ connectionString: listenUrl }) as unknown as NotifyClient, channel, {
    send: (payload) => pool.query('SELECT pg_notify($1, $2)', [channel, payload]),
    notCarried: () => process.emitWarning(`a notification did not reach a LISTEN on ${logLocation(listenUrl, undefined)} within ` +
      `${PROBE_MS / 1000} s: a connection pooler in transaction mode is probably in between. Other instances' commits now reach the ` +
      'live feed and consumers only when they poll (every second by default). Set listenUrl (or listen_url in the database URL) ' +
      'to a direct or session-mode connection',
    { code: 'FST_G2SENTRY_LISTEN_NOT_CARRIED' })
  })
  const writer = createWriter(pool, (batchSize, started, lastSeq) => {
    announce(lastSeq)
    listeners.batchCommitted(batchSize, started)
  })
  // Group commit (src/store/group-commit.ts): a batch in one transaction; a batch that fails is
  // run again one event per transaction, in order, so one bad event fails only its own caller.
  // With overlap, the next batch is computed and sent while one commits (postgres-writer.ts).
  const queue = groupCommit(options.maxBatch ?? 256, (events, release) => writer.appendBatch(events, release), { overlap: true })

  const consumers = postgresConsumers(pool, (work) => transaction(pool, 'BEGIN', work))
  const retention = postgresRetention((text, values) => pool.query(text, values))
  const lifecycle = postgresLifecycle(schema, (text, values) => pool.query(text, values), (work) => transaction(pool, 'BEGIN', work), announce)
  const archive = postgresArchive(schema, (text, values) => pool.query(text, values), (work) => transaction(pool, 'BEGIN', work), announce)
  const store: G2SentryStore = {
    append (event: IncomingEvent): Promise<AppendResult> {
      if (!Number.isSafeInteger(event.jobId)) return Promise.reject(new errors.INVALID_EVENT('jobId must be a safe integer'))
      // An IncomingEvent has no ifLastSeq, so it is never superseded.
      return queue.append(event) as Promise<AppendResult>
    },
    appendIf (event: ConditionalEvent) {
      if (!Number.isSafeInteger(event.jobId)) return Promise.reject(new errors.INVALID_EVENT('jobId must be a safe integer'))
      return queue.append(event)
    },
    quarantine: (entry) => writer.quarantine(entry),
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
    resolveQuarantine: (id, seq) => writer.resolveQuarantine(id, seq),
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
      return transaction(pool, dryRun ? 'BEGIN ISOLATION LEVEL REPEATABLE READ' : 'BEGIN', (client) => rebuild(client, dryRun))
    },
    async close () {
      if (closed) return
      closed = true
      await commits.close()
      // The pool abandons waiting requests when it ends: let every started operation finish first.
      await Promise.allSettled(inFlight)
      await pool.end()
    }
  }

  const inFlight = new Set<Promise<unknown>>()
  const track = <A extends unknown[], R>(operation: (...args: A) => Promise<R>) => (...args: A): Promise<R> => {
    if (closed) return Promise.reject(new errors.STORE_CLOSED())
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
    deleteConsumer: track(store.deleteConsumer),
    listParked: track(store.listParked),
    retryParked: track(store.retryParked),
    resolveParked: track(store.resolveParked),
    redact: track(lifecycle.redact),
    redactedBy: track(lifecycle.redactedBy),
    readRecords: track(lifecycle.readRecords),
    countRedacted: track(lifecycle.countRedacted),
    retentionCandidates: track(retention.retentionCandidates),
    latestCheckpoint: track(archive.latestCheckpoint),
    checkpointJobs: track(archive.checkpointJobs),
    checkpoint: track(archive.checkpoint),
    deleteArchived: track(archive.deleteArchived),
    reclaimSpace: track(archive.reclaimSpace),
    archivedEvents: track(archive.archivedEvents),
    onCommit: listeners.onCommit,
    watchCommits: commits.watch,
    close: store.close
  }
}
