import { existsSync } from 'node:fs'
import { isPostgresUrl, openStore } from '../store/open-store.js'
import type { G2SentryStore } from '../domain/types.js'
import { UsageError } from './command.js'

/**
 * How a command uses the log. 'read' (replay, export, verify, quarantine list) opens it read-only:
 * it must already be a g2sentry log, up to date, and nothing is created or migrated, so a typo
 * in `--db` or `?schema=` is said instead of leaving an empty log behind. 'write' migrates it.
 */
export type LogAccess = 'read' | 'write'

/** Opens the log `--db` names; a SQLite path must exist (a typo must not create an empty log). */
export async function openLog (db: string | undefined, access: LogAccess): Promise<G2SentryStore> {
  if (db === undefined) throw new UsageError('--db FILE|URL is required')
  if (!isPostgresUrl(db) && !existsSync(db)) throw new UsageError(`no database at ${db}`)
  return openStore(db, { readOnly: access === 'read' })
}

/** Opens the log `--db` names, runs `work` on it and closes it, whatever happens. */
export async function withLog<T> (db: string | undefined, access: LogAccess, work: (store: G2SentryStore) => Promise<T>): Promise<T> {
  const store = await openLog(db, access)
  try {
    return await work(store)
  } finally {
    await store.close()
  }
}
