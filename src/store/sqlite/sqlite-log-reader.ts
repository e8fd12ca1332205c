import type { LogRow } from '../../domain/types.js'
import type { LogReader, LogReads } from '../log-reads.js'
import { fromColumns, LOG_COLUMNS, type ChainHead } from '../rows.js'
import { openReadOnly } from './sqlite-read-only.js'
import { HEAD_SQL } from './sqlite-connection.js'

// Every column as the store reads it, but a raw body that is a blob (every one, unless edited by
// hand) comes as hex text, decoded into a pooled Buffer: better-sqlite3 gives each blob a Buffer
// of its own memory, which costs more to make and to collect than the hex. Anything else stored
// there comes last, as it is, so a row reads exactly as `readLog` gives it.
// The salt the same way.
const COLUMNS = LOG_COLUMNS.replace('raw_body', "CASE typeof(raw_body) WHEN 'blob' THEN hex(raw_body) END")
  .replace('salt', "CASE typeof(salt) WHEN 'blob' THEN hex(salt) END") +
  ", CASE typeof(raw_body) WHEN 'blob' THEN NULL ELSE raw_body END"
const RAW_BODY = 6
const SALT = 16
const NOT_A_BLOB = 18

function toRow (values: unknown[]): LogRow {
  const hex = values[RAW_BODY]
  values[RAW_BODY] = typeof hex === 'string' ? Buffer.from(hex, 'hex') : values[NOT_A_BLOB]
  const salt = values[SALT]
  values[SALT] = typeof salt === 'string' ? Buffer.from(salt, 'hex') : null
  return fromColumns(values)
}

/** A read-only connection of its own to the SQLite log in `filename` (see log-reader.ts). */
export function sqliteLogReader (filename: string): LogReader {
  const db = openReadOnly(filename, {})
  // Rows as arrays: verify reads every row, and an object per row keyed by column name costs more.
  const bounded = db.prepare<[number, number, number], unknown[]>(`SELECT ${COLUMNS} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?`).raw(true)
  const open = db.prepare<[number, number], unknown[]>(`SELECT ${COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?`).raw(true)
  const selectHead = db.prepare<[], ChainHead>(HEAD_SQL)
  const reads: LogReads = {
    async page (after, upTo, limit) {
      return (upTo === undefined ? open.all(after, limit) : bounded.all(after, upTo, limit)).map(toRow)
    },
    async head () {
      return selectHead.get()
    }
  }
  return {
    ...reads,
    async snapshot (work) {
      // In WAL mode a read transaction sees the database as of its first read, to its end.
      db.exec('BEGIN')
      try {
        return await work(reads)
      } finally {
        db.exec('COMMIT')
      }
    },
    async close () {
      db.close()
    }
  }
}
