// Slow and vanishing clients on a listening server configured as the example server is
// (examples/server-setup.ts), with shorter timeouts: raw TCP sockets that trickle a body a byte
// a second, send nothing at all, or go away in the middle of a body.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { connect, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import g2sentry from '../../src/index.js'
import { timeoutOptions } from '../../examples/server-setup.js'
import { assigned, CALLBACK_PATH, memoryStream, SECRET } from '../helpers/helpers.js'
import { signBody } from '../../src/domain/verify-signature.js'

t.setTimeout(60_000)

interface LogLine { level: number; msg: string; err?: { stack?: string } }

/** The plugin on a listening server with the example's timeout options, scaled down; its log lines. */
async function slowServer (t: Test): Promise<{ app: FastifyInstance; port: number; logs: () => LogLine[] }> {
  const log = memoryStream()
  const app = Fastify({
    logger: { level: 'info', stream: log.stream },
    ...timeoutOptions({ requestTimeout: 1500, connectionTimeout: 4000, checkEvery: 250 })
  })
  await app.register(g2sentry, { secret: SECRET, database: join(t.testdir(), 'g2.db') })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, port: (app.server.address() as AddressInfo).port, logs: () => log.lines.map((line) => JSON.parse(line) as LogLine) }
}

interface Closed { afterMs: number; received: string }

/** Connects, runs `drive(socket)`, and resolves when the server closes the connection (or after `ms`, with undefined). */
function whenClosed (port: number, drive: (socket: Socket) => void, ms: number): Promise<Closed | undefined> {
  return new Promise((resolve) => {
    const started = Date.now()
    let received = ''
    const socket = connect(port, '127.0.0.1', () => drive(socket))
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => { received += chunk })
    socket.on('error', () => {})
    const timer = setTimeout(() => { socket.destroy(); resolve(undefined) }, ms)
    socket.on('close', () => {
      clearTimeout(timer)
      resolve({ afterMs: Date.now() - started, received })
    })
  })
}

const HEADERS = `POST ${CALLBACK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nX-Signature: ${'0'.repeat(64)}\r\n\r\n`

t.test('a body that trickles in a byte a second is cut off at requestTimeout with 408, and logged as one warning', async (t) => {
  const { port, logs } = await slowServer(t)
  let sent = 0
  const closed = await whenClosed(port, (socket) => {
    socket.write(HEADERS)
    const timer = setInterval(() => {
      if (socket.destroyed) return clearInterval(timer)
      socket.write('{')
      sent++
    }, 1000)
    socket.on('close', () => clearInterval(timer))
  }, 20_000)
  t.ok(closed, 'the server closed the connection')
  t.match(closed?.received, /^HTTP\/1\.1 408 /, 'with 408 Request Timeout')
  t.ok(sent < 10, `after ${sent} bytes of the 1,000 announced (a requestTimeout of 1.5 s, checked every 250 ms)`)

  // The request log lines ("incoming request") are Fastify's; the plugin adds one warning.
  const lines = logs().filter((line) => line.level >= 40)
  t.same(lines.map((line) => [line.level, line.msg]), [[40, 'g2sentry: callback aborted: the client went away before its body arrived']], 'one warning line')
  t.notOk(logs().some((line) => line.err?.stack !== undefined), 'and no stack trace at any level')

  const body = JSON.stringify(assigned(1))
  const response = await fetch(`http://127.0.0.1:${port}${CALLBACK_PATH}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-signature': signBody(body, SECRET) }, body })
  t.equal(response.status, 200, 'a signed callback that arrives whole is answered as usual')
})

// Node's headersTimeout follows requestTimeout when the server is created with it.
t.test('a connection that sends nothing is closed with 408 too', async (t) => {
  const { port } = await slowServer(t)
  const closed = await whenClosed(port, () => {}, 20_000)
  t.ok(closed, `the server closed the silent connection (after ${closed?.afterMs} ms)`)
  t.match(closed?.received, /^HTTP\/1\.1 408 /)
})

t.test('a client that goes away in the middle of a body: one warning line, no stack trace', async (t) => {
  const { logs } = await slowServer(t).then(async (server) => {
    await whenClosed(server.port, (socket) => {
      socket.write(HEADERS + '{"jobId":')
      setTimeout(() => socket.destroy(), 100)
    }, 5000)
    return server
  })
  const deadline = Date.now() + 5000
  while (!logs().some((line) => line.level >= 40) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  const lines = logs().filter((line) => line.level >= 40)
  t.same(lines.map((line) => [line.level, line.msg]), [[40, 'g2sentry: callback aborted: the client went away before its body arrived']], 'one warning line')
  t.notOk(logs().some((line) => line.err?.stack !== undefined), 'and no stack trace at any level')
})
