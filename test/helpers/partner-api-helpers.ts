// What the Partner API client tests share: a fake G2 Sentry per test, a client of it, and a
// logger that keeps every line.
import type { Test } from 'tap'
import { PartnerApiClient, type ClientLogger } from '../../src/partner-api/client.js'
import { FakeG2Sentry, type FakeG2SentryOptions } from '../../src/simulator/fake-g2sentry.js'

/** A fake G2 Sentry closed when the test ends. */
export async function fake (t: Test, options: FakeG2SentryOptions = {}): Promise<FakeG2Sentry> {
  const server = await FakeG2Sentry.start(options)
  t.teardown(() => server.close())
  return server
}

/** A logger that keeps every line, to prove that no secret or token reaches it. */
export function memoryLog (): ClientLogger & { text: () => string } {
  const lines: string[] = []
  return {
    warn: (fields, message) => { lines.push(JSON.stringify({ ...fields, message })) },
    debug: (fields, message) => { lines.push(JSON.stringify({ ...fields, message })) },
    text: () => lines.join('\n')
  }
}

/** A client of `server` with short backoffs. */
export const client = (server: FakeG2Sentry, options: Partial<ConstructorParameters<typeof PartnerApiClient>[0]> = {}): PartnerApiClient =>
  new PartnerApiClient({ baseUrl: server.url, partnerKey: server.partnerKey, partnerSecret: server.partnerSecret, backoffMs: 20, ...options })

/** The error `promise` rejects with; fails the test when it resolves. */
export async function failure (promise: Promise<unknown>): Promise<Error & { answered?: string; code?: string }> {
  return promise.then(() => { throw new Error('expected a failure') }, (error: unknown) => error as Error & { answered?: string; code?: string })
}
