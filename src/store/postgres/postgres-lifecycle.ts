// Erasure in PostgreSQL (docs/design.md, "Erasure"): the rows to erase, read under the chain
// head's lock, planned (src/store/redaction-plan.ts) and written in one transaction with the
// redaction record. An UPDATE leaves the old row version in the table until VACUUM removes it,
// its bytes in the page until the page is rewritten (VACUUM FULL), and in the WAL until its
// segments are recycled: `vacuum` runs VACUUM (or VACUUM FULL) once the transaction committed.
import type { LogLifecycle } from '../contract.js'
import { planRedaction } from '../redaction-plan.js'
import { EVENT_INSERT_COLUMNS, EVENT_WIDTH, toLogRow, toQuarantine, type ChainHead, type EventRow, type QuarantineDbRow } from '../rows.js'
import { SELECT_HEAD } from './postgres-connection.js'
import type { Client } from './postgres-types.js'

type LifecycleMethods = Pick<LogLifecycle, 'redact' | 'redactedBy' | 'readRecords' | 'countRedacted'>

const INSERT_RECORD = `INSERT INTO events (${EVENT_INSERT_COLUMNS}) VALUES (${Array.from({ length: EVENT_WIDTH }, (_, i) => `$${i + 1}`).join(', ')})`

/**
 * The lifecycle methods of the PostgreSQL store in `schema`: `query` runs one statement on the
 * pool, `inTransaction` runs work in a transaction, `committed` is told of the record's seq (the
 * store announces it to other instances).
 */
export function postgresLifecycle (
  schema: string,
  query: <R>(text: string, values?: unknown[]) => Promise<{ rows: R[] }>,
  inTransaction: <T>(work: (client: Client) => Promise<T>) => Promise<T>,
  committed: (seq: number) => void
): LifecycleMethods {
  return {
    async redact (request) {
      const ids = [...new Set(request.jobIds)]
      const plan = await inTransaction(async (client) => {
        // The head's lock first, as an append takes it: the record's seq follows commit order.
        const { rows: [head] } = await client.query<ChainHead>(`${SELECT_HEAD} FOR UPDATE`)
        // One query at a time: a client runs its queries in turn anyway (pg deprecates queuing them).
        const { rows } = await client.query<EventRow>('SELECT * FROM events WHERE job_id = ANY($1::bigint[]) AND source IN (\'callback\', \'api\') ORDER BY seq', [ids])
        const { rows: phones } = await client.query<{ jobId: number; projection: string | null; checkpoint: string | null }>(
          `SELECT ids.id AS "jobId", j.guardian_phone AS projection, c.guardian_phone AS checkpoint FROM unnest($1::bigint[]) AS ids(id)
            LEFT JOIN jobs j ON j.job_id = ids.id LEFT JOIN checkpoint_jobs c ON c.job_id = ids.id`, [ids])
        const { rows: quarantine } = await client.query<QuarantineDbRow>('SELECT * FROM quarantine WHERE redacted_by IS NULL ORDER BY id')
        const planned = planRedaction(request, { rows: rows.map(toLogRow), phones, quarantine: quarantine.map(toQuarantine), head }, request.at ?? Date.now())
        const { record } = planned
        if (record === undefined) return planned
        await client.query(INSERT_RECORD, record.params)
        await client.query('UPDATE g2sentry_chain SET seq = $1, hash = $2 WHERE id = 1', [record.next.seq, record.next.hash])
        if (planned.rows.length > 0) {
          await client.query(`UPDATE events SET raw_body = '\\x'::bytea, signature = '', salt = NULL, guardian_phone = v.phone,
            content_hash = v.content_hash, redacted_by = $1 FROM unnest($2::bigint[], $3::text[], $4::text[]) AS v(seq, phone, content_hash)
            WHERE events.seq = v.seq`,
          [record.seq, planned.rows.map((row) => row.seq), planned.rows.map((row) => row.guardianPhone), planned.rows.map((row) => row.contentHash)])
        }
        for (const [table, phones] of [['jobs', planned.projection], ['checkpoint_jobs', planned.checkpoint]] as const) {
          if (phones.length === 0) continue
          await client.query(`UPDATE ${table} SET guardian_phone = v.phone FROM unnest($1::bigint[], $2::text[]) AS v(job_id, phone)
            WHERE ${table}.job_id = v.job_id`, [phones.map((entry) => entry.jobId), phones.map((entry) => entry.guardianPhone)])
        }
        if (planned.quarantine.length > 0) {
          await client.query(`UPDATE quarantine SET raw_body = '\\x'::bytea, signature = '', detail = 'redacted', redacted_by = $1
            WHERE id = ANY($2::bigint[])`, [record.seq, planned.quarantine])
        }
        return planned
      })
      if (plan.record !== undefined) {
        committed(plan.record.seq)
        // VACUUM runs outside a transaction (through a pooler in transaction mode too), its tables
        // named with their schema here: the pool qualifies the names of queries, not of VACUUM.
        if (request.vacuum !== undefined) {
          const tables = ['events', 'jobs', 'checkpoint_jobs', 'quarantine'].map((table) => `${schema}.${table}`).join(', ')
          await query(`VACUUM ${request.vacuum === 'full' ? '(FULL) ' : ''}${tables}`)
        }
      }
      return { recordSeq: plan.record?.seq ?? null, jobs: plan.jobs, rows: plan.rows.length, version1Rows: plan.version1Rows, quarantined: plan.quarantine.length }
    },
    async redactedBy (seq) {
      return (await query<EventRow>('SELECT * FROM events WHERE redacted_by = $1 ORDER BY seq', [seq])).rows.map(toLogRow)
    },
    async readRecords ({ source, afterSeq, limit }) {
      return (await query<EventRow>('SELECT * FROM events WHERE source = $1 AND seq > $2 ORDER BY seq LIMIT $3', [source, afterSeq ?? 0, limit])).rows.map(toLogRow)
    },
    async countRedacted () {
      return (await query<{ n: number }>('SELECT count(*)::int AS n FROM events WHERE redacted_by IS NOT NULL')).rows[0]?.n ?? 0
    }
  }
}
