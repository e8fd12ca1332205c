// The audit's tamper cases (test/audit-cases.ts) on PostgreSQL: a log of several of verify's
// ranges in a schema of its own per case, edited with plain SQL. Without a reachable server the
// file skips, unless G2SENTRY_TEST_PG asks for PostgreSQL.
import t, { type Test } from 'tap'
import { auditLog } from '../src/log/audit.js'
import { postgresStore } from '../src/store/postgres/postgres-store.js'
import { OLD_SECRET, oldSecretSeqs, ROWS, TAMPER_CASES, UNCHAINED, UNCHAINED_CASES, writeLongLog } from './audit-cases.js'
import { SECRET } from './fixtures.js'
import { freshSchema, pgUrl, requirePg, withClient } from './pg.js'

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

/** Runs `sql` (statements separated by semicolons) in `schema`. */
const run = (schema: string, sql: string): Promise<void> =>
  withClient(async (client) => { await client.query(`SET search_path TO ${schema}; ${sql}`) })

/** The audit of the log in `schema`. */
async function audit (schema: string, secrets: string[]) {
  const store = await postgresStore({ connectionString: pgUrl(), schema, readOnly: true })
  try {
    return await auditLog(store, { secrets })
  } finally {
    await store.close()
  }
}

if (await requirePg(t)) {
  t.test('a log of several ranges: every tamper case is found at its first broken row, a range\'s edges too', async (t) => {
    for (const [kind, cases] of [['long', TAMPER_CASES], ['old', UNCHAINED_CASES]] as const) {
      for (const { name, sql, postgres, seq, problem, unchainedRows = 0 } of cases) {
        if (postgres === null) continue
        const schema = await longLog(t, kind === 'old')
        await run(schema, postgres ?? sql)
        const report = await audit(schema, [SECRET])
        t.equal(report.chain.firstBrokenSeq, seq, `${kind}: ${name}: first broken seq ${seq}`)
        if (problem !== undefined) t.match(report.chain.problem, problem, `${kind}: ${name}: says why`)
        t.equal(report.chain.unchainedRows, unchainedRows, `${kind}: ${name}: ${unchainedRows} rows from before the chain`)
      }
    }
  })

  t.test('a log of several ranges, untouched: signatures of a rotation, API rows, rows from before the chain', async (t) => {
    const schema = await longLog(t)
    t.match(await audit(schema, [SECRET]), { events: ROWS, ok: false, chain: { ok: true }, unsigned: oldSecretSeqs(), apiRows: 3 })
    t.match(await audit(schema, [SECRET, OLD_SECRET]), { events: ROWS, ok: true, unsigned: [] })
    t.match(await audit(await longLog(t, true), [SECRET, OLD_SECRET]), { events: ROWS, ok: true, chain: { unchainedRows: UNCHAINED } })
  })
}
