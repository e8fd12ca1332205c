// A SQLite store's connection: opened with the store's settings (WAL, busy timeout,
// `synchronous`), its schema migrated, and the query of the log's head that the writer and the
// readers share. Neither the writer nor the readers open connections of their own.
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { loadMigrations, MIGRATIONS_ROOT, pendingMigrations, type AppliedMigration } from '../migrations.js'
import type { ConnectionSettings } from './settings.js'
import { requireLogTable } from './sqlite-read-only.js'

/**
 * Opens a connection with the store's settings: WAL, the busy timeout, `synchronous`; with
 * `migrate`, brings the schema up to date first. With `existingLog`, the file must exist and
 * already hold a g2sentry log (`FST_G2SENTRY_NO_LOG`), checked before anything is set or created.
 */
export function openConnection (filename: string, settings: ConnectionSettings, migrate = false, existingLog = false): Database.Database {
  const db = new Database(filename, { fileMustExist: existingLog })
  const busyTimeout = settings.busyTimeout ?? 5000
  try {
    if (existingLog) requireLogTable(db, filename)
    db.pragma(`busy_timeout = ${busyTimeout}`)
    // Only a file with no table yet takes it: then an archive's deleted rows give their pages
    // back to the file system (docs/design.md, "Archiving"). An older file keeps its mode (none)
    // until a VACUUM, which this setting converts it with.
    if (migrate) db.pragma('auto_vacuum = INCREMENTAL')
    enableWal(db, busyTimeout)
    db.pragma(`synchronous = ${settings.synchronous ?? 'FULL'}`)
    // Bytes that an update or a delete frees are overwritten with zeros, so that an erased phone
    // does not stay in the file's free space (docs/design.md, "Erasure").
    db.pragma('secure_delete = ON')
    if (migrate) migrateSchema(db)
  } catch (error) {
    db.close()
    throw error
  }
  return db
}

// AUTOINCREMENT records the last seq handed out, and rolls back with a failed transaction: a seq
// missing from the log was deleted.
export const HEAD_SQL = `SELECT s.seq AS seq, (SELECT hash FROM events ORDER BY seq DESC LIMIT 1) AS hash
  FROM sqlite_sequence s WHERE s.name = 'events'`

/**
 * Switches a file to WAL. SQLite does not apply the busy timeout to this switch, so when another
 * process holds the lock (two instances starting on a new file) it is retried until the timeout.
 */
function enableWal (db: Database.Database, busyTimeout: number): void {
  const deadline = Date.now() + busyTimeout
  for (;;) {
    try {
      db.pragma('journal_mode = WAL')
      return
    } catch (error) {
      if ((error as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() >= deadline) throw error
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10)
    }
  }
}

function migrateSchema (db: Database.Database): void {
  const all = loadMigrations(join(MIGRATIONS_ROOT, 'sqlite'))
  db.transaction(() => {
    db.exec(`CREATE TABLE IF NOT EXISTS g2sentry_migrations (
      version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)`)
    const applied = db.prepare<[], AppliedMigration>('SELECT version, name, checksum FROM g2sentry_migrations ORDER BY version').all()
    const record = db.prepare('INSERT INTO g2sentry_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)')
    for (const migration of pendingMigrations(all, applied)) {
      db.exec(migration.sql)
      record.run(migration.version, migration.name, migration.checksum, Date.now())
    }
  }).immediate()
}
