// Holding a lease in the store for background work that must run in one process at a time (a
// consumer, the reconciler): taking it, renewing it on a timer of its own, and knowing, on this
// process's clock alone, until when it is surely still ours (docs/design.md, "Leases and consumers").
import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { G2SentryStore, LeaseFence, LeaseGrant } from '../store/contract.js'

/** A holder id unique to this process and this piece of work: host, pid and a random part. */
export const newHolderId = (): string => `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`

export interface LeaseHolderOptions {
  store: Pick<G2SentryStore, 'acquireLease' | 'releaseLease'>
  /** The lease's name in the store. */
  name: string
  /** How long the lease lasts unless renewed (ms); it is renewed every third of it. */
  ttlMs: number
  /** The lease was lost: another holder took it, or it was not renewed in time. */
  onLost?: (fence: LeaseFence) => void
  /** Another holder has the lease (each time `acquire` finds it taken). */
  onTaken?: (grant: LeaseGrant) => void
  /** A renewal could not reach the store (the lease is kept while it surely lasts). */
  onError?: (error: unknown) => void
}

export interface LeaseHolder {
  readonly holder: string
  /** True while the lease is surely this process's: taken or renewed less than its ttl ago. */
  readonly holding: boolean
  /** The lease's fence while `holding`, for the store's fenced writes. */
  readonly fence: LeaseFence | undefined
  /** The token of the lease this process held last, held still or not. */
  readonly lastToken: number | undefined
  /** Takes the lease if it is free (or renews it if held); resolves with whether it is held. */
  acquire: () => Promise<boolean>
  /** Renews now if less than two thirds of the ttl is left (for work that holds the event loop long). */
  renewIfDue: () => Promise<void>
  /** Forgets the lease here at once: a fenced write was refused, so another holder has it. */
  drop: () => void
  /** Stops renewing and gives the lease back in the store, if held. */
  release: () => Promise<void>
}

/**
 * A lease held with a margin: it counts as held until `ttlMs` after the request that took or last
 * renewed it was sent, so the store's later clock can only make it longer than this process
 * thinks. A renewal that finds another holder, or a new token, loses it; one that cannot reach
 * the store keeps it only until that time.
 */
export function leaseHolder (options: LeaseHolderOptions): LeaseHolder {
  const { store, name, ttlMs } = options
  const holder = newHolderId()
  let fence: LeaseFence | undefined
  let lastToken: number | undefined
  let until = 0
  let timer: NodeJS.Timeout | undefined
  let renewing: Promise<void> | undefined

  const holding = (): boolean => fence !== undefined && Date.now() < until

  const lose = (): void => {
    const lost = fence
    fence = undefined
    clearInterval(timer)
    if (lost !== undefined) options.onLost?.(lost)
  }

  const renewNow = async (): Promise<void> => {
    const current = fence
    if (current === undefined) return
    const asked = Date.now()
    try {
      const grant = await store.acquireLease(name, holder, ttlMs)
      if (fence !== current) return
      if (!grant.held || grant.token !== current.token) lose()
      else until = asked + ttlMs
    } catch (error) {
      options.onError?.(error)
      if (fence === current && Date.now() >= until) lose()
    }
  }
  const renew = (): Promise<void> => {
    renewing ??= renewNow().finally(() => { renewing = undefined })
    return renewing
  }

  return {
    holder,
    get holding () { return holding() },
    get fence () { return holding() ? fence : undefined },
    get lastToken () { return lastToken },
    async acquire () {
      if (holding()) return true
      // Held once, and not renewed in time: lost, whatever the store says now.
      if (fence !== undefined) lose()
      const asked = Date.now()
      const grant = await store.acquireLease(name, holder, ttlMs)
      if (!grant.held) {
        options.onTaken?.(grant)
        return false
      }
      fence = { lease: name, holder, token: grant.token }
      lastToken = grant.token
      until = asked + ttlMs
      clearInterval(timer)
      timer = setInterval(() => { void renew() }, Math.max(1, Math.floor(ttlMs / 3))).unref()
      return true
    },
    async renewIfDue () {
      if (fence !== undefined && Date.now() >= until - (ttlMs * 2) / 3) await renew()
    },
    drop: lose,
    async release () {
      clearInterval(timer)
      await renewing
      const held = fence !== undefined
      fence = undefined
      if (held) await store.releaseLease(name, holder)
    }
  }
}
