import type { FastifyBaseLogger } from 'fastify'

/**
 * Waits for `stopping` to settle, at most `ms`: past that, logs a warning and resolves, so that
 * closing the app is never held up for longer by a handler or a remote that does not stop.
 */
export async function stopWithin (ms: number, stopping: ReadonlyArray<Promise<void> | undefined>, log: FastifyBaseLogger): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), ms) })
  const done = Promise.allSettled(stopping).then(() => 'done' as const)
  try {
    if (await Promise.race([done, late]) === 'late') {
      log.warn({ closeTimeoutMs: ms }, 'g2sentry: background work did not stop within closeTimeoutMs; closing the store regardless')
    }
  } finally {
    clearTimeout(timer)
  }
}
