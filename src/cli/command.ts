import { parseArgs, type ParseArgsConfig } from 'node:util'

/** Takes a line (or a chunk) of output; a promise when the output is full and the caller should wait. */
export type Out = (line: string) => void | Promise<unknown>

/** Where a command writes: `out` takes whole lines, `write` chunks as they are (an export). */
export interface Io {
  out: Out
  write: Out
}

/** A mistake in the command line: exit code 2, with the command's usage. */
export class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig['options']>

/** The values `parseArgs` gives for `options`, typed from their declaration. */
export type Values<O extends Options> = ReturnType<typeof parseArgs<{ options: O, strict: true, allowPositionals: false }>>['values']

/** One command of `g2sentry`, as the command table holds it. */
export interface Command {
  /** Its line in `g2sentry --help`. */
  summary: string
  /** The synopsis (`Usage: g2sentry …`): first in `--help`, and printed after a usage error. */
  usage: string
  /** The rest of `--help`: what it does and what its options mean. */
  help: string
  /** Runs it on the arguments after its name; resolves with the exit code. Throws `UsageError` for a bad command line. */
  run: (args: string[], io: Io) => Promise<number>
}

export interface CommandSpec<O extends Options> {
  summary: string
  usage: string
  help: string
  /** Every option it takes (`--help` is added); any other is a usage error. */
  options: O
  run: (values: Values<O>, io: Io) => Promise<number>
}

// parseArgs's own message for an unknown option goes on about positionals, which no command takes.
const UNKNOWN_OPTION = /^Unknown option '([^']+)'/

/** Parses `args` against the command's own options only, strictly, and without positionals. */
export function parseOptions<O extends Options> (options: O, args: string[]): Values<O> & { help?: boolean } {
  try {
    const { values } = parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false })
    return values as Values<O> & { help?: boolean }
  } catch (error) {
    const { code, message } = error as { code?: string, message: string }
    if (code?.startsWith('ERR_PARSE_ARGS') !== true) throw error
    const unknown = UNKNOWN_OPTION.exec(message)
    throw new UsageError(unknown === null ? message : `unknown option ${unknown[1]}`)
  }
}

/** A command from its options, texts and run function: `--help` prints the usage and the help. */
export function defineCommand<const O extends Options> (spec: CommandSpec<O>): Command {
  return {
    summary: spec.summary,
    usage: spec.usage,
    help: spec.help,
    async run (args, io) {
      const values = parseOptions(spec.options, args)
      if (values.help === true) {
        await io.out(`${spec.usage}\n\n${spec.help}`)
        return 0
      }
      return spec.run(values, io)
    }
  }
}

/**
 * A command made of subcommands (`g2sentry quarantine list|retry`), each a `defineCommand` with
 * its own options and the group's usage and help.
 */
export function defineGroup (name: string, group: Omit<Command, 'run'> & { subcommands: Record<string, Command> }): Command {
  const names = Object.keys(group.subcommands)
  const choices = names.length === 2 ? names.join(' or ') : names.join(', ')
  return {
    summary: group.summary,
    usage: group.usage,
    help: group.help,
    async run (args, io) {
      const [first, ...rest] = args
      if (first === undefined || first.startsWith('-')) {
        if (args.includes('--help') || args.includes('-h')) {
          await io.out(`${group.usage}\n\n${group.help}`)
          return 0
        }
        throw new UsageError(`${name} needs a subcommand: ${choices}`)
      }
      const subcommand = Object.hasOwn(group.subcommands, first) ? group.subcommands[first] : undefined
      if (subcommand === undefined) throw new UsageError(`unknown ${name} subcommand "${first}": ${choices}`)
      return subcommand.run(rest, io)
    }
  }
}

/** Reads an option that takes a whole number (0 or more); undefined when it was not given. */
export function wholeNumber (name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`--${name} must be a whole number, got "${value}"`)
  return n
}
