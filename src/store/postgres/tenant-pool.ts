// The pool every PostgreSQL query of the store goes through. It assumes nothing of the session,
// so that a connection pooler in transaction mode (PgBouncer's default pool_mode for this use)
// may hand each transaction to another server connection, and may refuse or drop startup
// options: whatever a statement needs holds inside that statement or its transaction.
// - The schema: every g2sentry table the SQL names is qualified with it here, at the one place
//   all SQL passes, so no query depends on search_path (which a pooler would drop, sending two
//   tenants' rows to one schema).
// - Durability: every transaction begins with SET LOCAL synchronous_commit = on, and a single
//   write statement is run in such a transaction, whatever the server's, the role's or the
//   pooler's default.
// - Named prepared statements: named after a hash of their text (so a name always means the same
//   statement on any server connection, whichever tenant prepared it), and given up for the
//   store's lifetime when the server shows they are not carried (a pooler that does not track them).
import { createHash } from 'node:crypto'
import { errors } from '../../errors.js'
import type { ArrayQuery, Client, NamedQuery, Pool, QueryResult } from './postgres-types.js'

/** Every table the migrations create (test/integration/pooler.test.ts checks the list against them). */
export const G2SENTRY_TABLES = [
  'events', 'jobs', 'quarantine', 'g2sentry_chain', 'leases', 'consumer_checkpoints', 'consumer_parked',
  'reconcile_checks', 'reconcile_failures', 'reconcile_queue', 'partner_limits', 'partner_requests', 'g2sentry_migrations',
  'checkpoint_jobs'
] as const

// A table where SQL names a relation: after FROM, JOIN, INTO, UPDATE, TABLE, LIKE or USING, not
// already qualified and not a longer name. The store's SQL writes keywords in capitals.
const TABLE_REF = new RegExp(`\\b(FROM|JOIN|INTO|UPDATE|TABLE|LIKE|USING)(\\s+)(${G2SENTRY_TABLES.join('|')})\\b(?![.(])`, 'g')

/** `sql` with every g2sentry table qualified with `schema`. */
export const qualify = (sql: string, schema: string): string => sql.replace(TABLE_REF, `$1$2${schema}.$3`)

const SYNC = 'SET LOCAL synchronous_commit = on'
const BEGIN = /^\s*BEGIN\b[^;]*/
const WRITE = /^\s*(INSERT|UPDATE|DELETE)\b|^\s*WITH\b[\s\S]*\b(INSERT|UPDATE|DELETE)\b/

/** `sql` with SET LOCAL synchronous_commit = on after its BEGIN, when it opens a transaction. */
export const durableBegin = (sql: string): string => BEGIN.test(sql) && !sql.includes(SYNC) ? sql.replace(BEGIN, (begin) => `${begin}; ${SYNC}`) : sql

// The server's answer when a named statement is not on the server connection the client believes
// prepared it (invalid_sql_statement_name), or already is on one it believes new (duplicate_prepared_statement).
const NOT_CARRIED = new Set(['26000', '42P05'])

export interface TenantPoolOptions {
  schema: string
  /** Use named prepared statements (default true); false behind a pooler that does not carry them. */
  preparedStatements?: boolean | undefined
}

type AnyQuery = string | ArrayQuery | NamedQuery | { text: string; values?: unknown[]; rowMode?: 'array' }

/** `raw` (a pg Pool) seen through the rules above. */
export function tenantPool (raw: Pool, options: TenantPoolOptions): Pool & { preparedStatements: () => boolean } {
  let prepared = options.preparedStatements !== false
  const names = new Map<string, string>()

  const rewrite = (query: AnyQuery): AnyQuery => {
    if (typeof query === 'string') return durableBegin(qualify(query, options.schema))
    const text = durableBegin(qualify(query.text, options.schema))
    if (!('name' in query)) return { ...query, text }
    if (!prepared) return { text, values: query.values }
    let name = names.get(text)
    if (name === undefined) {
      name = `g2s_${createHash('sha256').update(text).digest('hex').slice(0, 40)}`
      names.set(text, name)
    }
    return { name, text, values: query.values }
  }

  const run = async (target: { query: (...args: any[]) => Promise<any> }, query: AnyQuery, values?: unknown[]): Promise<QueryResult<unknown>> => {
    const sent = rewrite(query)
    try {
      return await (typeof sent === 'string' ? target.query(sent, values) : target.query(sent))
    } catch (error) {
      if (typeof sent !== 'string' && 'name' in sent && NOT_CARRIED.has((error as { code?: string }).code ?? '')) {
        prepared = false
        process.emitWarning('the server lost track of a named prepared statement: a connection pooler in transaction mode is in between ' +
          'and does not carry them; the store uses unnamed statements from now on (set preparedStatements: false to start that way)',
        { code: 'FST_G2SENTRY_PREPARED_STATEMENTS_OFF' })
      }
      throw error
    }
  }

  const wrap = (client: Client): Client => ({
    query: ((query: AnyQuery, values?: unknown[]) => run(client, query, values)) as Client['query'],
    release: (error) => client.release(error)
  })

  /** A single write, in a transaction of its own so that it commits with synchronous_commit on. */
  async function durableWrite (query: AnyQuery, values?: unknown[]): Promise<QueryResult<unknown>> {
    const client = wrap(await raw.connect())
    try {
      await client.query('BEGIN')
      const result = await (client.query as (q: AnyQuery, v?: unknown[]) => Promise<QueryResult<unknown>>)(query, values)
      await client.query('COMMIT')
      client.release()
      return result
    } catch (error) {
      await client.query('ROLLBACK').then(() => client.release(), () => client.release(true))
      throw error
    }
  }

  return {
    query: ((query: AnyQuery, values?: unknown[]) => WRITE.test(typeof query === 'string' ? query : query.text)
      ? durableWrite(query, values)
      : run(raw, query, values)) as Client['query'],
    connect: async () => wrap(await raw.connect()),
    end: () => raw.end(),
    on: raw.on.bind(raw) as Pool['on'],
    preparedStatements: () => prepared
  }
}

/** Throws unless every g2sentry table is in `schema`, the one every query names. */
export async function requireTables (pool: Pick<Pool, 'query'>, schema: string, where: string): Promise<void> {
  const { rows } = await pool.query<{ tablename: string }>('SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename = ANY($2::text[])',
    [schema, G2SENTRY_TABLES])
  const found = new Set(rows.map((row) => row.tablename))
  const missing = G2SENTRY_TABLES.filter((table) => !found.has(table))
  if (missing.length > 0) throw new errors.DATABASE_OPEN_FAILED(where, `schema ${schema} does not hold the g2sentry tables ${missing.join(', ')}`)
}
