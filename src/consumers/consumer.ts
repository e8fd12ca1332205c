// A durable consumer: reads the log in seq order from a checkpoint kept in the same database and
// hands each row (or each projection change) to a handler, at least once. One instance at a time
// runs a named consumer, under the lease `consumer:<name>`.
import type { LogRow } from '../domain/types.js'
import type { G2SentryStore, ParkedRow } from '../store/contract.js'
import { leaseHolder } from '../leases/lease-holder.js'
import { watchLog } from '../log/watch-log.js'
import { changeOfRow } from '../domain/job-change.js'
import {
  backoffDelay, consumerLease, resolveConsumerOptions, type ConsumerHandler, type ConsumerOptions, type Delivered, type Delivery
} from './consumer-options.js'

// The options' module is where they are checked; importers of the consumer find them here too.
export {
  backoffDelay, consumerLease, resolveConsumerOptions, type ConsumerHandler, type ConsumerOptions, type Delivered, type Delivery, type HandlerContext
} from './consumer-options.js'

/** What a consumer reports about itself (for metrics and the CLI). */
export interface ConsumerStatus {
  name: string
  holder: string
  /** True while this instance holds the lease and runs the handler. */
  active: boolean
  /** The last seq this instance finished with (saved or about to be). */
  position: number | undefined
  /** Handler failures in this instance since it started. */
  failures: number
}

/** Things a consumer tells whoever runs it: failures and trouble with the store. */
export interface ConsumerEvents {
  handlerFailed?: (info: { consumer: string; seq: number; attempt: number; error: unknown; parked: boolean; retryInMs: number | undefined }) => void
  storeFailed?: (info: { consumer: string; error: unknown }) => void
  /**
   * Another instance holds the lease, so this one waits (a standby, or a restart after a crash
   * waiting out the dead instance's lease): told once per holder, with when its lease ends
   * unless renewed (ms since the epoch, the database's clock).
   */
  waiting?: (info: { consumer: string; holder: string; expiresAt: number }) => void
}

export interface Consumer {
  readonly name: string
  status: () => ConsumerStatus
  /** Hands parked rows (all, or those in `seqs`) to the handler again; returns how many were asked for. */
  retryParked: (seqs?: readonly number[]) => Promise<number>
  /** Stops reading, lets the handler in progress finish (its signal is aborted), saves the checkpoint and releases the lease. */
  close: () => Promise<void>
}

// A row handled without a save since longer than this is saved before the next one, so that a
// crash while catching up hands over at most this much work again.
const SAVE_EVERY_MS = 250

type Outcome = 'done' | 'parked' | 'stopped'

/**
 * Starts the consumer `name` on `store`: it runs here whenever this instance holds its lease, and
 * waits as a standby otherwise. Options must have been checked with `resolveConsumerOptions`.
 */
export function startConsumer<D extends Delivery> (store: G2SentryStore, name: string, handler: ConsumerHandler<D>,
  options: ConsumerOptions<D> = {}, events: ConsumerEvents = {}): Consumer {
  const config = resolveConsumerOptions(name, handler, options as ConsumerOptions<Delivery>)
  const abort = new AbortController()
  const call = handler as ConsumerHandler<Delivery>

  let closed = false
  let position: number | undefined
  let saved = 0
  let savedAt = 0
  let failures = 0
  let checkParked = true
  let dirty = true
  let wake: (() => void) | undefined
  // The other holder last told about, so that a standby says it once, not at every poll.
  let waitingFor: string | undefined

  const storeFailed = (error: unknown): void => { try { events.storeFailed?.({ consumer: name, error }) } catch {} }
  const rouse = (): void => {
    dirty = true
    wake?.()
  }
  const lease = leaseHolder({
    store,
    name: consumerLease(name),
    ttlMs: config.leaseTtlMs,
    onLost: rouse,
    onError: storeFailed,
    onTaken: (grant) => {
      if (grant.holder === waitingFor) return
      waitingFor = grant.holder
      try { events.waiting?.({ consumer: name, holder: grant.holder, expiresAt: grant.expiresAt }) } catch {}
    }
  })
  const holder = lease.holder
  const holding = (): boolean => !closed && lease.holding

  /** Sleeps `ms`, or less when woken (`wakeable`: by a commit; always: by close or a lost lease). */
  async function sleep (ms: number, wakeable: boolean): Promise<void> {
    // close() wakes only a sleep already begun: one that would begin after it must not begin.
    if (closed || (wakeable && dirty)) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms)
      function done (): void {
        clearTimeout(timer)
        wake = undefined
        resolve()
      }
      wake = () => { if (wakeable || closed || !holding()) done() }
    })
  }

  /** Takes the lease if it is free; on taking it, starts again from the stored checkpoint. */
  async function takeLease (): Promise<boolean> {
    if (holding()) return true
    const previous = lease.lastToken
    const kept = position
    if (!await lease.acquire()) return false
    waitingFor = undefined
    const token = lease.lastToken
    position = undefined
    const { checkpoint } = await store.openConsumer(name, config.start)
    // The same token means nobody held the lease meanwhile (a reset raises it too): what this
    // instance handled but did not save yet need not be handed over again.
    position = token === previous && kept !== undefined && kept >= checkpoint ? kept : checkpoint
    saved = checkpoint
    savedAt = Date.now()
    checkParked = true
    return true
  }

  /** Saves the checkpoint at `position` (and parks a row with it); false when the lease was lost. */
  let saving: Promise<boolean> = Promise.resolve(true)
  function save (park?: { seq: number; attempts: number; error: string }): Promise<boolean> {
    // One save at a time, in order, so a checkpoint never moves back.
    saving = saving.then(() => saveNow(park), () => saveNow(park))
    return saving
  }
  async function saveNow (park?: { seq: number; attempts: number; error: string }): Promise<boolean> {
    const current = lease.fence
    if (current === undefined || position === undefined) return false
    if (park === undefined && position <= saved) return true
    const at = position
    if (!await store.saveCheckpoint(name, at, current, park)) {
      if (lease.fence === current) lease.drop()
      return false
    }
    saved = Math.max(saved, at)
    savedAt = Date.now()
    return true
  }

  const itemOf = (row: LogRow): Delivered<Delivery> | undefined => config.deliver === 'rows' ? row : changeOfRow(row)

  /** Calls the handler until it succeeds, attempts run out, or the consumer stops here. */
  async function attempt (row: LogRow, item: Delivered<Delivery>, firstAttempt: number, limit: number | undefined):
  Promise<{ outcome: Outcome; attempts: number; error?: string }> {
    for (let n = 1; ; n++) {
      // A handler that takes a while: what came before it is saved meanwhile.
      const flush = setTimeout(() => { save().catch(storeFailed) }, SAVE_EVERY_MS)
      try {
        await call(item, { consumer: name, seq: row.seq, attempt: firstAttempt + n - 1, signal: abort.signal })
        return { outcome: 'done', attempts: n }
      } catch (error) {
        // Aborted by close(): not a failure of the row, which the next holder hands over again.
        if (closed) return { outcome: 'stopped', attempts: n }
        failures++
        const park = limit !== undefined && n >= limit
        const retryInMs = park ? undefined : backoffDelay(n, config.minBackoffMs, config.maxBackoffMs)
        try {
          events.handlerFailed?.({ consumer: name, seq: row.seq, attempt: firstAttempt + n - 1, error, parked: park, retryInMs })
        } catch {}
        if (park) return { outcome: 'parked', attempts: n, error: messageOf(error) }
        // What came before this row is done: save it now rather than after the retries.
        if (n === 1 && !await save()) return { outcome: 'stopped', attempts: n }
        await sleep(retryInMs as number, false)
        if (!holding()) return { outcome: 'stopped', attempts: n }
      } finally {
        clearTimeout(flush)
      }
    }
  }

  /** Reads and handles the log from the checkpoint until it is caught up or the lease is lost. */
  async function catchUp (): Promise<void> {
    while (holding()) {
      // A page of synchronous reads and handlers would otherwise hold the event loop (and the
      // lease's renewal timer) for as long as the catch-up lasts.
      await new Promise<void>((resolve) => setImmediate(resolve))
      await lease.renewIfDue()
      if (!holding()) return
      dirty = false
      const rows = await store.readLog({ afterSeq: position, limit: config.batchSize })
      for (const row of rows) {
        if (!holding()) return
        const item = itemOf(row)
        if (item !== undefined) {
          const result = await attempt(row, item, 1, config.maxAttempts)
          if (result.outcome === 'stopped') return
          position = row.seq
          if (result.outcome === 'parked') {
            if (!await save({ seq: row.seq, attempts: result.attempts, error: result.error as string })) return
            continue
          }
        } else {
          position = row.seq
        }
        if (Date.now() - savedAt >= SAVE_EVERY_MS && !await save()) return
      }
      if (!await save() || rows.length < config.batchSize) return
    }
  }

  /** Runs the parked rows someone asked to retry, each with the same attempts as a new row. */
  async function retryRequested (): Promise<void> {
    checkParked = false
    let after = 0
    for (;;) {
      const parked: ParkedRow[] = await store.listParked({ consumer: name, afterSeq: after, limit: 100, retryRequested: true })
      for (const entry of parked) {
        if (!holding()) return
        after = entry.seq
        const [row] = await store.readLog({ afterSeq: entry.seq - 1, limit: 1 })
        const current = lease.fence
        if (current === undefined) return
        const item = row !== undefined && row.seq === entry.seq ? itemOf(row) : undefined
        if (item === undefined) {
          // The row is gone from the log (or no longer delivered): nothing left to retry.
          await store.resolveParked(name, entry.seq, current)
          continue
        }
        const result = await attempt(row as LogRow, item, entry.attempts + 1, config.maxAttempts ?? 1)
        if (result.outcome === 'stopped') return
        const failure = result.outcome === 'parked' ? { attempts: entry.attempts + result.attempts, error: result.error as string } : undefined
        if (!await store.resolveParked(name, entry.seq, current, failure)) {
          lease.drop()
          return
        }
      }
      if (parked.length < 100) return
    }
  }

  async function run (): Promise<void> {
    let trouble = 0
    // close() sets `closed` while this loop awaits.
    // eslint-disable-next-line no-unmodified-loop-condition
    while (!closed) {
      try {
        if (await takeLease()) {
          await catchUp()
          if (checkParked && holding()) await retryRequested()
          trouble = 0
          if (holding()) await sleep(config.pollMs, true)
        } else {
          trouble = 0
          // A standby asks again often enough to take over within a third of the lease.
          await sleep(Math.min(config.pollMs, Math.floor(config.leaseTtlMs / 3)), false)
        }
      } catch (error) {
        if (closed) break
        storeFailed(error)
        await sleep(backoffDelay(++trouble, config.minBackoffMs, config.maxBackoffMs), false)
      }
    }
  }

  const stopWatching = watchLog(store, rouse, {
    pollMs: config.pollMs,
    onError: storeFailed
  })
  const parkedPoll = setInterval(() => { checkParked = true }, config.pollMs).unref()
  const running = run()

  return {
    name,
    status: () => ({ name, holder, active: holding(), position, failures }),
    async retryParked (seqs) {
      const count = await store.retryParked(name, seqs)
      checkParked = true
      rouse()
      return count
    },
    async close () {
      if (closed) return running
      closed = true
      abort.abort()
      stopWatching()
      clearInterval(parkedPoll)
      wake?.()
      await running
      // What the handler finished before close is saved, so the next holder starts after it.
      await save().catch(storeFailed)
      await lease.release().catch(storeFailed)
    }
  }
}

function messageOf (error: unknown): string {
  if (error instanceof Error) return error.message === '' ? error.name : error.message
  return String(error)
}
