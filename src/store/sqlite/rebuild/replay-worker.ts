// A worker thread of a SQLite rebuild (replay-threads.ts starts it): replays one share of the jobs
// on a connection of its own and hands its report, and the rows a real rebuild must write, to
// the thread that holds the rebuild's transaction. Everything it says goes through `post`: the
// rebuild waits for it synchronously, inside its transaction, so the event loop never runs there.
import { workerData, type MessagePort } from 'node:worker_threads'
import type { Share } from './sqlite-replay.js'
import { CONTROL, type WorkerMessage } from './replay-protocol.js'

interface Data {
  filename: string
  share: Share
  capacity: number
  busyTimeout: number
  dryRun: boolean
  control: SharedArrayBuffer
  port: MessagePort
}

const { filename, share, capacity, busyTimeout, dryRun, control: buffer, port } = (workerData as { data: Data }).data
const control = new Int32Array(buffer)
const slot = (base: number) => base + share.part

const post = (message: WorkerMessage): void => {
  port.postMessage(message)
  Atomics.add(control, slot(CONTROL.posted), 1)
  Atomics.notify(control, slot(CONTROL.posted))
}

/** Thrown out of the replay when the rebuild no longer wants this share. */
class Stopped extends Error {}
const stopped = (): boolean => Atomics.load(control, CONTROL.stop) !== 0

try {
  // Loaded here rather than imported, so that a failure to load is reported, not just an exit.
  const { default: Database } = await import('better-sqlite3')
  const { PAGE, replacedRows, replayShare } = await import('./sqlite-replay.js')
  const db = new Database(filename, { readonly: true, fileMustExist: true })
  try {
    db.pragma(`busy_timeout = ${busyTimeout}`)
    post({ type: 'ready' })
    Atomics.wait(control, CONTROL.go, 0)
    if (stopped()) throw new Stopped()
    db.exec('BEGIN')
    // The first read fixes the snapshot this share is replayed from.
    db.prepare('SELECT count(*) FROM main.sqlite_master').get()
    post({ type: 'begun' })
    const report = replayShare(db, share, capacity, () => {
      Atomics.add(control, slot(CONTROL.progress), 1)
      if (stopped()) throw new Stopped()
    })
    post({ type: 'report', report })
    if (!dryRun && report.differing.length > 0) {
      // In bounded batches, each taken before the next is read: memory stays within a page.
      let acked = 0
      let batch: unknown[][] = []
      const send = (): void => {
        post({ type: 'rows', rows: batch })
        batch = []
        Atomics.wait(control, slot(CONTROL.acked), acked)
        acked = Atomics.load(control, slot(CONTROL.acked))
        if (stopped()) throw new Stopped()
      }
      // Integers as BigInt, so every value reaches the projection exactly as it was rebuilt.
      for (const row of db.prepare(replacedRows(share)).raw().safeIntegers().iterate()) {
        batch.push(row as unknown[])
        if (batch.length === PAGE) send()
      }
      if (batch.length > 0) send()
    }
    post({ type: 'end' })
  } finally {
    db.close()
  }
} catch (error) {
  if (!(error instanceof Stopped)) post({ type: 'failed', message: error instanceof Error ? error.message : String(error) })
} finally {
  port.close()
}
