// Several app instances on one PostgreSQL log through PgBouncer in transaction mode with its
// default settings (test/several-instances.ts, test/pgbouncer.ts).
import t from 'tap'
import { requirePg } from './pg.js'
import { requirePgBouncer, startPgBouncer } from './pgbouncer.js'
import { severalInstances } from './several-instances.js'

if (await requirePg(t) && requirePgBouncer(t)) {
  t.setTimeout(120_000)
  const bouncer = await startPgBouncer(t)
  severalInstances(t, bouncer.url, 'through PgBouncer (transaction mode)')
}
