// The example server (a child process, as a newcomer runs it) against what it must withstand:
// readers without the read token, a production start without one, a port already in use, and
// a body that trickles in with the example's own timeouts.
import t from 'tap'
import { connect, createServer } from 'node:net'
import { join } from 'node:path'
import { DEVELOPMENT_SECRET } from '../../src/simulator/simulate.js'
import { signBody } from '../../src/domain/verify-signature.js'
import { TIMEOUTS } from '../../examples/server-setup.js'
import { exitWithin, freePort, listening, startServer, stop } from '../helpers/example-process.js'
import { assigned, CALLBACK_PATH } from '../helpers/helpers.js'
import { until } from '../helpers/until.js'

t.setTimeout(90_000)

const TOKEN = 'r3ad-t0ken-value-xyz'

async function status (url: string, headers: Record<string, string> = {}): Promise<number> {
  const controller = new AbortController()
  const response = await fetch(url, { headers, signal: controller.signal })
  controller.abort() // the stream never ends: its status is enough
  return response.status
}

t.test('G2SENTRY_READ_TOKEN: the job routes, the stream and /metrics need it; the callback route never does', async (t) => {
  const port = await freePort()
  const server = startServer(t, { port, env: { G2SENTRY_DB: join(t.testdir(), 'g2.db'), G2SENTRY_READ_TOKEN: TOKEN } })
  await listening(server)

  const body = JSON.stringify(assigned(101))
  const delivered = await fetch(server.url(CALLBACK_PATH), { method: 'POST', headers: { 'content-type': 'application/json', 'x-signature': signBody(body, DEVELOPMENT_SECRET) }, body })
  t.equal(delivered.status, 200, 'a signed callback without the token: 200')

  const bearer = { authorization: `Bearer ${TOKEN}` }
  const rows: Array<[string, Record<string, string>, number]> = []
  for (const path of ['/jobs', '/jobs/101', '/jobs/101/events', '/metrics', '/jobs/stream']) {
    rows.push(
      [path, {}, 401],
      [path, { authorization: 'Bearer wrong-token' }, 401],
      [path, { authorization: `Bearer ${TOKEN}x` }, 401],
      [path, { authorization: `Basic ${TOKEN}` }, 401],
      [path, bearer, 200],
      [`${path}${path.includes('?') ? '&' : '?'}token=${TOKEN}`, {}, path === '/jobs/stream' ? 200 : 401],
      [`${path}?token=wrong`, {}, 401]
    )
  }
  for (const [path, headers, expected] of rows) {
    t.equal(await status(server.url(path), headers), expected, `GET ${path.replace(TOKEN, '<token>')} ${headers.authorization?.replace(TOKEN, '<token>') ?? '(no Authorization)'} → ${expected}`)
  }
  const refused = await fetch(server.url('/jobs/101'))
  t.match(await refused.json(), { statusCode: 401, code: 'FST_G2SENTRY_READ_TOKEN_REQUIRED' }, 'a refusal has the plugin\'s error shape')
  t.equal(await status(server.url('/')), 200, 'the live page itself is public (it holds no data)')

  t.same(await stop(server), { code: 0, signal: null })
  t.notOk(server.output().includes(TOKEN), 'the token never appears in the server\'s output, not even in a logged URL')
  t.ok(server.output().includes('token=[redacted]'), 'a URL that carried it is logged with the value redacted')
  t.notOk(server.logs.some((line) => /READ_TOKEN is not set/.test(line.msg)), 'no warning about a missing token')
})

t.test('the stream\'s ?token= percent-encoded any way: it authenticates, and the logged URL never shows it', async (t) => {
  const port = await freePort()
  const server = startServer(t, { port, env: { G2SENTRY_DB: join(t.testdir(), 'g2.db'), G2SENTRY_READ_TOKEN: TOKEN } })
  await listening(server)
  const everyChar = (text: string): string => [...Buffer.from(text)].map((byte) => `%${byte.toString(16).padStart(2, '0').toUpperCase()}`).join('')
  const queries: Array<[string, number]> = [
    [`%74oken=${TOKEN}`, 200],
    [`to%6Ben=${TOKEN}`, 200],
    [`${everyChar('token')}=${everyChar(TOKEN)}`, 200],
    [`TOKEN=${TOKEN}&x=1`, 401],
    [`a=1&%74oken=${TOKEN}x`, 401],
    [`token=${TOKEN}&%74oken=${TOKEN}`, 401]
  ]
  for (const [query, expected] of queries) {
    t.equal(await status(server.url(`/jobs/stream?${query}`)), expected, `?${query.replaceAll(everyChar(TOKEN), '<encoded token>').replaceAll(TOKEN, '<token>')} → ${expected}`)
  }
  t.same(await stop(server), { code: 0, signal: null })
  const urls = server.logs.filter((line) => line.msg === 'incoming request').map((line) => (line.req as { url: string }).url)
  t.equal(urls.length, queries.length, 'every request logged')
  for (const secret of [TOKEN, everyChar(TOKEN), everyChar(TOKEN).toLowerCase()]) {
    t.notOk(server.output().includes(secret), 'the token, encoded or not, is nowhere in the output')
  }
  t.ok(urls.every((url) => url.includes('=[redacted]')), 'each logged URL has the value redacted')
  t.match(urls[0], /^\/jobs\/stream\?%74oken=\[redacted\]$/, 'the parameter keeps the name it was sent with')
})

t.test('in production without G2SENTRY_READ_TOKEN: one loud warning, and it starts', async (t) => {
  const port = await freePort()
  const env = { NODE_ENV: 'production', G2SENTRY_CALLBACK_SECRET: 's3cr3t-value-xyz', G2SENTRY_DB: join(t.testdir(), 'g2.db') }
  const server = startServer(t, { port, env })
  await listening(server)
  const warnings = server.logs.filter((line) => /G2SENTRY_READ_TOKEN/.test(line.msg))
  t.equal(warnings.length, 1, 'one line')
  t.match(warnings[0], { level: 40, msg: /^\*\*\* G2SENTRY_READ_TOKEN is not set: .*guardian phone numbers.* \*\*\*$/ }, 'a warning that says what is exposed')
  t.equal(await status(server.url('/jobs')), 200, 'and the routes are open, as it said')
  t.same(await stop(server), { code: 0, signal: null })

  const protectedServer = startServer(t, { port, env: { ...env, G2SENTRY_READ_TOKEN: TOKEN } })
  await listening(protectedServer)
  t.notOk(protectedServer.logs.some((line) => /G2SENTRY_READ_TOKEN/.test(line.msg)), 'with the token set: no warning')
  t.equal(await status(protectedServer.url('/jobs')), 401)
  t.same(await stop(protectedServer), { code: 0, signal: null })
})

t.test('a port already in use: one clear line and exit code 1', async (t) => {
  const taken = createServer()
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
  t.teardown(() => taken.close())
  const port = (taken.address() as { port: number }).port
  const server = startServer(t, { port, env: { G2SENTRY_DB: join(t.testdir(), 'g2.db') } })
  const exit = await exitWithin(server, 15_000)
  t.same(exit, { code: 1, signal: null }, 'exit code 1')
  const mentions = server.output().split('\n').filter((line) => /in use|EADDRINUSE/.test(line))
  t.equal(mentions.length, 1, 'one line about it')
  t.match(mentions[0], `port ${port} on 127.0.0.1 is already in use`, 'that names the port and says what to do')
  t.match(mentions[0], /set PORT/)
  t.notMatch(server.output(), /\n\s+at /, 'no stack trace')
})

t.test(`the example server's own timeouts cut off a body sent a byte a second (requestTimeout ${TIMEOUTS.requestTimeout / 1000} s)`, async (t) => {
  const port = await freePort()
  const server = startServer(t, { port, env: { G2SENTRY_DB: join(t.testdir(), 'g2.db') } })
  await listening(server)
  const limit = TIMEOUTS.requestTimeout + TIMEOUTS.checkEvery + 5000
  const started = Date.now()
  const received = await new Promise<string | undefined>((resolve) => {
    let text = ''
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(`POST ${CALLBACK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n`)
    })
    const trickle = setInterval(() => { if (!socket.destroyed) socket.write('{') }, 1000)
    const timer = setTimeout(() => { socket.destroy(); resolve(undefined) }, limit)
    socket.setEncoding('utf8').on('data', (chunk: string) => { text += chunk })
    socket.on('error', () => {})
    socket.on('close', () => { clearInterval(trickle); clearTimeout(timer); resolve(text) })
  })
  const elapsed = Date.now() - started
  t.match(received, /^HTTP\/1\.1 408 /, `cut off with 408 after ${(elapsed / 1000).toFixed(1)} s, within a minute`)
  t.ok(elapsed >= TIMEOUTS.requestTimeout - 1000, 'not before requestTimeout')
  // The 408 can reach this client before the server has handled the aborted request: Fastify's
  // clientError handler answers and destroys the socket, and the request's error comes only with
  // the socket's 'close', later in the event loop. A SIGTERM in between lets the server close and
  // exit first, without the line (seen on a loaded machine). So the line is awaited while the
  // server runs, then counted once it has stopped.
  const warnings = () => server.logs.filter((line) => line.level >= 40 && !/DEVELOPMENT secret/.test(line.msg))
  await until('the aborted callback\'s warning', () => warnings().length > 0, 10_000)
  t.same(await stop(server), { code: 0, signal: null })
  t.same(warnings().map((line) => line.msg), ['g2sentry: callback aborted: the client went away before its body arrived'], 'logged as one warning line')
})

t.test('an environment variable that cannot be used: one line naming it, exit code 1, no stack trace', async (t) => {
  const forwarding = { G2SENTRY_FORWARD_URL: 'http://127.0.0.1:9/changes', G2SENTRY_FORWARD_SECRET: 'forward-secret' }
  const partner = { G2SENTRY_PARTNER_KEY: 'key', G2SENTRY_PARTNER_SECRET: 'partner-secret' }
  const cases: Array<[Record<string, string>, string, RegExp]> = [
    [{ PORT: 'abc' }, 'PORT', /PORT must be a whole number from 0 to 65535, got \\"abc\\"/],
    [{ ...forwarding, G2SENTRY_FORWARD_MAX_BACKOFF_MS: 'abc' }, 'G2SENTRY_FORWARD_MAX_BACKOFF_MS', /G2SENTRY_FORWARD_MAX_BACKOFF_MS must be a whole number 100 or more, got \\"abc\\"/],
    [{ ...forwarding, G2SENTRY_FORWARD_MAX_ATTEMPTS: '0' }, 'G2SENTRY_FORWARD_MAX_ATTEMPTS', /G2SENTRY_FORWARD_MAX_ATTEMPTS must be a whole number 1 or more, got \\"0\\"/],
    [{ G2SENTRY_FORWARD_URL: 'ftp://user:hunter2@example.com/x', G2SENTRY_FORWARD_SECRET: 'forward-secret' }, 'G2SENTRY_FORWARD_URL', /G2SENTRY_FORWARD_URL must be an http:\/\/ or https:\/\/ URL/],
    [{ ...partner, G2SENTRY_API_URL: '127.0.0.1:3100' }, 'G2SENTRY_API_URL', /G2SENTRY_API_URL must be an http:\/\/ or https:\/\/ URL, e\.g\. https:\/\//],
    [{ ...partner, G2SENTRY_API_URL: 'http://127.0.0.1:3100', G2SENTRY_RECONCILE_EVERY_MS: '1.5' }, 'G2SENTRY_RECONCILE_EVERY_MS', /G2SENTRY_RECONCILE_EVERY_MS must be a whole number 1 or more, got \\"1.5\\"/],
    [{ G2SENTRY_REDACT_AFTER_MS: '30d' }, 'G2SENTRY_REDACT_AFTER_MS', /G2SENTRY_REDACT_AFTER_MS must be a whole number 1 or more, got \\"30d\\"/],
    [{ G2SENTRY_REDACT_AFTER_MS: '1000', G2SENTRY_RETENTION_LEASE_MS: '-1' }, 'G2SENTRY_RETENTION_LEASE_MS', /G2SENTRY_RETENTION_LEASE_MS must be a whole number 1 or more, got \\"-1\\"/]
  ]
  for (const [env, name, message] of cases) {
    const server = startServer(t, { port: await freePort(), env: { G2SENTRY_DB: join(t.testdir(), 'g2.db'), ...env } })
    const exit = await exitWithin(server, 20_000)
    t.same(exit, { code: 1, signal: null }, `${name}: exit code 1`)
    const mentions = server.output().split('\n').filter((line) => line.includes(name) && !/DEVELOPMENT secret/.test(line))
    t.equal(mentions.length, 1, `${name}: one line names it`)
    t.match(mentions[0], message, `${name}: says what it must be`)
    t.notMatch(server.output(), /\n\s+at /, `${name}: no stack trace`)
    t.notMatch(server.output(), /hunter2/, `${name}: the value of a URL is never quoted`)
  }
})

t.test('a PostgreSQL database it cannot open: one line saying why, exit code 1, no stack trace, no password', async (t) => {
  const server = startServer(t, { port: await freePort(), env: { G2SENTRY_DB: 'postgres://postgres:pw-never-printed@127.0.0.1:5432/g2sentry_no_such_database' } })
  const exit = await exitWithin(server, 20_000)
  t.same(exit, { code: 1, signal: null }, 'exit code 1')
  const fatal = server.logs.filter((line) => line.level >= 60)
  t.equal(fatal.length, 1, 'one fatal line')
  t.match(fatal[0]?.msg, /could not open the PostgreSQL log at .*g2sentry_no_such_database/, 'naming the database it could not open')
  t.notMatch(server.output(), /\n\s+at /, 'no stack trace')
  t.notMatch(server.output(), /pw-never-printed/, 'the password is never printed')
})
