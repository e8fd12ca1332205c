// HTTP load: each server in its own process, autocannon in this one, distinct signed bodies.
import autocannon from 'autocannon'
import Database from 'better-sqlite3'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { signBody } from '../src/domain/verify-signature.js'

const SECRET = 'bench-secret'
const STEPS = [
  { eventType: 'JobAssigned', jobStatus: 'Assigned', phone: true },
  { eventType: 'JobStarted', jobStatus: 'InProgress', phone: true },
  { eventType: 'JobCompleted', jobStatus: 'Completed', phone: false }
] as const

/** The n-th body of the load: every job's assignment, then every start, then every completion, then again with a new name. */
export function nthBody (n: number, jobs: number, firstJobId = 1): string {
  const lap = Math.floor(n / (jobs * STEPS.length))
  const step = STEPS[Math.floor(n / jobs) % STEPS.length] as (typeof STEPS)[number]
  const jobId = (n % jobs) + firstJobId
  return JSON.stringify({
    jobId,
    eventType: step.eventType,
    jobName: `Bench job ${jobId} lap ${lap}`,
    jobStatus: step.jobStatus,
    ...(step.phone ? { guardianPhone: `+1555${String(jobId).padStart(7, '0')}` } : {})
  })
}

/** A server to load: bench/server.ts with `args`, run from `cwd` (another checkout, for a baseline) or this one. */
export interface Target { name: string; args: string[]; cwd?: string | undefined }

export interface RoundResult {
  target: string
  connections: number
  rps: number
  p50: number
  p99: number
  /** 2xx answers the server sent (some may still be in flight when the client stops). */
  sent2xx: number
  other: number
  committed: number | null
  /** CPU time (user + system) the server process used per request during the measured run, in µs; null off Linux. */
  serverCpuUs: number | null
  /** Mean number of appends per commit; null for a target without group commit counts. */
  meanBatch: number | null
  /** p99 of `GET /jobs/:id` (ms) for random existing jobs, measured after the appends; null unless asked. */
  readP99: number | null
  /** Reads per second and the server's CPU time per read (µs, null off Linux) in that run; null unless asked. */
  readRps: number | null
  readCpuUs: number | null
}

/** What a round may do besides the defaults: an existing database, other job ids, a read run. */
export interface RoundOptions {
  /** Append into this SQLite file (for a `$DB` argument) instead of a fresh one; it is kept. */
  db?: string | undefined
  /** The load's job ids start here (default 1). */
  firstJobId?: number | undefined
  /** After the appends, `GET /jobs/:id` for random ids in 1..maxJobId at 10 connections for `duration` s. */
  reads?: { maxJobId: number; duration: number } | undefined
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux); null elsewhere. */
function cpuSeconds (pid: number): number | null {
  try {
    // Fields after the command name, which may hold spaces: state is the 3rd, utime the 14th, stime the 15th.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
  } catch {
    return null
  }
}
// Linux reports CPU times in USER_HZ, 100 per second on every architecture it runs on.
const CLOCK_TICKS = 100

async function startServer (args: string[], cwd?: string): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/server.ts', ...args], { stdio: ['ignore', 'pipe', 'inherit'], cwd })
  let output = ''
  child.stdout!.on('data', (chunk) => { output += String(chunk) })
  while (child.exitCode === null) {
    const match = /listening (\S+)/.exec(output)
    if (match) return { child, url: `${match[1]}/callbacks/g2sentry`, output: () => output }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`server ${args.join(' ')} exited before listening`)
}

async function fire (url: string, connections: number, duration: number, jobs: number, counter: { n: number }, firstJobId = 1) {
  return autocannon({
    url,
    connections,
    duration,
    requests: [{
      method: 'POST',
      setupRequest: (request) => {
        const body = nthBody(counter.n++, jobs, firstJobId)
        return { ...request, body, headers: { 'content-type': 'application/json', 'x-signature': signBody(body, SECRET) } }
      }
    }]
  })
}

/** Counts the events a target committed, once its server has stopped. */
async function countCommitted (args: string[], file: string, schema: string): Promise<number | null> {
  if (args.includes(file)) {
    const db = new Database(file, { readonly: true })
    const n = (db.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n
    db.close()
    return n
  }
  if (args.includes(schema)) {
    const { default: pg } = await import('pg')
    const client = new pg.Client({ connectionString: args[1] })
    await client.connect()
    try {
      return (await client.query(`SELECT count(*)::int AS n FROM ${schema}.events`)).rows[0].n as number
    } finally {
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
      await client.end()
    }
  }
  return null
}

function batchesOf (output: string): number | null {
  const [, batches, appends] = /batches (\d+) (\d+)/.exec(output) ?? []
  return batches === undefined || Number(batches) === 0 ? null : Number(appends) / Number(batches)
}

/** One round against one target: a fresh server (and database), a warm-up, then the measured run. */
export async function round (target: Target, connections: number, duration: number, jobs: number, options: RoundOptions = {}): Promise<RoundResult> {
  const dir = mkdtempSync(join(tmpdir(), 'g2sentry-bench-'))
  const file = options.db ?? join(dir, 'bench.db')
  const schema = `g2sentry_bench_${process.pid}_${Date.now()}`
  const args = target.args.map((arg) => arg === '$DB' ? file : arg === '$SCHEMA' ? schema : arg)
  const { child, url, output } = await startServer(args, target.cwd)
  try {
    const counter = { n: 0 }
    const warm = await fire(url, connections, 2, jobs, counter, options.firstJobId)
    const cpuBefore = cpuSeconds(child.pid as number)
    const result = await fire(url, connections, duration, jobs, counter, options.firstJobId)
    const cpuAfter = cpuSeconds(child.pid as number)
    let readP99: number | null = null
    let readRps: number | null = null
    let readCpuUs: number | null = null
    if (options.reads !== undefined) {
      const { maxJobId } = options.reads
      const readCpuBefore = cpuSeconds(child.pid as number)
      const reads = await autocannon({
        url: url.replace(/\/callbacks\/g2sentry$/, ''),
        connections: 10,
        duration: options.reads.duration,
        requests: [{ method: 'GET', setupRequest: (request) => ({ ...request, path: `/jobs/${1 + Math.floor(Math.random() * maxJobId)}` }) }]
      })
      const readCpuAfter = cpuSeconds(child.pid as number)
      readP99 = reads.latency.p99
      readRps = reads.requests.average
      readCpuUs = readCpuBefore === null || readCpuAfter === null ? null : (readCpuAfter - readCpuBefore) * 1e6 / reads.requests.total
    }
    child.kill('SIGTERM')
    await once(child, 'exit')
    const committed = await countCommitted(args, file, schema)
    return {
      target: target.name,
      connections,
      rps: result.requests.average,
      p50: result.latency.p50,
      p99: result.latency.p99,
      sent2xx: Number(/sent2xx (\d+)/.exec(output())?.[1] ?? NaN),
      serverCpuUs: cpuBefore === null || cpuAfter === null ? null : (cpuAfter - cpuBefore) * 1e6 / result.requests.total,
      meanBatch: batchesOf(output()),
      readP99,
      readRps,
      readCpuUs,
      other: warm.non2xx + warm.errors + warm.timeouts + result.non2xx + result.errors + result.timeouts,
      committed
    }
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
}
