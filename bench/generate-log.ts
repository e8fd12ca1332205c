// Writes a realistic log straight through the store: per job an assignment, a start, a completion,
// redeliveries of each, late events and one unsupported event type.
import { sqliteStore } from '../src/index.js'
import { signBody } from '../src/verify-signature.js'
import type { IncomingEvent, JobStatus } from '../src/types.js'

const PATTERN: Array<[string, JobStatus, boolean]> = [
  ['JobAssigned', 'Assigned', true], ['JobAssigned', 'Assigned', true], ['JobStarted', 'InProgress', true],
  ['JobStarted', 'InProgress', true], ['JobAssigned', 'Assigned', true], ['JobCompleted', 'Completed', false],
  ['JobCompleted', 'Completed', false], ['JobStarted', 'InProgress', true], ['JobGuardianRate', 'Completed', false],
  ['JobCompleted', 'Completed', false]
]

export async function generateLog (file: string, events: number, jobs: number): Promise<void> {
  const store = sqliteStore({ filename: file, synchronous: 'NORMAL', maxBatch: 20_000 })
  const chunk = 20_000
  for (let start = 0; start < events; start += chunk) {
    const appends: Array<Promise<unknown>> = []
    for (let n = start; n < Math.min(events, start + chunk); n++) {
      const jobId = (n % jobs) + 1
      const [eventType, jobStatus, phone] = PATTERN[Math.floor(n / jobs) % PATTERN.length] as [string, JobStatus, boolean]
      const payload = { jobId, eventType, jobName: `Replay job ${jobId}`, jobStatus, ...(phone ? { guardianPhone: '+15550000000' } : {}) }
      const rawBody = Buffer.from(JSON.stringify(payload))
      const event: IncomingEvent = { ...payload, rawBody, signature: signBody(rawBody, 'bench'), receivedAt: 1_790_000_000_000 + n }
      appends.push(store.append(event))
    }
    await Promise.all(appends)
  }
  await store.close()
}
