import type { Command } from '../command.js'
import { archive } from './archive.js'
import { consumers } from './consumers.js'
import { exportCommand } from './export.js'
import { quarantine } from './quarantine.js'
import { rebuild } from './rebuild.js'
import { redact } from './redact.js'
import { reconcile } from './reconcile.js'
import { replay } from './replay.js'
import { simulate } from './simulate.js'
import { verify } from './verify.js'

/**
 * Every `g2sentry` command by name, in the order `g2sentry --help` lists them.
 *
 * To add a command: write `src/cli/commands/<name>.ts` exporting `defineCommand({ summary, usage,
 * help, options, run })` (see replay.ts; `defineGroup` for subcommands, see quarantine.ts), and
 * add it here. Its options are its own: any other option is a usage error (exit 2). Open the
 * database with `withLog` (open-log.ts), and put table or text layout in render.ts. Then add
 * its line to the README's CLI section.
 */
export const COMMANDS: Readonly<Record<string, Command>> = {
  replay,
  export: exportCommand,
  rebuild,
  verify,
  redact,
  archive,
  quarantine,
  reconcile,
  consumers,
  simulate
}
