// Property 5 on SQLite (a fresh file per run) and PostgreSQL (a schema emptied before each run):
// lost callbacks and cancellations, then a reconciler round against the fake G2 Sentry.
import t from 'tap'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { postgresStore } from '../../src/index.js'
import { reconcileProperty } from '../helpers/delivery-properties.js'
import { freshSchema, pgUrl, requirePg, withClient } from '../helpers/pg.js'

t.setTimeout(240_000)

let runs = 0
t.test('SQLite', async (t) => {
  reconcileProperty(t, {
    open: async (t) => {
      const dir = t.testdir()
      return async () => {
        const database = join(dir, `run-${++runs}.db`)
        return {
          options: { database },
          cleanup: async () => { for (const suffix of ['', '-wal', '-shm']) rmSync(database + suffix, { force: true }) }
        }
      }
    }
  }, Number(process.env.G2_PROPERTY_RUNS ?? 30))
})

t.test('PostgreSQL', async (t) => {
  if (!await requirePg(t)) return
  reconcileProperty(t, {
    open: async (t) => {
      const schema = freshSchema(t)
      const store = await postgresStore({ connectionString: pgUrl(), schema })
      t.teardown(() => store.close())
      return async () => {
        await withClient((client) => client.query(`TRUNCATE ${schema}.events, ${schema}.jobs, ${schema}.quarantine,
          ${schema}.reconcile_checks, ${schema}.partner_requests, ${schema}.partner_limits, ${schema}.leases;
          UPDATE ${schema}.g2sentry_chain SET seq = 0, hash = NULL`))
        return { options: { store }, cleanup: async () => {} }
      }
    }
  }, Number(process.env.G2_PROPERTY_RUNS_PG ?? 15))
})
