// The CLI's command line, in-process through `main` (no child process, no database unless a
// test makes one): each command takes its own options only, and a mistake exits 2 with a usage line.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

const listenersBefore = process.stdout.listenerCount('error')
const { main } = await import('../../src/cli/cli.js')
const { COMMANDS } = await import('../../src/cli/commands/index.js')

interface Captured { code: number; out: string[]; err: string[] }

async function run (...argv: string[]): Promise<Captured> {
  const out: string[] = []
  const err: string[] = []
  const code = await main(argv, (line) => { out.push(line) }, (line) => { err.push(line) }, (chunk) => { out.push(chunk) })
  return { code, out, err }
}

t.test('importing the CLI installs no handler on stdout (bin.ts does, for | head)', async (t) => {
  t.equal(process.stdout.listenerCount('error'), listenersBefore)
})

t.test('an option of another command is a usage error: exit 2, the message, then the usage line', async (t) => {
  // A file that exists, so that the only mistake is the option.
  const db = join(t.testdir(), 'not-opened.db')
  writeFileSync(db, '')
  const cases: Array<{ argv: string[], option: string, usage: RegExp }> = [
    { argv: ['rebuild', '--url', 'x'], option: '--url', usage: /^Usage: g2sentry rebuild --db FILE\|URL$/ },
    { argv: ['rebuild', '--db', db, '--seed', '3'], option: '--seed', usage: /^Usage: g2sentry rebuild / },
    { argv: ['replay', '--db', db, '--secret', 's'], option: '--secret', usage: /^Usage: g2sentry replay / },
    { argv: ['export', '--db', db, '--all'], option: '--all', usage: /^Usage: g2sentry export / },
    { argv: ['verify', '--db', db, '--format', 'table'], option: '--format', usage: /^Usage: g2sentry verify / },
    { argv: ['quarantine', 'list', '--db', db, '--id', '1'], option: '--id', usage: /^Usage: g2sentry quarantine list / },
    { argv: ['quarantine', 'retry', '--db', db, '--all'], option: '--all', usage: /^Usage: g2sentry quarantine list / },
    { argv: ['simulate', '--db', db], option: '--db', usage: /^Usage: g2sentry simulate / },
    { argv: ['simulate', '--bogus'], option: '--bogus', usage: /^Usage: g2sentry simulate / }
  ]
  for (const { argv, option, usage } of cases) {
    const r = await run(...argv)
    const label = argv.join(' ')
    t.equal(r.code, 2, `${label}: exit 2`)
    t.equal(r.err[0], `g2sentry: unknown option ${option}`, `${label}: names the option`)
    t.match(r.err[1], usage, `${label}: then the command's usage`)
    t.same(r.out, [], `${label}: nothing on stdout`)
  }
})

t.test('other mistakes in the command line exit 2 with the usage line', async (t) => {
  const cases: Array<{ argv: string[], message: string, usage: RegExp }> = [
    { argv: ['replay', 'extra'], message: 'g2sentry: Unexpected argument \'extra\'', usage: /^Usage: g2sentry replay / },
    { argv: ['replay', '--db'], message: 'g2sentry: Option \'--db <value>\' argument missing', usage: /^Usage: g2sentry replay / },
    { argv: ['export', '--from', 'yesterday'], message: 'g2sentry: --from must be a seq or an ISO 8601 date or time, got "yesterday"', usage: /^Usage: g2sentry export / },
    { argv: ['simulate', '--seed=-1'], message: 'g2sentry: --seed must be a whole number, got "-1"', usage: /^Usage: g2sentry simulate / },
    { argv: ['quarantine'], message: 'g2sentry: quarantine needs a subcommand: list or retry', usage: /^Usage: g2sentry quarantine list / },
    { argv: ['quarantine', 'purge'], message: 'g2sentry: unknown quarantine subcommand "purge": list or retry', usage: /^Usage: g2sentry quarantine list / },
    { argv: ['verify'], message: 'g2sentry: --db FILE|URL is required', usage: /^Usage: g2sentry verify / }
  ]
  for (const { argv, message, usage } of cases) {
    const r = await run(...argv)
    t.equal(r.code, 2, `${argv.join(' ')}: exit 2`)
    t.ok(r.err[0]?.startsWith(message), `${argv.join(' ')}: ${message}`)
    t.match(r.err[1], usage)
  }
})

t.test('the main help lists every command of the table, and each command has its own help', async (t) => {
  const help = await run('--help')
  t.equal(help.code, 0)
  for (const [name, command] of Object.entries(COMMANDS)) {
    t.match(help.out[0], `\n  ${name.padEnd(10)}  ${command.summary}\n`, `--help lists ${name}`)
    const own = await run(name, '--help')
    t.equal(own.code, 0, `${name} --help exits 0`)
    t.equal(own.out.join('\n'), `${command.usage}\n\n${command.help}`, `${name} --help prints its usage and help`)
    t.same(own.err, [])
  }
  const unknown = await run('toString')
  t.equal(unknown.code, 2, 'a name inherited by every object is not a command')
  t.match(unknown.err[0], /unknown command "toString"/)
})
