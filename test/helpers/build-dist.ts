// Run by tap before any test (package.json, tap.before): the tests that start the published CLI
// (bin/g2sentry.js → dist/) must never run a dist/ older than src/, so it is built when any
// source file is newer than it. `npm test` has just built it; a single test file run after an
// edit to src/ builds it here.
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../..', import.meta.url))
const built = join(root, 'dist', 'index.js')

function newest (dir: string): number {
  let latest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    latest = Math.max(latest, entry.isDirectory() ? newest(path) : statSync(path).mtimeMs)
  }
  return latest
}

const sources = Math.max(newest(join(root, 'src')), statSync(join(root, 'tsconfig.build.json')).mtimeMs, statSync(join(root, 'tsconfig.json')).mtimeMs)
if (!existsSync(built) || statSync(built).mtimeMs < sources) {
  process.stderr.write('dist/ is older than src/: building it for the tests that run the published CLI\n')
  execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' })
}
