// SQL and row mapping for leases, shared by the SQLite and PostgreSQL stores (same table, same
// statements; only parameter markers and the clock differ).
import { errors } from '../errors.js'
import type { LeaseGrant, LeaseRow } from './contract.js'

export interface LeaseDbRow {
  name: string
  holder: string
  token: number
  acquired_at: number
  expires_at: number
  live: number | boolean
}

/**
 * Takes or renews a lease in one statement; `$now` is the database's time in ms. A renewal keeps
 * the token; a takeover (another holder, the old lease expired or released) adds one to it. It
 * returns no row when another holder's lease is still live.
 */
export const ACQUIRE_LEASE = `INSERT INTO leases (name, holder, token, acquired_at, expires_at)
  VALUES ($name, $holder, 1, $now, $now + $ttl)
  ON CONFLICT (name) DO UPDATE SET
    token = CASE WHEN leases.holder = excluded.holder THEN leases.token ELSE leases.token + 1 END,
    acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at ELSE excluded.acquired_at END,
    holder = excluded.holder,
    expires_at = excluded.expires_at
  WHERE leases.holder = excluded.holder OR leases.expires_at <= excluded.acquired_at
  RETURNING holder, token, expires_at`

/** Lets the lease go at once (its token stays, so the next holder's is higher). */
export const RELEASE_LEASE = 'UPDATE leases SET expires_at = $now WHERE name = $name AND holder = $holder AND expires_at > $now'

export const SELECT_LEASE = 'SELECT holder, token, expires_at FROM leases WHERE name = $name'

export const LIST_LEASES = 'SELECT name, holder, token, acquired_at, expires_at, expires_at > $now AS live FROM leases ORDER BY name'

export const toGrant = (row: Pick<LeaseDbRow, 'holder' | 'token' | 'expires_at'>, caller: string): LeaseGrant =>
  ({ held: row.holder === caller, holder: row.holder, token: row.token, expiresAt: row.expires_at })

export const toLease = (row: LeaseDbRow): LeaseRow => ({
  name: row.name,
  holder: row.holder,
  token: row.token,
  acquiredAt: row.acquired_at,
  expiresAt: row.expires_at,
  live: row.live === true || row.live === 1
})

/** Refuses a lease request a store cannot honour, before it reaches the database. */
export function checkLeaseRequest (name: string, holder: string, ttlMs?: number): void {
  if (typeof name !== 'string' || name === '') throw new errors.INVALID_LEASE('the lease name must be a non-empty string')
  if (typeof holder !== 'string' || holder === '') throw new errors.INVALID_LEASE('the holder must be a non-empty string')
  if (ttlMs !== undefined && !(Number.isSafeInteger(ttlMs) && ttlMs > 0)) throw new errors.INVALID_LEASE('ttlMs must be a positive integer')
}

/**
 * `sql` with its `$name` markers in the form a backend binds: those in `literals` become their
 * SQL text (an expression such as the database's clock), the others their position in `names`
 * (`$1`, `$2`, ...), for PostgreSQL.
 */
export function positional (sql: string, names: readonly string[], literals: Readonly<Record<string, string>> = {}): string {
  return sql.replace(/\$([a-z]+)/g, (_, name: string) => {
    const literal = literals[name]
    if (literal !== undefined) return literal
    const index = names.indexOf(name)
    if (index === -1) throw new Error(`no parameter named ${name}`)
    return `$${index + 1}`
  })
}
