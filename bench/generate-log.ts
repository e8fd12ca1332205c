// Writes a log for the benchmarks from the schedule generator the tests and the simulator use:
// lifecycles with withdrawals, redeliveries and reordering, a thousand jobs at a time (at any
// moment G2 Sentry has a bounded number of jobs in flight).
//
// Every event goes through the store's own writer (createWriter's appendBatch, what the group
// commit calls with each batch in a running receiver): outcomes, sameAs, the hash chain and the
// projection are the ones a receiver given these deliveries in this order would have written,
// and `g2sentry verify --secret bench` passes on the file. Only the way the file is written
// differs from a receiver, and no row shows it:
// - a fixture needs no durability, so the connection runs with `synchronous = OFF` (no disk
//   flush at all) and a 256 MiB page cache. A run that is stopped leaves a partial file, which
//   is checked before it is continued; after a system crash, delete it;
// - the writer is called directly, one transaction per BATCH events or so (whole schedules),
//   instead of through `store.append`, which makes a promise and a queue entry per event.
import Database from 'better-sqlite3'
import { randomSchedule, type Delivery } from '../src/simulator/schedules.js'
import { signBody } from '../src/domain/verify-signature.js'
import type { IncomingEvent } from '../src/domain/types.js'
import { openConnection } from '../src/store/sqlite/sqlite-connection.js'
import { createWriter } from '../src/store/sqlite/sqlite-writer.js'

/**
 * Events per transaction, at least (whole schedules are added until it is reached). A batch's
 * events and rows stay alive until it commits: at 50,000 they outlive the young generation and
 * cost about 10% more CPU per event than at 10,000 (2026-12-04, 500,000 events, two runs each).
 */
const BATCH = 10_000
/** Jobs per schedule: the seeds and job ids depend on it, so changing it changes every log. */
const JOBS_PER_SCHEDULE = 1000
/** The receivedAt of the first event; the n-th (from 0) is received n ms later. */
const FIRST_RECEIVED_AT = 1_790_000_000_000

/** The deliveries of the `chunk`-th schedule of the log of `seed`. */
const scheduleOf = (seed: number, chunk: number): Delivery[] => randomSchedule(seed * 1_000_003 + chunk, {
  jobs: JOBS_PER_SCHEDULE, firstJobId: 1 + chunk * JOBS_PER_SCHEDULE, lossRate: 0.6, stopRate: 0.05
}).deliveries

/** A delivery as the receiver appends it: the body's bytes as sent, signed with the bench secret. */
function incoming ({ event }: Delivery, n: number): IncomingEvent {
  const rawBody = Buffer.from(JSON.stringify(event))
  return { ...event, rawBody, signature: signBody(rawBody, 'bench'), receivedAt: FIRST_RECEIVED_AT + n }
}

/**
 * Appends generated deliveries to `file` (created and migrated if new) until it holds `events`;
 * returns how many jobs the log covers. About ten deliveries per job. The rows (events, jobs) are
 * a function of `events` and `seed` alone.
 *
 * A file that already holds the first n events of the log of `seed` (a smaller log of the same
 * seed, or a run that was stopped) is continued from event n + 1, with the same rows as if it
 * had been written in one go; a file holding anything else is refused. `progress`, if given, is
 * called after each transaction with the number of events in the file.
 */
export async function generateLog (file: string, events: number, seed = 1, progress?: (written: number) => void): Promise<{ jobs: number }> {
  const db = openConnection(file, { synchronous: 'NORMAL' }, true)
  try {
    // A fixture: see the top of this file.
    db.pragma('synchronous = OFF')
    db.pragma('cache_size = -262144')
    const existing = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM events').get()?.n ?? 0
    if (existing > events) throw new RangeError(`${file} already holds ${existing} events, more than ${events}`)

    // Where the log stands: the schedule its next event comes from, the jobs it covers so far.
    let chunk = 0
    let deliveries = scheduleOf(seed, 0)
    let offset = 0
    let jobs = 0
    // The jobs of the current schedule that already have events in the file.
    let counted = new Set<number>()
    for (let skipped = 0; skipped < existing;) {
      offset = Math.min(deliveries.length, existing - skipped)
      skipped += offset
      counted = new Set(deliveries.slice(0, offset).map((d) => d.event.jobId))
      jobs += counted.size
      if (skipped === existing) checkLast(db, file, incoming(deliveries[offset - 1] as Delivery, existing - 1))
      if (offset === deliveries.length) {
        deliveries = scheduleOf(seed, ++chunk)
        offset = 0
        counted = new Set()
      }
    }

    const writer = createWriter(db)
    let written = existing
    let batch: IncomingEvent[] = []
    const commit = () => {
      for (const outcome of writer.appendBatch(batch)) if (!outcome.ok) throw outcome.error
      written += batch.length
      batch = []
      progress?.(written)
    }
    while (written + batch.length < events) {
      const taken = Math.min(deliveries.length - offset, events - written - batch.length)
      for (let i = offset; i < offset + taken; i++) {
        const delivery = deliveries[i] as Delivery
        if (!counted.has(delivery.event.jobId)) {
          counted.add(delivery.event.jobId)
          jobs++
        }
        batch.push(incoming(delivery, written + batch.length))
      }
      offset += taken
      if (offset === deliveries.length) {
        deliveries = scheduleOf(seed, ++chunk)
        offset = 0
        counted = new Set()
      }
      if (batch.length >= BATCH) {
        commit()
        // Between transactions, let whatever else the process does (a progress line) run.
        await new Promise((resolve) => setImmediate(resolve))
      }
    }
    if (batch.length > 0) commit()
    return { jobs }
  } finally {
    db.close()
  }
}

/** Refuses to continue a file whose last event is not `expected`, the one this log has there. */
function checkLast (db: Database.Database, file: string, expected: IncomingEvent): void {
  const last = db.prepare<[], { raw_body: Buffer; received_at: number }>('SELECT raw_body, received_at FROM events ORDER BY seq DESC LIMIT 1').get()
  if (last === undefined || last.received_at !== expected.receivedAt || !last.raw_body.equals(expected.rawBody)) {
    throw new Error(`${file} does not hold the start of this generated log (its last event is not the one expected); delete it`)
  }
}
