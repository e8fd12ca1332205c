import { once } from 'node:events'
import { type Command, type Out, UsageError } from './command.js'
import { COMMANDS } from './commands/index.js'

/** `g2sentry --help`: the commands and their summaries, from the command table. */
function mainHelp (): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length))
  const commands = Object.entries(COMMANDS).map(([name, command]) => `  ${name.padEnd(width)}  ${command.summary}`)
  return `Usage: g2sentry <command> [options]\n\nCommands:\n${commands.join('\n')}\n\nRun g2sentry <command> --help for its options.`
}

// Waits for a full pipe to drain, so a replay or an export of any length runs in constant memory.
const stdoutChunk: Out = (chunk) => process.stdout.write(chunk) ? undefined : once(process.stdout, 'drain')
const stdout: Out = (line) => stdoutChunk(line + '\n')

/**
 * Runs the CLI with `argv` (without node and script) and returns the exit code: 0, 1 when the
 * command failed, 2 for a mistake in the command line (said on `err`, with the usage). `out`
 * takes whole lines, `write` the chunks of an export as they are.
 */
export async function main (argv: string[], out: Out = stdout,
  err: (line: string) => unknown = (line) => process.stderr.write(line + '\n'), write: Out = stdoutChunk): Promise<number> {
  const [name, ...args] = argv
  let command: Command | undefined
  try {
    if (name === undefined) throw new UsageError(`a command is required\n\n${mainHelp()}`)
    if (name === '--help' || name === '-h' || name === 'help') {
      await out(mainHelp())
      return 0
    }
    command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined
    if (command === undefined) throw new UsageError(`unknown command "${name}"\n\n${mainHelp()}`)
    return await command.run(args, { out, write })
  } catch (error) {
    err(`g2sentry: ${(error as Error).message}`)
    if (!(error instanceof UsageError)) return 1
    if (command !== undefined) err(command.usage)
    return 2
  }
}
