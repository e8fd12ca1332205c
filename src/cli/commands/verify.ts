import { defineCommand, wholeNumber } from '../command.js'
import { withLog } from '../open-log.js'
import { describeRebuild, describeRedactions } from '../render.js'

export const verify = defineCommand({
  summary: 'check the hash chain, the signatures and the projection (exit 1 on any problem)',
  usage: 'Usage: g2sentry verify --db FILE|URL [--secret SECRET]... [--workers N]',
  help: `Checks the log as evidence, changing nothing:
  - the hash chain: every row links to the one before it, its stored fields match its hash and
    its raw body, and no row is missing (the first broken seq is reported);
  - signatures: with --secret (repeat it for every secret in use over the log's lifetime), that
    one of them signs every callback row's raw body (rows the reconciler wrote from G2 Sentry's
    Partner API have no signature and are counted apart);
  - erasure: every row erased by a redaction is named by its record, with its hash and what it
    kept, and every record names only rows it erased; erased rows have no body or signature to
    check, their chain still links;
  - the projection: a replay of the whole log equals the stored jobs table, and every row
    replays to the outcome it was given live.
The rows are checked by --workers N threads (default: one per core), each reading ranges of
20,000 seqs on a connection of its own, while the projection replays; --workers 0, and a log of
one range, check them in this process. The report is the same either way.
Exit code 0 when all hold, 1 otherwise.`,
  options: {
    db: { type: 'string' },
    secret: { type: 'string', multiple: true },
    workers: { type: 'string' }
  },
  async run (values, { out }) {
    const workers = wholeNumber('workers', values.workers)
    return withLog(values.db, 'read', async (store) => {
      // Loaded here: the other commands, rebuild among them, start faster without it.
      const { auditLog } = await import('../../log/audit.js')
      const report = await auditLog(store, { secrets: values.secret, database: values.db, workers })
      const { chain, unsigned, projection } = report
      await out(chain.ok
        ? `chain: ok, ${report.events - chain.unchainedRows} rows linked${chain.unchainedRows > 0 ? ` (${chain.unchainedRows} older rows have no hash)` : ''}`
        : `chain: BROKEN at seq ${chain.firstBrokenSeq}: ${chain.problem}`)
      if (unsigned === null) await out('signatures: not checked (give --secret to check them)')
      else if (unsigned.length === 0) {
        const erased = (report.redactions?.rows ?? 0) > 0 ? ' that still holds its body' : ''
        await out(`signatures: ok, every ${report.apiRows > 0 ? 'callback ' : ''}row${erased} is signed by a given secret`)
      } else await out(`signatures: ${unsigned.length} rows are signed by none of the given secrets: seq ${unsigned.slice(0, 20).join(', ')}${unsigned.length > 20 ? ', …' : ''}`)
      // Rows from the Partner API carry no signature: the chain is their evidence.
      if (report.apiRows > 0) await out(`${report.apiRows} ${report.apiRows === 1 ? 'row' : 'rows'} from the Partner API (chained, not signed)`)
      for (const line of describeRedactions(report.redactions)) await out(line)
      for (const line of describeRebuild(projection, 'projection: replayed')) await out(line)
      await out(report.ok ? 'ok: the log is intact and the stored projection equals a rebuild from it' : 'FAILED')
      return report.ok ? 0 : 1
    })
  }
})
