// Archiving under load: a generated SQLite log of --events events (default 1,000,000; a new file,
// so auto_vacuum is INCREMENTAL), served by a listening Fastify app in this process that takes
// callbacks at a steady --rate per second. First --baseline seconds of callbacks alone, then the
// same rate while `g2sentry archive` (the built CLI, in a child process, as an operator runs it)
// archives the first --archive events (default 90%). Prints the archive's time, the callbacks'
// latency percentiles in both phases and their ratio, and the sizes of the files.
//
//   npm run bench:archive -- [--events N] [--archive N] [--rate N] [--baseline S] [--keep]
import Fastify from 'fastify'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { Agent, request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import g2sentry, { signBody, sqliteStore } from '../src/index.js'
import { generateLog } from './generate-log.js'
import { nthBody } from './load.js'

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '1000000' },
    archive: { type: 'string' },
    rate: { type: 'string', default: '200' },
    baseline: { type: 'string', default: '20' },
    keep: { type: 'boolean', default: false }
  }
})
const events = Number(values.events)
const through = Number(values.archive ?? Math.floor(events * 0.9))
const rate = Number(values.rate)
const baselineSeconds = Number(values.baseline)
const SECRET = 'archive-bench'
const BIN = join(import.meta.dirname, '..', 'bin', 'g2sentry.js')
const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`
const sizeOf = (file: string) => [file, `${file}-wal`].filter(existsSync).reduce((sum, name) => sum + statSync(name).size, 0)

const dir = mkdtempSync(join(tmpdir(), 'g2sentry-archive-bench-'))
const db = join(dir, 'log.db')
const out = join(dir, 'archive.ndjson')
let started = performance.now()
const { jobs } = await generateLog(db, events)
console.log(`log: ${events.toLocaleString('en-US')} events, ${jobs.toLocaleString('en-US')} jobs, generated in ${((performance.now() - started) / 1000).toFixed(0)} s`)

const store = sqliteStore({ filename: db })
const app = Fastify({ logger: false })
await app.register(g2sentry, { secret: [SECRET, 'bench'], store })
await app.listen({ port: 0, host: '127.0.0.1' })
const { port } = app.server.address() as { port: number }
const sizeBefore = sizeOf(db)

// Callbacks for jobs the log has never seen, one every 1/rate s, each timed from send to answer.
const agent = new Agent({ keepAlive: true, maxSockets: 64 })
let sent = 0
function callback (): Promise<number> {
  const body = nthBody(sent++, 100_000, 50_000_000)
  const at = performance.now()
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port,
      path: '/callbacks/g2sentry',
      method: 'POST',
      agent,
      headers: { 'content-type': 'application/json', 'x-signature': signBody(body, SECRET), 'content-length': Buffer.byteLength(body) }
    }, (res) => {
      res.resume()
      res.on('end', () => res.statusCode === 200 ? resolve(performance.now() - at) : reject(new Error(`HTTP ${res.statusCode}`)))
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** Sends callbacks at `rate` until `done` resolves; the latencies (ms). */
async function steady (done: Promise<unknown>): Promise<number[]> {
  const latencies: number[] = []
  const pending: Array<Promise<void>> = []
  const state = { stop: false }
  void done.then(() => { state.stop = true })
  const start = performance.now()
  for (let n = 0; !state.stop; n++) {
    const due = start + n * 1000 / rate
    const wait = due - performance.now()
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    pending.push(callback().then((ms) => { latencies.push(ms) }))
  }
  await Promise.all(pending)
  return latencies
}

function percentiles (latencies: number[]): { p50: number; p99: number; max: number; n: number } {
  const sorted = [...latencies].sort((a, b) => a - b)
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN
  return { p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] ?? NaN, n: sorted.length }
}

const baseline = percentiles(await steady(new Promise((resolve) => setTimeout(resolve, baselineSeconds * 1000))))

started = performance.now()
let output = ''
const child = spawn(process.execPath, [BIN, 'archive', '--db', db, '--through', String(through), '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] })
child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? 1)))
const during = percentiles(await steady(exited))
const archiveSeconds = (performance.now() - started) / 1000
if (await exited !== 0) throw new Error(`g2sentry archive failed:\n${output}`)

await app.close()
agent.destroy()
const sizeAfter = sizeOf(db)
const fmt = (p: ReturnType<typeof percentiles>) => `p50 ${p.p50.toFixed(1)} ms, p99 ${p.p99.toFixed(1)} ms, max ${p.max.toFixed(1)} ms (${p.n} callbacks)`
console.log(output.trimEnd().split('\n').map((line) => `  archive: ${line}`).join('\n'))
console.log(`archive of ${through.toLocaleString('en-US')} events: ${archiveSeconds.toFixed(1)} s`)
console.log(`callbacks at ${rate}/s, ${baselineSeconds} s without archiving: ${fmt(baseline)}`)
console.log(`callbacks at ${rate}/s while archiving:           ${fmt(during)}`)
console.log(`p99 while archiving / without: ${(during.p99 / baseline.p99).toFixed(2)}`)
console.log(`database: ${mib(sizeBefore)} before, ${mib(sizeAfter)} after; archive file ${mib(statSync(out).size)}`)
if (values.keep === true) console.log(`kept in ${dir}`)
else rmSync(dir, { recursive: true, force: true })
