/**
 * A process that runs one durable consumer, for the tests that kill processes: started with
 * tap's TypeScript loader (test/helpers/ts-loader.ts) or `node --import tsx test/helpers/consumer-child.ts`, configured by environment variables, it prints one
 * line per event on stdout: `ready`, `handling <seq>`, `handled <seq>`, `active`.
 *
 * - CONSUMER_DB: a SQLite file or a postgres:// URL (`?schema=` names the schema)
 * - CONSUMER_NAME: the consumer's name
 * - CONSUMER_BLOCK_SEQ: a seq whose handler never returns (so the test can kill it mid-handler)
 * - CONSUMER_LEASE_MS: the lease's length (default 1000)
 */
import { startConsumer } from '../../src/consumers/consumer.js'
import { openStore } from '../../src/store/open-store.js'

const store = await openStore(process.env.CONSUMER_DB as string)
const block = Number(process.env.CONSUMER_BLOCK_SEQ ?? 0)
const say = (line: string): void => { process.stdout.write(`${line}\n`) }

const consumer = startConsumer(store, process.env.CONSUMER_NAME as string, async (change) => {
  say(`handling ${change.seq}`)
  if (change.seq === block) await new Promise(() => {})
  say(`handled ${change.seq}`)
}, { leaseTtlMs: Number(process.env.CONSUMER_LEASE_MS ?? 1000), pollMs: 200 })

let active = false
setInterval(() => {
  const now = consumer.status().active
  if (now && !active) say('active')
  active = now
}, 20)
say('ready')

process.once('SIGTERM', () => {
  void consumer.close().then(() => store.close()).then(() => process.exit(0))
})
