import { DEVELOPMENT_SECRET, simulate as simulateFixed, simulateRandom } from '../../simulator/simulate.js'
import { simulateReconcile } from '../../simulator/simulate-reconcile.js'
import { defineCommand, UsageError, wholeNumber } from '../command.js'

/**
 * The callback URL of the example server as the same environment starts it (examples/server.ts
 * reads PORT and HOST); a server listening on every address is reached on the loopback one.
 */
export function defaultCallbackUrl (env: NodeJS.ProcessEnv): string {
  const host = env.HOST === undefined || env.HOST === '' || env.HOST === '0.0.0.0' ? '127.0.0.1' : env.HOST === '::' ? '::1' : env.HOST
  const port = env.PORT === undefined || env.PORT === '' ? '3000' : env.PORT
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}/callbacks/g2sentry`
}

export const simulate = defineCommand({
  summary: 'send signed example callbacks to a running server',
  usage: `Usage: g2sentry simulate [--url URL] [--secret SECRET] [--first-job N] [--seed S --jobs N]
       g2sentry simulate --reconcile [--api-port N] [--url URL] [--secret SECRET] [--seed S] [--jobs N] [--wait SECONDS]`,
  help: `Signs and posts a few job lifecycles (with a redelivery, a reordering, a late event and a
withdrawal) to a running receiver, printing what each delivery got. With --seed, generates
--jobs random lifecycles instead, delivers each event 1-7 times in a shuffled order, and checks
through the job routes that every job ends in its true status.
  --url        callback URL (default http://$HOST:$PORT/callbacks/g2sentry, read as the example
               server reads them: http://127.0.0.1:3000/callbacks/g2sentry when neither is set)
  --secret     callback secret (default $G2SENTRY_CALLBACK_SECRET, else the development secret)
  --first-job  first job id to use (default 101)
  --seed       seed of a generated schedule (same seed, same deliveries)
  --jobs       jobs in a generated schedule (default 20)
With $G2SENTRY_READ_TOKEN set, the job routes are read with it, as the example server asks.
Exit code 1 when a delivery is refused or a job ends in another status.
With --reconcile, runs a fake G2 Sentry Partner API on --api-port (default 3100; partner key and
secret from $G2SENTRY_PARTNER_KEY and $G2SENTRY_PARTNER_SECRET, else demo-partner and
demo-partner-secret) beside a server started with G2SENTRY_API_URL pointing at it, delivers a
schedule where some jobs are canceled without a callback and some callbacks are lost for good,
and waits (--wait, default 180 s) until the server's reconciler shows every job's true status.
Exit code 0 when all converge within the rate limit, 1 otherwise.`,
  options: {
    url: { type: 'string' },
    secret: { type: 'string', multiple: true },
    'first-job': { type: 'string' },
    seed: { type: 'string' },
    jobs: { type: 'string' },
    reconcile: { type: 'boolean' },
    'api-port': { type: 'string' },
    wait: { type: 'string' }
  },
  async run (values, { out }) {
    const secret = values.secret?.at(-1) ?? (process.env.G2SENTRY_CALLBACK_SECRET || undefined)
    const firstJobId = wholeNumber('first-job', values['first-job'])
    const seed = wholeNumber('seed', values.seed)
    const jobs = wholeNumber('jobs', values.jobs) ?? 20
    if (secret === undefined) await out('no --secret and no G2SENTRY_CALLBACK_SECRET: signing with the development secret')
    const common = {
      url: values.url ?? defaultCallbackUrl(process.env),
      secret: secret ?? DEVELOPMENT_SECRET,
      firstJobId,
      print: out
    }
    const readToken = process.env.G2SENTRY_READ_TOKEN || undefined
    if (values.reconcile === true) {
      const converged = await simulateReconcile({
        readToken,
        ...common,
        apiPort: wholeNumber('api-port', values['api-port']) ?? 3100,
        seed: seed ?? 1,
        jobs,
        // A range of ids no earlier run used, unless one is given.
        firstJobId: firstJobId ?? 100_000 + Math.floor(Date.now() / 1000) % 800_000 * 10,
        waitMs: (wholeNumber('wait', values.wait) ?? 180) * 1000
      })
      return converged ? 0 : 1
    }
    if (values['api-port'] !== undefined || values.wait !== undefined) throw new UsageError('--api-port and --wait go with --reconcile')
    if (seed !== undefined) {
      return await simulateRandom({ ...common, seed, jobs, readToken }) ? 0 : 1
    }
    const answers = await simulateFixed(common)
    return answers.every((a) => a.status === 200) ? 0 : 1
  }
})
