import { DEVELOPMENT_SECRET, simulate as simulateFixed, simulateRandom } from '../../simulator/simulate.js'
import { defineCommand, wholeNumber } from '../command.js'

export const simulate = defineCommand({
  summary: 'send signed example callbacks to a running server',
  usage: 'Usage: g2sentry simulate [--url URL] [--secret SECRET] [--first-job N] [--seed S --jobs N]',
  help: `Signs and posts a few job lifecycles (with a redelivery, a reordering, a late event and a
withdrawal) to a running receiver, printing what each delivery got. With --seed, generates
--jobs random lifecycles instead, delivers each event 1-7 times in a shuffled order, and checks
through the job routes that every job ends in its true status.
  --url        callback URL (default http://127.0.0.1:3000/callbacks/g2sentry)
  --secret     callback secret (default $G2SENTRY_CALLBACK_SECRET, else the development secret)
  --first-job  first job id to use (default 101)
  --seed       seed of a generated schedule (same seed, same deliveries)
  --jobs       jobs in a generated schedule (default 20)`,
  options: {
    url: { type: 'string' },
    secret: { type: 'string', multiple: true },
    'first-job': { type: 'string' },
    seed: { type: 'string' },
    jobs: { type: 'string' }
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
    if (seed !== undefined) return await simulateRandom({ ...common, seed, jobs }) ? 0 : 1
    const answers = await simulateFixed(common)
    return answers.every((a) => a.status === 200) ? 0 : 1
  }
})
