// Several app instances on one PostgreSQL log, connected directly (test/helpers/several-instances.ts).
import t from 'tap'
import { pgUrl, requirePg } from '../helpers/pg.js'
import { severalInstances } from '../helpers/several-instances.js'

if (await requirePg(t)) {
  t.setTimeout(120_000)
  severalInstances(t, pgUrl(), 'directly')
}
