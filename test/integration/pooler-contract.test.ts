// The shared store contract (test/helpers/store-contract.ts) on PostgreSQL through PgBouncer in
// transaction mode with its default settings (test/helpers/pgbouncer.ts): everything the direct run
// proves must hold when every transaction may land on another server connection.
import t from 'tap'
import { postgresStore } from '../../src/store/postgres/postgres-store.js'
import { freshSchema, requirePg } from '../helpers/pg.js'
import { requirePgBouncer, startPgBouncer } from '../helpers/pgbouncer.js'
import { storeContract } from '../helpers/store-contract.js'

if (await requirePg(t) && requirePgBouncer(t)) {
  t.setTimeout(180_000)
  const bouncer = await startPgBouncer(t)
  storeContract(t, 'postgres through PgBouncer', async (t) => postgresStore({ connectionString: bouncer.url, schema: freshSchema(t) }), (t) => {
    const schema = freshSchema(t)
    return () => postgresStore({ connectionString: bouncer.url, schema })
  })
}
