// Durable consumers across processes (real child processes, real SIGKILL), on one SQLite file
// and on one PostgreSQL schema: a consumer killed in the middle of a handler hands that row over
// again after a restart, never skipping it; with two processes running the same consumer only
// one handles rows, and when that one is killed the other takes over within seconds, from the
// dead one's checkpoint.
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import type { G2SentryStore } from '../../src/store/contract.js'
import { openStore } from '../../src/store/open-store.js'
import { ROOT } from '../helpers/cli-process.js'
import { TS_LOADER } from '../helpers/ts-loader.js'
import { freshSchema, pgUrl, requirePg } from '../helpers/pg.js'
import { assigned, completed, incoming, started, T0 } from '../helpers/store-contract.js'

t.setTimeout(120_000)

interface Child {
  lines: string[]
  exited: Promise<void>
  kill: () => void
  waitFor: (line: string, ms?: number) => Promise<void>
}

function startChild (t: Test, env: Record<string, string>): Child {
  const child = spawn(process.execPath, [...TS_LOADER, 'test/helpers/consumer-child.ts'], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const lines: string[] = []
  let pending = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (pending + chunk).split('\n')
    pending = parts.pop() ?? ''
    lines.push(...parts)
  })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  return {
    lines,
    exited,
    kill: () => child.kill('SIGKILL'),
    async waitFor (line, ms = 20_000) {
      const deadline = Date.now() + ms
      while (!lines.includes(line)) {
        if (child.exitCode !== null) throw new Error(`the consumer exited before "${line}": ${stderr}`)
        if (Date.now() > deadline) throw new Error(`no "${line}" within ${ms} ms; saw ${lines.join(' | ')}; ${stderr}`)
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    }
  }
}

const handled = (child: Child): number[] => child.lines.filter((l) => l.startsWith('handled ')).map((l) => Number(l.slice(8)))

/** Appends three lifecycles: nine applied changes, seq 1 to 9. */
async function fill (store: G2SentryStore, from = 1): Promise<void> {
  for (let jobId = from; jobId < from + 3; jobId++) {
    for (const event of [assigned(jobId), started(jobId), completed(jobId)]) await store.append(incoming(event, T0 + jobId))
  }
}

async function checkpointAt (store: G2SentryStore, name: string, seq: number): Promise<void> {
  const deadline = Date.now() + 10_000
  for (;;) {
    const checkpoint = (await store.listConsumers()).find((c) => c.name === name)?.checkpoint
    if (checkpoint === seq) return
    if (Date.now() > deadline) throw new Error(`consumer ${name} stayed at ${checkpoint}, not ${seq}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

function backends (t: Test, body: (t: Test, database: () => string) => Promise<void>): void {
  t.test('sqlite', async (t) => body(t, () => join(t.testdir(), 'g2.db')))
  t.test('postgres', async (t) => {
    if (!await requirePg(t)) return
    const url = `${pgUrl()}?schema=${freshSchema(t)}`
    return body(t, () => url)
  })
}

t.test('a consumer killed while its handler runs hands that row over again after a restart', async (t) => {
  backends(t, async (t, database) => {
    const db = database()
    const store = await openStore(db)
    t.teardown(() => store.close())
    await fill(store)

    const first = startChild(t, { CONSUMER_DB: db, CONSUMER_NAME: 'mailer', CONSUMER_BLOCK_SEQ: '5' })
    await first.waitFor('handling 5')
    // Let a checkpoint land for what came before (saved when a page ends or every 250 ms).
    await new Promise((resolve) => setTimeout(resolve, 400))
    first.kill()
    await first.exited
    t.same(handled(first), [1, 2, 3, 4], 'the first process finished 1 to 4, then died inside 5')

    const second = startChild(t, { CONSUMER_DB: db, CONSUMER_NAME: 'mailer' })
    await second.waitFor('handled 9')
    t.equal(handled(second)[0], 5, 'the row whose handler was killed is handed over again first')
    t.same(handled(second), [5, 6, 7, 8, 9], 'then the rest, in order, none skipped')
    await checkpointAt(store, 'mailer', 9)
    t.pass('the checkpoint reaches the last row')
  })
})

t.test('two processes run one consumer: one handles, the other takes over when it is killed', async (t) => {
  backends(t, async (t, database) => {
    const db = database()
    const store = await openStore(db)
    t.teardown(() => store.close())
    await fill(store)

    const a = startChild(t, { CONSUMER_DB: db, CONSUMER_NAME: 'shared' })
    await a.waitFor('handled 9')
    const b = startChild(t, { CONSUMER_DB: db, CONSUMER_NAME: 'shared' })
    await b.waitFor('ready')
    await new Promise((resolve) => setTimeout(resolve, 1500))
    t.notOk(b.lines.includes('active'), 'the second process waits while the first holds the lease')

    await fill(store, 4)
    await a.waitFor('handled 18')
    t.same(handled(b), [], 'rows go to one process only')
    t.same(handled(a), Array.from({ length: 18 }, (_, i) => i + 1), 'the holder handled every row in order')

    // A kill between a handler and its checkpoint would hand that row over again (at least
    // once): kill once the checkpoint is saved, to see that nothing else repeats.
    await checkpointAt(store, 'shared', 18)
    const [lease] = (await store.listLeases()).filter((l) => l.name === 'consumer:shared')
    a.kill()
    const killedAt = Date.now()
    await fill(store, 7)
    await b.waitFor('handled 27')
    const takeover = Date.now() - killedAt
    t.ok(takeover < 10_000, `the standby took over within seconds (${takeover} ms, lease 1000 ms)`)
    t.same(handled(b), Array.from({ length: 9 }, (_, i) => 19 + i), 'from the dead one\'s checkpoint: nothing twice, nothing skipped')
    const [after] = (await store.listLeases()).filter((l) => l.name === 'consumer:shared')
    t.equal(after?.token, (lease?.token ?? 0) + 1, 'the takeover raised the lease token')
    t.not(after?.holder, lease?.holder)
  })
})
