// The four delivery properties (test/helpers/delivery-properties.ts) on PostgreSQL through PgBouncer in
// transaction mode with its default settings: one schema per property, emptied before each run.
import t from 'tap'
import { deliveryProperties } from '../helpers/delivery-properties.js'
import { postgresProperties } from '../helpers/delivery-properties-pg.js'
import { requirePg } from '../helpers/pg.js'
import { requirePgBouncer, startPgBouncer } from '../helpers/pgbouncer.js'

t.setTimeout(240_000)

if (await requirePg(t) && requirePgBouncer(t)) {
  const bouncer = await startPgBouncer(t)
  deliveryProperties(t, postgresProperties(bouncer.url), Number(process.env.G2_PROPERTY_RUNS_PG ?? 25))
}
