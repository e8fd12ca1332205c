// npm run bench:store -- --baseline DIR [--rounds 5 --events 20000 --batch 32 --jobs 20000]
//
// The SQLite store's write path A/B, in one process: this checkout's store against another
// checkout's (DIR, e.g. `git worktree add /tmp/base main`), alternating, each on a fresh file
// with synchronous=FULL, appending distinct signed bodies in concurrent groups of `batch` (so group
// commit forms batches of that size). Reports CPU time per append (user + system of this process,
// which a busy machine inflates far less than it slows requests per second) and wall time.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { nthBody } from './load.js'
import { signBody } from '../src/domain/verify-signature.js'

const { values } = parseArgs({
  options: {
    baseline: { type: 'string' },
    rounds: { type: 'string', default: '5' },
    events: { type: 'string', default: '20000' },
    batch: { type: 'string', default: '32' },
    jobs: { type: 'string', default: '20000' }
  }
})
if (values.baseline === undefined) throw new Error('--baseline DIR (another checkout of this repository) is required')
const events = Number(values.events)
const batch = Number(values.batch)
const jobs = Number(values.jobs)

type Open = (options: { filename: string }) => { append: (event: unknown) => Promise<unknown>; close: () => Promise<void> }
const targets: Array<{ name: string; open: Open }> = [
  { name: 'this checkout', open: (await import('../src/store/sqlite/sqlite-store.js')).sqliteStore as unknown as Open },
  { name: `baseline ${values.baseline}`, open: (await import(resolve(values.baseline, 'src/store/sqlite/sqlite-store.ts'))).sqliteStore as Open }
]

const bodies = Array.from({ length: events + 2000 }, (_, n) => {
  const body = nthBody(n, jobs)
  const rawBody = Buffer.from(body)
  return { ...JSON.parse(body), rawBody, signature: signBody(rawBody, 'bench'), receivedAt: 1_790_000_000_000 + n }
})

async function run (open: Open): Promise<{ cpuUs: number; wallUs: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'g2sentry-store-ab-'))
  const store = open({ filename: join(dir, 'ab.db') })
  try {
    for (let i = 0; i < 2000; i += batch) await Promise.all(bodies.slice(i, i + batch).map((e) => store.append(e)))
    const cpu = process.cpuUsage()
    const wall = performance.now()
    for (let i = 2000; i < bodies.length; i += batch) await Promise.all(bodies.slice(i, i + batch).map((e) => store.append(e)))
    const used = process.cpuUsage(cpu)
    return { cpuUs: (used.user + used.system) / events, wallUs: (performance.now() - wall) * 1000 / events }
  } finally {
    await store.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] as number }
const results = targets.map(() => [] as Array<{ cpuUs: number; wallUs: number }>)
for (let r = 0; r < Number(values.rounds); r++) {
  for (const [i, target] of targets.entries()) results[i]!.push(await run(target.open))
}
console.log(`store A/B: ${events} appends per run in groups of ${batch}, ${values.rounds} rounds alternating, synchronous=FULL`)
const base = median(results[1]!.map((m) => m.cpuUs))
for (const [i, target] of targets.entries()) {
  const cpu = results[i]!.map((m) => m.cpuUs)
  console.log(`${target.name.padEnd(40)} CPU ${median(cpu).toFixed(1).padStart(6)} µs/append [${Math.min(...cpu).toFixed(1)}–${Math.max(...cpu).toFixed(1)}]` +
    `  wall ${median(results[i]!.map((m) => m.wallUs)).toFixed(1).padStart(6)} µs/append  ${(median(cpu) / base).toFixed(2)}× baseline CPU`)
}
