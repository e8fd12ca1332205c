// What a `database` option names, without loading a store: worker threads that only read the
// log (src/log/audit-worker.ts) load this and not the stores.
const POSTGRES_URL = /^postgres(ql)?:\/\//

/** True when `database` names a PostgreSQL database rather than a SQLite file. */
export const isPostgresUrl = (database: string): boolean => POSTGRES_URL.test(database)

/** A `postgres://` URL split into the connection string and the schema its `schema` query parameter names. */
export function postgresTarget (database: string): { connectionString: string; schema: string | undefined } {
  const url = new URL(database)
  const schema = url.searchParams.get('schema') ?? undefined
  url.searchParams.delete('schema')
  return { connectionString: url.href, schema }
}
