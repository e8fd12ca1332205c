// Loaded with --import into a measured process: prints its peak RSS (MB) and the CPU time of all
// its threads (user and system, seconds) to stderr as it exits.
// On Linux, from VmHWM in /proc/self/status, the high-water mark of this process's own memory:
// getrusage's maxRSS (process.resourceUsage) keeps the image from before exec, a fork of the
// benchmark's process, so every child of a benchmark that had grown to 300 MB reported 300 MB.
import { readFileSync } from 'node:fs'

const peakMb = () => {
  try {
    const kb = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]
    if (kb !== undefined) return Number(kb) / 1024
  } catch {}
  return process.resourceUsage().maxRSS / 1024
}

process.on('exit', () => {
  const { user, system } = process.cpuUsage()
  process.stderr.write(`\npeak-rss-mb ${peakMb().toFixed(1)}\ncpu-seconds ${((user + system) / 1e6).toFixed(2)}\n`)
})
