import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { errors } from '../errors.js'

/** Where the SQL files ship: `migrations/<dialect>/` at the package root (from src/ and dist/ alike). */
export const MIGRATIONS_ROOT = fileURLToPath(new URL('../../migrations/', import.meta.url))

export interface Migration {
  version: number
  name: string
  sql: string
  checksum: string
}

const FILE = /^(\d+)_([\w-]+)\.sql$/

/** The migrations in `dir`, in version order, each with the checksum of its text. */
export function loadMigrations (dir: string): Migration[] {
  return readdirSync(dir)
    .map((file) => ({ file, match: FILE.exec(file) }))
    .filter((entry): entry is { file: string; match: RegExpExecArray } => entry.match !== null)
    .map(({ file, match }) => {
      const sql = readFileSync(join(dir, file), 'utf8')
      return {
        version: Number(match[1]),
        name: file,
        sql,
        checksum: createHash('sha256').update(sql).digest('hex')
      }
    })
    .sort((a, b) => a.version - b.version)
}

export interface AppliedMigration {
  version: number
  name: string
  checksum: string
}

/**
 * Splits the migrations into those to apply, after checking that every applied one is
 * unchanged. Throws on a changed or unknown applied migration.
 */
export function pendingMigrations (all: Migration[], applied: AppliedMigration[]): Migration[] {
  const byVersion = new Map(all.map((m) => [m.version, m]))
  for (const done of applied) {
    const file = byVersion.get(done.version)
    if (file === undefined) {
      throw new errors.MIGRATION_REFUSED(`Migration ${done.name} is recorded in the database but its file is missing; is this an older version of fastify-g2sentry?`)
    }
    if (file.checksum !== done.checksum) {
      throw new errors.MIGRATION_REFUSED(`Migration ${done.name} was changed after it was applied (checksum ${file.checksum.slice(0, 12)}, recorded ${done.checksum.slice(0, 12)}); add a new migration instead of editing an applied one`)
    }
  }
  const appliedVersions = new Set(applied.map((m) => m.version))
  return all.filter((m) => !appliedVersions.has(m.version))
}

/**
 * For a log opened read-only, which is never migrated: throws unless every migration of this
 * version is applied, unchanged (`where` names the log, without a password).
 */
export function requireMigrated (all: Migration[], applied: AppliedMigration[], where: string): void {
  const pending = pendingMigrations(all, applied)
  if (pending.length > 0) throw new errors.LOG_NOT_MIGRATED(where, pending.map((m) => m.name).join(', '))
}
