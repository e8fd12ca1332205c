// npm run bench [-- --duration 10 --rounds 3 --connections 50,10 --jobs 20000 --events 1000000 --store sqlite|postgres
//   --baseline DIR --skip-load --skip-replay --skip-per-event --readers 5 --stream-events 100000 --stream-seconds 15 --skip-stream
//   --skip-pooler --unprepared]
import Database from 'better-sqlite3'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { round, type RoundResult, type Target } from './load.js'
import { generateLog } from './generate-log.js'
import { streamRun, type StreamRun } from './stream.js'
import { launchPgBouncer, pgbouncerBinary } from '../test/helpers/pgbouncer.js'

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '50,10' },
    jobs: { type: 'string', default: '20000' },
    events: { type: 'string', default: '1000000' },
    store: { type: 'string', default: 'sqlite' },
    pg: { type: 'string', default: process.env.G2SENTRY_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test' },
    // Another checkout of this repository (with node_modules) whose plugin runs as one more target.
    baseline: { type: 'string' },
    'skip-per-event': { type: 'boolean', default: false },
    'skip-load': { type: 'boolean', default: false },
    'skip-replay': { type: 'boolean', default: false },
    readers: { type: 'string', default: '5' },
    'stream-events': { type: 'string', default: '100000' },
    'stream-seconds': { type: 'string', default: '15' },
    'skip-stream': { type: 'boolean', default: false },
    // PostgreSQL: no target through PgBouncer (which runs only where pgbouncer is installed).
    'skip-pooler': { type: 'boolean', default: false },
    // PostgreSQL: each target again with preparedStatements: false.
    unprepared: { type: 'boolean', default: false }
  }
})

if (values.store !== 'sqlite' && values.store !== 'postgres') throw new Error('--store is sqlite or postgres')
const plugin = values.store === 'sqlite' ? ['plugin', '$DB'] : ['postgres', values.pg, '$SCHEMA']
// PostgreSQL through a real PgBouncer in transaction mode with its default settings, started here.
const pooler = values.store === 'postgres' && !values['skip-pooler'] && pgbouncerBinary() !== undefined
  ? await launchPgBouncer(values.pg)
  : undefined
if (pooler !== undefined) process.on('exit', pooler.stop)
else if (values.store === 'postgres' && !values['skip-pooler']) console.log('pgbouncer is not installed: no target through PgBouncer')
const postgresTargets: Target[] = values.store === 'sqlite'
  ? []
  : [
      ...(values.unprepared ? [{ name: 'on PostgreSQL, preparedStatements: false', args: [...plugin, 'unprepared'] }] : []),
      ...(pooler === undefined
        ? []
        : [
            { name: 'through PgBouncer (transaction mode)', args: ['postgres', pooler.url, '$SCHEMA'] },
            ...(values.unprepared ? [{ name: 'through PgBouncer, preparedStatements: false', args: ['postgres', pooler.url, '$SCHEMA', 'unprepared'] }] : [])
          ])
    ]
const TARGETS: Target[] = [
  { name: 'bare route (HMAC, 204, no storage)', args: ['bare'] },
  { name: `fastify-g2sentry${values.store === 'sqlite' ? ' (group commit)' : ' on PostgreSQL'}`, args: plugin },
  ...postgresTargets,
  ...(values.baseline === undefined ? [] : [{ name: `baseline: ${values.baseline}`, args: plugin, cwd: values.baseline }]),
  ...(values.store === 'sqlite' && !values['skip-per-event'] ? [{ name: 'fastify-g2sentry, one commit per event', args: ['plugin', '$DB', '1'] }] : [])
]

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] as number }
const medianOrDash = (xs: Array<number | null>, digits = 0) => xs.some((x) => x === null) ? '-' : fmt(median(xs as number[]), digits)
const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
const row = (cells: string[], widths: number[]) => cells.map((c, i) => i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number)).join('  ')

console.log(`fastify-g2sentry benchmark — ${new Date().toISOString()}`)
console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${fmt(totalmem() / 2 ** 30)} GiB, Node ${process.version}; store: ${values.store === 'sqlite' ? 'SQLite, WAL, synchronous=FULL' : 'PostgreSQL (fsync on, synchronous_commit on), same machine'}`)

if (!values['skip-load']) {
  const duration = Number(values.duration)
  const rounds = Number(values.rounds)
  const jobs = Number(values.jobs)
  const connectionsList = values.connections.split(',').map(Number)
  console.log(`\nHTTP load: autocannon, ${duration} s per run after a 2 s warm-up, ${rounds} rounds, targets alternating, ${fmt(jobs)} jobs, distinct signed bodies\n`)
  const widths = [40, 5, 22, 7, 7, 7, 8, 11, 7, 11, 11]
  console.log(row(['target', 'conns', 'req/s median [range]', 'p50 ms', 'p99 ms', '× bare', 'p99 ×', 'server CPU', 'batch', '2xx sent', 'committed'], widths))
  console.log(row(['', '', '', '', '', 'req/s', 'bare p99', 'µs/request', 'mean', '', ''], widths))
  for (const connections of connectionsList) {
    const results = new Map<string, RoundResult[]>()
    for (let r = 0; r < rounds; r++) {
      for (const target of TARGETS) {
        const result = await round(target, connections, duration, jobs)
        results.set(target.name, [...(results.get(target.name) ?? []), result])
      }
    }
    const bare = median((results.get(TARGETS[0]!.name) ?? []).map((r) => r.rps))
    const bareP99 = median((results.get(TARGETS[0]!.name) ?? []).map((r) => r.p99))
    for (const target of TARGETS) {
      const rs = results.get(target.name) ?? []
      const rps = rs.map((r) => r.rps)
      const ok = rs.reduce((n, r) => n + r.sent2xx, 0)
      const committed = rs.every((r) => r.committed === null) ? '-' : fmt(rs.reduce((n, r) => n + (r.committed ?? 0), 0))
      const other = rs.reduce((n, r) => n + r.other, 0)
      console.log(row([
        target.name, String(connections),
        `${fmt(median(rps))} [${fmt(Math.min(...rps))}–${fmt(Math.max(...rps))}]`,
        fmt(median(rs.map((r) => r.p50)), 2), fmt(median(rs.map((r) => r.p99)), 2),
        `${fmt(median(rps) / bare, 2)}×`, `${fmt(median(rs.map((r) => r.p99)) / bareP99, 2)}×`, medianOrDash(rs.map((r) => r.serverCpuUs)), medianOrDash(rs.map((r) => r.meanBatch), 1),
        fmt(ok) + (other > 0 ? ` (+${other} other)` : ''), committed
      ], widths))
      if (target !== TARGETS[0]) {
        // Each round against the bare route's run just before it: how far one round's ratio strays
        // from the median's, when the machine's speed changes during the run.
        const bareRounds = results.get(TARGETS[0]!.name) ?? []
        const ratios = rs.map((r, i) => fmt(r.rps / (bareRounds[i]?.rps ?? NaN), 2))
        console.log(`${''.padEnd(widths[0] as number)}  each round × that round's bare route: ${ratios.join(', ')}`)
      }
      if (postgresTargets.includes(target)) {
        // A PostgreSQL variant against the direct connection, round by round (they ran back to back).
        const direct = results.get(TARGETS[1]!.name) ?? []
        const ratios = rs.map((r, i) => fmt(r.rps / (direct[i]?.rps ?? NaN), 2))
        console.log(`${''.padEnd(widths[0] as number)}  × direct PostgreSQL: ${fmt(median(rps) / median(direct.map((r) => r.rps)), 2)}× (each round: ${ratios.join(', ')})`)
      }
      if (committed !== '-') {
        const lost = rs.filter((r) => (r.committed ?? 0) < r.sent2xx).length
        const unanswered = rs.reduce((n, r) => n + (r.committed ?? 0) - r.sent2xx, 0)
        console.log(`${''.padEnd(widths[0] as number)}  every 2xx committed: ${lost === 0 ? 'yes' : `NO, in ${lost} rounds`}` +
          ` (${fmt(unanswered)} more committed than answered: clients gone when the run stopped)`)
      }
    }
  }
}

if (!values['skip-replay'] && values.store === 'sqlite') {
  const events = Number(values.events)
  const dir = mkdtempSync(join(tmpdir(), 'g2sentry-replay-'))
  try {
    const file = join(dir, 'replay.db')
    const started = performance.now()
    const { jobs } = await generateLog(file, events)
    console.log(`\nReplay: a log of ${fmt(events)} generated deliveries over ${fmt(jobs)} jobs (written in ${fmt((performance.now() - started) / 1000, 1)} s), each measurement in a fresh process\n`)
    const bytes = statSync(file).size
    // Each measurement in a fresh Node process without the TypeScript loader: the raw scan, and the
    // published CLI as an auditor runs it (`rebuild`; `verify`, which also checks the hash chain).
    type Measurement = { seconds: number; rssMb: number; cpuSeconds: number; stdout: string }
    // The median time, and the highest peak RSS of the runs.
    const medianRun = (runs: Measurement[]): Measurement => ({
      ...[...runs].sort((a, b) => a.seconds - b.seconds)[Math.floor(runs.length / 2)] as Measurement,
      rssMb: Math.max(...runs.map((m) => m.rssMb))
    })
    const measure = (args: string[]): Measurement => {
      const started = performance.now()
      const run = spawnSync(process.execPath, ['--import', './bench/report-usage.mjs', ...args], { encoding: 'utf8' })
      if (run.status !== 0 && !(args.includes('verify') && run.status === 1)) throw new Error(`${args.join(' ')} failed: ${run.stderr}`)
      return {
        seconds: (performance.now() - started) / 1000,
        rssMb: Number(/peak-rss-mb (\S+)/.exec(run.stderr)?.[1]),
        cpuSeconds: Number(/cpu-seconds (\S+)/.exec(run.stderr)?.[1]),
        stdout: run.stdout
      }
    }
    const idle = measure(['bench/raw-scan.mjs'])
    // The scan and the rebuild alternate, three times each, and the median counts: on a shared
    // machine one run of each can differ by a third. verify takes several times longer; once.
    const scans: Measurement[] = []
    const rebuilds: Measurement[] = []
    // A consumer catching up from the beginning: a new name each run, so each starts at seq 0.
    const consumedRows: Measurement[] = []
    const consumedChanges: Measurement[] = []
    for (let r = 0; r < 3; r++) {
      scans.push(measure(['bench/raw-scan.mjs', file]))
      rebuilds.push(measure(['bin/g2sentry.js', 'rebuild', '--db', file]))
      consumedRows.push(measure(['bench/consume-log.mjs', file, 'rows', `bench-rows-${r}`]))
      consumedChanges.push(measure(['bench/consume-log.mjs', file, 'changes', `bench-changes-${r}`]))
    }
    if (consumedRows.some((m) => Number(m.stdout) !== events)) throw new Error(`a consumer handed over ${consumedRows.map((m) => m.stdout.trim()).join(', ')} rows, not ${events}`)
    const scan = medianRun(scans)
    const rebuild = medianRun(rebuilds)
    const consumeRows = medianRun(consumedRows)
    const consumeChanges = medianRun(consumedChanges)
    const verify = measure(['bin/g2sentry.js', 'verify', '--db', file, '--secret', 'bench'])
    if (!/^ok: /m.test(verify.stdout)) throw new Error(`verify did not pass:\n${verify.stdout}`)
    const widths = [50, 12, 10, 12, 10, 14]
    const seconds = (runs: Measurement[]) => runs.map((m) => fmt(m.seconds, 2)).join(', ')
    console.log(`scan seconds: ${seconds(scans)}; rebuild seconds: ${seconds(rebuilds)}; consumer seconds: rows ${seconds(consumedRows)}, changes ${seconds(consumedChanges)} (medians below)\n`)
    console.log(row(['measurement (a fresh process each)', 'events/s', 'seconds', '× raw scan', 'CPU s', 'peak RSS MB'], widths))
    for (const [name, m] of [['raw SQLite scan of the columns replay reads', scan], ['g2sentry rebuild (replace the projection)', rebuild],
      ['g2sentry verify (chain, signatures, projection)', verify],
      ['consumer catching up, every row (deliver: rows)', consumeRows],
      [`consumer catching up, ${fmt(Number(consumeChanges.stdout))} changes (deliver: changes)`, consumeChanges]] as const) {
      console.log(row([name, fmt(events / m.seconds), fmt(m.seconds, 2), `${fmt(scan.seconds / m.seconds, 2)}×`, fmt(m.cpuSeconds, 2), fmt(m.rssMb, 1)], widths))
    }
    // verify's checks are spread over every core; its CPU time over the cores is as fast as it can go.
    const cores = availableParallelism()
    const floor = verify.cpuSeconds / cores
    console.log(`\nverify used ${fmt(verify.cpuSeconds, 2)} s of CPU (${fmt(verify.cpuSeconds / scan.cpuSeconds, 1)}× the scan's); spread perfectly over ` +
      `${cores} cores that is ${fmt(floor, 2)} s at least, ${fmt(scan.seconds / floor, 2)}× the scan at most`)
    console.log(`\nidle process (Node and better-sqlite3, no work): peak RSS ${fmt(idle.rssMb, 1)} MB`)
    console.log(`database: ${fmt(bytes / 2 ** 20, 1)} MiB, ${fmt(bytes / events)} bytes per event (log, projection and indexes)`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

if (!values['skip-stream'] && values.store === 'sqlite') {
  const events = Number(values['stream-events'])
  const readers = Number(values.readers)
  const seconds = Number(values['stream-seconds'])
  const dir = mkdtempSync(join(tmpdir(), 'g2sentry-stream-'))
  try {
    const file = join(dir, 'stream.db')
    const { jobs } = await generateLog(file, events, 2)
    const db = new Database(file, { readonly: true })
    const applied = (db.prepare("SELECT count(*) AS n FROM events WHERE outcome = 'applied'").get() as { n: number }).n
    db.close()
    console.log(`\nLive stream: ${readers} clients with Last-Event-ID: 0 on a log of ${fmt(events)} deliveries (${fmt(applied)} applied changes to send) over ${fmt(jobs)} jobs.`)
    console.log(`The server in its own process, a fresh copy of the log per run; a probe sends one request at a time for ${seconds} s (GET /jobs/:id and a signed callback, alternating,`)
    console.log('10 ms apart); the clients connect after the first second. "never reading": each pauses its response from the start. RSS read from /proc every 50 ms.\n')
    const widths = [26, 7, 10, 8, 11, 11, 11, 10, 12, 5, 9]
    console.log(row(['clients', 'probes', 'worst ms', 'p99 ms', 'loop held', 'RSS before', 'RSS peak', 'growth', 'stream MB', 'cut', 'failures'], widths))
    console.log(row(['', '', '', '', 'max ms', 'MB', 'MB', 'MB', 'received', '', ''], widths))
    const runs: StreamRun[] = []
    for (const kind of ['none', 'stalled', 'reading'] as const) {
      const run = await streamRun(file, kind, readers, seconds, jobs)
      runs.push(run)
      const name = kind === 'none' ? 'none' : `${readers} ${kind === 'stalled' ? 'never reading' : 'reading'}`
      console.log(row([name, fmt(run.probes), fmt(run.worstMs, 1), fmt(run.p99Ms, 1), fmt(run.loopMaxMs, 1), fmt(run.rssBeforeMb, 1), fmt(run.rssPeakMb, 1),
        fmt(run.rssPeakMb - run.rssBeforeMb, 1), kind === 'none' ? '-' : fmt(run.streamBytes / 2 ** 20, 1), kind === 'none' ? '-' : String(run.cut), String(run.failures)], widths))
    }
    const [none, stalled] = runs as [StreamRun, StreamRun, StreamRun]
    console.log(`\nnever-reading clients against none: worst request ${fmt(stalled.worstMs, 1)} ms against ${fmt(none.worstMs, 1)} ms (${fmt(stalled.worstMs / none.worstMs, 2)}×); ` +
      `RSS growth ${fmt(stalled.rssPeakMb - stalled.rssBeforeMb, 1)} MB against ${fmt(none.rssPeakMb - none.rssBeforeMb, 1)} MB`)
    console.log(`goal (no request delayed more than 1 s, RSS growth under 150 MB): ${stalled.worstMs <= 1000 && stalled.rssPeakMb - stalled.rssBeforeMb < 150 ? 'met' : 'NOT met'}`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
