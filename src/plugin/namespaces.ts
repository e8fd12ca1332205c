// Where a registration's API goes: `fastify.g2sentry` for the one registered without a namespace,
// `fastify.g2sentry.<namespace>` for each named one (the way @fastify/jwt does it), all on one
// object decorated once. A second registration under the same name is refused at once, before
// anything is opened.
import type { FastifyInstance } from 'fastify'
import { errors } from '../errors.js'

const taken = new WeakMap<object, Set<string>>()
const DEFAULT = ''

/** Claims `namespace` (or the default place) on `app`; returns how to put the API there. */
export function claimNamespace<D extends object> (app: FastifyInstance, namespace: string | undefined): (api: D) => void {
  if (!app.hasDecorator('g2sentry')) app.decorate('g2sentry', {} as FastifyInstance['g2sentry'])
  const holder = app.g2sentry as unknown as Record<string, unknown>
  let names = taken.get(holder)
  if (names === undefined) {
    names = new Set()
    taken.set(holder, names)
  }
  const name = namespace ?? DEFAULT
  if (names.has(name)) throw new errors.NAMESPACE_TAKEN(namespace === undefined ? 'without a namespace' : `with namespace ${namespace}`)
  names.add(name)
  return (api) => {
    if (namespace === undefined) Object.assign(holder, api)
    else holder[namespace] = api
  }
}
