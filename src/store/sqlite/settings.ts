/** The settings of a SQLite store's connection (free of better-sqlite3's types: they are public). */
export interface ConnectionSettings {
  /** `FULL` (default) flushes the WAL to disk on every commit, so an acknowledged event survives a power cut. */
  synchronous?: 'FULL' | 'NORMAL' | undefined
  /**
   * How long a write waits for another process's lock before it fails (ms, default 5000): on a
   * timer, so the event loop keeps serving meanwhile; a callback then gets a 503.
   */
  busyTimeout?: number | undefined
}
