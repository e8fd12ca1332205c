/**
 * Another process holding a SQLite file's write lock (`BEGIN IMMEDIATE`), as `g2sentry rebuild`
 * or an operator's `sqlite3` shell does, until told to let go.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

export interface LockHolder {
  /** Resolves once the holder printed `word` ('locked' once it holds the lock, 'released' after). */
  said: (word: string) => Promise<void>
  /** Rolls back and exits; resolves once it said 'released'. */
  release: () => Promise<void>
}

/** Starts a process that takes the write lock of `filename`; resolves once it holds it. */
export async function holdWriteLock (t: Test, filename: string): Promise<LockHolder> {
  const holder = spawn(process.execPath, ['-e', `
    const Database = require('better-sqlite3')
    const db = new Database(process.argv[1])
    db.exec('BEGIN IMMEDIATE')
    console.log('locked')
    process.stdin.once('data', () => { db.exec('ROLLBACK'); db.close(); console.log('released'); process.exit(0) })
  `, filename], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => {
    if (holder.exitCode === null && holder.signalCode === null) holder.kill('SIGKILL')
  })
  let out = ''
  holder.stdout.setEncoding('utf8').on('data', (chunk: string) => { out += chunk })
  const said = (word: string) => new Promise<void>((resolve, reject) => {
    const check = () => { if (out.includes(word)) resolve() }
    holder.stdout.on('data', check)
    holder.once('exit', () => { check(); reject(new Error(`the lock holder exited without saying "${word}": ${out}`)) })
    check()
  })
  await said('locked')
  let releasing: Promise<void> | undefined
  return {
    said,
    release () {
      if (releasing === undefined) {
        holder.stdin.write('go\n')
        releasing = said('released')
      }
      return releasing
    }
  }
}
