// The Partner API client against the fake G2 Sentry (a real HTTP server): tokens, the sliding
// rate limit (with short windows, so the real limiter logic runs in seconds), 429s, retries.
import t from 'tap'
import { join } from 'node:path'
import { PartnerApiClient, tokenExpiry, retryAfterMs, ACCESS_TOKEN_TTL_MS } from '../../src/partner-api/client.js'
import { sharedWindow } from '../../src/partner-api/rate-limiter.js'
import { sqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { errors } from '../../src/errors.js'
import { client, fake, memoryLog } from '../helpers/partner-api-helpers.js'

t.test('logs in once, reads a status, and answers not found for an unknown job', async (t) => {
  const server = await fake(t)
  server.setStatus(7, 'Canceled')
  const api = client(server)
  const found = await api.jobStatus(7)
  t.match(found, { found: true, answer: { jobId: 7, status: 'Canceled' } })
  if (found.found) t.same(JSON.parse(found.body.toString()), { jobId: 7, status: 'Canceled' }, 'the exact bytes G2 Sentry sent')
  t.same(await api.jobStatus(8), { found: false })
  t.same(api.counts, { logins: 1, refreshes: 0 })
  t.same(server.requests.map((r) => `${r.method} ${r.path} ${r.status}`), ['POST /access/login 200', 'GET /jobs/7/status 200', 'GET /jobs/8/status 404'])
})

t.test('an expired access token is refreshed, not replaced by a new login; a refused refresh token logs in again', async (t) => {
  const server = await fake(t, { accessTtlMs: 400 })
  server.setStatus(1, 'Assigned')
  const log = memoryLog()
  const api = client(server, { log })
  await api.jobStatus(1)
  await new Promise((resolve) => setTimeout(resolve, 450))
  await api.jobStatus(1)
  await new Promise((resolve) => setTimeout(resolve, 450))
  await api.jobStatus(1)
  t.same(api.counts, { logins: 1, refreshes: 2 }, 'two expiries, two refreshes, one login')
  t.same(server.counts, { logins: 1, refreshes: 2 })
  t.notOk(server.requests.some((r) => r.status === 401), 'refreshed before exp, so no request was refused')

  server.revokeRefreshTokens()
  await new Promise((resolve) => setTimeout(resolve, 450))
  await api.jobStatus(1)
  t.same(api.counts, { logins: 2, refreshes: 2 }, 'the refused refresh token led to one new login')
  t.match(log.text(), /refused the refresh token/)
})

t.test('a 401 on a fresh-looking token is the signal to refresh', async (t) => {
  // A fake whose tokens last 15 minutes, but whose clock the client does not share: the client
  // is told the tokens expire far in the future, then the fake forgets them.
  const server = await fake(t)
  server.setStatus(3, 'New')
  const api = client(server)
  await api.jobStatus(3)
  server.revokeAccess()
  t.match(await api.jobStatus(3), { found: true, answer: { status: 'New' } })
  t.same(api.counts, { logins: 1, refreshes: 1 })
})

t.test('refused credentials: FST_G2SENTRY_PARTNER_CREDENTIALS_REFUSED, and the secret is in no message', async (t) => {
  const server = await fake(t)
  const log = memoryLog()
  const api = new PartnerApiClient({ baseUrl: server.url, partnerKey: server.partnerKey, partnerSecret: 'wrong-secret-value', log })
  const error = await api.jobStatus(1).catch((e: unknown) => e as Error)
  t.ok(error instanceof errors.PARTNER_CREDENTIALS_REFUSED)
  t.equal((error as { code?: string }).code, 'FST_G2SENTRY_PARTNER_CREDENTIALS_REFUSED')
  t.notMatch(String((error as Error).message) + (error as Error).stack + log.text(), /wrong-secret-value/)
})

t.test('no sliding window ever holds more than the limit, across clients sharing the window in the database', async (t) => {
  // 5 a second on the client, 6 on the fake: a fixed-bucket limiter would let 10 through across
  // a bucket boundary and earn 429s; the sliding window never does.
  const server = await fake(t, { limit: 6, windowMs: 1000 })
  for (let id = 1; id <= 30; id++) server.setStatus(id, 'Assigned')
  const store = sqliteStore({ filename: join(t.testdir(), 'window.db') })
  t.teardown(() => store.close())
  const state = store.reconcileState
  const window = sharedWindow(state, server.partnerKey, 5, 1000)
  const a = client(server, { window })
  const b = client(server, { window })
  const started = Date.now()
  await Promise.all(Array.from({ length: 15 }, (_, i) => [a.jobStatus(i + 1), b.jobStatus(i + 16)]).flat())
  const elapsed = Date.now() - started
  t.equal(server.requests.filter((r) => r.status === 429).length, 0, 'never a 429')
  t.ok(server.maxInWindow(1000) <= 5, `at most 5 requests in any 1 s (saw ${server.maxInWindow(1000)})`)
  t.equal(server.requests.length, 32, 'two logins and 30 status requests')
  t.ok(elapsed >= 5 * 1000, `32 requests at 5 a second take at least 5 s (took ${elapsed} ms)`)
  const times = await state.requestTimes(server.partnerKey, 0)
  t.ok(times.length <= 5, 'the window keeps only the requests of its last second')
})

t.test('a 429 pauses every request for its Retry-After', async (t) => {
  // The client is told 10 a second; the fake allows 3 every 2 s: past the limit all the same.
  const server = await fake(t, { limit: 3, windowMs: 2000 })
  for (let id = 1; id <= 4; id++) server.setStatus(id, 'New')
  const api = client(server, { requestsPerMinute: 10, windowMs: 1000 })
  const results = await Promise.all([1, 2, 3, 4].map((id) => api.jobStatus(id)))
  t.ok(results.every((r) => r.found))
  const refused = server.requests.filter((r) => r.status === 429)
  t.ok(refused.length >= 1, 'G2 Sentry refused one')
  const first = refused[0]?.at ?? 0
  const after = server.requests.filter((r) => r.at > first && r.status !== 429)
  t.ok(after.length > 0 && after.every((r) => r.at - first >= 1000), 'nothing was sent during the Retry-After (rounded up to whole seconds)')
})

t.test('5xx answers and timeouts are retried with backoff; past the retries a 5xx is unusable for the job, a timeout stops', async (t) => {
  const server = await fake(t)
  server.setStatus(1, 'InProgress')
  const api = client(server, { retries: 3, timeoutMs: 300 })
  server.failNext(2, 503, /status/)
  t.match(await api.jobStatus(1), { found: true, answer: { status: 'InProgress' } })
  t.same(server.requests.map((r) => r.status), [200, 503, 503, 200])

  server.failNext(10, 502, /status/)
  const error = await api.jobStatus(1).catch((e: unknown) => e)
  t.ok(error instanceof errors.PARTNER_API_UNUSABLE_ANSWER, 'a 5xx after 1 + 3 attempts is an unusable answer for that job')
  t.match(error, { answered: 'HTTP 502 after 4 attempts' })
  t.equal(server.requests.filter((r) => r.status === 502).length, 4)

  const slowServer = await fake(t)
  slowServer.setStatus(1, 'New')
  slowServer.slow(1000, /status/)
  const impatient = client(slowServer, { retries: 1, timeoutMs: 200 })
  const timedOut = await impatient.jobStatus(1).catch((e: unknown) => e as Error)
  t.ok(timedOut instanceof errors.PARTNER_API_UNAVAILABLE)
  t.match((timedOut as Error).message, /timeout/)
})

t.test('token expiry is read from the JWT, else the documented 15 minutes', async (t) => {
  const jwt = (payload: object) => `e30.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.sig`
  t.equal(tokenExpiry(jwt({ exp: 1_700_000_000 })), 1_700_000_000_000)
  t.equal(tokenExpiry(jwt({ sub: 'x' })), undefined)
  t.equal(tokenExpiry('not-a-jwt'), undefined)
  t.equal(tokenExpiry('a.!!!.b'), undefined)
  t.equal(ACCESS_TOKEN_TTL_MS, 15 * 60_000)

  const server = await fake(t)
  server.setStatus(1, 'New')
  server.opaqueTokens = true
  const api = client(server)
  await api.jobStatus(1)
  await api.jobStatus(1)
  t.same(api.counts, { logins: 1, refreshes: 0 }, 'an opaque token is kept for 15 minutes')
})

t.test('Retry-After: seconds or an HTTP date', async (t) => {
  const now = Date.parse('2026-11-29T12:00:00Z')
  t.equal(retryAfterMs('7', now), 7000)
  t.equal(retryAfterMs('Sun, 29 Nov 2026 12:00:05 GMT', now), 5000)
  t.equal(retryAfterMs(null, now), undefined)
  t.equal(retryAfterMs('soon', now), undefined)
})
