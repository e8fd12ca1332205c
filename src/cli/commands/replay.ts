import { readLogStream } from '../../log/read-log.js'
import { defineCommand, UsageError, wholeNumber } from '../command.js'
import { withLog } from '../open-log.js'
import { logNdjsonRow, logTableHeader, logTableRow } from '../render.js'

export const replay = defineCommand({
  summary: 'print the event log, whole or for one job (NDJSON or a table)',
  usage: 'Usage: g2sentry replay --db FILE|URL [--job N] [--from SEQ] [--to SEQ] [--format ndjson|table]',
  help: `Prints the event log in seq order, one row per delivery, with its outcome, the raw body and its
signature: what G2 Sentry told us, and when. The rows hold guardian phone numbers: personal data.`,
  options: {
    db: { type: 'string' },
    job: { type: 'string' },
    from: { type: 'string' },
    to: { type: 'string' },
    format: { type: 'string' }
  },
  async run (values, { out }) {
    const format = values.format ?? 'ndjson'
    if (format !== 'ndjson' && format !== 'table') throw new UsageError('--format must be ndjson or table')
    const query = {
      jobId: wholeNumber('job', values.job),
      afterSeq: (wholeNumber('from', values.from) ?? 1) - 1,
      toSeq: wholeNumber('to', values.to)
    }
    return withLog(values.db, 'read', async (store) => {
      if (format === 'table') await out(logTableHeader())
      const rows = readLogStream(store, query)
      for await (const row of rows) await out(format === 'table' ? logTableRow(row) : logNdjsonRow(row))
      return 0
    })
  }
})
