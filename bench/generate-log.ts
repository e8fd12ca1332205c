// Writes a log for the replay benchmark straight through the store, from the schedule generator
// the tests and the simulator use: lifecycles with withdrawals, redeliveries and reordering, a
// thousand jobs at a time (at any moment G2 Sentry has a bounded number of jobs in flight).
import { sqliteStore } from '../src/index.js'
import { randomSchedule } from '../src/simulator/schedules.js'
import { signBody } from '../src/domain/verify-signature.js'

/** Appends `events` deliveries; returns how many jobs they cover. About ten deliveries per job. */
export async function generateLog (file: string, events: number, seed = 1): Promise<{ jobs: number }> {
  const store = sqliteStore({ filename: file, synchronous: 'NORMAL', maxBatch: 20_000 })
  let written = 0
  let jobs = 0
  for (let chunk = 0; written < events; chunk++) {
    const { deliveries } = randomSchedule(seed * 1_000_003 + chunk, { jobs: 1000, firstJobId: 1 + chunk * 1000, lossRate: 0.6, stopRate: 0.05 })
    const taken = deliveries.slice(0, events - written)
    await Promise.all(taken.map(({ event }, i) => {
      const rawBody = Buffer.from(JSON.stringify(event))
      return store.append({ ...event, rawBody, signature: signBody(rawBody, 'bench'), receivedAt: 1_790_000_000_000 + written + i })
    }))
    written += taken.length
    jobs += new Set(taken.map((d) => d.event.jobId)).size
  }
  await store.close()
  return { jobs }
}
