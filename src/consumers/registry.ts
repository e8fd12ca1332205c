import type { FastifyBaseLogger } from 'fastify'
import { missingMethods, type G2SentryStore } from '../store/contract.js'
import { errors } from '../errors.js'
import type { G2SentryMetrics } from '../plugin/metrics.js'
import { startConsumer, type Consumer, type ConsumerHandler, type ConsumerOptions, type Delivery } from './consumer.js'

/** Starts a named consumer in this instance (`fastify.g2sentry.consume`). */
export type Consume = <D extends Delivery = 'changes'>(name: string, handler: ConsumerHandler<D>, options?: ConsumerOptions<D>) => Consumer

/**
 * The consumers one plugin instance runs, by name: each logs its handler's failures, counts them
 * in the metrics, and is closed by `closeAll` (before the store closes).
 */
export function consumerRegistry (store: G2SentryStore, log: FastifyBaseLogger, metrics: G2SentryMetrics | undefined): {
  consume: Consume
  consumers: ReadonlyMap<string, Consumer>
  closeAll: () => Promise<void>
} {
  const consumers = new Map<string, Consumer>()
  const consume: Consume = (name, handler, options) => {
    const missing = missingMethods(store, ['leases', 'consumers'])
    if (missing.length > 0) throw new errors.INVALID_OPTION(`the store does not implement consumers (missing ${missing.join(', ')})`)
    if (consumers.has(name)) throw new errors.INVALID_OPTION(`a consumer named ${name} is already running in this instance`)
    const consumerLog = log.child({ consumer: name })
    const consumer = startConsumer(store, name, handler, options, {
      handlerFailed: ({ seq, attempt, error, parked, retryInMs }) => {
        metrics?.consumerFailed(name)
        consumerLog.warn({ seq, attempt, parked, retryInMs, error: (error as Error)?.message ?? String(error) },
          parked ? 'g2sentry: consumer handler failed; row parked' : 'g2sentry: consumer handler failed; will retry')
      },
      storeFailed: ({ error }) => consumerLog.error({ err: error }, 'g2sentry: consumer could not reach the store; will retry'),
      // Says why nothing is handled for a while after a restart: the killed instance's lease runs out first.
      waiting: ({ holder, expiresAt }) => consumerLog.info({ holder, expiresAt: new Date(expiresAt).toISOString() },
        'g2sentry: consumer waits: another instance holds its lease; this one takes over if that lease expires unrenewed')
    })
    consumers.set(name, consumer)
    return consumer
  }
  return {
    consume,
    consumers,
    closeAll: async () => { await Promise.all([...consumers.values()].map((consumer) => consumer.close())) }
  }
}
