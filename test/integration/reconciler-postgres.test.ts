// The reconciler on PostgreSQL (a schema per test), against the fake G2 Sentry.
import t from 'tap'
import { reconcilerBehaviour } from '../helpers/reconciler.js'
import { freshSchema, pgUrl, requirePg } from '../helpers/pg.js'

t.setTimeout(180_000)
if (await requirePg(t)) {
  reconcilerBehaviour(t, async (t) => {
    const url = new URL(pgUrl())
    url.searchParams.set('schema', freshSchema(t))
    return { database: url.href }
  })
}
