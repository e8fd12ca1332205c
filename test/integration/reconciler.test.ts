// The reconciler on SQLite (a fresh file per test), against the fake G2 Sentry.
import t from 'tap'
import { join } from 'node:path'
import { reconcilerBehaviour } from '../helpers/reconciler.js'

t.setTimeout(120_000)
let n = 0
reconcilerBehaviour(t, async (t) => ({ database: join(t.testdir(), `reconcile-${++n}.db`) }))
