// The Partner API client against a fake G2 Sentry that misbehaves (a real HTTP server), and a
// second real server playing "another host": redirects are never followed, answers are read
// only up to a bound, Retry-After is capped, refresh failures fall back to a login, token
// lifetimes follow G2 Sentry's clock, and close() stops everything at once.
import t from 'tap'
import { MAX_RETRY_AFTER_MS, MAX_ANSWER_BYTES } from '../../src/partner-api/client.js'
import type { Clock } from '../../src/partner-api/clock.js'
import type { FakeG2Sentry } from '../../src/simulator/fake-g2sentry.js'
import { errors } from '../../src/errors.js'
import { client, failure, fake, memoryLog } from '../helpers/partner-api-helpers.js'

const redirectTo = (other: FakeG2Sentry) => (path: string) => ({ status: 307, headers: { location: `${other.url}${path}?token=abc` } })

t.test('a redirect is never followed: login, refresh and status requests never reach the other host', async (t) => {
  const server = await fake(t)
  const other = await fake(t)
  other.setStatus(7, 'Canceled')
  server.setStatus(7, 'Assigned')
  const log = memoryLog()

  server.answer(/^\/access\/login$/, redirectTo(other), 1)
  const api = client(server, { log })
  const login = await failure(api.jobStatus(7))
  t.ok(login instanceof errors.PARTNER_API_REDIRECTED, 'a redirected login is an error for every job')
  t.match(login.message, new RegExp(`HTTP 307, a redirect to ${other.url.replace(/\./g, '\\.')};`))
  t.notMatch(login.message, /token=abc/, 'the origin only, never the path or query')

  server.answer(/^\/jobs\/7\/status$/, redirectTo(other), 1)
  const status = await failure(api.jobStatus(7))
  t.ok(status instanceof errors.PARTNER_API_UNUSABLE_ANSWER, 'a redirected status is unusable for that job')
  t.equal(status.answered, `HTTP 307, a redirect to ${other.url} (not followed)`)

  // The access token expires; the refresh is redirected: a login instead, never the other host.
  server.revokeAccess()
  server.answer(/^\/access\/refresh$/, redirectTo(other), 1)
  t.match(await api.jobStatus(7), { found: true, answer: { status: 'Assigned' } }, 'the job\'s own status, from G2 Sentry')
  t.match(log.text(), /did not refresh the tokens; logging in again/)
  t.same(other.requests, [], 'the other host received nothing: no key, no secret, no token')
})

t.test('an answer larger than the bound is not read further and never kept', async (t) => {
  const server = await fake(t)
  server.setStatus(7, 'Assigned')
  server.answer(/^\/jobs\/7\/status$/, { status: 200, bytes: 100 * 1024 * 1024 })
  const api = client(server)
  const started = Date.now()
  const error = await failure(api.jobStatus(7))
  t.ok(error instanceof errors.PARTNER_API_UNUSABLE_ANSWER)
  t.equal(error.answered, `HTTP 200 and an answer over ${MAX_ANSWER_BYTES} bytes (not read further)`)
  t.ok(Date.now() - started < 5000, 'stopped reading at once')
  server.answer(/^\/jobs\/8\/status$/, { status: 200, body: 'x'.repeat(MAX_ANSWER_BYTES + 1) })
  t.match(await failure(api.jobStatus(8)), { answered: /over 16384 bytes/ }, 'a declared length over the bound too')
})

t.test('unusable status answers say what G2 Sentry answered', async (t) => {
  const server = await fake(t)
  const api = client(server)
  const cases: Array<[unknown, string]> = [
    [{ status: 200, body: { jobId: 7, status: 'Expired' } }, 'HTTP 200 and an unknown status "Expired"'],
    [{ status: 200, body: { jobId: 7, status: 'canceled' } }, 'HTTP 200 and an unknown status "canceled"'],
    [{ status: 200, body: { jobId: 8, status: 'Canceled' } }, 'HTTP 200 and the status of another job (jobId 8)'],
    [{ status: 200, body: '{"jobId": 7, "status": ' }, 'HTTP 200 and a body that is not JSON'],
    [{ status: 200, body: '[1, 2]' }, 'HTTP 200 and JSON that is not an object (an array)'],
    [{ status: 200, body: { jobId: 7, status: 'x'.repeat(500) } }, `HTTP 200 and an unknown status "${'x'.repeat(40)}…"`],
    [{ status: 403, body: { message: 'Forbidden' } }, 'HTTP 403'],
    [{ status: 400, body: { message: 'Bad job' } }, 'HTTP 400']
  ]
  for (const [answer, answered] of cases) {
    server.clearAnswers()
    server.answer(/^\/jobs\/7\/status$/, answer as Parameters<FakeG2Sentry['answer']>[1])
    const error = await failure(api.jobStatus(7))
    t.ok(error instanceof errors.PARTNER_API_UNUSABLE_ANSWER, answered)
    t.equal(error.answered, answered)
  }
})

/** Real time, but sleeps are recorded and skipped: the client's waits can be read without waiting. */
function skippingClock (): Clock & { sleeps: number[] } {
  let offset = 0
  const sleeps: number[] = []
  return {
    sleeps,
    now: () => Date.now() + offset,
    sleep: async (ms) => { sleeps.push(ms); offset += ms }
  }
}

t.test(`Retry-After is capped at ${MAX_RETRY_AFTER_MS / 60_000} minutes, however large`, async (t) => {
  for (const retryAfter of ['3600', '3000000', 'Fri, 01 Jan 2100 00:00:00 GMT']) {
    const server = await fake(t)
    server.setStatus(1, 'New')
    server.answer(/^\/jobs\/1\/status$/, { status: 429, headers: { 'retry-after': retryAfter } }, 1)
    const clock = skippingClock()
    const api = client(server, { clock })
    t.match(await api.jobStatus(1), { found: true }, `Retry-After: ${retryAfter}, then the answer`)
    t.ok(clock.sleeps.length > 0 && clock.sleeps.every((ms) => ms <= MAX_RETRY_AFTER_MS), `waited at most 15 minutes (${clock.sleeps.join(', ')} ms)`)
  }
})

t.test('a refresh that fails falls back to one login, without a loop', async (t) => {
  const cases: Array<[string, (server: FakeG2Sentry) => void]> = [
    ['5xx past the retries', (server) => server.answer(/^\/access\/refresh$/, { status: 503 })],
    ['200 without a refreshToken', (server) => server.answer(/^\/access\/refresh$/, { status: 200, body: () => ({ accessToken: server.accessToken() }) })],
    ['200 that is not JSON', (server) => server.answer(/^\/access\/refresh$/, { status: 200, body: '<html>' })]
  ]
  for (const [name, fault] of cases) {
    const server = await fake(t)
    server.setStatus(1, 'New')
    const log = memoryLog()
    const api = client(server, { log, retries: 2 })
    await api.jobStatus(1)
    fault(server)
    server.revokeAccess()
    t.match(await api.jobStatus(1), { found: true }, `${name}: the status all the same`)
    t.equal(server.counts.logins, 2, `${name}: one more login`)
    const refreshes = server.requests.filter((r) => r.path === '/access/refresh').length
    t.ok(refreshes >= 1 && refreshes <= 3, `${name}: ${refreshes} refresh requests (1 + retries at most)`)
    for (let i = 0; i < 5; i++) await api.jobStatus(1)
    // login, status; the refused status, the refreshes, the login, its status; five more statuses.
    t.equal(server.requests.length, 2 + 1 + refreshes + 1 + 1 + 5, `${name}: then one request per status, no refresh loop`)
    t.notMatch(log.text(), /eyJ/, `${name}: no token in the log`)
  }
})

t.test('token lifetimes follow G2 Sentry\'s clock: a local clock an hour ahead does not refresh before every request', async (t) => {
  const server = await fake(t)
  // G2 Sentry's clock is an hour behind ours: its 15-minute tokens expire 45 minutes ago by ours.
  server.clockSkewMs = -3_600_000
  server.setStatus(1, 'New')
  const api = client(server)
  for (let i = 0; i < 10; i++) t.match(await api.jobStatus(1), { found: true })
  t.same(api.counts, { logins: 1, refreshes: 0 })
  t.equal(server.requests.length, 11, 'one login, ten status requests')
})

t.test('close() aborts a slow request and a long Retry-After at once', async (t) => {
  const server = await fake(t)
  server.setStatus(1, 'New')
  server.slow(60_000, /status/)
  const slow = client(server, { timeoutMs: 120_000 })
  const pending = failure(slow.jobStatus(1))
  await new Promise((resolve) => setTimeout(resolve, 300))
  let started = Date.now()
  slow.close()
  t.match(await pending, { code: 'FST_G2SENTRY_RECONCILE_STOPPED' })
  t.ok(Date.now() - started < 1000, 'the slow request was aborted')

  const limited = await fake(t)
  limited.answer(/status/, { status: 429, headers: { 'retry-after': '3600' } })
  const waiting = client(limited)
  const paused = failure(waiting.jobStatus(1))
  await new Promise((resolve) => setTimeout(resolve, 300))
  started = Date.now()
  waiting.close()
  t.match(await paused, { code: 'FST_G2SENTRY_RECONCILE_STOPPED' })
  t.ok(Date.now() - started < 1000, 'the pause was cut short')
  t.match(await failure(waiting.jobStatus(2)), { code: 'FST_G2SENTRY_RECONCILE_STOPPED' }, 'nothing new starts once closed')
})
