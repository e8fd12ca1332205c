/**
 * The example server as a newcomer runs it (`npm start` is `tsx examples/server.ts`; under tap the
 * child loads tap's TypeScript loader instead, see ts-loader.ts) in a child process, configured by
 * environment variables, and what the tests do with it: wait for it to listen, send it traffic
 * over keep-alive connections, drive it with the simulator CLI, stop it, and read the SQLite file
 * it leaves.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { type Agent, request as httpRequest } from 'node:http'
import { createServer } from 'node:net'
import type { Test } from 'tap'
import { readLogStream } from '../../src/log/read-log.js'
import { sqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import type { LogRow } from '../../src/domain/types.js'
import type { RebuildReport } from '../../src/store/contract.js'
import { ROOT, runCli, type Run } from './cli-process.js'
import { asNewcomer, TS_LOADER } from './ts-loader.js'

/** The environment without any of the variables the example reads, so each test sets only its own. */
export function baseEnv (): NodeJS.ProcessEnv {
  const env = { ...process.env }
  for (const name of ['NODE_ENV', 'PORT', 'HOST', 'G2SENTRY_DB', 'G2SENTRY_CALLBACK_SECRET', 'G2SENTRY_CALLBACK_SECRET_PREVIOUS', 'G2SENTRY_READ_TOKEN',
    'G2SENTRY_FORWARD_URL', 'G2SENTRY_FORWARD_SECRET', 'G2SENTRY_FORWARD_MAX_BACKOFF_MS', 'G2SENTRY_FORWARD_MAX_ATTEMPTS',
    'G2SENTRY_API_URL', 'G2SENTRY_PARTNER_KEY', 'G2SENTRY_PARTNER_SECRET', 'G2SENTRY_RECONCILE_QUIET_MS', 'G2SENTRY_RECONCILE_EVERY_MS', 'G2SENTRY_RECONCILE_LEASE_MS',
    'G2SENTRY_REDACT_AFTER_MS', 'G2SENTRY_RETENTION_EVERY_MS', 'G2SENTRY_RETENTION_LEASE_MS']) delete env[name]
  return env
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const address = server.address()
  await new Promise<void>((resolve) => server.close(() => resolve()))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

export type Exit = { code: number | null; signal: NodeJS.Signals | null }

export interface LogLine { level: number; msg: string; [key: string]: unknown }

export interface StartOptions {
  port: number
  /** The example's variables (G2SENTRY_DB, G2SENTRY_CALLBACK_SECRET, NODE_ENV …); PORT and HOST come from `port`. */
  env?: Record<string, string>
  /**
   * What to keep of what the server writes. 'all' (the default): everything, stdout and stderr,
   * with stdout's JSON log lines parsed into `logs`. 'tail': only the last 8 000 characters and
   * no `logs`, for a server that logs every request under load.
   */
  keep?: 'all' | 'tail'
  /** Names the server in `listening`'s errors ("server A exited …"); "the server" without it. */
  name?: string
  /** Run with tsx, exactly as `npm start` does, instead of tap's loader (its coverage is not recorded). */
  newcomer?: boolean
}

export interface ExampleServer {
  child: ChildProcess
  port: number
  name: string | undefined
  /** Resolves with the exit code (or the signal) once the process has exited and its output is read. */
  exited: Promise<Exit>
  /** What the server wrote, stdout and stderr: all of it, or its tail (see `keep`). */
  output: () => string
  /** Its stdout lines that parsed as JSON log lines (with `keep: 'all'` only). */
  logs: LogLine[]
  /** Its stdout lines at level error (50) or above, as written. */
  errors: string[]
  /** Whether it has logged "Server listening". */
  isListening: () => boolean
  url: (path: string) => string
}

/** Starts examples/server.ts; SIGKILLed in teardown whatever happens. Does not wait for it to listen. */
export function startServer (t: Test, options: StartOptions): ExampleServer {
  const { port, env = {}, keep = 'all', name } = options
  const launch = options.newcomer === true
    ? asNewcomer({ ...baseEnv(), PORT: String(port), HOST: '127.0.0.1', ...env })
    : { args: [...TS_LOADER], env: { ...baseEnv(), PORT: String(port), HOST: '127.0.0.1', ...env } }
  const child = spawn(process.execPath, [...launch.args, 'examples/server.ts'], {
    cwd: ROOT,
    env: launch.env,
    stdio: ['ignore', 'pipe', 'pipe']
  })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  let output = ''
  let pending = ''
  let listening = false
  const logs: LogLine[] = []
  const errors: string[] = []
  const record = keep === 'all'
    ? (chunk: string) => { output += chunk }
    : (chunk: string) => { output = (output + chunk).slice(-8000) }
  // Drained line by line, whatever is kept.
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    record(chunk)
    const parts = (pending + chunk).split('\n')
    pending = parts.pop() ?? ''
    for (const line of parts) {
      if (!listening && line.includes('"msg":"Server listening')) listening = true
      if (/"level":(5|6)\d/.test(line)) errors.push(line)
      if (keep !== 'all') continue
      try {
        const parsed = JSON.parse(line) as LogLine
        if (typeof parsed === 'object' && parsed !== null && typeof parsed.msg === 'string') logs.push(parsed)
      } catch {}
    }
  })
  child.stderr?.setEncoding('utf8').on('data', record)
  // On 'close', not 'exit': what the child wrote last may still be unread in the pipe when 'exit'
  // fires, and tests read its logs as soon as it has exited.
  const exited = new Promise<Exit>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })))
  return {
    child,
    port,
    name,
    exited,
    output: () => output,
    logs,
    errors,
    isListening: () => listening,
    url: (path) => `http://127.0.0.1:${port}${path}`
  }
}

/** Waits for the "Server listening" log line; fails on exit or after `ms`. */
export async function listening (server: ExampleServer, ms = 20_000): Promise<void> {
  const who = server.name === undefined ? 'the server' : `server ${server.name}`
  const deadline = Date.now() + ms
  while (!server.isListening()) {
    if (server.child.exitCode !== null || server.child.signalCode !== null) throw new Error(`${who} exited before listening:\n${server.output()}`)
    if (Date.now() > deadline) throw new Error(`${who} did not listen within ${ms} ms:\n${server.output()}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** How the server exited, or 'timeout' when it is still running after `ms`. */
export async function exitWithin (server: ExampleServer, ms: number): Promise<Exit | 'timeout'> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), ms) })
  try {
    return await Promise.race([server.exited, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Sends SIGTERM (a clean shutdown) and reports how the server exited within `ms`. */
export function stop (server: ExampleServer, ms = 10_000): Promise<Exit | 'timeout'> {
  server.child.kill('SIGTERM')
  return exitWithin(server, ms)
}

/** The simulator through the published CLI entry, against the example on `port`, with none of the example's variables set. */
export function simulate (port: number, args: string[] = [], options: { expectSuccess?: boolean } = {}): Promise<Run> {
  return runCli(['simulate', '--url', `http://127.0.0.1:${port}/callbacks/g2sentry`, ...args],
    { env: baseEnv(), timeout: 15_000, ...options })
}

// ---------------------------------------------------------------------------------------------
// Traffic over keep-alive connections, and the file it leaves

export interface Reply { status: number; text: string }

/** One request to 127.0.0.1:`port` through `agent`; resolves with the status and the body as text. */
export function send (agent: Agent, port: number, method: 'GET' | 'POST', path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      method,
      path,
      agent,
      headers: body === undefined ? headers : { ...headers, 'content-length': String(body.length) }
    }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** Runs `work` over `items` with `concurrency` workers; a worker stops when `stop()` is true. */
export async function pool<T> (items: readonly T[], concurrency: number, work: (item: T) => Promise<void>, stop: () => boolean = () => false): Promise<void> {
  let next = 0
  const worker = async () => {
    while (!stop()) {
      const i = next++
      if (i >= items.length) return
      await work(items[i] as T)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
}

/** Every job the server projects, through GET /jobs page by page; `label` names the server in the error. */
export async function allJobs<J = unknown> (agent: Agent, port: number, label?: string): Promise<J[]> {
  const jobs: J[] = []
  let after: number | null = 0
  while (after !== null) {
    const reply = await send(agent, port, 'GET', `/jobs?limit=500&after=${after}`)
    if (reply.status !== 200) throw new Error(`GET /jobs${label === undefined ? '' : ` on ${label}`} answered ${reply.status}: ${reply.text}`)
    const page = JSON.parse(reply.text) as { jobs: J[]; next: number | null }
    jobs.push(...page.jobs)
    after = page.next
  }
  return jobs
}

/** The whole log of a SQLite file and a dry-run rebuild of it, with no server running on it. */
export async function readLogFile (file: string): Promise<{ rows: LogRow[]; report: RebuildReport }> {
  const store = sqliteStore({ filename: file })
  try {
    const rows: LogRow[] = []
    for await (const row of readLogStream(store)) rows.push(row)
    return { rows, report: await store.rebuild({ dryRun: true }) }
  } finally {
    await store.close()
  }
}
