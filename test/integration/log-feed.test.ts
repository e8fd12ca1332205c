// The live feed reads the log: two apps on one SQLite file (as two processes would be), a client
// on A's stream sees the changes committed through B, in seq order, none twice, and nothing
// that is not a change. (Two PostgreSQL instances in child processes: forward-process.test.ts.)
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import g2sentry from '../../src/index.js'
import { assigned, completed, post, SECRET, started } from '../helpers/helpers.js'

async function listen (database: string): Promise<{ app: FastifyInstance; url: string }> {
  const app = Fastify({ logger: false })
  await app.register(g2sentry, { secret: SECRET, database })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` }
}

t.test('a stream on one app shows the changes committed through another app on the same file', async (t) => {
  const database = join(t.testdir(), 'g2.db')
  const a = await listen(database)
  const b = await listen(database)
  t.teardown(async () => { await a.app.close(); await b.app.close() })

  const controller = new AbortController()
  const response = await fetch(`${a.url}/jobs/stream`, { signal: controller.signal })
  const reader = (response.body as ReadableStream<Uint8Array>).getReader()
  let text = ''
  const reading = (async () => {
    for (;;) {
      const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }))
      if (done) return
      text += Buffer.from(value as Uint8Array).toString('utf8')
    }
  })()
  const ids = () => [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]))
  while (!text.includes('retry:')) await new Promise((resolve) => setTimeout(resolve, 10))

  const seqs: number[] = []
  for (const [app, payload] of [[b.app, assigned(1)], [a.app, assigned(2)], [b.app, started(1)], [b.app, started(1)], [a.app, completed(1)]] as const) {
    const result = (await post(app, payload)).json<{ outcome: string; seq: number }>()
    if (result.outcome === 'applied') seqs.push(result.seq)
  }
  const deadline = Date.now() + 10_000
  while (ids().length < seqs.length && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  t.same(ids(), seqs, 'every applied change through either app, in seq order, once (the duplicate is not one)')
  t.same(seqs, [1, 2, 3, 5])
  controller.abort()
  await reading
})
