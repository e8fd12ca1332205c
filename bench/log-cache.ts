// Generated logs, kept between benchmark runs: a log of 10 million events takes minutes to write
// and gigabytes of disk, so it is written once per (size, seed) and reused. The cache lives
// outside the repository: $G2SENTRY_BENCH_CACHE, else $XDG_CACHE_HOME/fastify-g2sentry-bench,
// else ~/.cache/fastify-g2sentry-bench. Delete the directory to free the space.
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { generateLog } from './generate-log.js'

/** Where generated logs are cached. */
export const CACHE_DIR = process.env.G2SENTRY_BENCH_CACHE ??
  join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'fastify-g2sentry-bench')

/**
 * The path of a SQLite log of `events` generated deliveries (seed 1), written first if it is not
 * in the cache. Never append to it: copy it first.
 */
export async function cachedLog (events: number, log: (line: string) => void = () => {}): Promise<string> {
  mkdirSync(CACHE_DIR, { recursive: true })
  const file = join(CACHE_DIR, `log-${events}.db`)
  if (existsSync(file)) return file
  const partial = `${file}.partial`
  for (const suffix of ['', '-wal', '-shm']) rmSync(partial + suffix, { force: true })
  const started = performance.now()
  log(`generating a log of ${events.toLocaleString('en-US')} events in ${CACHE_DIR} (once; reused by later runs)`)
  await generateLog(partial, events)
  renameSync(partial, file)
  log(`  written in ${((performance.now() - started) / 1000).toFixed(0)} s`)
  return file
}
