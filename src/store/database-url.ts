// What a `database` option names, without loading a store: worker threads that only read the
// log (src/log/audit-worker.ts) load this and not the stores.
const POSTGRES_URL = /^postgres(ql)?:\/\//

/** True when `database` names a PostgreSQL database rather than a SQLite file. */
export const isPostgresUrl = (database: string): boolean => POSTGRES_URL.test(database)

/**
 * A `postgres://` URL split into the connection string and the store's own query parameters,
 * which pg never sees: `schema` (the schema that holds the tables), `listen_url` (where to
 * LISTEN, URL-encoded, for a store behind a transaction-mode pooler) and `prepared_statements`
 * (`false` behind a pooler that does not carry them). Every other parameter (sslmode and the
 * rest) stays in the connection string for pg.
 */
export function postgresTarget (database: string): {
  connectionString: string; schema: string | undefined; listenUrl?: string; preparedStatements?: boolean
} {
  const url = new URL(database)
  const take = (name: string): string | undefined => {
    const value = url.searchParams.get(name) ?? undefined
    url.searchParams.delete(name)
    return value
  }
  const schema = take('schema')
  const listenUrl = take('listen_url')
  const prepared = take('prepared_statements')
  return {
    connectionString: url.href,
    schema,
    ...(listenUrl === undefined ? {} : { listenUrl }),
    ...(prepared === undefined ? {} : { preparedStatements: !/^(false|off|0|no)$/i.test(prepared) })
  }
}
