// The X-Signature check, through real HTTP and as a pure function (docs/design.md, "What G2 Sentry sends" and
// "What each input gets": a missing, wrong or malformed signature gets 401 whatever the body, and
// nothing is kept).
import t from 'tap'
import type { Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { createHmac, createSecretKey } from 'node:crypto'
import fc from 'fast-check'
import { isSignedBy, signBody, verifySignature } from '../../src/domain/verify-signature.js'
import { assigned, buildApp, bytesOf, logRows, post, quarantineRows, SECRET } from '../helpers/helpers.js'

const PAYLOAD = assigned(5, { phone: '+12345678901' })
const BODY = bytesOf(PAYLOAD)
const DIGEST = createHmac('sha256', SECRET).update(BODY).digest()
const HEX = DIGEST.toString('hex')

async function assertNothingKept (t: Test, app: FastifyInstance): Promise<void> {
  t.same(await logRows(app), [], 'nothing in the event log')
  t.same(await quarantineRows(app), [], 'nothing in quarantine')
}

t.test('signBody is the hex HMAC-SHA256 of the bytes', async (t) => {
  t.equal(signBody(BODY, SECRET), HEX)
  t.equal(signBody(BODY.toString('utf8'), SECRET), HEX, 'a string is signed as its UTF-8 bytes')
  t.match(HEX, /^[0-9a-f]{64}$/)
})

t.test('a valid signature is accepted', async (t) => {
  const app = await buildApp(t)
  const res = await post(app, PAYLOAD)
  t.equal(res.statusCode, 200)
  t.match(res.json(), { outcome: 'applied', jobId: 5, status: 'Assigned' })
  const rows = await logRows(app)
  t.equal(rows.length, 1)
  t.equal(rows[0]?.signature, HEX, 'the header is kept with the event')
})

t.test('upper-case hex of the right digest is accepted: hex is case-insensitive', async (t) => {
  const app = await buildApp(t)
  const res = await post(app, PAYLOAD, { signature: HEX.toUpperCase() })
  t.equal(res.statusCode, 200)
  t.equal((await logRows(app)).length, 1)
})

t.test('refused signatures get 401 and nothing is kept', async (t) => {
  const cases: Array<{ name: string; signature: string | null; code: string }> = [
    { name: 'no X-Signature header', signature: null, code: 'FST_G2SENTRY_MISSING_SIGNATURE' },
    { name: 'an empty X-Signature header', signature: '', code: 'FST_G2SENTRY_MISSING_SIGNATURE' },
    { name: 'signed with another secret', signature: signBody(BODY, 'another-secret'), code: 'FST_G2SENTRY_BAD_SIGNATURE' },
    { name: '62 hex characters', signature: HEX.slice(0, 62), code: 'FST_G2SENTRY_BAD_SIGNATURE' },
    { name: '66 hex characters', signature: HEX + 'ab', code: 'FST_G2SENTRY_BAD_SIGNATURE' },
    { name: '64 characters with a non-hex "z"', signature: 'z' + HEX.slice(1), code: 'FST_G2SENTRY_BAD_SIGNATURE' },
    { name: 'base64 of the right digest', signature: DIGEST.toString('base64'), code: 'FST_G2SENTRY_BAD_SIGNATURE' },
    { name: 'a "sha256=" prefix', signature: `sha256=${HEX}`, code: 'FST_G2SENTRY_BAD_SIGNATURE' },
    { name: 'the digest of an empty body', signature: signBody('', SECRET), code: 'FST_G2SENTRY_BAD_SIGNATURE' }
  ]
  for (const { name, signature, code } of cases) {
    t.test(name, async (t) => {
      const app = await buildApp(t)
      const res = await post(app, PAYLOAD, { signature })
      t.equal(res.statusCode, 401)
      t.match(res.json(), { statusCode: 401, code, error: 'Unauthorized' })
      t.notMatch(res.body, '+12345678901', 'the answer does not echo the body')
      await assertNothingKept(t, app)
      const job = await app.inject({ method: 'GET', url: '/jobs/5' })
      t.equal(job.statusCode, 404, 'no projection either')
    })
  }
})

t.test('two X-Signature headers, even both valid, are refused', async (t) => {
  const app = await buildApp(t)
  const res = await post(app, PAYLOAD, { signature: null, headers: { 'x-signature': [HEX, HEX] } })
  t.equal(res.statusCode, 401)
  t.equal(res.json().code, 'FST_G2SENTRY_BAD_SIGNATURE')
  await assertNothingKept(t, app)
})

t.test('secret rotation: any secret in the list is accepted', async (t) => {
  const app = await buildApp(t, { secret: ['new', 'old'] })

  const byOld = await post(app, assigned(1), { secret: 'old' })
  t.equal(byOld.statusCode, 200, 'signed with the old secret')
  const byNew = await post(app, assigned(2), { secret: 'new' })
  t.equal(byNew.statusCode, 200, 'signed with the new secret')

  const byOther = await post(app, assigned(3), { secret: 'older' })
  t.equal(byOther.statusCode, 401, 'signed with a secret not in the list')
  t.equal(byOther.json().code, 'FST_G2SENTRY_BAD_SIGNATURE')
  const byDefault = await post(app, assigned(4), { secret: SECRET })
  t.equal(byDefault.statusCode, 401, 'signed with a secret not in the list')

  t.same((await logRows(app)).map((row) => row.jobId), [1, 2], 'only the accepted deliveries are logged')
})

t.test('a signature over re-serialised JSON does not match the bytes received', async (t) => {
  const app = await buildApp(t)
  const sent = '{ "jobName": "Open House at 123 Main St",\n  "jobId": 5, "jobStatus": "Assigned",  "eventType": "JobAssigned" }\n'
  const reserialised = JSON.stringify(JSON.parse(sent))
  t.not(reserialised, sent)

  const res = await post(app, sent, { signature: signBody(reserialised, SECRET) })
  t.equal(res.statusCode, 401)
  t.equal(res.json().code, 'FST_G2SENTRY_BAD_SIGNATURE')
  await assertNothingKept(t, app)

  const exact = await post(app, sent)
  t.equal(exact.statusCode, 200, 'the same bytes, signed as received, are accepted')
  const [row] = await logRows(app)
  t.equal(row?.rawBody.toString('utf8'), sent, 'and kept byte for byte')
})

t.test('401 whatever the body: the signature is checked before the body is read as JSON', async (t) => {
  const bodies: Array<{ name: string; body: string | Buffer }> = [
    { name: 'invalid JSON', body: '{"jobId": 5, "eventType": ' },
    { name: 'JSON failing the schema', body: JSON.stringify({ jobId: '5', eventType: 'JobAssigned' }) },
    { name: 'an empty body', body: Buffer.alloc(0) },
    { name: 'invalid UTF-8', body: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]) }
  ]
  for (const { name, body } of bodies) {
    t.test(`unsigned ${name}`, async (t) => {
      const app = await buildApp(t)
      const res = await post(app, body, { signature: null })
      t.equal(res.statusCode, 401)
      t.equal(res.json().code, 'FST_G2SENTRY_MISSING_SIGNATURE')
      await assertNothingKept(t, app)
    })
    t.test(`wrongly signed ${name}`, async (t) => {
      const app = await buildApp(t)
      const res = await post(app, body, { secret: 'not-the-secret' })
      t.equal(res.statusCode, 401)
      t.equal(res.json().code, 'FST_G2SENTRY_BAD_SIGNATURE')
      await assertNothingKept(t, app)
    })
  }
})

t.test('verifySignature', async (t) => {
  const secrets = ['first', 'second', 'third']

  t.test('reports the index of the secret that matched', async (t) => {
    for (const [index, secret] of secrets.entries()) {
      t.same(verifySignature(BODY, signBody(BODY, secret), secrets), { valid: true, secretIndex: index }, secret)
    }
    t.same(verifySignature(BODY, HEX, [SECRET]), { valid: true, secretIndex: 0 })
    t.same(verifySignature(BODY, HEX.toUpperCase(), [SECRET]), { valid: true, secretIndex: 0 }, 'upper-case hex')
    t.same(verifySignature(Buffer.alloc(0), signBody('', SECRET), [SECRET]), { valid: true, secretIndex: 0 }, 'an empty body can be signed')
  })

  t.test('missing', async (t) => {
    t.same(verifySignature(BODY, undefined, secrets), { valid: false, reason: 'missing' })
    t.same(verifySignature(BODY, '', secrets), { valid: false, reason: 'missing' })
  })

  t.test('malformed', async (t) => {
    const malformed = [
      HEX.slice(0, 62),
      HEX + 'ab',
      HEX.slice(0, 63),
      'z' + HEX.slice(1),
      DIGEST.toString('base64'),
      DIGEST.toString('base64url'),
      `sha256=${HEX}`,
      ` ${HEX}`,
      `${HEX}\n`
    ]
    for (const header of malformed) {
      t.same(verifySignature(BODY, header, [SECRET]), { valid: false, reason: 'malformed' }, JSON.stringify(header))
    }
    t.same(verifySignature(BODY, [HEX, HEX], [SECRET]), { valid: false, reason: 'malformed' },
      'an array header (two X-Signature headers) is malformed, even when each is right')
    t.same(verifySignature(BODY, [HEX], [SECRET]), { valid: false, reason: 'malformed' }, 'a one-element array too')
  })

  t.test('mismatch', async (t) => {
    t.same(verifySignature(BODY, signBody(BODY, 'other'), secrets), { valid: false, reason: 'mismatch' })
    t.same(verifySignature(Buffer.concat([BODY, Buffer.from(' ')]), HEX, [SECRET]), { valid: false, reason: 'mismatch' },
      'one byte more in the body')
    t.same(verifySignature(BODY, '0'.repeat(64), [SECRET]), { valid: false, reason: 'mismatch' })
    t.same(verifySignature(BODY, HEX, []), { valid: false, reason: 'mismatch' }, 'no secret matches nothing')
  })
})

t.test('isSignedBy (verify\'s check of stored rows) answers as verifySignature does, with secrets as strings or keys', async (t) => {
  // A signature: of the body under one of the secrets or another, in any case, cut, padded or not hex at all.
  const signature = (body: Uint8Array, secrets: string[]) => fc.oneof(
    fc.constantFrom(...secrets, 'other').chain((secret) => {
      const hex = createHmac('sha256', secret).update(body).digest('hex')
      return fc.oneof(fc.constant(hex), fc.constant(hex.toUpperCase()), fc.constant(hex.slice(1)), fc.constant(`${hex} `),
        fc.array(fc.boolean(), { minLength: 64, maxLength: 64 }).map((upper) => [...hex].map((c, i) => upper[i] === true ? c.toUpperCase() : c).join('')))
    }),
    fc.string(), fc.constant(''), fc.constant('K'.repeat(64)), fc.constant('\u212a'.repeat(64))
  )
  const cases = fc.tuple(fc.uint8Array({ maxLength: 300 }), fc.array(fc.string(), { maxLength: 3 }))
    .chain(([body, secrets]) => fc.tuple(fc.constant(body), fc.constant(secrets), signature(body, secrets)))
  fc.assert(fc.property(cases, ([body, secrets, header]) => {
    const expected = verifySignature(Buffer.from(body), header, secrets).valid
    const keys = secrets.map((secret) => createSecretKey(Buffer.from(secret, 'utf8')))
    return isSignedBy(Buffer.from(body), header, secrets) === expected && isSignedBy(Buffer.from(body), header, keys) === expected
  }), { numRuns: 2000 })
  t.equal(isSignedBy(BODY, HEX.toUpperCase(), [SECRET]), true, 'upper-case hex of the right digest')
  t.equal(isSignedBy(BODY, HEX, ['other', SECRET]), true, 'the second secret')
  t.equal(isSignedBy(BODY, '', [SECRET]), false, 'no signature')
  t.equal(isSignedBy(BODY, HEX, []), false, 'no secret')
})
