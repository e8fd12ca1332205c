// A worker thread of `auditLog` (audit.ts, audit-workers.ts): takes seq ranges in turn from a
// counter shared with the other workers, checks each on a read-only connection of its own and
// posts what it found.
import { parentPort, workerData } from 'node:worker_threads'
import { openLogReader } from '../store/log-reader.js'
import { checkTakenRanges, type AuditWorkerData } from './audit-workers.js'

const job = (workerData as { data: AuditWorkerData }).data
const port = parentPort as NonNullable<typeof parentPort>
const reader = await openLogReader(job.database)
try {
  await checkTakenRanges(reader, job, () => Atomics.add(job.next, 0, 1), (message) => port.postMessage(message))
} finally {
  await reader.close()
}
