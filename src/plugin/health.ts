// app.g2sentry.health(): what an orchestrator's probes and @fastify/under-pressure's healthCheck
// need to know: the store answers, it takes writes (no other process holds its write lock for
// longer than the probe waits), and how far each consumer is behind.
import { randomBytes } from 'node:crypto'
import type { G2SentryStore } from '../store/contract.js'

export interface HealthCheck {
  ok: boolean
  /** How long it took, in ms (at most the probe's timeout). */
  ms: number
  /** What went wrong, when it did. */
  error?: string
}

export interface HealthReport {
  /** The store answers and takes writes: ready for callbacks. Consumers' lag does not change it. */
  ok: boolean
  /** A read of the log's head. */
  store: HealthCheck
  /** A write that changes nothing, which must take the store's write lock. */
  writes: HealthCheck
  /** The log's last seq (0 when empty or unreadable). */
  head: number
  /** Each consumer on the database: its checkpoint, how many rows it is behind, its parked rows, and whether this instance runs it. */
  consumers: Array<{ name: string; checkpoint: number; lag: number; parked: number; runningHere: boolean }>
  /** Whether reconciliation is on, and whether this instance holds its lease. */
  reconciler: { holdingHere: boolean } | undefined
}

export interface HealthOptions {
  /** How long each check may take before it counts as failed (ms, default 1000). */
  timeoutMs?: number
}

/** Runs `check`, at most `timeoutMs`. */
async function timed (check: () => Promise<unknown>, timeoutMs: number): Promise<HealthCheck & { value?: unknown }> {
  const started = performance.now()
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
  })
  try {
    const value = await Promise.race([check(), late])
    return { ok: true, ms: Math.round(performance.now() - started), value }
  } catch (error) {
    return { ok: false, ms: Math.round(performance.now() - started), error: (error as Error).message ?? String(error) }
  } finally {
    clearTimeout(timer)
  }
}

export function healthOf (store: G2SentryStore, here: {
  consumers: () => ReadonlySet<string>
  reconciler: (() => boolean) | undefined
}): (options?: HealthOptions) => Promise<HealthReport> {
  // A lease nobody holds: releasing it writes nothing, but the statement takes the write lock.
  const probe = `g2sentry-health:${randomBytes(4).toString('hex')}`
  return async (options = {}) => {
    const timeoutMs = options.timeoutMs ?? 1000
    const [read, write] = await Promise.all([
      timed(() => store.chainHead(), timeoutMs),
      timed(() => store.releaseLease(probe, probe), timeoutMs)
    ])
    const head = (read.value as { seq: number } | undefined)?.seq ?? 0
    const running = here.consumers()
    const listed = read.ok && typeof store.listConsumers === 'function' ? await timed(() => store.listConsumers(), timeoutMs) : undefined
    const consumers = ((listed?.value ?? []) as Awaited<ReturnType<G2SentryStore['listConsumers']>>).map((consumer) => ({
      name: consumer.name,
      checkpoint: consumer.checkpoint,
      lag: Math.max(0, head - consumer.checkpoint),
      parked: consumer.parked,
      runningHere: running.has(consumer.name)
    }))
    const { value: _read, ...storeCheck } = read
    const { value: _write, ...writeCheck } = write
    return {
      ok: read.ok && write.ok,
      store: storeCheck,
      writes: writeCheck,
      head,
      consumers,
      reconciler: here.reconciler === undefined ? undefined : { holdingHere: here.reconciler() }
    }
  }
}
