// A PostgreSQL store's connections: the `pg` pool on the store's schema (through tenant-pool.ts,
// so nothing depends on a session setting), the transaction helper, the migrations, and the query
// of the chain's head that the writer and the readers share.
import { join } from 'node:path'
import { errors } from '../../errors.js'
import { loadMigrations, MIGRATIONS_ROOT, pendingMigrations, type AppliedMigration } from '../migrations.js'
import { logLocation, requireLog, requireLogTable } from './postgres-read-only.js'
import type { Client, Pool } from './postgres-types.js'
import { requireTables, tenantPool } from './tenant-pool.js'

export type { ArrayQuery, Client, NamedQuery, Pool, QueryResult } from './postgres-types.js'

export interface PoolSettings {
  /** e.g. `postgres://user@host:5432/db`. */
  connectionString: string
  /** Schema that holds the tables (default `public`); created if missing. */
  schema?: string | undefined
  /** Most connections in the pool (default 10). */
  max?: number | undefined
  /**
   * Prepare the append statements once per connection (default true). Set false behind a pooler
   * in transaction mode that does not carry named prepared statements (PgBouncer before 1.21, or
   * without max_prepared_statements); the store also turns them off by itself the first time the
   * server shows it lost one.
   */
  preparedStatements?: boolean | undefined
  /**
   * Open an existing log for reading only: no schema or table is created and nothing is migrated
   * (see postgres-read-only.ts for what is refused).
   */
  readOnly?: boolean | undefined
  /**
   * Open only a schema that already holds a g2sentry log (else `FST_G2SENTRY_NO_LOG`): no schema
   * or table is created, as for a misspelled `?schema=`; a log that is behind is migrated.
   */
  existingLog?: boolean | undefined
}

const INT8 = 20
// A fixed key for the migrations' advisory lock, so it does not collide with the app's own.
const LOCK_SEED = 0x6732_7365
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/

/**
 * Loads the `pg` driver, opens a pool on the settings' schema and brings the schema up to date
 * (creating it if missing); with `readOnly`, only checks that a log is there (postgres-read-only.ts).
 */
export async function openPool (settings: PoolSettings): Promise<Pool> {
  const schema = settings.schema ?? 'public'
  if (!SCHEMA_NAME.test(schema)) throw new errors.INVALID_OPTION(`schema must be a lower-case SQL identifier, got "${schema}"`)
  let pg: Awaited<typeof import('pg')>['default']
  try {
    pg = (await import('pg')).default
  } catch {
    throw new errors.MISSING_DRIVER('A PostgreSQL database needs the "pg" package: npm install pg')
  }
  // No startup options: a pooler refuses them (PgBouncer's default) or drops them silently
  // (ignore_startup_parameters); the schema and synchronous_commit hold per statement and per
  // transaction instead (tenant-pool.ts).
  const raw: Pool = new pg.Pool({
    connectionString: settings.connectionString,
    max: settings.max ?? 10,
    // Sequence numbers, job ids and times are bigint columns that always fit in a double.
    types: { getTypeParser: (oid: number, format?: string) => oid === INT8 ? Number : pg.types.getTypeParser(oid, format as 'text') }
  }) as unknown as Pool
  // A client that loses its connection must not crash the app: an idle one is replaced, and a
  // checked-out one fails its query (which the caller handles); the 'error' event is not needed.
  raw.on('error', () => {})
  raw.on('connect', (client) => { client.on('error', () => {}) })
  const pool = tenantPool(raw, { schema, preparedStatements: settings.preparedStatements })
  const where = logLocation(settings.connectionString, settings.schema)
  try {
    if (settings.readOnly === true) await requireLog(pool, schema, where)
    else await migrate(pool, schema, settings.existingLog === true ? where : undefined)
    await requireTables(pool, schema, where)
  } catch (error) {
    await pool.end()
    throw openError(error, settings.connectionString, where)
  }
  return pool
}

/**
 * What went wrong opening the log, as FST_G2SENTRY_DATABASE_OPEN_FAILED with the problem named;
 * the plugin's own errors pass through. The message never holds the password, even where the
 * server or a pooler echoes part of the connection string.
 */
export function openError (error: unknown, connectionString: string, where: string): Error {
  if (typeof (error as { code?: unknown }).code === 'string' && (error as { code: string }).code.startsWith('FST_G2SENTRY_')) return error as Error
  const { code, message } = error as { code?: string; message?: string }
  const said = String(message ?? error)
  let problem: string
  if (/unsupported startup parameter/.test(said)) {
    problem = `a connection pooler in between refused a startup parameter (${said}); remove it from the connection string, ` +
      'or list it in the pooler\'s ignore_startup_parameters'
  } else if (code === '28P01' || /password authentication failed/.test(said)) problem = `the server refused the password (${said})`
  else if (code === '3D000') problem = `the database does not exist (${said})`
  else if (code === '42501') problem = `the role may not create or use the schema (${said})`
  else if (/does not support SSL|SSL (is )?required|no encryption|SSL off|sslmode/i.test(said)) {
    problem = `TLS: ${said}; set sslmode in the connection string to what the server expects`
  } else if (code === '28000') problem = `the server refused the login (${said})`
  else if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH' || code === 'ETIMEDOUT') {
    problem = `nothing answered there (${said}): is the server running, and the host and port right?`
  } else problem = code === undefined ? said : `${said} (${code})`
  return new errors.DATABASE_OPEN_FAILED(where, redactPassword(problem, connectionString), { cause: error })
}

/** `text` with the connection string's password, if any, replaced by ***. */
function redactPassword (text: string, connectionString: string): string {
  let password = ''
  try {
    password = decodeURIComponent(new URL(connectionString).password)
  } catch {}
  return password === '' ? text : text.split(password).join('***')
}

/** Runs `work` in a transaction opened with `begin` on a client of its own; rolls back if it throws. */
export async function transaction<T> (pool: Pool, begin: string, work: (client: Client) => Promise<T>): Promise<T> {
  const client = await pool.connect()
  try {
    await client.query(begin)
    const result = await work(client)
    await client.query('COMMIT')
    client.release()
    return result
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {})
    client.release(true)
    throw error
  }
}

// Every append links to the row before it, so appends from all instances take turns on the
// chain's head row.
export const SELECT_HEAD = 'SELECT seq, hash FROM g2sentry_chain WHERE id = 1'

/** Brings `schema` up to date, creating it unless `existingLogAt` names the log that must already be there. */
async function migrate (pool: Pool, schema: string, existingLogAt?: string): Promise<void> {
  const all = loadMigrations(join(MIGRATIONS_ROOT, 'postgres'))
  const client = await pool.connect()
  try {
    // The migrations' own SQL names tables unqualified: search_path, for this transaction only.
    await client.query(`BEGIN; SET LOCAL search_path TO ${schema}`)
    // Instances starting together migrate one at a time.
    await client.query('SELECT pg_advisory_xact_lock($1)', [LOCK_SEED])
    // CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege even when the schema exists.
    if (existingLogAt !== undefined) await requireLogTable(client, schema, existingLogAt)
    const { rows: [found] } = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema])
    if (found === undefined) await client.query(`CREATE SCHEMA ${schema}`)
    await client.query(`CREATE TABLE IF NOT EXISTS g2sentry_migrations (
      version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)`)
    const { rows: applied } = await client.query<AppliedMigration>('SELECT version, name, checksum FROM g2sentry_migrations ORDER BY version')
    for (const migration of pendingMigrations(all, applied)) {
      await client.query(migration.sql)
      await client.query('INSERT INTO g2sentry_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)',
        [migration.version, migration.name, migration.checksum, Date.now()])
    }
    await client.query('COMMIT')
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {})
    throw error
  } finally {
    client.release()
  }
}
