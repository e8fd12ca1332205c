import type { LogRow } from '../../domain/types.js'
import type { LogReader, LogReads } from '../log-reads.js'
import { fromColumns, LOG_COLUMNS, type ChainHead } from '../rows.js'
import { openPool, SELECT_HEAD, transaction, type Client } from './postgres-connection.js'

// pg's query with a config object, which the minimal Client of postgres-writer.ts leaves out.
interface ArrayQueryable {
  query: (config: { text: string; values: unknown[]; rowMode: 'array' }) => Promise<{ rows: unknown[][] }>
}

/** The reads of log-reader.ts on `client`. */
function readsOn (client: Pick<Client, 'query'>): LogReads {
  const arrays = client as unknown as ArrayQueryable
  return {
    async page (after, upTo, limit): Promise<LogRow[]> {
      const { rows } = upTo === undefined
        ? await arrays.query({ text: `SELECT ${LOG_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2`, values: [after, limit], rowMode: 'array' })
        : await arrays.query({ text: `SELECT ${LOG_COLUMNS} FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3`, values: [after, upTo, limit], rowMode: 'array' })
      return rows.map(fromColumns)
    },
    async head () {
      return (await client.query<ChainHead>(SELECT_HEAD)).rows[0]
    }
  }
}

/** A read-only connection of its own to the PostgreSQL log at `connectionString`, in `schema` (see log-reader.ts). */
export async function postgresLogReader (connectionString: string, schema: string | undefined): Promise<LogReader> {
  const pool = await openPool({ connectionString, schema, readOnly: true, max: 1 })
  return {
    ...readsOn(pool),
    snapshot: (work) => transaction(pool, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', (client) => work(readsOn(client))),
    close: () => pool.end()
  }
}
