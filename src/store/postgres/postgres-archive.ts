// Archiving in PostgreSQL (docs/design.md, "Archiving"): the checkpoint record appended under the
// chain head's lock with the projection at the checkpoint, in one transaction; then the archived
// rows deleted a batch per transaction, and a plain VACUUM of the events table, which makes their
// space reusable by new rows but does not return it to the operating system (VACUUM FULL would,
// holding an exclusive lock on the table while it copies it: appends would wait).
import { setImmediate as nextTurn } from 'node:timers/promises'
import { errors } from '../../errors.js'
import { readCheckpoint } from '../../log/records.js'
import type { CheckpointJob, LogArchive } from '../contract.js'
import { EVENT_INSERT_COLUMNS, EVENT_WIDTH, JOB_COLUMNS, recordParams, toCheckpointJob, type ChainHead, type CheckpointJobRow } from '../rows.js'
import { SELECT_HEAD } from './postgres-connection.js'
import type { Client } from './postgres-types.js'

const DELETE_BATCH = 5000
const INSERT_RECORD = `INSERT INTO events (${EVENT_INSERT_COLUMNS}) VALUES (${Array.from({ length: EVENT_WIDTH }, (_, i) => `$${i + 1}`).join(', ')})`
/** The latest checkpoint row, as the rebuild and the store read it. */
export const LATEST_CHECKPOINT_SQL = 'SELECT seq, raw_body FROM events WHERE source = \'checkpoint\' ORDER BY seq DESC LIMIT 1'

type Query = <R>(text: string, values?: unknown[]) => Promise<{ rows: R[] }>

/** The latest checkpoint row and its record, read with `query`. */
export async function latestCheckpointOf (query: Query): Promise<{ seq: number; record: NonNullable<ReturnType<typeof readCheckpoint>> } | undefined> {
  const { rows: [row] } = await query<{ seq: number; raw_body: Buffer }>(LATEST_CHECKPOINT_SQL)
  const record = row === undefined ? undefined : readCheckpoint(row.raw_body)
  return row === undefined || record === undefined ? undefined : { seq: row.seq, record }
}

/**
 * The archive methods of the PostgreSQL store in `schema`: `query` runs one statement on the
 * pool, `inTransaction` runs work in a transaction, `committed` is told of the record's seq.
 */
export function postgresArchive (
  schema: string,
  query: Query,
  inTransaction: <T>(work: (client: Client) => Promise<T>) => Promise<T>,
  committed: (seq: number) => void
): LogArchive {
  return {
    latestCheckpoint: () => latestCheckpointOf(query),
    async checkpointJobs () {
      return (await query<CheckpointJobRow>('SELECT * FROM checkpoint_jobs ORDER BY job_id')).rows.map(toCheckpointJob)
    },
    async checkpoint (request) {
      const seq = await inTransaction(async (client) => {
        // The head's lock first, as an append takes it: the record's seq follows commit order.
        const { rows: [head] } = await client.query<ChainHead>(`${SELECT_HEAD} FOR UPDATE`)
        const run: Query = (text, values) => client.query(text, values)
        if (((await latestCheckpointOf(run))?.record.through ?? 0) !== request.after) {
          throw new errors.ARCHIVE_REFUSED('another archive was made meanwhile')
        }
        const { rows: [redactions] } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE source = \'redaction\' AND seq > $1', [request.readAt])
        if ((redactions?.n ?? 0) > 0) throw new errors.ARCHIVE_REFUSED('a redaction was made meanwhile, and the file holds what it erased; archive again')
        const { params, next } = recordParams('checkpoint', { checkpoint: request.record }, request.at, head)
        await client.query(INSERT_RECORD, params)
        await client.query('UPDATE g2sentry_chain SET seq = $1, hash = $2 WHERE id = 1', [next.seq, next.hash])
        await client.query('DELETE FROM checkpoint_jobs')
        for (let i = 0; i < request.jobs.length; i += 5000) {
          const jobs = request.jobs.slice(i, i + 5000)
          const column = <K extends keyof CheckpointJob>(key: K) => jobs.map((job) => job[key])
          await client.query(`INSERT INTO checkpoint_jobs (${JOB_COLUMNS}, archived, last_seq)
            SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::bigint[], $9::bigint[], $10::int[],
              $11::bigint[])`,
          [column('jobId'), column('jobName'), column('status'), column('guardianPhone'), column('lastEventType'), column('version'),
            column('eventCount'), column('createdAt'), column('updatedAt'), column('archived'), column('lastSeq')])
        }
        return next.seq
      })
      committed(seq)
      return { seq }
    },
    async deleteArchived (through, options) {
      const batch = options?.batchSize ?? DELETE_BATCH
      if (((await latestCheckpointOf(query))?.record.through ?? 0) < through) throw new errors.ARCHIVE_REFUSED(`no checkpoint covers seq ${through}`)
      const { rows: [first] } = await query<{ seq: number | null }>('SELECT min(seq) AS seq FROM events')
      let deleted = 0
      for (let from = (first?.seq ?? through + 1) - 1; from < through; from += batch) {
        const { rows } = await query<{ n: number }>('WITH gone AS (DELETE FROM events WHERE seq > $1 AND seq <= $2 RETURNING 1) SELECT count(*)::int AS n FROM gone',
          [from, Math.min(from + batch, through)])
        deleted += rows[0]?.n ?? 0
        await nextTurn()
      }
      return deleted
    },
    async reclaimSpace () {
      // Named with its schema: the pool qualifies the names of queries, not of VACUUM.
      await query(`VACUUM ${schema}.events`)
      return { method: 'vacuum', pagesFreed: null }
    },
    async archivedEvents (jobId) {
      return (await query<{ archived: number }>('SELECT archived FROM checkpoint_jobs WHERE job_id = $1', [jobId])).rows[0]?.archived ?? 0
    }
  }
}
