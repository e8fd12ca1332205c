// `g2sentry consumers` through the published CLI entry, on a real SQLite file and a real
// PostgreSQL schema written by the store: the listing (checkpoint, lag, parked rows, holder),
// a reset, the parked rows and a retry of them, and the mistakes it refuses.
import t, { type Test } from 'tap'
import { join } from 'node:path'
import type { G2SentryStore } from '../../src/store/contract.js'
import { openStore } from '../../src/store/open-store.js'
import { runCli } from '../helpers/cli-process.js'
import { freshSchema, pgUrl, requirePg } from '../helpers/pg.js'
import { fenceFor, seedLog } from '../helpers/store-contract.js'

// About thirty CLI processes, each loading Node and the store.
t.setTimeout(300_000)

/** Two consumers on a seeded log (8 rows): `forwarder` at 8, held by a live lease; `mailer` at 5 with two parked rows. */
async function prepare (store: G2SentryStore): Promise<void> {
  await seedLog(store)
  await store.openConsumer('forwarder', 'beginning')
  await store.openConsumer('mailer', 'beginning')
  const forwarder = await fenceFor(store, 'consumer:forwarder', 'host-a:4242:beef', 600_000)
  await store.saveCheckpoint('forwarder', 8, forwarder)
  const mailer = await fenceFor(store, 'consumer:mailer', 'host-b:99:cafe', 600_000)
  await store.saveCheckpoint('mailer', 2, mailer, { seq: 2, attempts: 5, error: 'HTTP 503' })
  await store.saveCheckpoint('mailer', 5, mailer, { seq: 5, attempts: 5, error: 'timeout' })
  await store.releaseLease('consumer:mailer', 'host-b:99:cafe')
}

async function suite (t: Test, db: string): Promise<void> {
  const store = await openStore(db)
  await prepare(store)
  await store.close()

  const table = await runCli(['consumers', '--db', db])
  t.equal(table.code, 0, table.stderr)
  t.same(table.stdout.trimEnd().split('\n').map((line) => line.split(/\s+/)), [
    ['consumer', 'checkpoint', 'lag', 'parked', 'holder'],
    ['forwarder', '8', '0', '0', 'host-a:4242:beef'],
    ['mailer', '5', '3', '2', '-']
  ], 'each consumer: checkpoint, lag, parked rows, live holder')

  const ndjson = await runCli(['consumers', '--db', db, '--format', 'ndjson'])
  t.match(JSON.parse(ndjson.stdout.split('\n')[1] as string), { consumer: 'mailer', checkpoint: 5, lag: 3, parked: 2, holder: null })

  const parked = await runCli(['consumers', 'parked', '--db', db])
  t.equal(parked.code, 0, parked.stderr)
  const lines = parked.stdout.trimEnd().split('\n')
  t.match(lines[0], /^consumer\s+seq\s+jobId\s+eventType\s+attempts\s+retry\s+parkedAt\s+error$/)
  t.match(lines[1], /^mailer\s+2\s+2\s+JobAssigned\s+5\s+\S+Z\s+HTTP 503$/)
  t.match(lines[2], /^mailer\s+5\s+2\s+JobAssigned\s+5\s+\S+Z\s+timeout$/)

  const retried = await runCli(['consumers', 'retry', 'mailer', '--seq', '5', '--db', db])
  t.equal(retried.code, 0, retried.stderr)
  t.equal(retried.stdout, 'consumer mailer: 1 parked row to retry\n')
  const after = await runCli(['consumers', 'parked', '--db', db, '--consumer', 'mailer', '--format', 'ndjson'])
  t.same(after.stdout.trimEnd().split('\n').map((line) => JSON.parse(line)).map((row: { seq: number; retryRequested: boolean }) => [row.seq, row.retryRequested]),
    [[2, false], [5, true]], 'the retry is asked for, for the running consumer to do')

  const reset = await runCli(['consumers', 'reset', 'forwarder', '--to', '3', '--db', db])
  t.equal(reset.code, 0, reset.stderr)
  t.equal(reset.stdout, 'consumer forwarder: checkpoint 8 -> 3 (rows 4 to 8 will be handed over again)\n')
  t.match((await runCli(['consumers', '--db', db])).stdout, /forwarder\s+3\s+5\s+0/, 'listed at its new checkpoint')

  const cases: Array<[string, string[], number, RegExp]> = [
    ['an unknown consumer', ['consumers', 'reset', 'nobody', '--to', '1', '--db', db], 1, /^g2sentry: no consumer named nobody/],
    ['a seq past the end', ['consumers', 'reset', 'mailer', '--to', '99', '--db', db], 1, /past the end of the log \(last seq 8\)/],
    ['no --to', ['consumers', 'reset', 'mailer', '--db', db], 2, /needs --to SEQ/],
    ['no name', ['consumers', 'reset', '--to', '1', '--db', db], 2, /needs the consumer's name/],
    ['retry of an unknown consumer', ['consumers', 'retry', 'nobody', '--db', db], 1, /no consumer named nobody/],
    ['an unknown subcommand', ['consumers', 'drop', 'mailer', '--db', db], 2, /unknown consumers subcommand "drop": reset, parked, retry or delete/],
    ['a delete without a name', ['consumers', 'delete', '--db', db], 2, /consumers delete needs the consumer's name/],
    ['a delete of an unknown consumer', ['consumers', 'delete', 'nobody', '--db', db], 1, /^g2sentry: no consumer named nobody/],
    ['a bad format', ['consumers', '--db', db, '--format', 'xml'], 2, /--format must be table or ndjson/]
  ]
  for (const [what, args, code, message] of cases) {
    const run = await runCli(args)
    t.equal(run.code, code, `${what}: exit ${code}`)
    t.match(run.stderr, message, what)
  }

  const parkedState = async (): Promise<string> => (await runCli(['consumers', 'parked', '--db', db, '--format', 'ndjson'])).stdout
  const before = await parkedState()
  const pastEnd = await runCli(['consumers', 'retry', 'mailer', '--seq', '99', '--db', db])
  t.equal(pastEnd.code, 1, 'retry --seq past the end: exit 1, as the help says')
  t.match(pastEnd.stderr, /^g2sentry: consumer mailer has no parked row at seq 99 \(g2sentry consumers parked lists them\); nothing was asked\n$/)
  const notParked = await runCli(['consumers', 'retry', 'mailer', '--seq', '2', '--seq', '7', '--db', db])
  t.equal(notParked.code, 1, 'retry of a seq that is in the log but not parked: exit 1')
  t.match(notParked.stderr, /no parked row at seq 7/)
  t.equal(await parkedState(), before, 'and nothing was asked for, not even the seq that is parked')

  const held = await runCli(['consumers', 'delete', 'forwarder', '--db', db])
  t.equal(held.code, 1, 'a delete while an instance holds the consumer: exit 1')
  t.match(held.stderr, /^g2sentry: consumer forwarder is running: host-a:4242:beef holds its lease until \d{4}-\d\d-\d\dT\S+Z; stop that instance first, or use --force/)
  const deleted = await runCli(['consumers', 'delete', 'mailer', '--db', db])
  t.equal(deleted.code, 0, deleted.stderr)
  t.equal(deleted.stdout, 'consumer mailer: deleted (checkpoint 5, 2 parked rows)\n')
  t.same((await runCli(['consumers', '--db', db])).stdout.trimEnd().split('\n').slice(1).map((line) => line.split(/\s+/)[0]), ['forwarder'], 'no longer listed')
  t.equal(await parkedState(), '', 'its parked rows are gone')
  const forced = await runCli(['consumers', 'delete', 'forwarder', '--force', '--db', db])
  t.equal(forced.code, 0, forced.stderr)
  t.equal(forced.stdout, 'consumer forwarder: deleted (checkpoint 3, 0 parked rows); host-a:4242:beef held it and will start it again as a new consumer\n')
  t.equal((await runCli(['consumers', '--db', db, '--format', 'ndjson'])).stdout, '', 'no consumer left')
}

t.test('sqlite', async (t) => suite(t, join(t.testdir(), 'g2.db')))

t.test('postgres', async (t) => {
  if (!await requirePg(t)) return
  await suite(t, `${pgUrl()}?schema=${freshSchema(t)}`)
})
