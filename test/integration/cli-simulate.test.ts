// `g2sentry simulate` as a newcomer meets it: the example server in a child process configured
// by PORT, HOST and G2SENTRY_CALLBACK_SECRET, and the published CLI entry run with the same
// environment and no --url. A server it cannot reach, or one that checks another secret, is said
// in one line, with exit code 1.
import t from 'tap'
import Fastify from 'fastify'
import { join } from 'node:path'
import g2sentry from '../../src/index.js'
import { defaultCallbackUrl } from '../../src/cli/commands/simulate.js'
import { runCli } from '../helpers/cli-process.js'
import { baseEnv, freePort, listening, startServer } from '../helpers/example-process.js'

/** The simulator through the published entry, with only `env` on top of an environment without the example's variables. */
const simulate = (env: Record<string, string>, args: string[] = []) =>
  runCli(['simulate', ...args], { env: { ...baseEnv(), ...env }, timeout: 60_000 })

const deliveryLines = (stdout: string) => stdout.split('\n').filter((line) => /^job \d+ /.test(line))

t.test('the default URL is the example server\'s, from PORT and HOST', async (t) => {
  const cases: Array<[NodeJS.ProcessEnv, string]> = [
    [{}, 'http://127.0.0.1:3000/callbacks/g2sentry'],
    [{ PORT: '4100' }, 'http://127.0.0.1:4100/callbacks/g2sentry'],
    [{ PORT: '', HOST: '' }, 'http://127.0.0.1:3000/callbacks/g2sentry'],
    [{ HOST: 'localhost', PORT: '8080' }, 'http://localhost:8080/callbacks/g2sentry'],
    [{ HOST: '0.0.0.0', PORT: '8080' }, 'http://127.0.0.1:8080/callbacks/g2sentry'],
    [{ HOST: '::', PORT: '8080' }, 'http://[::1]:8080/callbacks/g2sentry'],
    [{ HOST: '::1' }, 'http://[::1]:3000/callbacks/g2sentry'],
    [{ HOST: '10.0.0.5', PORT: '80' }, 'http://10.0.0.5:80/callbacks/g2sentry']
  ]
  for (const [env, url] of cases) t.equal(defaultCallbackUrl(env), url, JSON.stringify(env))
})

t.test('the simulator and the example server on the same environment', async (t) => {
  const port = await freePort()
  const env = { PORT: String(port), HOST: '127.0.0.1', G2SENTRY_CALLBACK_SECRET: 'the-portal-secret' }
  const server = startServer(t, { port, env: { ...env, G2SENTRY_DB: join(t.testdir(), 'g2.db') } })
  await listening(server)

  t.test('same PORT and secret: every delivery lands, without --url', async (t) => {
    const r = await simulate(env)
    t.equal(r.code, 0, `exit 0 ${r.stderr}`)
    t.notMatch(r.stdout, /development secret/, 'it signs with G2SENTRY_CALLBACK_SECRET')
    const lines = deliveryLines(r.stdout)
    t.equal(lines.length, 11)
    t.ok(lines.every((line) => line.includes('→ 200 ')), 'every delivery answered 200')
  })

  t.test('another secret: the 401s are explained and the exit code is 1', async (t) => {
    const url = `http://127.0.0.1:${port}/callbacks/g2sentry`
    for (const [label, extra, args] of [
      ['the development secret', { PORT: String(port) }, []],
      ['another G2SENTRY_CALLBACK_SECRET', { PORT: String(port), G2SENTRY_CALLBACK_SECRET: 'a-stale-secret' }, []],
      ['another --secret, with --seed', { PORT: String(port) }, ['--secret', 'typo', '--seed', '7', '--jobs', '3']]
    ] as const) {
      const r = await simulate(extra, [...args])
      t.equal(r.code, 1, `${label}: exit 1`)
      t.match(r.stdout, `${url} answered 401 to every delivery: the server's callback secret and the simulator's differ`, `${label}: says the secrets differ`)
      t.notMatch(r.stdout, /the-portal-secret|a-stale-secret|typo/, `${label}: and prints no secret`)
      t.notMatch(r.stdout, /^job \d+: projected/m, `${label}: without a line per job`)
    }
  })
})

t.test('a URL that cannot be reached is named in one line', async (t) => {
  const port = await freePort()
  for (const [label, env, url] of [
    ['PORT', { PORT: String(port) }, `http://127.0.0.1:${port}/callbacks/g2sentry`],
    ['HOST 0.0.0.0', { PORT: String(port), HOST: '0.0.0.0' }, `http://127.0.0.1:${port}/callbacks/g2sentry`]
  ] as const) {
    const r = await simulate(env)
    t.equal(r.code, 1, `${label}: exit 1`)
    t.equal(r.stderr, `g2sentry: could not reach ${url} (ECONNREFUSED): is the server running there?\n`, `${label}: one line naming the URL`)
    t.notMatch(r.stdout + r.stderr, /fetch failed|\n\s+at /, `${label}: no bare "fetch failed", no stack`)
  }
  const given = await simulate({}, ['--url', `http://127.0.0.1:${port}/hooks`, '--seed', '1'])
  t.equal(given.code, 1)
  t.match(given.stderr, `could not reach http://127.0.0.1:${port}/hooks (ECONNREFUSED)`, '--url is named as given')
})

t.test('with G2SENTRY_READ_TOKEN, --seed reads the job routes with it', async (t) => {
  // A listening app whose job routes need the token, as the example server's do when it is set.
  const app = Fastify()
  await app.register(async (scope) => {
    scope.addHook('onRequest', async (request, reply) => {
      if (request.url.startsWith('/jobs') && request.headers.authorization !== 'Bearer read-me') await reply.code(401).send({ code: 'NO_TOKEN' })
    })
    await scope.register(g2sentry, { secret: 'token-test', database: join(t.testdir(), 'g2.db') })
  })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const args = ['--url', `http://127.0.0.1:${port}/callbacks/g2sentry`, '--secret', 'token-test', '--seed', '3', '--jobs', '4']

  const withToken = await simulate({ G2SENTRY_READ_TOKEN: 'read-me' }, args)
  t.equal(withToken.code, 0, `exit 0 ${withToken.stdout}${withToken.stderr}`)
  t.match(withToken.stdout, /^4 of 4 jobs show their true status$/m)
  t.notMatch(withToken.stdout, /read-me/, 'the token is not printed')

  const without = await simulate({}, [...args, '--first-job', '201'])
  t.equal(without.code, 1, 'without it the job routes refuse')
  t.match(without.stdout, /projected HTTP 401/)
})
