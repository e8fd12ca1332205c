import { consumerLease } from '../../consumers/consumer.js'
import { errors } from '../../errors.js'
import type { G2SentryStore, LeaseRow, ParkedRow } from '../../store/contract.js'
import { paged } from '../../log/paged.js'
import type { ParseArgsConfig } from 'node:util'
import { defineCommand, UsageError, wholeNumber, type Command, type Io, type Values } from '../command.js'
import { withLog } from '../open-log.js'
import { padded } from '../render.js'

const summary = 'list the durable consumers (checkpoint, lag, parked rows, holder), move one, retry parked rows, delete one'
const usage = `Usage: g2sentry consumers        --db FILE|URL [--format table|ndjson]
       g2sentry consumers reset NAME --to SEQ --db FILE|URL
       g2sentry consumers parked --db FILE|URL [--consumer NAME] [--format table|ndjson]
       g2sentry consumers retry NAME --db FILE|URL [--seq SEQ]...
       g2sentry consumers delete NAME --db FILE|URL [--force]`
const help = `A durable consumer (the forwarder, or one started with fastify.g2sentry.consume) reads the log in
seq order from a checkpoint kept in the same database.
  (no subcommand)  each consumer: its checkpoint (the last seq it is done with), its lag (the
                   log's last seq minus the checkpoint), its parked rows, and the instance that
                   holds it now (host:pid:id), or "-" when none does
  reset            moves NAME's checkpoint to SEQ: the rows after SEQ are handed to its handler
                   again (to replay a range into a fixed handler), or, forward, skipped. A running
                   consumer notices and goes on from there.
  parked           the rows consumers gave up on after their maxAttempts, with the last error
  retry            asks NAME to hand its parked rows (all, or each --seq) to its handler again;
                   the instance running it does so within its poll interval
  delete           removes NAME's checkpoint and parked rows (an abandoned consumer otherwise
                   shows a growing lag for ever). Refused while an instance holds its lease;
                   --force deletes it all the same, and that instance then starts it again as
                   a new consumer (from the beginning of the log, or from now, as it is set up).
Every command needs an existing g2sentry log at --db: another program's database, or a
misspelled ?schema=, is refused, and nothing is created there.
Exit code 1 for an unknown consumer, a seq past the end of the log, a --seq with no parked
row, or a delete refused because the consumer is running.`

const CONSUMER_COLUMNS = ['consumer', 'checkpoint', 'lag', 'parked', 'holder'] as const
const CONSUMER_WIDTHS = [20, 10, 8, 6, 0]
const PARKED_COLUMNS = ['consumer', 'seq', 'jobId', 'eventType', 'attempts', 'retry', 'parkedAt', 'error'] as const
const PARKED_WIDTHS = [20, 8, 8, 15, 8, 5, 24, 0]
const PAGE = 500
// The options of every subcommand on one consumer: its name comes in as --name (see positional).
const NAMED = { db: { type: 'string' }, name: { type: 'string' } } as const

const formatOf = (value: string | undefined): 'table' | 'ndjson' => {
  const format = value ?? 'table'
  if (format !== 'table' && format !== 'ndjson') throw new UsageError('--format must be table or ndjson')
  return format
}

const liveHolder = (lease: LeaseRow | undefined): string | null => lease !== undefined && lease.live ? lease.holder : null

async function * parkedRows (store: G2SentryStore, consumer: string | undefined): AsyncGenerator<ParkedRow> {
  // Paged by seq within one consumer; across consumers the listing is in (consumer, seq) order.
  const names = consumer === undefined ? (await store.listConsumers()).map((c) => c.name) : [consumer]
  for (const name of names) {
    yield * paged((afterSeq: number | undefined, limit) => store.listParked({ consumer: name, afterSeq, limit }), (row) => row.seq, PAGE)
  }
}

const list = defineCommand({
  summary,
  usage,
  help,
  options: {
    db: { type: 'string' },
    format: { type: 'string' }
  },
  async run (values, { out }) {
    const format = formatOf(values.format)
    return withLog(values.db, 'read', async (store) => {
      const [consumers, leases, head] = await Promise.all([store.listConsumers(), store.listLeases(), store.chainHead()])
      const last = head?.seq ?? 0
      const byName = new Map(leases.map((lease) => [lease.name, lease]))
      if (format === 'table') await out(padded(CONSUMER_WIDTHS, CONSUMER_COLUMNS))
      for (const consumer of consumers) {
        const holder = liveHolder(byName.get(consumerLease(consumer.name)))
        const lag = Math.max(0, last - consumer.checkpoint)
        await out(format === 'table'
          ? padded(CONSUMER_WIDTHS, [consumer.name, String(consumer.checkpoint), String(lag), String(consumer.parked), holder ?? '-'])
          : JSON.stringify({ consumer: consumer.name, checkpoint: consumer.checkpoint, lag, parked: consumer.parked, holder, updatedAt: new Date(consumer.updatedAt).toISOString() }))
      }
      return 0
    })
  }
})

const reset = onConsumer('reset', { to: { type: 'string' } }, async (name, values, { out }) => {
  const to = wholeNumber('to', values.to)
  if (to === undefined) throw new UsageError('consumers reset needs --to SEQ')
  return withLog(values.db, 'write', async (store) => {
    const before = (await store.listConsumers()).find((c) => c.name === name)
    const last = (await store.chainHead())?.seq ?? 0
    if (before === undefined) throw new errors.CONSUMER_NOT_FOUND(name)
    if (to > last) throw new errors.INVALID_REQUEST(`--to ${to} is past the end of the log (last seq ${last})`)
    await store.resetConsumer(name, to, consumerLease(name))
    const what = to < before.checkpoint
      ? `rows ${to + 1} to ${before.checkpoint} will be handed over again`
      : to > before.checkpoint ? `rows ${before.checkpoint + 1} to ${to} are skipped` : 'unchanged'
    await out(`consumer ${name}: checkpoint ${before.checkpoint} -> ${to} (${what})`)
    return 0
  })
})

const parked = defineCommand({
  summary,
  usage,
  help,
  options: {
    db: { type: 'string' },
    consumer: { type: 'string' },
    format: { type: 'string' }
  },
  async run (values, { out }) {
    const format = formatOf(values.format)
    return withLog(values.db, 'read', async (store) => {
      if (format === 'table') await out(padded(PARKED_WIDTHS, PARKED_COLUMNS))
      for await (const row of parkedRows(store, values.consumer)) {
        const parkedAt = new Date(row.parkedAt).toISOString()
        await out(format === 'table'
          ? padded(PARKED_WIDTHS, [row.consumer, String(row.seq), String(row.jobId ?? ''), row.eventType ?? '', String(row.attempts),
            row.retryRequested ? 'yes' : '', parkedAt, row.error])
          : JSON.stringify({ ...row, parkedAt }))
      }
      return 0
    })
  }
})

const retry = onConsumer('retry', { seq: { type: 'string', multiple: true } }, async (name, values, { out }) => {
  const seqs = values.seq?.map((seq) => wholeNumber('seq', seq) as number)
  return withLog(values.db, 'write', async (store) => {
    if (!(await store.listConsumers()).some((c) => c.name === name)) throw new errors.CONSUMER_NOT_FOUND(name)
    for (const seq of seqs ?? []) {
      const [row] = await store.listParked({ consumer: name, afterSeq: seq - 1, limit: 1 })
      if (row?.seq !== seq) throw new errors.INVALID_REQUEST(`consumer ${name} has no parked row at seq ${seq} (g2sentry consumers parked lists them); nothing was asked`)
    }
    const count = await store.retryParked(name, seqs)
    await out(`consumer ${name}: ${count} parked row${count === 1 ? '' : 's'} to retry`)
    return 0
  })
})

const remove = onConsumer('delete', { force: { type: 'boolean' } }, async (name, values, { out }) =>
  withLog(values.db, 'write', async (store) => {
    const before = (await store.listConsumers()).find((c) => c.name === name)
    const deletion = await store.deleteConsumer(name, consumerLease(name), { force: values.force === true })
    if (before === undefined || !deletion.found) throw new errors.CONSUMER_NOT_FOUND(name)
    if (!deletion.deleted) throw new errors.CONSUMER_HELD(name, deletion.holder, new Date(deletion.expiresAt as number).toISOString())
    const parkedRows = `${deletion.parked} parked row${deletion.parked === 1 ? '' : 's'}`
    const forced = deletion.holder === null ? '' : `; ${deletion.holder} held it and will start it again as a new consumer`
    await out(`consumer ${name}: deleted (checkpoint ${before.checkpoint}, ${parkedRows})${forced}`)
    return 0
  }))

/**
 * The subcommand `consumers SUBCOMMAND NAME --db … [options]`: `run` gets the consumer's name,
 * `--db` and the subcommand's own `options`.
 */
function onConsumer<const O extends NonNullable<ParseArgsConfig['options']>> (subcommand: string, options: O,
  run: (name: string, values: Values<O & typeof NAMED>, io: Io) => Promise<number>): Command {
  return positional(subcommand, defineCommand({
    summary,
    usage,
    help,
    options: { ...NAMED, ...options },
    run: (values, io) => run((values as { name?: string }).name as string, values as Values<O & typeof NAMED>, io)
  }))
}

/** A subcommand whose first argument is the consumer's name (passed on as `--name`). */
function positional (subcommand: string, command: Command): Command {
  return {
    ...command,
    async run (args, io) {
      const [name, ...rest] = args
      if (name === undefined || name.startsWith('-')) {
        if (args.includes('--help') || args.includes('-h')) return command.run(['--help'], io)
        throw new UsageError(`consumers ${subcommand} needs the consumer's name: g2sentry consumers ${subcommand} NAME ...`)
      }
      if (rest.includes('--name')) throw new UsageError('unknown option --name')
      return command.run([...rest, '--name', name], io)
    }
  }
}

const SUBCOMMANDS: Record<string, Command> = { reset, parked, retry, delete: remove }

/** `g2sentry consumers`: the listing without a subcommand, or reset, parked, retry, delete. */
export const consumers: Command = {
  summary,
  usage,
  help,
  async run (args, io) {
    const [first, ...rest] = args
    if (first !== undefined && !first.startsWith('-')) {
      const subcommand = Object.hasOwn(SUBCOMMANDS, first) ? SUBCOMMANDS[first] : undefined
      if (subcommand === undefined) throw new UsageError(`unknown consumers subcommand "${first}": reset, parked, retry or delete`)
      return subcommand.run(rest, io)
    }
    return list.run(args, io)
  }
}
