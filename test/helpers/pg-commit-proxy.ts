// A real TCP proxy between a PostgreSQL store and the test server that cuts (or first holds) the
// connection at a COMMIT: test/integration/postgres-commit.test.ts and test/integration/postgres-overlap.test.ts.
import type { Test } from 'tap'
import { createServer, connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { pgUrl } from './pg.js'

/**
 * 'before-commit': the COMMIT is dropped with the connection (the server rolls back);
 * 'after-commit': it is forwarded and the connection cut when the server answers (committed,
 * but the client never hears).
 */
export type Cut = 'before-commit' | 'after-commit'

/** A simple-protocol query message whose text is exactly COMMIT. */
const COMMIT = Buffer.concat([Buffer.from('Q'), Buffer.from([0, 0, 0, 11]), Buffer.from('COMMIT\0')])

export interface CommitProxy {
  /** A connection string to the test server through the proxy. */
  url: string
  /**
   * Arms the proxy for the next COMMIT any client sends. With `hold`, that COMMIT waits until
   * `go` is called (`held` settles once it arrived); without, it is cut at once. With
   * `thenRefuse`, the server then seems down for a moment: once that connection is cut, every
   * other one through the proxy is closed, and so are the next `thenRefuse` as soon as they open.
   */
  cutNext: (cut: Cut, options?: { hold?: boolean; thenRefuse?: number }) => { held: Promise<void>; go: () => void }
  /** How many COMMITs were cut so far. */
  cuts: () => number
}

export async function commitProxy (t: Test): Promise<CommitProxy> {
  const target = new URL(pgUrl())
  let armed: { cut: Cut; held: () => void; go: Promise<void>; thenRefuse: number } | undefined
  let cuts = 0
  let refusing = 0
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    if (refusing > 0) {
      refusing--
      client.destroy()
      return
    }
    const upstream = connect(Number(target.port || 5432), target.hostname)
    sockets.add(client).add(upstream)
    let refuseAfter = 0
    const cut = () => {
      client.destroy()
      upstream.destroy()
      if (refuseAfter === 0) return
      refusing = refuseAfter
      refuseAfter = 0
      for (const socket of sockets) socket.destroy()
    }
    let cutOnAnswer = false
    // Chunks go upstream in order, a held COMMIT holding the ones after it.
    let queue = Promise.resolve()
    client.on('data', (chunk) => {
      queue = queue.then(async () => {
        if (armed !== undefined && chunk.equals(COMMIT)) {
          const { cut: how, held, go, thenRefuse } = armed
          armed = undefined
          refuseAfter = thenRefuse
          cuts++
          held()
          await go
          if (how === 'before-commit') return cut()
          cutOnAnswer = true
        }
        upstream.write(chunk)
      })
    })
    upstream.on('data', (chunk) => {
      if (cutOnAnswer) return cut()
      client.write(chunk)
    })
    for (const socket of [client, upstream]) {
      socket.on('error', cut)
      socket.on('close', () => { sockets.delete(socket); cut() })
    }
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  const url = new URL(pgUrl())
  url.hostname = '127.0.0.1'
  url.port = String((server.address() as { port: number }).port)
  return {
    url: url.toString(),
    cutNext: (cut, { hold = false, thenRefuse = 0 } = {}) => {
      let held!: () => void
      let go!: () => void
      const heldPromise = new Promise<void>((resolve) => { held = resolve })
      const going = new Promise<void>((resolve) => { go = resolve })
      if (!hold) go()
      armed = { cut, held, go: going, thenRefuse }
      return { held: heldPromise, go }
    },
    cuts: () => cuts
  }
}
