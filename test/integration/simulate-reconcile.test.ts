// `g2sentry simulate --reconcile` beside the example server, both real processes, as docs/reconciliation.md
// shows them: the fake G2 Sentry in the simulator, lost callbacks and cancellations, and the
// server's reconciler converging.
import t from 'tap'
import { join } from 'node:path'
import { runCli, cliEnv } from '../helpers/cli-process.js'
import { freePort, listening, startServer } from '../helpers/example-process.js'
import { readLogFile } from '../helpers/example-process.js'

t.setTimeout(180_000)

t.test('every job converges to its true status through npm start with the reconcile variables and a read token', async (t) => {
  // The job routes answer only with the read token: the simulator reads them with $G2SENTRY_READ_TOKEN.
  const readToken = 'simulate-read-token-1234567890'
  const apiPort = await freePort()
  const port = await freePort()
  const database = join(t.testdir(), 'g2.db')
  const server = startServer(t, {
    port,
    env: {
      G2SENTRY_DB: database,
      G2SENTRY_API_URL: `http://127.0.0.1:${apiPort}`,
      G2SENTRY_PARTNER_KEY: 'demo-partner',
      G2SENTRY_PARTNER_SECRET: 'demo-partner-secret',
      G2SENTRY_RECONCILE_QUIET_MS: '500',
      G2SENTRY_RECONCILE_EVERY_MS: '300',
      G2SENTRY_READ_TOKEN: readToken
    }
  })
  await listening(server)
  const run = await runCli(['simulate', '--reconcile', '--api-port', String(apiPort), '--url', `http://127.0.0.1:${port}/callbacks/g2sentry`,
    '--seed', '3', '--jobs', '12', '--first-job', '500', '--wait', '90'], { env: cliEnv({ G2SENTRY_READ_TOKEN: readToken }), timeout: 120_000 })
  t.equal(run.code, 0, run.stdout + run.stderr)
  t.match(run.stdout, /canceled without a callback/)
  t.match(run.stdout, /12 of 12 jobs show their true status/)
  t.match(run.stdout, /at most \d+ in any 60 s, 0 refused with 429/)
  t.notMatch(run.stdout, /demo-partner-secret/, 'the secret is never printed')
  t.notMatch(run.stdout + run.stderr, readToken, 'nor the read token')
  t.notMatch(server.output(), /demo-partner-secret/, 'nor logged by the server')

  const { rows, report } = await readLogFile(database)
  t.ok(rows.some((r) => r.source === 'api' && r.jobStatus === 'Canceled'), 'a cancellation reached the log from the Partner API')
  t.same([report.differingJobs, report.outcomeMismatches], [[], []])
})
