import { existsSync } from 'node:fs'
import { isPostgresUrl, openStore } from '../store/open-store.js'
import type { G2SentryStore } from '../domain/types.js'
import { UsageError } from './command.js'

/** Opens the log `--db` names; a SQLite path must exist (a typo must not create an empty log). */
export async function openLog (db: string | undefined): Promise<G2SentryStore> {
  if (db === undefined) throw new UsageError('--db FILE|URL is required')
  if (!isPostgresUrl(db) && !existsSync(db)) throw new UsageError(`no database at ${db}`)
  return openStore(db)
}

/** Opens the log `--db` names, runs `work` on it and closes it, whatever happens. */
export async function withLog<T> (db: string | undefined, work: (store: G2SentryStore) => Promise<T>): Promise<T> {
  const store = await openLog(db)
  try {
    return await work(store)
  } finally {
    await store.close()
  }
}
