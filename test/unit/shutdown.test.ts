// Closing the app is bounded (option closeTimeoutMs): background work is asked to stop and its
// requests are aborted; a handler that ignores its abort signal holds up the close only that long.
import t from 'tap'
import { performance } from 'node:perf_hooks'
import { assigned, buildApp, memoryStream, post } from '../helpers/helpers.js'
import { until } from '../helpers/until.js'

t.test('a consumer handler that never settles holds up close() for closeTimeoutMs, then the store closes', async (t) => {
  const log = memoryStream()
  const app = await buildApp(t, { closeTimeoutMs: 300, logStream: log.stream })
  let called = false
  // Ignores its abort signal and never settles.
  app.g2sentry.consume('stuck', () => { called = true; return new Promise(() => {}) }, { pollMs: 20 })
  t.equal((await post(app, assigned(1))).statusCode, 200)
  await until('the handler was called', () => called)
  const started = performance.now()
  await app.close()
  const took = performance.now() - started
  t.ok(took >= 290 && took < 2000, `close() returned after the bound (${Math.round(took)} ms)`)
  const warnings = log.lines.map((line) => JSON.parse(line) as { level: number; msg: string }).filter((line) => line.level === 40)
  t.match(warnings.map((line) => line.msg), [/did not stop within closeTimeoutMs/], 'and said why, once')
})

t.test('closeTimeoutMs must be a positive integer', async (t) => {
  await t.rejects(buildApp(t, { closeTimeoutMs: 0 }), { code: 'FST_G2SENTRY_INVALID_OPTION', message: /closeTimeoutMs must be a positive integer/ })
})
