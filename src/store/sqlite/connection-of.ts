// The connection behind a SQLite store, for this repository's tests and tools. It is not in the
// store's public type, so the published declarations need no better-sqlite3 types.
import type Database from 'better-sqlite3'
import type { G2SentryStore } from '../contract.js'

const connections = new WeakMap<G2SentryStore, Database.Database>()

export function registerConnection<S extends G2SentryStore> (store: S, db: Database.Database): S {
  connections.set(store, db)
  return store
}

/** The better-sqlite3 connection a store made by `sqliteStore` writes through. */
export function sqliteConnection (store: G2SentryStore): Database.Database {
  const db = connections.get(store)
  if (db === undefined) throw new TypeError('not a store made by sqliteStore()')
  return db
}
