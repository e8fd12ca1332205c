// What a refused callback leaves in the application's log: one warning line, without a stack or
// the body, at every log level; anyone on the internet can send these, as fast as they like.
import t from 'tap'
import { assigned, buildApp, bytesOf, CALLBACK_PATH, memoryStream, post, SECRET } from '../helpers/helpers.js'
import { signBody } from '../../src/domain/verify-signature.js'

interface Line { level: number; msg?: string; err?: unknown; [key: string]: unknown }

const body = bytesOf(assigned(7, { phone: '+15550000007' }))
const cases: Array<{ name: string; status: number; code: string; send: { body: Buffer | string; headers: Record<string, string> } }> = [
  { name: 'no signature', status: 401, code: 'FST_G2SENTRY_MISSING_SIGNATURE', send: { body, headers: { 'content-type': 'application/json' } } },
  { name: 'a wrong signature', status: 401, code: 'FST_G2SENTRY_BAD_SIGNATURE', send: { body, headers: { 'content-type': 'application/json', 'x-signature': signBody(body, 'not-the-secret') } } },
  {
    name: 'a wrong signature, charset in the content type',
    status: 401,
    code: 'FST_G2SENTRY_BAD_SIGNATURE',
    send: { body, headers: { 'content-type': 'application/json; charset=utf-8', 'x-signature': signBody(body, 'not-the-secret') } }
  },
  {
    // Same length as a real one, wrong only in its last byte: the whole signature is compared.
    name: 'a signature wrong only in its last hex digit',
    status: 401,
    code: 'FST_G2SENTRY_BAD_SIGNATURE',
    send: { body, headers: { 'content-type': 'application/json', 'x-signature': signBody(body, SECRET).replace(/.$/, (c) => c === '0' ? '1' : '0') } }
  },
  { name: 'a body over the limit', status: 413, code: 'FST_G2SENTRY_BODY_TOO_LARGE', send: { body: Buffer.alloc(70_000, 32), headers: { 'content-type': 'application/json' } } },
  { name: 'a wrong content type', status: 415, code: 'FST_G2SENTRY_UNSUPPORTED_MEDIA_TYPE', send: { body, headers: { 'content-type': 'text/plain', 'x-signature': signBody(body, SECRET) } } },
  { name: 'a signed body that is not JSON', status: 400, code: 'FST_G2SENTRY_INVALID_JSON', send: { body: 'not json +15550000007', headers: { 'content-type': 'application/json', 'x-signature': signBody('not json +15550000007', SECRET) } } },
  { name: 'signed JSON that is not a callback', status: 422, code: 'FST_G2SENTRY_INVALID_PAYLOAD', send: { body: '{"jobId":"x","phone":"+15550000007"}', headers: { 'content-type': 'application/json', 'x-signature': signBody('{"jobId":"x","phone":"+15550000007"}', SECRET) } } }
]

for (const { name, status, code, send } of cases) {
  t.test(`${name}: ${status}, one warning line, no stack, no body`, async (t) => {
    const log = memoryStream()
    const app = await buildApp(t, { logStream: log.stream })
    const res = await app.inject({ method: 'POST', url: CALLBACK_PATH, payload: send.body, headers: send.headers })
    t.equal(res.statusCode, status)
    t.equal(res.json<{ code: string }>().code, code)
    const lines = log.lines.map((line) => JSON.parse(line) as Line)
    const about = lines.filter((line) => line.msg !== 'incoming request' && line.msg !== 'request completed')
    t.equal(about.length, 1, `one line besides Fastify's request lines: ${JSON.stringify(about.map((line) => line.msg))}`)
    t.equal(about[0]?.level, 40, 'at warn level')
    t.notMatch(log.lines.join('\n'), /"stack"|\\n\s+at /, 'no stack trace in any line')
    t.notMatch(log.lines.join('\n'), /15550000007/, 'nothing of the body in any line')
  })
}

t.test('a signed callback is still accepted beside these', async (t) => {
  const app = await buildApp(t)
  t.equal((await post(app, assigned(7))).statusCode, 200)
})
