/**
 * PostgreSQL for the tests: where it is, whether it answers, and a schema (or a database) of
 * its own for each test, dropped when the test ends.
 *
 * - `G2SENTRY_TEST_PG` names the server (a `postgres://` URL). When it is set, the PostgreSQL
 *   tests are required: an unreachable server fails them. `.ci/run` sets it.
 * - When it is unset (or empty), the tests use `postgres://postgres@127.0.0.1:5432/test` if that
 *   answers within 2 s, and otherwise skip with one line, so `npm test` passes on a laptop
 *   without PostgreSQL.
 * - Names carry this host and pid. What a test leaves because it never ended is dropped when the
 *   process runs out of work ('beforeExit'); what a killed process (a timeout) left is dropped by
 *   the next run on the same host, once it sees that pid is gone.
 */
import { createHash, randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import tap, { type Test } from 'tap'

export const DEFAULT_PG_URL = 'postgres://postgres@127.0.0.1:5432/test'

const required = (): boolean => (process.env.G2SENTRY_TEST_PG ?? '') !== ''

/** The server the PostgreSQL tests run against. */
export const pgUrl = (): string => required() ? process.env.G2SENTRY_TEST_PG as string : DEFAULT_PG_URL

/** The URL without its password, for messages. */
export function redact (url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '***'
    return parsed.toString()
  } catch {
    return url
  }
}

/** `url` with its database replaced by `database` (query parameters kept). */
export function withDatabase (url: string, database: string): string {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

let probe: Promise<Error | undefined> | undefined

/** Why PostgreSQL cannot be used (undefined when it answers). Probed once per process, 2 s at most. */
export function pgUnavailable (): Promise<Error | undefined> {
  probe ??= (async () => {
    const client = new pg.Client({ connectionString: pgUrl(), connectionTimeoutMillis: 2000 })
    client.on('error', () => {})
    try {
      await client.connect()
      await client.query('SELECT 1')
      return undefined
    } catch (error) {
      return error instanceof Error ? error : new Error(String(error))
    } finally {
      await client.end().catch(() => {})
    }
  })()
  return probe
}

/** True when PostgreSQL answers at `pgUrl()`. */
export const pgAvailable = async (): Promise<boolean> => (await pgUnavailable()) === undefined

let swept: Promise<void> | undefined

/**
 * Call at the top of a PostgreSQL test file: resolves true when the tests can run. Otherwise
 * plans the file away with one line (or, when G2SENTRY_TEST_PG asked for PostgreSQL, fails) and
 * resolves false; the file must then register no tests.
 */
export async function requirePg (t: Test): Promise<boolean> {
  const error = await pgUnavailable()
  if (error === undefined) {
    swept ??= sweep()
    await swept
    return true
  }
  const where = redact(pgUrl())
  if (required()) {
    t.fail(`G2SENTRY_TEST_PG is set but PostgreSQL is not reachable at ${where}: ${error.message}`)
    t.end()
  } else {
    t.plan(0, `PostgreSQL not reachable at ${where} (${error.message}): skipping PostgreSQL tests (set G2SENTRY_TEST_PG to require them)`)
  }
  return false
}

/** Runs `work` on a short-lived connection to `url` (default `pgUrl()`). */
export async function withClient<T> (work: (client: pg.Client) => Promise<T>, url = pgUrl()): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 })
  client.on('error', () => {})
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end().catch(() => {})
  }
}

// Names: g2s_test_<kind>_<host>_<pid>_<n>_<random>, kind s (schema), d (database) or r (role).
// The host and pid let a later run drop what a killed run (a timeout) left behind.
const HOST = createHash('sha256').update(hostname()).digest('hex').slice(0, 6)
const NAME = /^g2s_test_([sdr])_([0-9a-f]{6})_(\d+)_/
let counter = 0

/** A name no other test uses, for a schema (s), a database (d) or a role (r). */
export const uniqueName = (kind: 's' | 'd' | 'r'): string =>
  `g2s_test_${kind}_${HOST}_${process.pid}_${++counter}_${randomBytes(4).toString('hex')}`

// What this process created and has not dropped yet, in creation order. A test that never ends
// (a promise that never settles empties the event loop, and its teardown never runs) must not
// leave them behind: 'beforeExit' fires then, and may still do asynchronous work.
const leftovers = new Map<string, string>()

/** Records `statement` as the way to drop `name`, until `drop(name)` runs it. */
export const track = (name: string, statement: string): void => { leftovers.set(name, statement) }

/** Drops what `track` recorded under `name` (once). */
export async function drop (name: string): Promise<void> {
  const statement = leftovers.get(name)
  if (statement === undefined) return
  leftovers.delete(name)
  await withClient((client) => client.query(statement))
}

process.on('beforeExit', () => {
  if (leftovers.size === 0) return
  void (async () => {
    for (const name of [...leftovers.keys()]) await drop(name).catch(() => {})
  })()
})

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Drops the schemas, databases and roles that test processes of this host left behind when killed. */
async function sweep (): Promise<void> {
  const stale = (name: string): boolean => {
    const match = NAME.exec(name)
    return match !== null && match[2] === HOST && !alive(Number(match[3]))
  }
  await withClient(async (client) => {
    const names = async (query: string) => (await client.query<{ name: string }>(query)).rows.map((r) => r.name).filter(stale)
    for (const schema of await names("SELECT nspname AS name FROM pg_namespace WHERE nspname LIKE 'g2s\\_test\\_s\\_%'")) {
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {})
    }
    for (const database of await names("SELECT datname AS name FROM pg_database WHERE datname LIKE 'g2s\\_test\\_d\\_%'")) {
      await client.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => {})
    }
    for (const role of await names("SELECT rolname AS name FROM pg_roles WHERE rolname LIKE 'g2s\\_test\\_r\\_%'")) {
      await client.query(`DROP ROLE IF EXISTS ${role}`).catch(() => {})
    }
  })
}

/**
 * A schema name no other test uses (the store creates the schema); dropped with everything in it
 * when `t` ends. Stores on it should be closed by then: register their teardown after this call
 * or close them in the test.
 */
export function freshSchema (t: Test): string {
  const schema = uniqueName('s')
  track(schema, `DROP SCHEMA IF EXISTS ${schema} CASCADE`)
  t.teardown(() => drop(schema))
  return schema
}

/** A new, empty database; its URL is returned, and it is dropped when `t` ends. */
export async function freshDatabase (t: Test): Promise<string> {
  const database = uniqueName('d')
  track(database, `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
  await withClient((client) => client.query(`CREATE DATABASE ${database}`))
  t.teardown(() => drop(database))
  return withDatabase(pgUrl(), database)
}

/**
 * Registers `behaviour` twice, in order: on a SQLite file in the test's directory, and on a
 * fresh schema of the PostgreSQL server (skipped where there is none, as above).
 */
export async function onSqliteAndPostgres (
  names: { sqlite: string; postgres: string }, behaviour: (t: Test, database: string) => Promise<void>, file = 'g2.db'
): Promise<void> {
  const skip = !(await pgAvailable()) && !required() ? 'no PostgreSQL' : false
  tap.test(names.sqlite, async (t) => { await behaviour(t, join(t.testdir(), file)) })
  tap.test(names.postgres, { skip }, async (t) => {
    const url = new URL(pgUrl())
    url.searchParams.set('schema', freshSchema(t))
    await behaviour(t, url.href)
  })
}
