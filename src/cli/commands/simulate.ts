import { DEVELOPMENT_SECRET, simulate as simulateFixed, simulateRandom } from '../../simulator/simulate.js'
import { simulateReconcile } from '../../simulator/simulate-reconcile.js'
import { defineCommand, UsageError, wholeNumber } from '../command.js'

export const simulate = defineCommand({
  summary: 'send signed example callbacks to a running server',
  usage: `Usage: g2sentry simulate [--url URL] [--secret SECRET] [--first-job N] [--seed S --jobs N]
       g2sentry simulate --reconcile [--api-port N] [--url URL] [--secret SECRET] [--seed S] [--jobs N] [--wait SECONDS]`,
  help: `Signs and posts a few job lifecycles (with a redelivery, a reordering, a late event and a
withdrawal) to a running receiver, printing what each delivery got. With --seed, generates
--jobs random lifecycles instead, delivers each event 1-7 times in a shuffled order, and checks
through the job routes that every job ends in its true status.
  --url        callback URL (default http://127.0.0.1:3000/callbacks/g2sentry)
  --secret     callback secret (default $G2SENTRY_CALLBACK_SECRET, else the development secret)
  --first-job  first job id to use (default 101)
  --seed       seed of a generated schedule (same seed, same deliveries)
  --jobs       jobs in a generated schedule (default 20)
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
    const secret = values.secret?.at(-1) ?? process.env.G2SENTRY_CALLBACK_SECRET
    const firstJobId = wholeNumber('first-job', values['first-job'])
    const seed = wholeNumber('seed', values.seed)
    const jobs = wholeNumber('jobs', values.jobs) ?? 20
    if (secret === undefined) await out('no --secret and no G2SENTRY_CALLBACK_SECRET: signing with the development secret')
    const common = {
      url: values.url ?? 'http://127.0.0.1:3000/callbacks/g2sentry',
      secret: secret ?? DEVELOPMENT_SECRET,
      firstJobId,
      print: out
    }
    if (values.reconcile === true) {
      return await simulateReconcile({
        ...common,
        apiPort: wholeNumber('api-port', values['api-port']) ?? 3100,
        seed: seed ?? 1,
        jobs,
        // A range of ids no earlier run used, unless one is given.
        firstJobId: firstJobId ?? 100_000 + Math.floor(Date.now() / 1000) % 800_000 * 10,
        waitMs: (wholeNumber('wait', values.wait) ?? 180) * 1000
      }) ? 0 : 1
    }
    if (values['api-port'] !== undefined || values.wait !== undefined) throw new UsageError('--api-port and --wait go with --reconcile')
    if (seed !== undefined) return await simulateRandom({ ...common, seed, jobs }) ? 0 : 1
    const answers = await simulateFixed(common)
    return answers.every((a) => a.status === 200) ? 0 : 1
  }
})
