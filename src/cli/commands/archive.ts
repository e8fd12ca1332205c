import { defineCommand, UsageError, wholeNumber } from '../command.js'
import { withLog } from '../open-log.js'

export const archive = defineCommand({
  summary: 'move the log\'s rows up to a seq into an archive file, vouched for by a checkpoint in the chain',
  usage: 'Usage: g2sentry archive --db FILE|URL --through SEQ --out FILE [--secret SECRET]... [--batch N]',
  help: `Writes the rows after the latest checkpoint up to --through to --out (NDJSON: a header, one
line per row with its body and every hash, and a checkpoint line; it must not exist), checking
each row as verify does (and, with --secret, its signature) as it goes. Once the file is synced,
appends a checkpoint record to the chain naming the file's SHA-256, the last row's hash and a
hash of the projection as of that row, keeps that projection for rebuild, then deletes the rows,
--batch seqs per transaction (default 1,000 on SQLite, 5,000 on PostgreSQL; callbacks are
answered between batches), and gives
the space back (SQLite: incremental_vacuum, on files made by this version; PostgreSQL: VACUUM).
Check a file with g2sentry verify --archive FILE. The file holds raw bodies and phone numbers:
personal data, to be kept as safely as the database.
Refused (exit 1, nothing changed) when --through is past the chain's head or a consumer's
checkpoint, at or before the latest checkpoint, or when a row to archive does not verify. When
--through is the latest checkpoint's and its rows are still there (a deletion cut short), the
deletion is finished, and no file is written.`,
  options: {
    db: { type: 'string' },
    through: { type: 'string' },
    out: { type: 'string' },
    secret: { type: 'string', multiple: true },
    batch: { type: 'string' }
  },
  async run (values, { out }) {
    const through = wholeNumber('through', values.through)
    if (through === undefined || through < 1) throw new UsageError('give --through SEQ, the last row to archive')
    if (values.out === undefined) throw new UsageError('give --out FILE, the archive file to write')
    const batchSize = wholeNumber('batch', values.batch)
    if (batchSize === 0) throw new UsageError('--batch must be at least 1')
    const file = values.out
    return withLog(values.db, 'write', async (store) => {
      const { archiveLog } = await import('../../log/archive.js')
      const started = performance.now()
      const result = await archiveLog(store, { through, out: file, secrets: values.secret, batchSize })
      if (result.resumed) await out(`the checkpoint at seq ${result.checkpointSeq} (rows up to ${result.throughSeq}, in ${result.file}) was written, its deletion was cut short: finishing it`)
      else await out(`archived rows ${result.fromSeq}…${result.throughSeq} (${result.rows} rows, ${result.jobs} jobs) to ${result.file}, ${result.bytes} bytes, sha256 ${result.sha256}`)
      await out(`checkpoint: seq ${result.checkpointSeq}; ${result.deleted} rows deleted from the log`)
      const space = result.space
      if (space?.method === 'incremental') await out(`space: ${space.pagesFreed ?? 0} pages returned to the file system`)
      else if (space?.method === 'kept') {
        await out('space: this file was made without auto_vacuum, so the freed pages stay in it for new rows (one VACUUM converts it; see docs/storage.md)')
      } else if (space?.method === 'vacuum') await out('space: VACUUM ran on the events table (reusable by new rows, not returned to the operating system)')
      await out(`done in ${((performance.now() - started) / 1000).toFixed(1)} s`)
      return 0
    })
  }
})
