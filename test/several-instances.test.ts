// Several app instances on one PostgreSQL log, connected directly (test/several-instances.ts).
import t from 'tap'
import { pgUrl, requirePg } from './pg.js'
import { severalInstances } from './several-instances.js'

if (await requirePg(t)) {
  t.setTimeout(120_000)
  severalInstances(t, pgUrl(), 'directly')
}
