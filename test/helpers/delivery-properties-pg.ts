// The delivery properties' PostgreSQL target, shared by the direct run and the run through PgBouncer.
import type { Test } from 'tap'
import { postgresStore } from '../../src/index.js'
import { freshSchema, withClient } from './pg.js'

/** Each property on a schema of its own at `connectionString`, emptied before each run. */
export const postgresProperties = (connectionString: string) => ({
  open: async (t: Test) => {
    const schema = freshSchema(t)
    const store = await postgresStore({ connectionString, schema })
    t.teardown(() => store.close())
    return async () => {
      // An empty log: no events, no projection, no quarantine, the chain back at its start.
      await withClient((client) => client.query(`TRUNCATE ${schema}.events, ${schema}.jobs, ${schema}.quarantine;
        UPDATE ${schema}.g2sentry_chain SET seq = 0, hash = NULL`))
      return { options: { store }, cleanup: async () => {} }
    }
  }
})
