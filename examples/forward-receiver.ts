// A receiver for the forwarder: checks X-Signature over the exact body with the shared secret,
// prints each change, answers 204. Run it beside the example server:
//   G2SENTRY_FORWARD_SECRET=demo-forward-secret npx tsx examples/forward-receiver.ts
// In your own app, import verifySignature from 'fastify-g2sentry' instead of '../src/index.js'.
import { createServer } from 'node:http'
import { verifySignature } from '../src/index.js'

const secret = process.env.G2SENTRY_FORWARD_SECRET
if (secret === undefined || secret === '') {
  console.error('set G2SENTRY_FORWARD_SECRET to the secret the server signs with')
  process.exit(1)
}
const port = Number(process.env.PORT ?? 4000)

createServer((request, response) => {
  const chunks: Buffer[] = []
  request.on('data', (chunk: Buffer) => chunks.push(chunk))
  request.on('end', () => {
    const body = Buffer.concat(chunks)
    if (!verifySignature(body, request.headers['x-signature'], [secret]).valid) {
      response.writeHead(401).end()
      return
    }
    // The forwarder delivers at least once: around a crash a change may come twice, so key what
    // you do by its seq.
    const change = JSON.parse(body.toString('utf8')) as { seq: number; jobId: number; status: string }
    console.log(`seq ${change.seq}: job ${change.jobId} is ${change.status}`)
    response.writeHead(204).end()
  })
}).listen(port, '127.0.0.1', () => console.log(`receiving forwarded changes on http://127.0.0.1:${port}/`))
