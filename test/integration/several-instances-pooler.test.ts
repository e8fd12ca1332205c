// Several app instances on one PostgreSQL log through PgBouncer in transaction mode with its
// default settings (test/helpers/several-instances.ts, test/helpers/pgbouncer.ts).
import t from 'tap'
import { requirePg } from '../helpers/pg.js'
import { requirePgBouncer, startPgBouncer } from '../helpers/pgbouncer.js'
import { severalInstances } from '../helpers/several-instances.js'

if (await requirePg(t) && requirePgBouncer(t)) {
  t.setTimeout(120_000)
  const bouncer = await startPgBouncer(t)
  severalInstances(t, bouncer.url, 'through PgBouncer (transaction mode)')
}
