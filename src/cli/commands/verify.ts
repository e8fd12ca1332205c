import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import { defineCommand, UsageError, wholeNumber, type Out } from '../command.js'
import { withLog } from '../open-log.js'
import { describeRebuild, describeRedactions } from '../render.js'

export const verify = defineCommand({
  summary: 'check the hash chain, the signatures and the projection (exit 1 on any problem)',
  usage: 'Usage: g2sentry verify --db FILE|URL [--secret SECRET]... [--workers N]\n       g2sentry verify --archive FILE [--archive FILE]... [--secret SECRET]...',
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
After an archive, the chain is checked from the first row after the latest checkpoint, which
must link to the last archived row's hash; the projection kept at the checkpoint must still
have the hash the checkpoint names, and the replay starts from it.
--archive FILE checks an archive file instead (g2sentry archive): its header, every row's link
and hash as above, signatures with --secret (rows whose body is kept), erased rows, and that it
ends exactly at its checkpoint line with the last row's seq and hash. Every problem names its line.
Several --archive files, in order, are checked as one: each must continue the one before it, and
each file's projection hash is replayed from the first file's first row.
Exit code 0 when all hold, 1 otherwise.`,
  options: {
    db: { type: 'string' },
    secret: { type: 'string', multiple: true },
    workers: { type: 'string' },
    archive: { type: 'string', multiple: true }
  },
  async run (values, { out }) {
    if (values.archive !== undefined) {
      if (values.db !== undefined) throw new UsageError('give --db or --archive, not both')
      return verifyArchiveFiles(values.archive, values.secret ?? [], out)
    }
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
      if (report.archive !== null) {
        const { through, checkpointSeq, file, sha256, projectionOk } = report.archive
        await out(`archive: rows 1…${through} are in ${file} (sha256 ${sha256}), checkpoint at seq ${checkpointSeq}; the chain is checked from seq ${through + 1}`)
        if (!projectionOk) await out('archive: BROKEN, the projection kept at the checkpoint does not have the hash the checkpoint names')
      }
      for (const line of describeRedactions(report.redactions)) await out(line)
      for (const line of describeRebuild(projection, 'projection: replayed')) await out(line)
      await out(report.ok ? 'ok: the log is intact and the stored projection equals a rebuild from it' : 'FAILED')
      return report.ok ? 0 : 1
    })
  }
})

/** `verify --archive`: each file's lines checked in order, after the file before it; a summary, every problem with its line. */
async function verifyArchiveFiles (files: readonly string[], secrets: readonly string[], out: Out): Promise<number> {
  const { verifyArchive } = await import('../../log/archive-file.js')
  let ok = true
  let after: Awaited<ReturnType<typeof verifyArchive>>['next']
  for (const file of files) {
    const lines = createInterface({ input: createReadStream(file), crlfDelay: Infinity })
    const report = await verifyArchive(lines, secrets, after)
    after = report.next
    const { header, checkpoint } = report
    if (files.length > 1) await out(`${file}:`)
    if (header !== null) await out(`archive: rows ${header.fromSeq}…${header.throughSeq}, written ${header.createdAt}`)
    await out(`rows: ${report.rows}${report.redactedRows > 0 ? `, ${report.redactedRows} erased` : ''}${report.apiRows > 0 ? `, ${report.apiRows} from the Partner API` : ''}` +
      `${report.records > 0 ? `, ${report.records} records` : ''}`)
    await out(report.unsigned === null ? 'signatures: not checked (give --secret to check them)' : `signatures: ${report.signed} signed, ${report.unsigned} signed by none of the given secrets`)
    if (checkpoint !== null) await out(`checkpoint: through seq ${checkpoint.throughSeq}, hash ${checkpoint.throughHash ?? 'none'}, ${checkpoint.jobs} jobs`)
    await out(`projection: ${report.projection === 'not checked' ? 'not checked (the file continues an earlier archive: give that one first)' : report.projection}`)
    for (const { line, problem } of report.problems) await out(`line ${line}: ${problem}`)
    ok &&= report.ok
  }
  await out(ok ? `ok: the ${files.length === 1 ? 'archive is' : 'archives are'} intact` : 'FAILED')
  return ok ? 0 : 1
}
