// A consumer's options, checked once when it is registered, and the backoff between its attempts.
import type { LogRow } from '../domain/types.js'
import { errors } from '../errors.js'
import type { JobChange } from '../domain/job-change.js'

/** What a consumer hands its handler: each projection change (`applied` rows), or every log row. */
export type Delivery = 'changes' | 'rows'
export type Delivered<D extends Delivery> = D extends 'rows' ? LogRow : JobChange

export interface HandlerContext {
  consumer: string
  seq: number
  /** 1 for the first call with this row, then 2, 3, ... on retries. */
  attempt: number
  /** Aborted when the consumer closes: a handler that waits on I/O should stop then. */
  signal: AbortSignal
}

/** Resolves when the row is handled; throws (or rejects) to have it retried. */
export type ConsumerHandler<D extends Delivery = 'changes'> = (item: Delivered<D>, context: HandlerContext) => unknown

export interface ConsumerOptions<D extends Delivery = 'changes'> {
  /** `changes` (default): each projection change, the stream's shape; `rows`: every log row. */
  deliver?: D
  /** Where a consumer seen for the first time starts: `beginning` (default) or `now`. */
  start?: 'beginning' | 'now'
  /** Attempts per row before it is parked and the consumer moves on; default: retried forever, in order. */
  maxAttempts?: number
  /** The first retry's delay in ms (default 100); doubled on each retry, with jitter. */
  minBackoffMs?: number
  /** The longest delay between two attempts in ms (default 60000). */
  maxBackoffMs?: number
  /** Rows read from the log at a time (default 500). */
  batchSize?: number
  /** How long the lease lasts without renewal, in ms (default 10000); renewed every third of it. */
  leaseTtlMs?: number
  /** The safety-net poll, in ms (default 1000): for commits no notification reported. */
  pollMs?: number
}

export interface Resolved {
  deliver: Delivery
  start: 'beginning' | 'now'
  maxAttempts: number | undefined
  minBackoffMs: number
  maxBackoffMs: number
  batchSize: number
  leaseTtlMs: number
  pollMs: number
}

const NAME = /^[\w.:-]{1,100}$/

/** The lease a consumer runs under. */
export const consumerLease = (name: string): string => `consumer:${name}`

/** Checks a consumer's options once, when it is registered (FST_G2SENTRY_INVALID_OPTION). */
export function resolveConsumerOptions (name: unknown, handler: unknown, options: ConsumerOptions<Delivery> = {}): Resolved {
  const fail = (message: string): never => { throw new errors.INVALID_OPTION(message) }
  if (typeof name !== 'string' || !NAME.test(name)) fail('a consumer name is 1 to 100 letters, digits, "_", ".", ":" or "-"')
  if (typeof handler !== 'function') fail(`consumer ${String(name)}: the handler must be a function`)
  if (typeof options !== 'object' || options === null) fail(`consumer ${String(name)}: options must be an object`)
  const positive = (key: keyof ConsumerOptions<Delivery>, fallback: number | undefined): number | undefined => {
    const value = options[key]
    if (value === undefined) return fallback
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) fail(`consumer ${String(name)}: ${key} must be a positive integer`)
    return value as number
  }
  if (options.deliver !== undefined && options.deliver !== 'changes' && options.deliver !== 'rows') fail(`consumer ${String(name)}: deliver must be "changes" or "rows"`)
  if (options.start !== undefined && options.start !== 'beginning' && options.start !== 'now') fail(`consumer ${String(name)}: start must be "beginning" or "now"`)
  const resolved: Resolved = {
    deliver: options.deliver ?? 'changes',
    start: options.start ?? 'beginning',
    maxAttempts: positive('maxAttempts', undefined),
    minBackoffMs: positive('minBackoffMs', 100) as number,
    maxBackoffMs: positive('maxBackoffMs', 60_000) as number,
    batchSize: positive('batchSize', 500) as number,
    leaseTtlMs: positive('leaseTtlMs', 10_000) as number,
    pollMs: positive('pollMs', 1000) as number
  }
  if (resolved.maxBackoffMs < resolved.minBackoffMs) fail(`consumer ${name as string}: maxBackoffMs must not be less than minBackoffMs`)
  if (resolved.leaseTtlMs < 30) fail(`consumer ${name as string}: leaseTtlMs must be at least 30`)
  return resolved
}

/**
 * The delay before retry number `attempt` (1 = the first retry): `minMs` doubled each time, at
 * most `maxMs`, with "equal jitter" (between half and all of it) so that consumers failing
 * together do not retry together.
 */
export function backoffDelay (attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(attempt - 1, 52))
  return Math.round(ceiling / 2 + random() * ceiling / 2)
}
