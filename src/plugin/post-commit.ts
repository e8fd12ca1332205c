import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { AppendResult, JobEvent } from '../domain/types.js'
import { changeOf } from '../domain/job-change.js'
import type { ChangeFeed } from './change-feed.js'
import type { G2SentryMetrics } from './metrics.js'
import type { CommitSource, G2SentryOptions } from './options.js'

/** One committed append, as every writer inside the plugin reports it. */
export interface Committed {
  result: AppendResult
  event: JobEvent
  receivedAt: number
  source: CommitSource
}

/**
 * What happens after an append committed, whoever made it (docs/design.md, "After a commit"):
 * the outcome is counted, an applied change goes to the live feed, and `onEvent` is called.
 * `request` is the callback's request; writers outside a request pass none and `log` is used.
 * Never rejects: the event is committed whatever a reaction does. Synchronous, unless `onEvent`
 * returns a promise: then it returns one that settles when `onEvent` has (the callback route
 * answers after it, with no promise per request otherwise).
 */
export function postCommitPath (deps: {
  metrics: G2SentryMetrics | undefined
  feed: ChangeFeed
  onEvent: G2SentryOptions['onEvent']
  log: FastifyBaseLogger
}): (committed: Committed, request?: FastifyRequest) => void | Promise<void> {
  const { metrics, feed, onEvent, log } = deps
  return ({ result, event, receivedAt, source }, request) => {
    if (source !== 'api') metrics?.delivered(result.outcome)
    if (feed.subscribers > 0) {
      const change = changeOf(result, event, receivedAt)
      if (change !== undefined) feed.publish(change)
    }
    if (onEvent === undefined) return
    const failed = (err: unknown): void => {
      (request?.log ?? log).error({ err, seq: result.seq }, 'g2sentry: onEvent failed; the event stays committed')
    }
    try {
      const pending = onEvent({ ...result, event, source }, request)
      if (pending instanceof Promise) return pending.catch(failed)
    } catch (err) {
      failed(err)
    }
  }
}
