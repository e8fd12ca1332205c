// The CLI's read-only commands on a SQLite file that holds no g2sentry log, or an older one:
// they refuse with exit 1 and leave the file exactly as it was. The commands that write
// (rebuild) still migrate. Run in-process through `main`, and once through the published entry.
import t from 'tap'
import Database from 'better-sqlite3'
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { main } from '../../src/cli/cli.js'
import { loadMigrations, MIGRATIONS_ROOT } from '../../src/store/migrations.js'
import { sqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { SIMULATED_OUTCOMES, runCli, writeSimulatedLog } from '../helpers/cli-process.js'
import { assigned, completed, incoming } from '../helpers/store-contract.js'

const SECRET = 'read-only-test-secret'

/** The read-only commands, each with what it needs besides --db. */
const READ_ONLY = [['replay'], ['replay', '--format', 'table'], ['export'], ['export', '--format', 'csv'], ['verify'], ['quarantine', 'list'],
  ['consumers'], ['consumers', 'parked']]

/** The commands that write (reconcile aside), each with what it needs besides --db. */
const WRITE = [['rebuild'], ['quarantine', 'retry', '--secret', SECRET], ['consumers', 'reset', 'forwarder', '--to', '0'],
  ['consumers', 'retry', 'forwarder'], ['consumers', 'delete', 'forwarder']]

async function run (...argv: string[]): Promise<{ code: number, out: string[], err: string[] }> {
  const out: string[] = []
  const err: string[] = []
  const code = await main(argv, (line) => { out.push(line) }, (line) => { err.push(line) }, (chunk) => { out.push(chunk) })
  return { code, out, err }
}

/** The file's bytes' hash and its directory's other files named after it (-wal, -shm, -journal). */
function snapshot (file: string): { hash: string, siblings: string[] } {
  return {
    hash: createHash('sha256').update(readFileSync(file)).digest('hex'),
    siblings: readdirSync(dirname(file)).filter((name) => name.startsWith(basename(file)) && name !== basename(file)).sort()
  }
}

/** Applies every shipped SQLite migration but the last to a new file, as the previous version of the package left it. */
function olderLog (file: string): string {
  const migrations = loadMigrations(join(MIGRATIONS_ROOT, 'sqlite'))
  const db = new Database(file)
  db.exec(`CREATE TABLE g2sentry_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)`)
  for (const migration of migrations.slice(0, -1)) {
    db.exec(migration.sql)
    db.prepare('INSERT INTO g2sentry_migrations VALUES (?, ?, ?, ?)').run(migration.version, migration.name, migration.checksum, 1)
  }
  db.close()
  return (migrations.at(-1) as { name: string }).name
}

t.test('a SQLite file without a g2sentry log: every command, read-only or writing, exits 1 and changes nothing', async (t) => {
  const dir = t.testdir()
  const empty = join(dir, 'empty.db')
  writeFileSync(empty, '')
  const foreign = join(dir, 'other-app.db')
  const other = new Database(foreign)
  other.exec("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers (name) VALUES ('Ada')")
  other.close()
  const notSqlite = join(dir, 'notes.txt')
  writeFileSync(notSqlite, 'a text file, not a database: '.repeat(40))

  for (const file of [empty, foreign, notSqlite]) {
    for (const command of [...READ_ONLY, ...WRITE]) {
      const before = snapshot(file)
      const r = await run(...command, '--db', file)
      const label = `${command.join(' ')} --db ${basename(file)}`
      t.equal(r.code, 1, `${label}: exit 1`)
      t.same(r.err, [`g2sentry: no g2sentry log at ${file}`], `${label}: says there is no log there`)
      t.same(r.out.filter((line) => !line.startsWith('seq ') && !line.startsWith('id ')), [], `${label}: prints no rows`)
      t.same(snapshot(file), before, `${label}: the file and its directory are unchanged`)
    }
  }
  const tables = new Database(foreign, { readonly: true })
  t.same(tables.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all(), [{ name: 'customers' }], 'the other app\'s database has no g2sentry table')
  t.equal(tables.pragma('journal_mode', { simple: true }), 'delete', 'and was not switched to WAL')
  tables.close()

  const published = await runCli(['verify', '--db', empty])
  t.equal(published.code, 1, 'the published entry: exit 1')
  t.equal(published.stderr, `g2sentry: no g2sentry log at ${empty}\n`)
  t.equal(published.stdout, '')
  t.equal(readFileSync(empty).length, 0, 'the empty file is still empty')
})

t.test('a log behind this version: read-only commands refuse and say how to migrate; rebuild migrates', async (t) => {
  const file = join(t.testdir(), 'older.db')
  const missing = olderLog(file)
  const before = snapshot(file)
  for (const command of READ_ONLY) {
    const r = await run(...command, '--db', file)
    const label = command.join(' ')
    t.equal(r.code, 1, `${label}: exit 1`)
    t.equal(r.err.length, 1, `${label}: one line`)
    t.match(r.err[0], `g2sentry: the g2sentry log at ${file} is behind this version of fastify-g2sentry (not applied: ${missing})`, `${label}: names the migration it lacks`)
    t.match(r.err[0], /start the server on it once, or run g2sentry rebuild --db on it, to migrate it/, `${label}: says how to migrate`)
    t.same(snapshot(file), before, `${label}: the file is unchanged`)
  }

  const rebuilt = await run('rebuild', '--db', file)
  t.equal(rebuilt.code, 0, 'rebuild migrates it')
  t.same(rebuilt.out, ['rebuilt 0 events into 0 jobs'])
  const verified = await run('verify', '--db', file)
  t.equal(verified.code, 0, 'then verify reads it')
  t.match(verified.out.at(-1), /^ok: /)
})

t.test('a log written by the plugin reads as before, and a read leaves it as it was', async (t) => {
  const file = join(t.testdir(), 'g2.db')
  const { outcomes } = await writeSimulatedLog(file, SECRET)
  t.same(outcomes, SIMULATED_OUTCOMES)
  const before = createHash('sha256').update(readFileSync(file)).digest('hex')
  for (const command of READ_ONLY) {
    const r = await run(...command, '--db', file)
    t.equal(r.code, 0, `${command.join(' ')}: exit 0`)
    t.same(r.err, [])
  }
  t.equal(createHash('sha256').update(readFileSync(file)).digest('hex'), before, 'the database file is byte for byte the same')
})

/** The files next to `file` named after it (-wal, -shm, -journal). */
const siblings = (file: string): string[] => snapshot(file).siblings

t.test('read-only commands leave no -wal or -shm behind, and never take a running writer\'s', async (t) => {
  const file = join(t.testdir(), 'g2.db')
  await writeSimulatedLog(file, SECRET)
  t.same(siblings(file), [], 'the plugin, closed, left none')
  for (const command of READ_ONLY) {
    const r = await run(...command, '--db', file)
    t.equal(r.code, 0, `${command.join(' ')}: exit 0`)
    t.same(siblings(file), [], `${command.join(' ')}: no -wal or -shm left`)
  }
  const published = await runCli(['verify', '--db', file])
  t.equal(published.code, 0, published.stderr)
  t.same(siblings(file), [], 'the published entry: none left either')

  // A writer running on the file: its WAL is there while the commands read, and stays.
  const writer = sqliteStore({ filename: file })
  t.teardown(() => writer.close())
  await writer.append(incoming(assigned(900)))
  t.same(siblings(file), ['g2.db-shm', 'g2.db-wal'], 'the writer\'s WAL')
  for (const command of READ_ONLY) {
    t.equal((await run(...command, '--db', file)).code, 0, `${command.join(' ')} beside the writer: exit 0`)
    t.same(siblings(file), ['g2.db-shm', 'g2.db-wal'], `${command.join(' ')} beside the writer: its WAL is still there`)
  }
  await writer.append(incoming(completed(900)))
  const replayed = await run('replay', '--db', file)
  t.equal(replayed.out.length, SIMULATED_OUTCOMES.length + 2, 'a reader sees both of the writer\'s commits, the one after the reads too')
  await writer.close()
  t.same(siblings(file), [], 'the writer, closed, removes them')
})

t.test('a write command on an older g2sentry log migrates it', async (t) => {
  const file = join(t.testdir(), 'older.db')
  olderLog(file)
  const r = await run('consumers', 'delete', 'nobody', '--db', file)
  t.equal(r.code, 1, 'exit 1: no such consumer')
  t.same(r.err, ['g2sentry: no consumer named nobody'])
  t.equal((await run('verify', '--db', file)).code, 0, 'the log was migrated: a read-only command reads it now')
})
