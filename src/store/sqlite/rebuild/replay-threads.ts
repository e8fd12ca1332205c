// The worker threads of a SQLite rebuild: one per share of the jobs but the first, which the
// rebuild's own thread replays (sqlite-store.ts). The rebuild runs inside one synchronous
// better-sqlite3 transaction, so it waits for the workers with Atomics.wait and takes their
// messages with receiveMessageOnPort: the event loop never runs in between, and nothing else on
// the store's connection can slip into the transaction. docs/design.md ("Rebuild").
import Database from 'better-sqlite3'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { debuglog } from 'node:util'
import { MessageChannel, receiveMessageOnPort, type MessagePort, type Worker } from 'node:worker_threads'
import { startWorker, workerModule } from '../../../worker-thread.js'
import { CONTROL, type WorkerMessage } from './replay-protocol.js'
import type { Share, ShareReport } from './sqlite-replay.js'

const debug = debuglog('g2sentry')

// replay-worker.ts under a TypeScript loader, replay-worker.js once built (../../../worker-thread.ts).
const WORKER = workerModule(import.meta.url, 'replay-worker')

/** Why worker threads cannot be used in this process, once one has failed to load its module. */
let unavailable: string | undefined

/** How long a worker may take to open its connection before its share is replayed without it. */
const READY_MS = 30_000
/**
 * How long a worker may go without a message, a page replayed or a batch of states written before
 * it is given up (its thread died: out of memory). Generous, as one statement (the comparison
 * of a share of millions of jobs) can take that long.
 */
const STALL_MS = 300_000

/** How the last rebuild in this process spread its shares (for tests). */
export const lastRebuild = { threads: 1, onWorkers: 0 }

class ShareWorker {
  readonly worker: Worker
  readonly port: MessagePort
  readonly started = performance.now()
  state: 'starting' | 'ready' | 'begun' | 'reported' | 'ended' | 'failed' = 'starting'
  report: ShareReport | undefined
  readonly batches: unknown[][][] = []
  #progress = 0
  #lastSign = performance.now()

  constructor (readonly share: Share, readonly control: Int32Array, data: Record<string, unknown>) {
    const { port1, port2 } = new MessageChannel()
    this.port = port1
    // The rebuild waits synchronously, where a worker's 'error' event never arrives: one whose
    // module cannot be loaded (a broken build, say) says so on the port instead.
    this.worker = startWorker(import.meta.url, 'replay-worker', { ...data, share, control: control.buffer, port: port2 }, {
      transferList: [port2],
      loadFailure: { port: port2, signal: control.buffer as SharedArrayBuffer, index: CONTROL.posted + share.part }
    })
    // A worker that outlives its rebuild (stopped while in a long statement) never holds the process.
    this.worker.unref()
    this.worker.on('error', (error) => { debug('rebuild: worker of share %d: %s', share.part, error.message) })
  }

  /** Takes the messages posted so far; true if there were any. */
  drain (): boolean {
    let any = false
    for (let m = receiveMessageOnPort(this.port); m !== undefined; m = receiveMessageOnPort(this.port)) {
      any = true
      const message = m.message as WorkerMessage
      if (this.state === 'failed') continue
      switch (message.type) {
        case 'ready':
        case 'begun':
          this.state = message.type
          debug('rebuild: share %d %s after %d ms', this.share.part, message.type, Math.round(performance.now() - this.started))
          break
        case 'report':
          this.state = 'reported'
          this.report = message.report
          debug('rebuild: share %d reported after %d ms', this.share.part, Math.round(performance.now() - this.started))
          break
        case 'rows': this.batches.push(message.rows); break
        case 'end': this.state = 'ended'; break
        case 'failed':
          if (message.loading === true) unavailable = message.message
          this.fail(message.message)
          break
      }
    }
    return any
  }

  /** Waits until `done` holds or the worker fails; gives it up when it takes too long. */
  waitUntil (done: () => boolean): void {
    for (this.drain(); !done() && this.state !== 'failed'; this.drain()) {
      const posted = Atomics.load(this.control, CONTROL.posted + this.share.part)
      if (this.drain()) continue
      Atomics.wait(this.control, CONTROL.posted + this.share.part, posted, 1000)
      const now = performance.now()
      const progress = Atomics.load(this.control, CONTROL.progress + this.share.part)
      if (Atomics.load(this.control, CONTROL.posted + this.share.part) !== posted || progress !== this.#progress) {
        this.#progress = progress
        this.#lastSign = now
      } else if (this.state === 'starting' ? now - this.started > READY_MS : now - this.#lastSign > STALL_MS) {
        this.fail(`no sign for ${Math.round((now - Math.max(this.started, this.#lastSign)) / 1000)} s`)
      }
    }
  }

  /** Hands over a batch of rows and lets the worker read the next. */
  ack (): void {
    Atomics.add(this.control, CONTROL.acked + this.share.part, 1)
    Atomics.notify(this.control, CONTROL.acked + this.share.part)
  }

  fail (reason: string): void {
    if (this.state === 'failed') return
    debug('rebuild: share %d of %d is replayed without its worker: %s', this.share.part, this.share.parts, reason)
    this.state = 'failed'
    this.worker.terminate().catch(() => {})
  }

  /** Ends the worker once the rebuild no longer needs it (it also ends by itself once done). */
  end (): void {
    if (this.state !== 'ended' && this.state !== 'failed') this.worker.terminate().catch(() => {})
  }
}

/** Worker threads replaying every share but the first of one rebuild of the SQLite file `filename`. */
export class ReplayWorkers {
  readonly #control = new Int32Array(new SharedArrayBuffer(CONTROL.size * Int32Array.BYTES_PER_ELEMENT))
  readonly #workers: ShareWorker[]
  // A connection outside every transaction, to see whether anything was committed while the
  // threads took their snapshots (see begin).
  readonly #probe: Database.Database
  #versionBefore: unknown
  /** Whether every share replayed by a worker read the rebuild's own snapshot; undefined until known. */
  #sameSnapshot: boolean | undefined

  /** Starts the workers, or returns undefined when this build has no worker module to start. */
  static start (filename: string, shares: Share[], capacity: number, busyTimeout: number, dryRun: boolean): ReplayWorkers | undefined {
    if (!existsSync(fileURLToPath(WORKER))) unavailable ??= `no ${fileURLToPath(WORKER)}`
    if (unavailable !== undefined) {
      debug('rebuild: replaying on one thread: %s', unavailable)
      return undefined
    }
    let probe: Database.Database | undefined
    try {
      probe = new Database(filename, { readonly: true, fileMustExist: true })
      return new ReplayWorkers(probe, filename, shares, capacity, busyTimeout, dryRun)
    } catch (error) {
      // The rebuild's own thread can still replay every share.
      debug('rebuild: no worker threads: %s', (error as Error).message)
      probe?.close()
      return undefined
    }
  }

  private constructor (probe: Database.Database, filename: string, shares: Share[], capacity: number, busyTimeout: number, dryRun: boolean) {
    this.#probe = probe
    const data = { filename, capacity, busyTimeout, dryRun }
    this.#workers = []
    try {
      for (const share of shares.slice(1)) this.#workers.push(new ShareWorker(share, this.#control, data))
    } catch (error) {
      this.close()
      throw error
    }
  }

  /** Waits until every worker has its connection open (or is given up). */
  waitReady (): void {
    for (const w of this.#workers) w.waitUntil(() => w.state !== 'starting')
  }

  /**
   * Lets the workers take their snapshots, right after `snapshot` has taken the rebuild's own.
   * A non-dry rebuild holds the write lock, so nothing can be committed before the workers
   * read. A dry run does not: the probe's data_version, read before the rebuild's snapshot and
   * again once every worker has its own, tells whether anything was committed in between
   * (see poll); if so, the workers' shares are replayed on the rebuild's thread instead.
   */
  begin (snapshot: () => void): void {
    this.#versionBefore = this.#probe.pragma('data_version', { simple: true })
    snapshot()
    Atomics.store(this.#control, CONTROL.go, 1)
    Atomics.notify(this.#control, CONTROL.go)
  }

  /** Takes the workers' messages; once every worker has its snapshot, checks it is the rebuild's. */
  poll (): void {
    for (const w of this.#workers) w.drain()
    if (this.#sameSnapshot !== undefined || this.#workers.some((w) => w.state === 'starting' || w.state === 'ready')) return
    this.#sameSnapshot = this.#probe.pragma('data_version', { simple: true }) === this.#versionBefore
    if (!this.#sameSnapshot) {
      debug('rebuild: a commit came between the threads\' snapshots')
      this.stop()
    }
  }

  /** Each worker's report, or undefined for a share the rebuild must replay itself. */
  reports (): Array<ShareReport | undefined> {
    for (const w of this.#workers) {
      w.waitUntil(() => w.state !== 'starting' && w.state !== 'ready')
      this.poll()
    }
    for (const w of this.#workers) w.waitUntil(() => w.report !== undefined)
    return this.#workers.map((w) => w.state === 'failed' ? undefined : w.report)
  }

  /** Hands `write` every batch of rows the worker of share `part` has for a real rebuild to write. */
  rows (part: number, write: (rows: unknown[][]) => void): void {
    const w = this.#workers[part - 1] as ShareWorker
    for (;;) {
      w.waitUntil(() => w.batches.length > 0 || w.state === 'ended')
      const batch = w.batches.shift()
      if (batch !== undefined) {
        write(batch)
        w.ack()
      } else if (w.state === 'ended') {
        return
      } else {
        throw new Error(`rebuild: the worker of share ${part} stopped before handing over its rows`)
      }
    }
  }

  /** Stops every worker at its next page or batch; its share, if still wanted, is replayed here. */
  stop (): void {
    this.#release()
    for (const w of this.#workers) w.fail('stopped')
  }

  /** Lets every waiting worker go on to see that it is stopped. */
  #release (): void {
    Atomics.store(this.#control, CONTROL.stop, 1)
    Atomics.store(this.#control, CONTROL.go, 1)
    Atomics.notify(this.#control, CONTROL.go)
    for (const w of this.#workers) {
      Atomics.add(this.#control, CONTROL.acked + w.share.part, 1)
      Atomics.notify(this.#control, CONTROL.acked + w.share.part)
    }
  }

  /** Ends the workers and closes the probe, once the rebuild is over (or has failed). */
  close (): void {
    this.#release()
    for (const w of this.#workers) {
      w.drain()
      w.end()
      w.port.close()
    }
    if (this.#probe.open) this.#probe.close()
  }
}
