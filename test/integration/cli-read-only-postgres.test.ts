// The CLI's read-only commands on a PostgreSQL database that holds no g2sentry log (an empty
// database, a misspelled ?schema=) or an older one: exit 1, no password in the message, and
// nothing created. Each test has a database or schema of its own (test/helpers/pg.ts). Without a
// reachable server the file skips, unless G2SENTRY_TEST_PG asks for PostgreSQL.
import t from 'tap'
import { join } from 'node:path'
import { main } from '../../src/cli/cli.js'
import { loadMigrations, MIGRATIONS_ROOT } from '../../src/store/migrations.js'
import { openStore } from '../../src/store/open-store.js'
import { runCli } from '../helpers/cli-process.js'
import { freshDatabase, freshSchema, pgUrl, requirePg, uniqueName, withClient } from '../helpers/pg.js'

const READ_ONLY = [['replay'], ['export'], ['verify'], ['quarantine', 'list'], ['consumers'], ['consumers', 'parked']]
/** The commands that write (reconcile aside): they too need a g2sentry log there, and create none. */
const WRITE = [['rebuild'], ['quarantine', 'retry', '--secret', 'x'], ['consumers', 'reset', 'forwarder', '--to', '0'],
  ['consumers', 'retry', 'forwarder'], ['consumers', 'delete', 'forwarder']]

async function run (...argv: string[]): Promise<{ code: number, out: string[], err: string[] }> {
  const out: string[] = []
  const err: string[] = []
  const code = await main(argv, (line) => { out.push(line) }, (line) => { err.push(line) }, (chunk) => { out.push(chunk) })
  return { code, out, err }
}

/** `url` with a password in it (the test server trusts every connection, so any password works). */
function withPassword (url: string, password: string): string {
  const parsed = new URL(url)
  parsed.password = password
  return parsed.href
}

/** `url` without its password, and with `?schema=` when given: how the CLI names the log. */
function shown (url: string, schema?: string): string {
  const parsed = new URL(url)
  parsed.password = ''
  if (schema !== undefined) parsed.searchParams.set('schema', schema)
  return parsed.href
}

const PASSWORD = 'not-to-be-printed'

if (await requirePg(t)) {
  t.test('an empty database: every command, read-only or writing, exits 1 and creates no table', async (t) => {
    const url = await freshDatabase(t)
    const db = withPassword(url, PASSWORD)
    for (const command of [...READ_ONLY, ...WRITE]) {
      const r = await run(...command, '--db', db)
      t.equal(r.code, 1, `${command.join(' ')}: exit 1`)
      t.same(r.err, [`g2sentry: no g2sentry log at ${shown(url)}`], `${command.join(' ')}: no g2sentry log, and no password`)
      t.same(r.out, [])
    }
    const published = await runCli(['verify', '--db', db])
    t.equal(published.code, 1, 'the published entry: exit 1')
    t.equal(published.stderr, `g2sentry: no g2sentry log at ${shown(url)}\n`)
    t.notMatch(published.stderr + published.stdout, PASSWORD, 'the password is not printed')
    const tables = await withClient((client) => client.query("SELECT tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"), url)
    t.same(tables.rows, [], 'the database still has no table')
  })

  t.test('a misspelled ?schema=: every command exits 1, and the schema is not created', async (t) => {
    // A real log in one schema, and a name nobody created.
    const schema = freshSchema(t)
    await (await openStore(`${pgUrl()}?schema=${schema}`)).close()
    const typo = uniqueName('s')
    for (const command of [...READ_ONLY, ...WRITE]) {
      const r = await run(...command, '--db', `${pgUrl()}?schema=${typo}`)
      t.equal(r.code, 1, `${command.join(' ')}: exit 1`)
      t.same(r.err, [`g2sentry: no g2sentry log at ${shown(pgUrl(), typo)}`], `${command.join(' ')}: names the schema it did not find`)
    }
    const found = await withClient((client) => client.query('SELECT nspname FROM pg_namespace WHERE nspname = $1', [typo]))
    t.same(found.rows, [], 'the misspelled schema does not exist')
    t.equal((await run('verify', '--db', `${pgUrl()}?schema=${schema}`)).code, 0, 'the real one reads')
    t.equal((await run('rebuild', '--db', `${pgUrl()}?schema=${schema}`)).code, 0, 'and the real one is written')
  })

  t.test('a log behind this version: read-only commands refuse and say how to migrate; rebuild migrates', async (t) => {
    const schema = freshSchema(t)
    const migrations = loadMigrations(join(MIGRATIONS_ROOT, 'postgres'))
    // As the previous version of the package left it: every migration but the last.
    await withClient(async (client) => {
      await client.query(`CREATE SCHEMA ${schema}`)
      await client.query(`SET search_path = ${schema}`)
      await client.query(`CREATE TABLE g2sentry_migrations (
        version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)`)
      for (const migration of migrations.slice(0, -1)) {
        await client.query(migration.sql)
        await client.query('INSERT INTO g2sentry_migrations VALUES ($1, $2, $3, 1)', [migration.version, migration.name, migration.checksum])
      }
    })
    const applied = async () => (await withClient((client) => client.query(`SELECT version FROM ${schema}.g2sentry_migrations ORDER BY version`))).rows
    const before = await applied()
    const db = `${withPassword(pgUrl(), PASSWORD)}?schema=${schema}`
    for (const command of READ_ONLY) {
      const r = await run(...command, '--db', db)
      t.equal(r.code, 1, `${command.join(' ')}: exit 1`)
      t.equal(r.err.length, 1)
      t.match(r.err[0], `the g2sentry log at ${shown(pgUrl(), schema)} is behind this version of fastify-g2sentry (not applied: ${(migrations.at(-1) as { name: string }).name})`)
      t.match(r.err[0], /run g2sentry rebuild --db on it, to migrate it/)
    }
    t.same(await applied(), before, 'nothing was migrated')
    t.equal((await run('rebuild', '--db', db)).code, 0, 'rebuild migrates it')
    t.equal((await applied()).length, migrations.length, 'every migration is applied now')
    t.equal((await run('verify', '--db', db)).code, 0, 'and verify reads it')
  })
}
