// The four properties of docs/design.md ("Properties the tests prove") on PostgreSQL: one schema per property, emptied before each run.
import t from 'tap'
import { postgresStore } from '../src/index.js'
import { deliveryProperties } from './delivery-properties.js'
import { freshSchema, pgUrl, requirePg, withClient } from './pg.js'

t.setTimeout(240_000)

if (await requirePg(t)) {
  deliveryProperties(t, {
    open: async (t) => {
      const schema = freshSchema(t)
      const store = await postgresStore({ connectionString: pgUrl(), schema })
      t.teardown(() => store.close())
      return async () => {
        // An empty log: no events, no projection, no quarantine, the chain back at its start.
        await withClient((client) => client.query(`TRUNCATE ${schema}.events, ${schema}.jobs, ${schema}.quarantine;
          UPDATE ${schema}.g2sentry_chain SET seq = 0, hash = NULL`))
        return { options: { store }, cleanup: async () => {} }
      }
    }
  }, Number(process.env.G2_PROPERTY_RUNS_PG ?? 25))
}
