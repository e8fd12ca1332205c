// A fresh copy of a large log for each benchmark run, without writing gigabytes each time.
import { closeSync, copyFileSync, existsSync, fstatSync, fsyncSync, ftruncateSync, openSync, readSync, rmSync, statSync, writeSync } from 'node:fs'

/**
 * Makes `target` a byte-for-byte copy of `source` and flushes it to disk, so the kernel is not
 * still writing it back while the next run is measured. The first time it copies the file; after
 * that `target` is the copy a run appended to, and only its blocks that differ from `source`
 * are written back (a run changes a few MiB of a 4.6 GiB log, where a copy would write all of
 * it). Both files are read whole, so every block is compared.
 * Returns the bytes written.
 */
export function freshCopy (source: string, target: string): number {
  // A run's WAL (left if the server was killed) belongs to the copy being undone.
  for (const suffix of ['-wal', '-shm']) rmSync(target + suffix, { force: true })
  if (!existsSync(target)) {
    copyFileSync(source, target)
    const fd = openSync(target, 'r+')
    try { fsyncSync(fd) } finally { closeSync(fd) }
    return statSync(source).size
  }
  const from = openSync(source, 'r')
  const to = openSync(target, 'r+')
  try {
    const size = fstatSync(from).size
    ftruncateSync(to, size)
    const block = 1 << 20
    const a = Buffer.alloc(block)
    const b = Buffer.alloc(block)
    let written = 0
    for (let at = 0; at < size; at += block) {
      const length = Math.min(block, size - at)
      if (readSync(from, a, 0, length, at) !== length) throw new Error(`short read of ${source} at ${at}`)
      const got = readSync(to, b, 0, length, at)
      if (got === length && a.subarray(0, length).equals(b.subarray(0, length))) continue
      if (writeSync(to, a, 0, length, at) !== length) throw new Error(`short write of ${target} at ${at}`)
      written += length
    }
    fsyncSync(to)
    return written
  } finally {
    closeSync(from)
    closeSync(to)
  }
}
