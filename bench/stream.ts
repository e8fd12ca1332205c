// The stream scenario: `GET /jobs/stream` clients with `Last-Event-ID: 0` on a long log, against
// a server in its own process (bench/server.ts `stream FILE`, a fresh copy of the log each run),
// while a probe sends one request at a time (GET /jobs/:id and signed callbacks, alternating) and
// the server's RSS is read from /proc every 50 ms. Readers that never read pause their response,
// so the kernel's buffers fill and the server's writes stop being accepted.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { copyFileSync, readFileSync, rmSync } from 'node:fs'
import { request, type ClientRequest } from 'node:http'
import { signBody } from '../src/domain/verify-signature.js'

const SECRET = 'bench-secret'

export type Readers = 'none' | 'stalled' | 'reading'

export interface StreamRun {
  readers: Readers
  count: number
  probes: number
  /** The slowest probe request, and the 99th percentile, in ms. */
  worstMs: number
  p99Ms: number
  /** Server RSS before the readers connected, and the highest reached while they were connected, in MB. */
  rssBeforeMb: number
  rssPeakMb: number
  /** Bytes of the stream the readers received by the end of the run, all together. */
  streamBytes: number
  /** The longest the server's event loop was held during the run, in ms (monitorEventLoopDelay, 10 ms resolution). */
  loopMaxMs: number
  /** Readers the server disconnected during the run. */
  cut: number
  failures: number
}

/** Resident set size of a process, in MB, from /proc (Linux); NaN elsewhere. */
function rssMb (pid: number): number {
  try {
    const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    return Number(kb) / 1024
  } catch {
    return Number.NaN
  }
}

async function startServer (file: string): Promise<{ child: ChildProcess; base: string; output: () => string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/server.ts', 'stream', file], { stdio: ['ignore', 'pipe', 'inherit'] })
  let output = ''
  child.stdout!.on('data', (chunk) => { output += String(chunk) })
  while (child.exitCode === null) {
    const match = /listening (\S+)/.exec(output)
    if (match) return { child, base: match[1] as string, output: () => output }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error('the stream server exited before listening')
}

interface Reader { request: ClientRequest; bytes: number; cut: boolean }

function openReader (base: string, reads: boolean): Reader {
  const reader: Reader = { request: request(`${base}/jobs/stream`, { headers: { 'last-event-id': '0' }, agent: false }), bytes: 0, cut: false }
  reader.request.on('response', (res) => {
    if (!reads) res.pause()
    else res.on('data', (chunk: Buffer) => { reader.bytes += chunk.length })
    res.on('error', () => { reader.cut = true })
    res.on('close', () => { if (!res.complete) reader.cut = true })
  })
  reader.request.on('error', () => { reader.cut = true })
  reader.request.end()
  return reader
}

/** One run: a fresh server on a copy of `log`, the probe for `seconds`, `count` readers from the second second on. */
export async function streamRun (log: string, readers: Readers, count: number, seconds: number, jobs: number): Promise<StreamRun> {
  const file = `${log}.${readers}.db`
  copyFileSync(log, file)
  const { child, base, output } = await startServer(file)
  const pid = child.pid as number
  const latencies: number[] = []
  let failures = 0
  let rssBefore = Number.NaN
  let rssPeak = 0
  const open: Reader[] = []
  try {
    // Warm up the routes the probe uses, so that their first compilation is not counted.
    for (let i = 0; i < 20; i++) await fetch(`${base}/jobs/${1 + i}`).then((r) => r.arrayBuffer())
    const sampler = setInterval(() => { if (open.length > 0 || readers === 'none') rssPeak = Math.max(rssPeak, rssMb(pid)) }, 50)
    const started = performance.now()
    let n = 0
    while (performance.now() - started < seconds * 1000) {
      if (Number.isNaN(rssBefore) && performance.now() - started >= 1000) {
        rssBefore = rssMb(pid)
        child.kill('SIGUSR2')
        if (readers !== 'none') for (let i = 0; i < count; i++) open.push(openReader(base, readers === 'reading'))
      }
      const t0 = performance.now()
      try {
        if (n % 2 === 0) {
          const response = await fetch(`${base}/jobs/${1 + (n * 7919) % jobs}`)
          await response.arrayBuffer()
          if (response.status !== 200 && response.status !== 404) failures++
        } else {
          const body = JSON.stringify({ jobId: 10_000_000 + n, eventType: 'JobAssigned', jobName: `Probe ${n}`, jobStatus: 'Assigned' })
          const response = await fetch(`${base}/callbacks/g2sentry`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-signature': signBody(body, SECRET) }, body })
          await response.arrayBuffer()
          if (response.status !== 200) failures++
        }
      } catch {
        failures++
      }
      latencies.push(performance.now() - t0)
      n++
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    clearInterval(sampler)
    const sorted = [...latencies].sort((a, b) => a - b)
    const cut = open.filter((reader) => reader.cut).length
    for (const reader of open) reader.request.destroy()
    child.kill('SIGTERM')
    await once(child, 'exit')
    return {
      readers,
      count: readers === 'none' ? 0 : count,
      probes: latencies.length,
      worstMs: sorted[sorted.length - 1] ?? Number.NaN,
      p99Ms: sorted[Math.floor(sorted.length * 0.99)] ?? Number.NaN,
      rssBeforeMb: rssBefore,
      rssPeakMb: Math.max(rssPeak, rssBefore),
      streamBytes: open.reduce((sum, reader) => sum + reader.bytes, 0),
      cut,
      loopMaxMs: Number(/loop-max-ms (\S+)/.exec(output())?.[1]),
      failures
    }
  } finally {
    for (const reader of open) reader.request.destroy()
    if (child.exitCode === null) child.kill('SIGKILL')
    rmSync(file, { force: true })
    rmSync(`${file}-wal`, { force: true })
    rmSync(`${file}-shm`, { force: true })
  }
}
