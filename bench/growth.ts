// npm run bench:growth [-- --sizes 0,1000000,10000000 --rounds 3 --duration 10 --connections 50 --jobs 20000]
//
// Cost as the log grows: the callback route appending into logs that already hold 0, 1 million
// and 10 million generated events (bench/log-cache.ts: generated once, cached outside the repo),
// and `GET /jobs/:id` on random existing jobs afterwards (its p99, and the server's CPU time per
// read, which a busy machine inflates less than latency). Sizes alternate within each round; the
// median of the rounds counts, and rates are given as a ratio of the empty log's in the same run.
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import Database from 'better-sqlite3'
import { CACHE_DIR, cachedLog } from './log-cache.js'
import { freshCopy } from './fresh-copy.js'
import { round, type RoundResult } from './load.js'

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '0,1000000,10000000' },
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '10' },
    connections: { type: 'string', default: '50' },
    jobs: { type: 'string', default: '20000' }
  }
})
const sizes = values.sizes.split(',').map(Number)
const rounds = Number(values.rounds)
const duration = Number(values.duration)
const connections = Number(values.connections)
const jobs = Number(values.jobs)
const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] as number }

console.log(`fastify-g2sentry log-growth benchmark — ${new Date().toISOString()}; cache: ${CACHE_DIR}`)
const sources = new Map<number, string | undefined>()
for (const size of sizes) sources.set(size, size === 0 ? undefined : await cachedLog(size, console.log))

/** The highest job id and the event count of a log. */
function extent (file: string): { maxJobId: number; events: number } {
  const db = new Database(file, { readonly: true })
  try {
    const { maxJobId, events } = db.prepare('SELECT (SELECT coalesce(max(job_id), 0) FROM jobs) AS maxJobId, (SELECT count(*) FROM events) AS events').get() as { maxJobId: number; events: number }
    return { maxJobId, events }
  } finally {
    db.close()
  }
}

const work = mkdtempSync(join(tmpdir(), 'g2sentry-growth-'))
process.env.G2SENTRY_BENCH_JOB_ROUTES = '1'
const results = new Map<number, RoundResult[]>()
const bytes = new Map<number, number>()
try {
  console.log(`\n${rounds} rounds, sizes alternating; each run appends for ${duration} s at ${connections} connections (new jobs, ${fmt(jobs)} of them), then reads random jobs for 5 s at 10 connections. Each run starts from a fresh copy of the cached log (the blocks the previous run changed are copied back, then flushed).\n`)
  for (let r = 0; r < rounds; r++) {
    for (const size of sizes) {
      const file = join(work, `log-${size}.db`)
      const source = sources.get(size)
      if (source === undefined) {
        for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true })
      } else {
        const started = performance.now()
        const written = freshCopy(source, file)
        console.log(`log of ${fmt(size)}: fresh copy in ${fmt((performance.now() - started) / 1000, 1)} s (${fmt(written / 2 ** 20)} MiB written)`)
      }
      const before = source === undefined ? { maxJobId: 0, events: 0 } : extent(file)
      const result = await round({ name: `log of ${fmt(size)}`, args: ['plugin', '$DB'] }, connections, duration, jobs, {
        db: file,
        firstJobId: before.maxJobId + 1,
        reads: { maxJobId: before.maxJobId + jobs, duration: 5 }
      })
      results.set(size, [...(results.get(size) ?? []), result])
      const after = extent(file)
      bytes.set(size, statSync(file).size / after.events)
      console.log(`round ${r + 1}, log of ${fmt(size)}: ${fmt(result.rps)} appends/s, p99 ${result.p99} ms, GET p99 ${result.readP99} ms, ${fmt(result.readCpuUs ?? NaN)} µs CPU/GET`)
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true })
}

const base = median((results.get(sizes[0] as number) ?? []).map((r) => r.rps))
const widths = [22, 22, 9, 8, 12, 12, 12, 12]
const row = (cells: string[]) => cells.map((c, i) => i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number)).join('  ')
console.log('')
console.log(row(['events already in log', 'appends/s median', '× empty', 'p99 ms', 'GET p99 ms', 'CPU µs/req', 'CPU µs/GET', 'bytes/event']))
for (const size of sizes) {
  const rs = results.get(size) ?? []
  const rps = rs.map((r) => r.rps)
  console.log(row([fmt(size), `${fmt(median(rps))} [${fmt(Math.min(...rps))}–${fmt(Math.max(...rps))}]`, `${fmt(median(rps) / base, 2)}×`,
    fmt(median(rs.map((r) => r.p99)), 1), fmt(median(rs.map((r) => r.readP99 ?? NaN)), 1), fmt(median(rs.map((r) => r.serverCpuUs ?? NaN))),
    fmt(median(rs.map((r) => r.readCpuUs ?? NaN))),
    fmt(bytes.get(size) ?? NaN)]))
}
