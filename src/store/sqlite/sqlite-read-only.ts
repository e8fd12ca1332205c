// A SQLite log opened for reading only (the CLI's replay, export, verify, quarantine list): the
// file is opened read-only and must already hold an up-to-date g2sentry log.
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { errors } from '../../errors.js'
import { loadMigrations, MIGRATIONS_ROOT, requireMigrated, type AppliedMigration } from '../migrations.js'
import type { ConnectionSettings } from './sqlite-writer.js'

/**
 * Opens `filename` read-only: nothing is created (the file must exist), set (no WAL switch) or
 * migrated. Throws `FST_G2SENTRY_NO_LOG` for a file without a g2sentry log (empty, another
 * program's database, not a database at all) and `FST_G2SENTRY_LOG_NOT_MIGRATED` for a log
 * that this version would migrate.
 */
export function openReadOnly (filename: string, settings: ConnectionSettings): Database.Database {
  const db = new Database(filename, { readonly: true, fileMustExist: true })
  try {
    db.pragma(`busy_timeout = ${settings.busyTimeout ?? 5000}`)
    const found = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'g2sentry_migrations'").get()
    if (found === undefined) throw new errors.NO_LOG(filename)
    const applied = db.prepare<[], AppliedMigration>('SELECT version, name, checksum FROM g2sentry_migrations ORDER BY version').all()
    requireMigrated(loadMigrations(join(MIGRATIONS_ROOT, 'sqlite')), applied, filename)
  } catch (error) {
    db.close()
    throw (error as { code?: string }).code === 'SQLITE_NOTADB' ? new errors.NO_LOG(filename) : error
  }
  return db
}
