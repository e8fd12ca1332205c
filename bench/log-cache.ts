// Generated logs, kept between benchmark runs: a log of 10 million events takes minutes to write
// and gigabytes of disk, so it is written once per (size, seed) and reused. The cache lives
// outside the repository: $G2SENTRY_BENCH_CACHE, else $XDG_CACHE_HOME/fastify-g2sentry-bench,
// else ~/.cache/fastify-g2sentry-bench. Delete the directory to free the space.
import { copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { generateLog } from './generate-log.js'

/** Where generated logs are cached. */
export const CACHE_DIR = process.env.G2SENTRY_BENCH_CACHE ??
  join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'fastify-g2sentry-bench')

/**
 * The path of a SQLite log of `events` generated deliveries (seed 1), written first if it is not
 * in the cache. Never append to it: copy it first.
 *
 * A log being written is `log-N.db.partial` until it is complete. It starts as a copy of the
 * largest smaller log in the cache (the generator continues it with the same rows as if it had
 * written it from the start), and a partial log left by a run that was stopped is continued
 * where it stopped.
 */
export async function cachedLog (events: number, log: (line: string) => void = () => {}): Promise<string> {
  mkdirSync(CACHE_DIR, { recursive: true })
  const file = join(CACHE_DIR, `log-${events}.db`)
  if (existsSync(file)) return file
  const partial = `${file}.partial`
  const started = performance.now()
  if (existsSync(partial)) {
    log(`continuing ${partial}`)
  } else {
    for (const suffix of ['-wal', '-shm']) rmSync(partial + suffix, { force: true })
    const smaller = readdirSync(CACHE_DIR).map((name) => Number(/^log-(\d+)\.db$/.exec(name)?.[1] ?? NaN))
      .filter((n) => n < events).sort((a, b) => b - a)[0]
    if (smaller !== undefined) {
      log(`starting from the cached log of ${smaller.toLocaleString('en-US')} events`)
      copyFileSync(join(CACHE_DIR, `log-${smaller}.db`), partial)
    }
  }
  log(`generating a log of ${events.toLocaleString('en-US')} events in ${CACHE_DIR} (once; reused by later runs)`)
  let reported = 0
  const onProgress = (written: number) => {
    if (written - reported < 1_000_000 && written < events) return
    reported = written
    const seconds = (performance.now() - started) / 1000
    log(`  ${written.toLocaleString('en-US')} events, ${seconds.toFixed(0)} s`)
  }
  try {
    await generateLog(partial, events, 1, onProgress)
  } catch (error) {
    // A file that is not the start of this log cannot be continued: the next run starts afresh.
    if (/does not hold the start/.test(String(error))) for (const suffix of ['', '-wal', '-shm']) rmSync(partial + suffix, { force: true })
    throw error
  }
  renameSync(partial, file)
  log(`  written in ${((performance.now() - started) / 1000).toFixed(0)} s`)
  return file
}
