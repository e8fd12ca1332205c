// A PostgreSQL log opened for reading only (the CLI's replay, export, verify, quarantine list):
// the schema must already hold an up-to-date g2sentry log; nothing is created or migrated.
import { join } from 'node:path'
import { errors } from '../../errors.js'
import { loadMigrations, MIGRATIONS_ROOT, requireMigrated, type AppliedMigration } from '../migrations.js'

interface Queryable {
  query: <R = Record<string, unknown>>(text: string, values?: unknown[]) => Promise<{ rows: R[] }>
}

/** Where the log is, for messages: the connection string without its password, and the schema when one was named. */
export function logLocation (connectionString: string, schema: string | undefined): string {
  try {
    const url = new URL(connectionString)
    url.password = ''
    if (schema !== undefined) url.searchParams.set('schema', schema)
    return url.href
  } catch {
    return schema === undefined ? 'the configured database' : `schema ${schema} of the configured database`
  }
}

/** Throws `FST_G2SENTRY_NO_LOG` unless `schema` holds a g2sentry log (its migrations table). */
export async function requireLogTable (db: Queryable, schema: string, where: string): Promise<void> {
  const { rows: [found] } = await db.query<{ table: string | null }>('SELECT to_regclass($1)::text AS table', [`${schema}.g2sentry_migrations`])
  if (found?.table == null) throw new errors.NO_LOG(where)
}

/**
 * Checks, reading only, that `schema` holds a g2sentry log with every migration of this version
 * applied. Throws `FST_G2SENTRY_NO_LOG` when the schema or its migrations table is missing (an
 * empty database, a misspelled `?schema=`), `FST_G2SENTRY_LOG_NOT_MIGRATED` when the log is behind.
 */
export async function requireLog (db: Queryable, schema: string, where: string): Promise<void> {
  await requireLogTable(db, schema, where)
  const { rows: applied } = await db.query<AppliedMigration>(`SELECT version, name, checksum FROM ${schema}.g2sentry_migrations ORDER BY version`)
  requireMigrated(loadMigrations(join(MIGRATIONS_ROOT, 'postgres')), applied, where)
}
