import { createHmac, timingSafeEqual, type KeyObject } from 'node:crypto'

const HEX_SHA256 = /^[0-9a-f]{64}$/i

/** The hex HMAC-SHA256 of `body` under `secret`: the value G2 Sentry sends as `X-Signature`. */
export function signBody (body: Buffer | string, secret: string): string {
  return createHmac('sha256', secret).update(body).digest('hex')
}

export type SignatureCheck =
  | { valid: true; secretIndex: number }
  | { valid: false; reason: 'missing' | 'malformed' | 'mismatch' }

/**
 * Checks `header` against the HMAC of the exact body bytes under each secret, in constant time
 * for each, and reports which secret matched so a rotation can be watched.
 */
export function verifySignature (body: Buffer, header: string | string[] | undefined, secrets: readonly string[]): SignatureCheck {
  if (header === undefined || header === '') return { valid: false, reason: 'missing' }
  if (typeof header !== 'string' || !HEX_SHA256.test(header)) return { valid: false, reason: 'malformed' }
  const given = Buffer.from(header, 'hex')
  for (let i = 0; i < secrets.length; i++) {
    const expected = createHmac('sha256', secrets[i] as string).update(body).digest()
    if (timingSafeEqual(expected, given)) return { valid: true, secretIndex: i }
  }
  return { valid: false, reason: 'mismatch' }
}

/**
 * Whether one of `secrets` signs `body` with `signature`: the same answer as
 * `verifySignature(body, signature, secrets).valid`, compared as hex text rather than in
 * constant time. For checking stored rows (`g2sentry verify`), where nobody can time the answer
 * to forge a signature, and every row's check counts. A secret may be given as a KeyObject of its
 * UTF-8 bytes (`createSecretKey`), made once for many rows.
 */
export function isSignedBy (body: Buffer, signature: string, secrets: ReadonlyArray<string | KeyObject>): boolean {
  let lower: string | undefined
  for (const secret of secrets) {
    const digest = createHmac('sha256', secret).update(body).digest('hex')
    // Nearly every stored signature is the lower-case hex digest itself.
    if (digest === signature) return true
    lower ??= signature.toLowerCase()
    if (digest === lower) return HEX_SHA256.test(signature)
  }
  return false
}
