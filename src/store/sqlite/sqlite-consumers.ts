// Durable consumers' checkpoints and parked rows in a SQLite file (SQL in ../consumer-sql.ts).
import type Database from 'better-sqlite3'
import type { G2SentryStore, LeaseFence } from '../contract.js'
import {
  BUMP_LEASE, DELETE_CONSUMER, DELETE_PARKED, DROP_IDLE_LEASE, FENCE, LIST_CONSUMERS, LIST_PARKED, LIVE_LEASE, MAX_ERROR_LENGTH,
  OPEN_CONSUMER, PARK_ROW, RETRY_PARKED, SAVE_CHECKPOINT, SELECT_CONSUMER, toCheckpoint, toDeletion, toParked, toSummary,
  UNPARK_ROW, type CheckpointDbRow, type LiveLeaseDbRow, type ParkedDbRow
} from '../consumer-sql.js'

type ConsumerMethods = Pick<G2SentryStore, 'openConsumer' | 'saveCheckpoint' | 'resetConsumer' | 'listConsumers' |
  'deleteConsumer' | 'listParked' | 'retryParked' | 'resolveParked'>

const HEAD = "coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)"

/** The consumer methods of the SQLite store over `db`. */
export function sqliteConsumers (db: Database.Database): ConsumerMethods {
  const openConsumer = db.prepare(OPEN_CONSUMER.replace('$head', HEAD))
  const selectConsumer = db.prepare<{ name: string }, CheckpointDbRow>(SELECT_CONSUMER)
  const fence = db.prepare<{ lease: string; holder: string; token: number }, { held: number }>(FENCE)
  const saveCheckpoint = db.prepare(SAVE_CHECKPOINT)
  const parkRow = db.prepare(PARK_ROW)
  const unparkRow = db.prepare(UNPARK_ROW)
  const bumpLease = db.prepare(BUMP_LEASE)
  const listConsumers = db.prepare<[], CheckpointDbRow>(LIST_CONSUMERS)
  const listParked = db.prepare<Record<string, unknown>, ParkedDbRow>(LIST_PARKED)
  const retryAll = db.prepare(RETRY_PARKED)
  const retrySome = db.prepare(`${RETRY_PARKED} AND seq IN (SELECT value FROM json_each($seqs))`)

  const liveLease = db.prepare<{ lease: string; now: number }, LiveLeaseDbRow>(LIVE_LEASE)
  const deleteParked = db.prepare(DELETE_PARKED)
  const deleteConsumer = db.prepare(DELETE_CONSUMER)
  const dropIdleLease = db.prepare(DROP_IDLE_LEASE)

  const holds = (f: LeaseFence): boolean => fence.get({ lease: f.lease, holder: f.holder, token: f.token }) !== undefined

  const open = db.transaction((name: string, fromNow: boolean) => {
    openConsumer.run({ name, fromnow: fromNow ? 1 : 0, now: Date.now() })
    return selectConsumer.get({ name }) as CheckpointDbRow
  })
  const save = db.transaction((name: string, seq: number, f: LeaseFence, park?: { seq: number; attempts: number; error: string }) => {
    if (!holds(f)) return false
    const now = Date.now()
    saveCheckpoint.run({ name, seq, now })
    if (park !== undefined) parkRow.run({ name, seq: park.seq, attempts: park.attempts, error: park.error.slice(0, MAX_ERROR_LENGTH), now })
    return true
  })
  const reset = db.transaction((name: string, seq: number, lease: string) => {
    if (saveCheckpoint.run({ name, seq, now: Date.now() }).changes === 0) return false
    bumpLease.run({ lease })
    return true
  })
  const remove = db.transaction((name: string, lease: string, force: boolean) => {
    if (selectConsumer.get({ name }) === undefined) return toDeletion(false, undefined, false, 0)
    const now = Date.now()
    const live = liveLease.get({ lease, now })
    if (live !== undefined && !force) return toDeletion(true, live, false, 0)
    const parked = deleteParked.run({ name }).changes
    deleteConsumer.run({ name })
    if (live === undefined) dropIdleLease.run({ lease, now })
    else bumpLease.run({ lease })
    return toDeletion(true, live, true, parked)
  })
  const resolve = db.transaction((consumer: string, seq: number, f: LeaseFence, failure?: { attempts: number; error: string }) => {
    if (!holds(f)) return false
    if (failure === undefined) unparkRow.run({ name: consumer, seq })
    else parkRow.run({ name: consumer, seq, attempts: failure.attempts, error: failure.error.slice(0, MAX_ERROR_LENGTH), now: Date.now() })
    return true
  })

  return {
    async openConsumer (name, start) {
      return toCheckpoint(open.immediate(name, start === 'now'))
    },
    async saveCheckpoint (name, seq, f, park) {
      return save.immediate(name, seq, f, park)
    },
    async resetConsumer (name, seq, lease) {
      return reset.immediate(name, seq, lease)
    },
    async listConsumers () {
      return listConsumers.all().map(toSummary)
    },
    async deleteConsumer (name, lease, options) {
      return remove.immediate(name, lease, options?.force === true)
    },
    async listParked ({ consumer, afterSeq, limit, retryRequested }) {
      const retry = retryRequested === undefined ? -1 : retryRequested ? 1 : 0
      return listParked.all({ consumer: consumer ?? '', after: afterSeq ?? 0, retry, limit }).map(toParked)
    },
    async retryParked (consumer, seqs) {
      return (seqs === undefined ? retryAll.run({ name: consumer }) : retrySome.run({ name: consumer, seqs: JSON.stringify(seqs) })).changes
    },
    async resolveParked (consumer, seq, f, failure) {
      return resolve.immediate(consumer, seq, f, failure)
    }
  }
}
