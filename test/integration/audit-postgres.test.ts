// The audit's tamper cases (test/audit-cases.ts) on PostgreSQL: a log of several of verify's
// ranges in a schema of its own per case, edited with plain SQL. Without a reachable server the
// file skips, unless G2SENTRY_TEST_PG asks for PostgreSQL.
import t, { type Test } from 'tap'
import { auditInRanges, auditLog, type AuditReport } from '../../src/log/audit.js'
import { postgresStore } from '../../src/store/postgres/postgres-store.js'
import { OLD_SECRET, oldSecretSeqs, PAGE_SIZE, RANGE_SIZE, ROWS, TAMPER_CASES, UNCHAINED, UNCHAINED_CASES, writeLongLog } from '../helpers/audit-cases.js'
import { SECRET } from '../helpers/fixtures.js'
import { freshSchema, pgUrl, requirePg, withClient } from '../helpers/pg.js'

/** The long log of test/audit-cases.ts in a fresh schema; with `unchained`, an old log whose first rows have no hash. */
async function longLog (t: Test, unchained = false): Promise<string> {
  const schema = freshSchema(t)
  const store = await postgresStore({ connectionString: pgUrl(), schema })
  try {
    await writeLongLog(store, unchained ? (sql) => run(schema, `${sql}; UPDATE g2sentry_chain SET hash = NULL`) : undefined)
  } finally {
    await store.close()
  }
  return schema
}

/** A fresh schema with a copy of every table of `template` and its rows: quicker than writing the log again. */
async function copyOf (t: Test, template: string): Promise<string> {
  const schema = freshSchema(t)
  await withClient(async (client) => {
    const { rows } = await client.query<{ name: string }>("SELECT table_name AS name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'", [template])
    await client.query(`CREATE SCHEMA ${schema}; ${rows.map(({ name }) =>
      `CREATE TABLE ${schema}.${name} (LIKE ${template}.${name} INCLUDING ALL); INSERT INTO ${schema}.${name} SELECT * FROM ${template}.${name}`).join('; ')}`)
  })
  return schema
}

/** Runs `sql` (statements separated by semicolons) in `schema`. */
const run = (schema: string, sql: string): Promise<void> =>
  withClient(async (client) => { await client.query(`SET search_path TO ${schema}; ${sql}`) })

/** The log in `schema` as the CLI's --db names it. */
const databaseOf = (schema: string): string => `${pgUrl()}?schema=${schema}`

/**
 * The audit of the log in `schema` in one pass, and in ranges of RANGE_SIZE and of 13 seqs checked
 * one after the other in this thread (as in test/audit.test.ts, where ranges of one seq are
 * tested too): each must give the one-pass report.
 */
async function auditEveryWay (t: Test, schema: string, name: string, secrets = [SECRET]): Promise<AuditReport> {
  const store = await postgresStore({ connectionString: pgUrl(), schema, readOnly: true })
  try {
    const database = databaseOf(schema)
    const onePass = await auditLog(store, { secrets, database, workers: 0 })
    for (const rangeSize of [RANGE_SIZE, 13]) {
      t.same(await auditInRanges(store, { database, secrets, rangeSize, pageSize: PAGE_SIZE }), onePass, `${name}: in ranges of ${rangeSize}, the one-pass report`)
    }
    return onePass
  } finally {
    await store.close()
  }
}

if (await requirePg(t)) {
  t.test('a log of several ranges: every tamper case is found at its first broken row, a range\'s edges too, in ranges as in one pass', async (t) => {
    for (const [kind, cases] of [['long', TAMPER_CASES], ['old', UNCHAINED_CASES]] as const) {
      const template = await longLog(t, kind === 'old')
      for (const { name, sql, postgres, seq, problem, unchainedRows = 0 } of cases) {
        if (postgres === null) continue
        const schema = await copyOf(t, template)
        await run(schema, postgres ?? sql)
        const report = await auditEveryWay(t, schema, `${kind}: ${name}`)
        t.equal(report.chain.firstBrokenSeq, seq, `${kind}: ${name}: first broken seq ${seq}`)
        if (problem !== undefined) t.match(report.chain.problem, problem, `${kind}: ${name}: says why`)
        t.equal(report.chain.unchainedRows, unchainedRows, `${kind}: ${name}: ${unchainedRows} rows from before the chain`)
      }
    }
  })

  t.test('a log of several ranges, untouched: signatures of a rotation, API rows, rows from before the chain', async (t) => {
    const schema = await longLog(t)
    t.match(await auditEveryWay(t, schema, 'one secret'), { events: ROWS, ok: false, chain: { ok: true }, unsigned: oldSecretSeqs(), apiRows: 3 })
    t.match(await auditEveryWay(t, schema, 'both secrets', [SECRET, OLD_SECRET]), { events: ROWS, ok: true, unsigned: [] })
    t.match(await auditEveryWay(t, await longLog(t, true), 'old log', [SECRET, OLD_SECRET]), { events: ROWS, ok: true, chain: { unchainedRows: UNCHAINED } })
  })

  t.test('worker threads check the ranges on connections of their own: the one-pass report', async (t) => {
    for (const [name, sql, workers] of [['the first row of a range deleted', 'DELETE FROM events WHERE seq = 51', 2]] as const) {
      const schema = await longLog(t)
      await run(schema, sql)
      const store = await postgresStore({ connectionString: pgUrl(), schema, readOnly: true })
      try {
        const database = databaseOf(schema)
        const onePass = await auditLog(store, { secrets: [SECRET], database, workers: 0 })
        t.same(await auditLog(store, { secrets: [SECRET], database, workers, rangeSize: RANGE_SIZE, pageSize: PAGE_SIZE }), onePass, `${name}: ${workers} threads give the one-pass report`)
      } finally {
        await store.close()
      }
    }
  })
}
