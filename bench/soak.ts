// npm run soak [-- --minutes 10 --rate 300 --seed 1]
// The example server in a child process under steady mixed traffic: generated schedules (new
// events, redeliveries, late and reordered ones) and hostile requests. Prints requests, outcomes,
// errors, p99 latency and the server's RSS; fails if RSS grows past 1.5× its value after the
// first minute or if any 2xx is missing from the log.
import Database from 'better-sqlite3'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { randomSchedule } from '../src/simulator/schedules.js'
import { sqliteStore } from '../src/index.js'
import type { JobEvent } from '../src/domain/types.js'
import { signBody } from '../src/domain/verify-signature.js'

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    rate: { type: 'string', default: '300' },
    seed: { type: 'string', default: '1' }
  }
})
const minutes = Number(values.minutes)
const rate = Number(values.rate)
const seed = Number(values.seed)
const SECRET = 'soak-secret'

const dir = mkdtempSync(join(tmpdir(), 'g2sentry-soak-'))
const file = join(dir, 'soak.db')
const port = 3900 + (process.pid % 100)
const child = spawn(process.execPath, ['--import', 'tsx', 'examples/server.ts'], {
  env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', G2SENTRY_DB: file, G2SENTRY_CALLBACK_SECRET: SECRET, NODE_ENV: 'production' },
  stdio: ['ignore', 'ignore', 'inherit']
})
const url = `http://127.0.0.1:${port}/callbacks/g2sentry`
const rssMb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024

// Valid traffic: generated schedules, a thousand jobs at a time, with fresh job ids each time.
let chunk = 0
let valid: JobEvent[] = []
function nextValid (): JobEvent {
  if (valid.length === 0) {
    valid = randomSchedule(seed * 1000 + chunk, { jobs: 1000, firstJobId: 1 + chunk * 1000, bound: 'withdrawals' }).deliveries.map((d) => d.event)
    chunk++
  }
  return valid.shift() as JobEvent
}

type Kind = 'valid' | 'unsigned' | 'bad signature' | 'not JSON' | 'not a callback' | 'too large' | 'wrong type'
const HOSTILE: Kind[] = ['unsigned', 'bad signature', 'not JSON', 'not a callback', 'too large', 'wrong type']
function request (n: number): { kind: Kind; init: RequestInit } {
  const kind: Kind = n % 10 === 9 ? HOSTILE[Math.floor(n / 10) % HOSTILE.length] as Kind : 'valid'
  let body = kind === 'not JSON' ? '{"jobId": 1, "eventType": ' : kind === 'not a callback' ? '{"jobId":"one"}' : JSON.stringify(nextValid())
  if (kind === 'too large') body = JSON.stringify({ ...nextValid(), padding: 'x'.repeat(70_000) })
  const headers: Record<string, string> = { 'content-type': kind === 'wrong type' ? 'text/plain' : 'application/json' }
  if (kind !== 'unsigned') headers['x-signature'] = kind === 'bad signature' ? signBody(body, 'wrong') : signBody(body, SECRET)
  return { kind, init: { method: 'POST', headers, body } }
}

const answers = new Map<string, number>()
const latencies: number[] = []
const acknowledged: number[] = []
let errors = 0
let sent = 0
let inFlight = 0

async function fire (n: number): Promise<void> {
  const { kind, init } = request(n)
  const started = performance.now()
  inFlight++
  try {
    const response = await fetch(url, init)
    const answer = await response.json() as { outcome?: string; seq?: number; code?: string }
    latencies.push(performance.now() - started)
    const key = response.status === 200 ? `200 ${answer.outcome}` : `${response.status} ${kind}`
    answers.set(key, (answers.get(key) ?? 0) + 1)
    if (response.status === 200) acknowledged.push(answer.seq as number)
  } catch {
    errors++
  } finally {
    inFlight--
  }
}

const p99 = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length * 0.99)] ?? NaN }
const fmt = (n: number, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d })

for (let i = 0; i < 100; i++) {
  if (await fetch(url.replace('/callbacks/g2sentry', '/jobs/1')).then(() => true, () => false)) break
  await new Promise((resolve) => setTimeout(resolve, 100))
}
console.log(`soak: ${minutes} min at ${rate} req/s (1 in 10 hostile), example server pid ${child.pid}, seed ${seed}`)
console.log(`start: RSS ${fmt(rssMb(), 1)} MB`)

const startedAt = performance.now()
let rssAfterFirstMinute = NaN
let lastReport = startedAt
const perTick = rate / 100
let owed = 0
await new Promise<void>((resolve) => {
  const timer = setInterval(() => {
    const now = performance.now()
    if (now - startedAt >= minutes * 60_000) {
      clearInterval(timer)
      resolve()
      return
    }
    owed += perTick
    for (; owed >= 1; owed--) void fire(sent++)
    if (Number.isNaN(rssAfterFirstMinute) && now - startedAt >= 60_000) rssAfterFirstMinute = rssMb()
    if (now - lastReport >= 60_000) {
      lastReport = now
      const recent = latencies.splice(0)
      console.log(`${fmt((now - startedAt) / 60_000, 1)} min: ${fmt(sent)} sent, p99 ${fmt(p99(recent), 1)} ms this minute, RSS ${fmt(rssMb(), 1)} MB, in flight ${inFlight}`)
      latencies.push(...recent.slice(-1000))
    }
  }, 10)
})
while (inFlight > 0) await new Promise((resolve) => setTimeout(resolve, 50)) // eslint-disable-line no-unmodified-loop-condition -- the requests in flight change it
const rssEnd = rssMb()
child.kill('SIGTERM')
await new Promise((resolve) => child.once('exit', resolve))

const store = sqliteStore({ filename: file })
const report = await store.rebuild({ dryRun: true })
await store.close()
const db = new Database(file, { readonly: true })
const has = db.prepare('SELECT 1 FROM events WHERE seq = ?')
const missing = acknowledged.filter((seq) => has.get(seq) === undefined).length
const events = (db.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n
const quarantined = (db.prepare('SELECT count(*) AS n FROM quarantine').get() as { n: number }).n
db.close()
rmSync(dir, { recursive: true, force: true })

console.log(`\nrequests: ${fmt(sent)} sent, ${fmt(errors)} network errors`)
for (const [key, n] of [...answers].sort()) console.log(`  ${key.padEnd(24)} ${fmt(n).padStart(10)}`)
console.log(`log: ${fmt(events)} events for ${fmt(acknowledged.length)} 2xx answers, ${fmt(missing)} acknowledged events missing; ${fmt(quarantined)} quarantined`)
console.log(`projection equals a rebuild: ${report.differingJobs.length === 0 && report.outcomeMismatches.length === 0 ? 'yes' : 'NO'}`)
console.log(`RSS: ${fmt(rssAfterFirstMinute, 1)} MB after the first minute, ${fmt(rssEnd, 1)} MB at the end (${fmt(rssEnd / rssAfterFirstMinute, 2)}×, limit 1.5×)`)
const ok = missing === 0 && events === acknowledged.length && rssEnd <= 1.5 * rssAfterFirstMinute && errors === 0 &&
  report.differingJobs.length === 0 && report.outcomeMismatches.length === 0
console.log(ok ? 'soak: PASS' : 'soak: FAIL')
process.exitCode = ok ? 0 : 1
