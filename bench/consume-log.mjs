// A durable consumer catching up on a whole log (the published build, no TypeScript loader):
// `node bench/consume-log.mjs FILE rows|changes NAME` hands every row (or every projection
// change) to a handler that only counts, from the beginning to the log's last seq, and prints
// how many it handled. Run it under bench/report-usage.mjs to see its peak RSS.
import { sqliteStore, startConsumer } from '../dist/index.js'

const [file, deliver, name] = process.argv.slice(2)
const store = sqliteStore({ filename: file })
const last = (await store.chainHead())?.seq ?? 0
let handled = 0
let failed
const consumer = startConsumer(store, name, () => { handled++ }, { deliver, batchSize: 1000, pollMs: 60_000 }, {
  storeFailed: ({ error }) => { failed = error }
})
await new Promise((resolve, reject) => {
  const timer = setInterval(() => {
    if (failed !== undefined) reject(failed)
    if (consumer.status().position === last) resolve()
  }, 5)
  timer.unref?.()
}).finally(() => consumer.close())
await store.close()
process.stdout.write(`${handled}\n`)
