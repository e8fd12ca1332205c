// Durable consumers' checkpoints and parked rows in PostgreSQL (SQL in ../consumer-sql.ts).
import type { G2SentryStore, LeaseFence } from '../contract.js'
import {
  BUMP_LEASE, DELETE_CONSUMER, DELETE_PARKED, DROP_IDLE_LEASE, FENCE, LIST_CONSUMERS, LIST_PARKED, LIVE_LEASE, MAX_ERROR_LENGTH,
  OPEN_CONSUMER, PARK_ROW, RETRY_PARKED, SAVE_CHECKPOINT, SELECT_CONSUMER, toCheckpoint, toDeletion, toParked, toSummary,
  UNPARK_ROW, type CheckpointDbRow, type LiveLeaseDbRow, type ParkedDbRow
} from '../consumer-sql.js'
import { positional } from '../leases.js'

type ConsumerMethods = Pick<G2SentryStore, 'openConsumer' | 'saveCheckpoint' | 'resetConsumer' | 'listConsumers' |
  'deleteConsumer' | 'listParked' | 'retryParked' | 'resolveParked'>

/** The part of a `pg` client these methods use. */
export interface Queryable {
  query: <R = Record<string, unknown>>(text: string, values?: unknown[]) => Promise<{ rows: R[] }>
}

const LITERALS = { now: '(extract(epoch FROM now()) * 1000)::bigint', head: '(SELECT seq FROM g2sentry_chain WHERE id = 1)' }
const sql = (text: string, names: readonly string[]) => positional(text, names, LITERALS)

const PG_OPEN = sql(OPEN_CONSUMER, ['name', 'fromnow'])
const PG_SELECT = sql(SELECT_CONSUMER, ['name'])
// FOR SHARE: a takeover (an update of the lease row) waits for this transaction, or this one
// sees the new token; the checkpoint cannot move under a lease that changed hands.
const PG_FENCE = `${sql(FENCE, ['lease', 'holder', 'token'])} FOR SHARE`
const PG_SAVE = sql(SAVE_CHECKPOINT, ['name', 'seq'])
const PG_PARK = sql(PARK_ROW, ['name', 'seq', 'attempts', 'error'])
const PG_UNPARK = sql(UNPARK_ROW, ['name', 'seq'])
const PG_BUMP = sql(BUMP_LEASE, ['lease'])
// FOR UPDATE: a renewal or takeover of the lease waits for the deletion, or the deletion sees it.
const PG_SELECT_CONSUMER_FOR_UPDATE = `${PG_SELECT} FOR UPDATE`
const PG_LIVE_LEASE = `${sql(LIVE_LEASE, ['lease'])} FOR UPDATE`
const PG_DELETE_PARKED = `${sql(DELETE_PARKED, ['name'])} RETURNING seq`
const PG_DELETE_CONSUMER = sql(DELETE_CONSUMER, ['name'])
const PG_DROP_IDLE_LEASE = sql(DROP_IDLE_LEASE, ['lease'])
const PG_LIST_PARKED = sql(LIST_PARKED, ['consumer', 'after', 'retry', 'limit'])
const PG_RETRY_ALL = sql(RETRY_PARKED, ['name'])
const PG_RETRY_SOME = `${PG_RETRY_ALL} AND seq = ANY($2::bigint[])`

/**
 * The consumer methods of the PostgreSQL store: `pool` for single statements, `transaction` for
 * the fenced writes.
 */
export function postgresConsumers (pool: Queryable, transaction: <T>(work: (client: Queryable) => Promise<T>) => Promise<T>): ConsumerMethods {
  const holds = async (client: Queryable, f: LeaseFence): Promise<boolean> =>
    (await client.query(PG_FENCE, [f.lease, f.holder, f.token])).rows.length > 0

  return {
    async openConsumer (name, start) {
      await pool.query(PG_OPEN, [name, start === 'now' ? 1 : 0])
      const { rows: [row] } = await pool.query<CheckpointDbRow>(PG_SELECT, [name])
      return toCheckpoint(row as CheckpointDbRow)
    },
    async saveCheckpoint (name, seq, f, park) {
      return transaction(async (client) => {
        if (!await holds(client, f)) return false
        await client.query(PG_SAVE, [name, seq])
        if (park !== undefined) await client.query(PG_PARK, [name, park.seq, park.attempts, park.error.slice(0, MAX_ERROR_LENGTH)])
        return true
      })
    },
    async resetConsumer (name, seq, lease) {
      return transaction(async (client) => {
        if ((await client.query(`${PG_SAVE} RETURNING name`, [name, seq])).rows.length === 0) return false
        await client.query(PG_BUMP, [lease])
        return true
      })
    },
    async listConsumers () {
      return (await pool.query<CheckpointDbRow>(LIST_CONSUMERS)).rows.map(toSummary)
    },
    async deleteConsumer (name, lease, options) {
      return transaction(async (client) => {
        if ((await client.query(PG_SELECT_CONSUMER_FOR_UPDATE, [name])).rows.length === 0) return toDeletion(false, undefined, false, 0)
        const { rows: [live] } = await client.query<LiveLeaseDbRow>(PG_LIVE_LEASE, [lease])
        if (live !== undefined && options?.force !== true) return toDeletion(true, live, false, 0)
        const { rows: parked } = await client.query(PG_DELETE_PARKED, [name])
        await client.query(PG_DELETE_CONSUMER, [name])
        await client.query(live === undefined ? PG_DROP_IDLE_LEASE : PG_BUMP, [lease])
        return toDeletion(true, live, true, parked.length)
      })
    },
    async listParked ({ consumer, afterSeq, limit, retryRequested }) {
      const retry = retryRequested === undefined ? -1 : retryRequested ? 1 : 0
      return (await pool.query<ParkedDbRow>(PG_LIST_PARKED, [consumer ?? '', afterSeq ?? 0, retry, limit])).rows.map(toParked)
    },
    async retryParked (consumer, seqs) {
      const { rows } = seqs === undefined
        ? await pool.query(`${PG_RETRY_ALL} RETURNING seq`, [consumer])
        : await pool.query(`${PG_RETRY_SOME} RETURNING seq`, [consumer, seqs])
      return rows.length
    },
    async resolveParked (consumer, seq, f, failure) {
      return transaction(async (client) => {
        if (!await holds(client, f)) return false
        if (failure === undefined) await client.query(PG_UNPARK, [consumer, seq])
        else await client.query(PG_PARK, [consumer, seq, failure.attempts, failure.error.slice(0, MAX_ERROR_LENGTH)])
        return true
      })
    }
  }
}
