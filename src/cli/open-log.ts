import { existsSync } from 'node:fs'
import { isPostgresUrl, openStore } from '../store/open-store.js'
import type { G2SentryStore } from '../store/contract.js'
import { UsageError } from './command.js'

/**
 * How a command uses the log. 'read' (replay, export, verify, quarantine list, consumers,
 * consumers parked) opens it for reading only: it must already be a g2sentry log, up to date,
 * and nothing is created, migrated or left behind. 'write' (rebuild, quarantine retry, consumers
 * reset, retry and delete) must find a g2sentry log there too, and migrates it when it is behind.
 * Either way a typo in `--db` or `?schema=`, or another program's database, is said
 * (`no g2sentry log at …`, exit code 1) instead of leaving g2sentry tables behind.
 */
export type LogAccess = 'read' | 'write'

/** Opens the log `--db` names; a SQLite path must exist (a typo must not create an empty log). */
export async function openLog (db: string | undefined, access: LogAccess): Promise<G2SentryStore> {
  if (db === undefined) throw new UsageError('--db FILE|URL is required')
  if (!isPostgresUrl(db) && !existsSync(db)) throw new UsageError(`no database at ${db}`)
  return openStore(db, access === 'read' ? { readOnly: true } : { existingLog: true })
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
