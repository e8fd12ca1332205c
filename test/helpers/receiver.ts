/**
 * A forwarder's receiver for the tests: a real HTTP server that checks `X-Signature` over the
 * exact body, answers 2xx or fails on purpose (a schedule of 500s, a hang), and can go down and
 * come back on the same port.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Test } from 'tap'
import type { JobChange } from '../../src/domain/job-change.js'
import { verifySignature } from '../../src/domain/verify-signature.js'

export interface Receiver {
  url: string
  port: number
  /** The changes answered 2xx, in the order they arrived (repeats included). */
  accepted: JobChange[]
  /** Every request, answered or not. */
  attempts: () => number
  /** Requests whose signature did not verify (answered 401). */
  badSignatures: () => number
  /** Requests without the `authorization` the receiver was started with (answered 401). */
  unauthorized: () => number
  /** The request target (path and query) of every request, as it arrived. */
  targets: string[]
  /** Stops listening (open connections are cut) until `up`. */
  down: () => Promise<void>
  up: () => Promise<void>
  close: () => Promise<void>
}

export interface ReceiverOptions {
  secret: string
  port?: number
  /** Answers request number n (1, 2, ...) with a 500 when true. */
  fail?: (n: number) => boolean
  /** Never answers request number n when true (for timeouts). */
  hang?: (n: number) => boolean
  /** When set, a request without exactly this `Authorization` header is answered 401 (and not accepted). */
  authorization?: string
}

export async function startReceiver (t: Test, options: ReceiverOptions): Promise<Receiver> {
  const accepted: JobChange[] = []
  let attempts = 0
  let badSignatures = 0
  let unauthorized = 0
  const targets: string[] = []
  let server: Server | undefined
  let port = options.port ?? 0
  const handle = (request: IncomingMessage, response: ServerResponse): void => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      const n = ++attempts
      const body = Buffer.concat(chunks)
      targets.push(request.url ?? '')
      if (options.authorization !== undefined && request.headers.authorization !== options.authorization) {
        unauthorized++
        response.writeHead(401).end()
        return
      }
      if (!verifySignature(body, request.headers['x-signature'], [options.secret]).valid || request.headers['content-type'] !== 'application/json') {
        badSignatures++
        response.writeHead(401).end()
        return
      }
      if (options.hang?.(n) === true) return
      if (options.fail?.(n) === true) {
        response.writeHead(500).end('try again')
        return
      }
      accepted.push(JSON.parse(body.toString('utf8')) as JobChange)
      response.writeHead(204).end()
    })
  }
  const up = async (): Promise<void> => {
    const created = createServer(handle)
    await new Promise<void>((resolve, reject) => {
      created.once('error', reject)
      created.listen(port, '127.0.0.1', () => resolve())
    })
    port = (created.address() as AddressInfo).port
    server = created
  }
  const down = async (): Promise<void> => {
    const current = server
    server = undefined
    if (current === undefined) return
    current.closeAllConnections()
    await new Promise<void>((resolve) => current.close(() => resolve()))
  }
  await up()
  t.teardown(down)
  return {
    url: `http://127.0.0.1:${port}/g2sentry-changes`,
    port,
    accepted,
    attempts: () => attempts,
    badSignatures: () => badSignatures,
    unauthorized: () => unauthorized,
    targets,
    down,
    up,
    close: down
  }
}

/** The changes with repeats removed (a repeat is possible around a crash), checking each repeat is identical. */
export function distinctInOrder (changes: readonly JobChange[]): { distinct: JobChange[]; repeats: number; outOfOrder: number } {
  const bySeq = new Map<number, string>()
  const distinct: JobChange[] = []
  let repeats = 0
  let outOfOrder = 0
  let last = 0
  for (const change of changes) {
    const text = JSON.stringify(change)
    const seen = bySeq.get(change.seq)
    if (seen !== undefined) {
      if (seen !== text) throw new Error(`seq ${change.seq} forwarded with two different bodies`)
      repeats++
      continue
    }
    if (change.seq < last) outOfOrder++
    last = change.seq
    bySeq.set(change.seq, text)
    distinct.push(change)
  }
  return { distinct, repeats, outOfOrder }
}
