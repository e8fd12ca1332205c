import { defineCommand, defineGroup, UsageError, wholeNumber } from '../command.js'
import { withLog } from '../open-log.js'
import { describeRetry, quarantineNdjsonRow, quarantineTableHeader, quarantineTableRow } from '../render.js'

const summary = 'list the signed bodies refused as unreadable (400, 422), or retry them'
const usage = `Usage: g2sentry quarantine list  --db FILE|URL [--all] [--format table|ndjson]
       g2sentry quarantine retry --db FILE|URL [--secret SECRET]... [--id N]...`
const help = `A signed body that is not a readable callback (400: not JSON, 422: failing the schema) is kept in
the quarantine, outside the log.
  list   the pending bodies (--all: also those retried, with the seq each became), as a table or
         as NDJSON with the body as text
  retry  checks each pending body (or only each --id) again as a live delivery would: its
         signature against the secrets (--secret, repeatable; default $G2SENTRY_CALLBACK_SECRET
         and $G2SENTRY_CALLBACK_SECRET_PREVIOUS), then the current schema. What now passes is
         appended to the log with the time it was first received; the rest stays quarantined.
         A body is never appended twice. Exit code 1 when an --id is not in the quarantine.`

const list = defineCommand({
  summary,
  usage,
  help,
  options: {
    db: { type: 'string' },
    all: { type: 'boolean' },
    format: { type: 'string' }
  },
  async run (values, { out }) {
    const format = values.format ?? 'table'
    if (format !== 'ndjson' && format !== 'table') throw new UsageError('--format must be table or ndjson')
    return withLog(values.db, 'read', async (store) => {
      if (format === 'table') await out(quarantineTableHeader())
      // Loaded here (with the callback schema): the other commands start faster without it.
      const { quarantineRows } = await import('../../log/quarantine.js')
      for await (const row of quarantineRows(store, { pending: values.all !== true })) {
        await out(format === 'table' ? quarantineTableRow(row) : quarantineNdjsonRow(row))
      }
      return 0
    })
  }
})

const retry = defineCommand({
  summary,
  usage,
  help,
  options: {
    db: { type: 'string' },
    secret: { type: 'string', multiple: true },
    id: { type: 'string', multiple: true }
  },
  async run (values, { out }) {
    const fromEnv = [process.env.G2SENTRY_CALLBACK_SECRET, process.env.G2SENTRY_CALLBACK_SECRET_PREVIOUS]
      .filter((secret): secret is string => secret !== undefined && secret !== '')
    const secrets = values.secret ?? fromEnv
    if (secrets.length === 0) throw new UsageError('quarantine retry needs the callback secret: --secret SECRET or $G2SENTRY_CALLBACK_SECRET')
    const ids = values.id?.map((id) => wholeNumber('id', id) as number)
    return withLog(values.db, 'write', async (store) => {
      const { retryQuarantine } = await import('../../log/quarantine.js')
      const report = await retryQuarantine(store, { secrets, ids })
      for (const line of describeRetry(report)) await out(line)
      return report.notFound.length > 0 ? 1 : 0
    })
  }
})

export const quarantine = defineGroup('quarantine', { summary, usage, help, subcommands: { list, retry } })
