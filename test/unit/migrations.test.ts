import t from 'tap'
import Database from 'better-sqlite3'
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadMigrations, MIGRATIONS_ROOT, pendingMigrations, type Migration } from '../../src/store/migrations.js'
import { sqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { assigned, incoming, T0 } from '../helpers/store-contract.js'

const SQLITE_DIR = join(MIGRATIONS_ROOT, 'sqlite')
const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex')

interface RecordedRow { version: number; name: string; checksum: string; applied_at: number }

function recorded (file: string): RecordedRow[] {
  const db = new Database(file, { readonly: true })
  try {
    return db.prepare<[], RecordedRow>('SELECT version, name, checksum, applied_at FROM g2sentry_migrations ORDER BY version').all()
  } finally {
    db.close()
  }
}

function edit (file: string, sql: string, ...params: unknown[]): void {
  const db = new Database(file)
  try {
    db.prepare(sql).run(...params)
  } finally {
    db.close()
  }
}

t.test('the shipped SQLite migrations', async (t) => {
  const files = readdirSync(SQLITE_DIR).filter((f) => /^\d+_[\w-]+\.sql$/.test(f)).sort()
  t.ok(files.length >= 1, 'at least one migration ships')
  t.same(loadMigrations(SQLITE_DIR).map((m) => m.name), files, 'loadMigrations finds every file, in order')
})

t.test('a fresh file records every migration with its checksum', async (t) => {
  const file = join(t.testdir(), 'g2.db')
  const before = Date.now()
  const store = sqliteStore({ filename: file })
  await store.close()

  const expected = readdirSync(SQLITE_DIR).filter((f) => /^\d+_[\w-]+\.sql$/.test(f)).sort()
  const rows = recorded(file)
  t.same(rows.map((r) => r.name), expected)
  for (const row of rows) {
    t.equal(row.version, Number(row.name.split('_')[0]), `${row.name}: version from the file name`)
    t.equal(row.checksum, sha256(readFileSync(join(SQLITE_DIR, row.name), 'utf8')), `${row.name}: sha256 of the file`)
    t.ok(row.applied_at >= before && row.applied_at <= Date.now(), `${row.name}: applied_at is a ms timestamp`)
  }

  const db = new Database(file, { readonly: true })
  t.teardown(() => db.close())
  const tables = db.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all().map((r) => r.name)
  for (const table of ['events', 'jobs', 'quarantine', 'g2sentry_migrations']) t.ok(tables.includes(table), `table ${table} exists`)
})

t.test('reopening applies nothing new and keeps the data', async (t) => {
  const file = join(t.testdir(), 'g2.db')
  const first = sqliteStore({ filename: file })
  await first.append(incoming(assigned(1), T0))
  await first.close()
  const rows = recorded(file)

  const second = sqliteStore({ filename: file })
  t.teardown(() => second.close())
  t.same(recorded(file), rows, 'same rows, same applied_at')
  t.equal((await second.getJob(1))?.status, 'Assigned')
})

t.test('a changed, already applied migration is refused', async (t) => {
  const file = join(t.testdir(), 'g2.db')
  await sqliteStore({ filename: file }).close()
  const original = recorded(file)
  const [row] = original
  if (row === undefined) throw new Error('no migration recorded')
  edit(file, 'UPDATE g2sentry_migrations SET checksum = ? WHERE version = ?', '0'.repeat(64), row.version)
  const edited = recorded(file)

  t.throws(() => sqliteStore({ filename: file }), {
    code: 'FST_G2SENTRY_MIGRATION_REFUSED',
    message: new RegExp(row.name.replace(/\./g, '\\.'))
  })
  t.same(recorded(file), edited, 'the refusal changed nothing')

  // The refusing open closed its connection and wrote nothing: restoring the checksum opens again.
  edit(file, 'UPDATE g2sentry_migrations SET checksum = ? WHERE version = ?', row.checksum, row.version)
  const store = sqliteStore({ filename: file })
  t.teardown(() => store.close())
  t.same(recorded(file), original)
})

t.test('a recorded migration whose file is missing is refused', async (t) => {
  const file = join(t.testdir(), 'g2.db')
  await sqliteStore({ filename: file }).close()
  edit(file, 'INSERT INTO g2sentry_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)',
    9999, '9999_from_a_newer_release.sql', 'f'.repeat(64), T0)
  t.throws(() => sqliteStore({ filename: file }), {
    code: 'FST_G2SENTRY_MIGRATION_REFUSED',
    message: /9999_from_a_newer_release\.sql/
  })
})

t.test('loadMigrations reads NNN_name.sql files in version order and ignores the rest', async (t) => {
  const dir = t.testdir({
    '002_b.sql': 'CREATE TABLE b (x);\n',
    '001_a.sql': 'CREATE TABLE a (x);\n',
    '10_c-d.sql': 'CREATE TABLE c (x);\n',
    'README.md': 'x',
    'a_001.sql': 'nope',
    '003_e.sql.bak': 'nope',
    '004 f.sql': 'nope'
  })
  const migrations = loadMigrations(dir)
  t.same(migrations, [
    { version: 1, name: '001_a.sql', sql: 'CREATE TABLE a (x);\n', checksum: sha256('CREATE TABLE a (x);\n') },
    { version: 2, name: '002_b.sql', sql: 'CREATE TABLE b (x);\n', checksum: sha256('CREATE TABLE b (x);\n') },
    { version: 10, name: '10_c-d.sql', sql: 'CREATE TABLE c (x);\n', checksum: sha256('CREATE TABLE c (x);\n') }
  ], 'numeric order (10 after 2), not file-name order')
  t.same(loadMigrations(t.testdir({})), [], 'an empty directory has no migrations')
})

t.test('pendingMigrations', async (t) => {
  const m = (version: number, sql = `-- ${version}`): Migration =>
    ({ version, name: `${String(version).padStart(3, '0')}_m.sql`, sql, checksum: sha256(sql) })
  const all = [m(1), m(2), m(3)]
  const applied = (...ms: Migration[]) => ms.map(({ version, name, checksum }) => ({ version, name, checksum }))

  t.same(pendingMigrations(all, []), all, 'a fresh database gets them all')
  t.same(pendingMigrations(all, applied(m(1))), [m(2), m(3)])
  t.same(pendingMigrations(all, applied(m(1), m(2), m(3))), [], 'nothing to do when all are applied')
  t.same(pendingMigrations(all, applied(m(1), m(3))), [m(2)], 'a gap is filled')

  t.throws(() => pendingMigrations(all, applied(m(1), m(2, 'changed'))), {
    code: 'FST_G2SENTRY_MIGRATION_REFUSED',
    message: /002_m\.sql.*changed after it was applied/
  })
  t.throws(() => pendingMigrations(all, applied(m(1), m(4))), {
    code: 'FST_G2SENTRY_MIGRATION_REFUSED',
    message: /004_m\.sql.*file is missing/
  })
})
