// The four properties of docs/design.md ("Properties the tests prove") on PostgreSQL: one schema per property, emptied before each run.
import t from 'tap'
import { deliveryProperties } from '../helpers/delivery-properties.js'
import { postgresProperties } from '../helpers/delivery-properties-pg.js'
import { pgUrl, requirePg } from '../helpers/pg.js'

t.setTimeout(240_000)

if (await requirePg(t)) {
  deliveryProperties(t, postgresProperties(pgUrl()), Number(process.env.G2_PROPERTY_RUNS_PG ?? 25))
}
