import { TypeCompiler } from '@sinclair/typebox/compiler'
import secureJson from 'secure-json-parse'
import { CallbackPayload } from './callback.js'
import type { JobEvent, QuarantineReason } from './types.js'

const checkPayload = TypeCompiler.Compile(CallbackPayload)
const utf8 = new TextDecoder('utf-8', { fatal: true })
const LONE_SURROGATE = /\p{Cs}/u

export type Decoded =
  | { ok: true; event: JobEvent }
  | { ok: false; reason: QuarantineReason; detail: string }

/**
 * Reads a verified body as a callback: strict UTF-8 JSON, then the payload schema without
 * coercion. Details never quote the body, which may hold a guardian's phone number.
 */
export function decodeCallback (rawBody: Buffer): Decoded {
  let parsed: unknown
  try {
    parsed = secureJson.parse(utf8.decode(rawBody), null, { protoAction: 'remove', constructorAction: 'remove' })
  } catch (error) {
    return { ok: false, reason: 'invalid_json', detail: error instanceof TypeError ? 'not UTF-8' : 'not JSON' }
  }
  if (!checkPayload.Check(parsed)) {
    const first = checkPayload.Errors(parsed).First()
    return { ok: false, reason: 'invalid_payload', detail: first === undefined ? 'not an object' : `${first.path || '/'} ${first.message}` }
  }
  const { jobId, eventType, jobName, jobStatus, guardianPhone } = parsed
  // A lone surrogate (an escape such as "\ud800") is valid JSON but not text: it could not be
  // stored as it was sent, and the stored row would no longer match its raw body.
  for (const [field, value] of [['eventType', eventType], ['jobName', jobName], ['guardianPhone', guardianPhone]] as const) {
    if (value !== undefined && LONE_SURROGATE.test(value)) return { ok: false, reason: 'invalid_payload', detail: `/${field} is not well-formed Unicode` }
  }
  return { ok: true, event: { jobId, eventType, jobName, jobStatus, guardianPhone } }
}
