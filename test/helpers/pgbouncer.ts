/**
 * A real PgBouncer in front of the test PostgreSQL server, for the tests that prove the store
 * works behind a connection pooler. Each call starts one of its own on a free port, in
 * transaction mode with PgBouncer's defaults (nothing in `ignore_startup_parameters`, no
 * prepared-statement tracking, default_pool_size 20, max_client_conn 100) unless `settings` says
 * otherwise, and stops it when the test ends.
 *
 * Without a `pgbouncer` binary the test skips with one line (`.ci/run` installs Debian's). It
 * refuses to run as root: as root, it is started as the `postgres` user.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import type { Test } from 'tap'
import { pgUrl } from './pg.js'

export interface PgBouncer {
  /** `pgUrl()` with its host and port replaced by PgBouncer's (and the password given, if any). */
  url: string
  /** PgBouncer's log so far, for a failing test's message. */
  log: () => string
}

const BINARIES = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer', '/usr/local/bin/pgbouncer']

/** Where the pgbouncer binary is, or undefined. */
export function pgbouncerBinary (): string | undefined {
  const found = spawnSync('sh', ['-c', 'command -v pgbouncer'], { encoding: 'utf8' })
  const onPath = found.status === 0 ? found.stdout.trim() : ''
  if (onPath !== '') return onPath
  return BINARIES.find((path) => existsSync(path))
}

/**
 * Call at the top of a PgBouncer test: false (and the test planned away with one loud line) when
 * PgBouncer is not installed; the test must then do nothing else.
 */
export function requirePgBouncer (t: Test): boolean {
  if (pgbouncerBinary() !== undefined) return true
  t.plan(0, 'PGBOUNCER NOT INSTALLED: skipping the connection-pooler tests (apt-get install pgbouncer; .ci/run installs it)')
  return false
}

async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

export interface PgBouncerOptions {
  /** Extra `[pgbouncer]` settings, e.g. `{ ignore_startup_parameters: 'options' }`. */
  settings?: Record<string, string | number>
  /** Roles besides the URL's user that may log in (trust auth still needs them in the auth file). */
  users?: string[]
  /** The URL's user's password in the auth file (for an auth_type that checks it); none by default. */
  password?: string
}

/** Starts a PgBouncer for `t` in front of `pgUrl()`, stopped (by its pid) when `t` ends. */
export async function startPgBouncer (t: Test, options: PgBouncerOptions = {}): Promise<PgBouncer> {
  const bouncer = await launchPgBouncer(pgUrl(), options)
  t.teardown(bouncer.stop)
  return bouncer
}

/** Starts a PgBouncer in front of `serverUrl` (also for bench/run.ts); `stop` ends it, by its pid. */
export async function launchPgBouncer (serverUrl: string, options: PgBouncerOptions = {}): Promise<PgBouncer & { stop: () => void }> {
  const binary = pgbouncerBinary()
  if (binary === undefined) throw new Error('pgbouncer is not installed')
  const server = new URL(serverUrl)
  const dir = mkdtempSync(join(tmpdir(), 'g2s-pgbouncer-'))
  const port = await freePort()
  const users = [decodeURIComponent(server.username) || 'postgres', ...(options.users ?? [])]
  const ini = join(dir, 'pgbouncer.ini')
  const logfile = join(dir, 'pgbouncer.log')
  const pidfile = join(dir, 'pgbouncer.pid')
  const settings: Record<string, string | number> = {
    listen_addr: '127.0.0.1',
    listen_port: port,
    unix_socket_dir: '',
    auth_type: 'trust',
    auth_file: join(dir, 'userlist.txt'),
    pool_mode: 'transaction',
    logfile,
    pidfile,
    ...options.settings
  }
  writeFileSync(join(dir, 'userlist.txt'), users.map((user, i) => `"${user}" "${i === 0 ? options.password ?? '' : ''}"\n`).join(''))
  writeFileSync(ini, [
    '[databases]',
    `* = host=${server.hostname} port=${server.port === '' ? 5432 : server.port}`,
    '[pgbouncer]',
    ...Object.entries(settings).map(([key, value]) => `${key} = ${value}`)
  ].join('\n') + '\n')
  const root = process.getuid?.() === 0
  if (root) {
    execFileSync('chown', ['-R', 'postgres', dir])
    execFileSync('su', ['postgres', '-s', '/bin/sh', '-c', `${binary} -d ${ini}`], { stdio: 'pipe' })
  } else {
    execFileSync(binary, ['-d', ini], { stdio: 'pipe' })
  }
  const log = (): string => existsSync(logfile) ? readFileSync(logfile, 'utf8') : ''
  const stop = (): void => {
    try {
      // SIGTERM: immediate shutdown; the tests have closed their clients by now.
      process.kill(Number(readFileSync(pidfile, 'utf8').trim()), 'SIGTERM')
    } catch {}
    rmSync(dir, { recursive: true, force: true })
  }
  const url = new URL(serverUrl)
  url.hostname = '127.0.0.1'
  url.port = String(port)
  if (options.password !== undefined) url.password = options.password
  // Up once it answers a query through to PostgreSQL.
  for (let attempt = 0; ; attempt++) {
    const client = new pg.Client({ connectionString: url.toString(), connectionTimeoutMillis: 1000 })
    client.on('error', () => {})
    try {
      await client.connect()
      await client.query('SELECT 1')
      await client.end()
      break
    } catch (error) {
      await client.end().catch(() => {})
      if (attempt >= 50) {
        const output = log().slice(-2000)
        stop()
        throw new Error(`PgBouncer did not start: ${(error as Error).message}\n${output}`)
      }
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  return { url: url.toString(), log, stop }
}
