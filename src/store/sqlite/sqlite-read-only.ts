// A SQLite log opened for reading only (the CLI's replay, export, verify, quarantine list): the
// file must already hold an up-to-date g2sentry log, and nothing in it is changed.
import Database from 'better-sqlite3'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { errors } from '../../errors.js'
import { loadMigrations, MIGRATIONS_ROOT, requireMigrated, type AppliedMigration } from '../migrations.js'

/**
 * Throws `FST_G2SENTRY_NO_LOG` unless `db` holds a g2sentry log (its migrations table): for an
 * empty file, another program's database, or a file that is not a database at all.
 */
export function requireLogTable (db: Database.Database, filename: string): void {
  try {
    const found = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'g2sentry_migrations'").get()
    if (found === undefined) throw new errors.NO_LOG(filename)
  } catch (error) {
    throw (error as { code?: string }).code === 'SQLITE_NOTADB' ? new errors.NO_LOG(filename) : error
  }
}

/**
 * Opens `filename` for reading only: nothing is created (the file must exist), set (no WAL switch) or
 * migrated. Throws `FST_G2SENTRY_NO_LOG` for a file without a g2sentry log (empty, another
 * program's database, not a database at all) and `FST_G2SENTRY_LOG_NOT_MIGRATED` for a log
 * that this version would migrate.
 *
 * A read-only connection to a WAL database creates its `-wal` and `-shm` files when they are
 * missing and, unable to write, cannot remove them when it closes. So when there was no `-wal`
 * before it opened (no connection had the database open), closing it also opens and closes a
 * read-write connection that only reads: SQLite removes both files as that last connection
 * closes, deciding under its own locks, so a writer that opened the database meanwhile keeps
 * its WAL. With a `-wal` there already (a writer running), nothing is created or removed.
 */
export function openReadOnly (filename: string, settings: { busyTimeout?: number | undefined }): Database.Database {
  const hadWal = existsSync(`${filename}-wal`)
  const db = new Database(filename, { readonly: true, fileMustExist: true })
  try {
    db.pragma(`busy_timeout = ${settings.busyTimeout ?? 5000}`)
    requireLogTable(db, filename)
    const applied = db.prepare<[], AppliedMigration>('SELECT version, name, checksum FROM g2sentry_migrations ORDER BY version').all()
    requireMigrated(loadMigrations(join(MIGRATIONS_ROOT, 'sqlite')), applied, filename)
  } catch (error) {
    db.close()
    throw error
  }
  if (!hadWal) {
    const close = db.close.bind(db)
    db.close = () => {
      close()
      sweepWal(filename)
      return db
    }
  }
  return db
}

/** Has SQLite remove the `-wal` and `-shm` of `filename` if no other connection has it open. */
function sweepWal (filename: string): void {
  if (!existsSync(`${filename}-wal`)) return
  try {
    const sweeper = new Database(filename, { fileMustExist: true })
    try {
      // A connection opens the WAL only with its first read: one read, so that its close is the last.
      sweeper.prepare('SELECT 1 FROM sqlite_master LIMIT 1').get()
    } finally {
      sweeper.close()
    }
  } catch {
    // Left as they were (a directory this process cannot write to, say): harmless, only untidy.
  }
}
