/**
 * The published CLI entry (bin/g2sentry.js → dist/cli/bin.js, built by `npm test` before tap runs)
 * in a child process, and a real database written by the plugin for it to read.
 */
import Fastify, { type LightMyRequestResponse } from 'fastify'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import g2sentry from '../../src/index.js'
import { simulatedDeliveries } from '../../src/simulator/simulate.js'
import { signBody } from '../../src/domain/verify-signature.js'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const BIN = join(ROOT, 'bin', 'g2sentry.js')
const execFileAsync = promisify(execFile)

export interface Run { code: number; stdout: string; stderr: string }

export interface CliOptions {
  /** The child's whole environment; by default `cliEnv()`, this process's without the callback secrets. */
  env?: NodeJS.ProcessEnv
  /** Killed after this many ms; default 30 000. */
  timeout?: number
  /** Bytes of stdout or stderr beyond which it is killed; Node's default (1 MiB) unless given. */
  maxBuffer?: number
  /** Throw (with its output) when it exits non-zero, instead of reporting the code. */
  expectSuccess?: boolean
}

/** This process's environment without the callback secrets, plus `extra`: no secret unless a test gives one. */
export function cliEnv (extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env }
  delete env.G2SENTRY_CALLBACK_SECRET
  delete env.G2SENTRY_CALLBACK_SECRET_PREVIOUS
  return { ...env, ...extra }
}

/** Runs the published CLI entry with `args`; reports the exit code rather than rejecting, unless `expectSuccess`. */
export async function runCli (args: string[], options: CliOptions = {}): Promise<Run> {
  const { env = cliEnv(), timeout = 30_000, maxBuffer, expectSuccess = false } = options
  let run: Run
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, [BIN, ...args], { cwd: ROOT, env, timeout, ...(maxBuffer === undefined ? {} : { maxBuffer }) })
    run = { code: 0, stdout, stderr }
  } catch (error) {
    const e = error as { code?: unknown; stdout?: string; stderr?: string }
    if (typeof e.code !== 'number') throw error
    run = { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }
  }
  if (expectSuccess && run.code !== 0) {
    throw new Error(`g2sentry ${args.join(' ')} exited ${run.code}:\n${run.stdout}${run.stderr}`)
  }
  return run
}

/** `runCli(args)` with the defaults. */
export const cli = (...args: string[]): Promise<Run> => runCli(args)

/** What each simulated delivery gets, in order (see src/simulator/simulate.ts and the rules table of docs/design.md). */
export const SIMULATED_OUTCOMES = ['applied', 'applied', 'duplicate', 'applied', 'stale', 'applied', 'stale',
  'applied', 'applied', 'applied', 'unsupported']

/**
 * Posts the simulated deliveries, signed with `secret`, to the plugin on `database` (a SQLite
 * file or a postgres:// URL) and returns the exact bodies posted and their outcomes, in order.
 * Each response goes to `onResponse` (by default: anything but a 200 throws).
 */
export async function writeSimulatedLog (
  database: string,
  secret: string,
  onResponse: (response: LightMyRequestResponse, index: number) => void = (response) => {
    if (response.statusCode !== 200) throw new Error(`delivery refused: ${response.statusCode} ${response.body}`)
  }
): Promise<{ bodies: string[]; outcomes: string[] }> {
  const app = Fastify()
  await app.register(g2sentry, { secret, database })
  const bodies: string[] = []
  const outcomes: string[] = []
  try {
    for (const delivery of simulatedDeliveries()) {
      const body = JSON.stringify(delivery.payload)
      const response = await app.inject({
        method: 'POST',
        url: '/callbacks/g2sentry',
        headers: { 'content-type': 'application/json', 'x-signature': signBody(body, secret) },
        payload: body
      })
      onResponse(response, bodies.length)
      bodies.push(body)
      outcomes.push((response.json() as { outcome: string }).outcome)
    }
  } finally {
    await app.close()
  }
  return { bodies, outcomes }
}
