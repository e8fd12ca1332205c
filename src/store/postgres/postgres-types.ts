// Minimal shapes of what this store uses from `pg`, so `pg` stays an optional peer dependency.
export interface QueryResult<R> { rows: R[] }
/** A query whose rows come back as arrays, column by column (pg's `rowMode: 'array'`). */
export interface ArrayQuery { text: string; values: unknown[]; rowMode: 'array' }
/** A query prepared once per connection under `name`, then only bound and run (pg's named statements). */
export interface NamedQuery { name: string; text: string; values: unknown[] }
export interface Client {
  query: (<R = Record<string, unknown>>(text: string, values?: unknown[]) => Promise<QueryResult<R>>) &
    (<R extends unknown[]>(query: ArrayQuery) => Promise<QueryResult<R>>) &
    (<R = Record<string, unknown>>(query: NamedQuery) => Promise<QueryResult<R>>)
  release: (error?: Error | boolean) => void
}
export interface Pool {
  query: Client['query']
  connect: () => Promise<Client>
  end: () => Promise<void>
  on: ((event: 'error', listener: (error: Error) => void) => unknown) &
    ((event: 'connect', listener: (client: { on: (event: 'error', listener: (error: Error) => void) => unknown }) => void) => unknown)
}
