import { errors } from '../../errors.js'
import { defineCommand, UsageError } from '../command.js'
import { withLog } from '../open-log.js'

export const redact = defineCommand({
  summary: 'erase a job\'s personal data: its bodies, signatures and phone, everywhere it is stored',
  usage: 'Usage: g2sentry redact --db FILE|URL --job N [--job N]... [--reason TEXT] [--full-vacuum]',
  help: `Erases the personal data of each job given (a guardian's phone, and every raw body and
signature that could reveal it): in the job's log rows, its projection row, the projection kept
at an archive's checkpoint, and quarantined bodies naming the job. Appends one redaction record
to the chain naming every row it erased, with --reason (never put personal data in it). The job's
status, history and outcomes stay, and verify keeps passing.
SQLite overwrites the bytes it frees and empties the WAL; PostgreSQL runs VACUUM on the tables
it changed, which frees the old row versions, but their bytes stay in the pages until reused.
--full-vacuum rewrites the files instead (SQLite: VACUUM; PostgreSQL: VACUUM FULL, which locks
each table while it is copied): then no byte of the erased data is left in them, including
free space from before this version. Backups and WAL archives taken before still hold the data:
see docs/operations.md.
A row of the job that does not verify is not erased (exit 1): erasing it would hide the change.
Exit code 0 when done (or nothing was left to erase), 1 when a job has no rows or was refused.`,
  options: {
    db: { type: 'string' },
    job: { type: 'string', multiple: true },
    reason: { type: 'string' },
    'full-vacuum': { type: 'boolean' }
  },
  async run (values, { out }) {
    const jobIds = (values.job ?? []).map((text) => {
      if (!/^[1-9][0-9]{0,15}$/.test(text) || !Number.isSafeInteger(Number(text))) throw new UsageError(`--job must be a job id (a positive whole number), got "${text}"`)
      return Number(text)
    })
    if (jobIds.length === 0) throw new UsageError('give --job N, the job whose personal data to erase')
    return withLog(values.db, 'write', async (store) => {
      if (store.redact === undefined) throw new errors.INVALID_OPTION('this store cannot redact')
      let failed = false
      for (const jobId of jobIds) {
        if ((await store.readLog({ jobId, limit: 1 })).length === 0 && (await store.getJob(jobId)) === undefined) {
          await out(`job ${jobId}: no such job in the log`)
          failed = true
          continue
        }
        try {
          const result = await store.redact({ jobIds: [jobId], reason: values.reason ?? null, vacuum: values['full-vacuum'] === true ? 'full' : 'plain' })
          if (result.recordSeq === null) await out(`job ${jobId}: nothing left to erase`)
          else {
            await out(`job ${jobId}: erased ${result.rows} ${result.rows === 1 ? 'row' : 'rows'}` +
              `${result.quarantined > 0 ? ` and ${result.quarantined} quarantined ${result.quarantined === 1 ? 'body' : 'bodies'}` : ''}, record seq ${result.recordSeq}`)
            if (result.version1Rows > 0) {
              await out(`  ${result.version1Rows} of them were written before chain version 2: pseudonymised, not erased (their hash still ` +
                'commits to the body\'s hash and signature; see g2sentry verify)')
            }
          }
        } catch (error) {
          if ((error as { code?: string }).code !== 'FST_G2SENTRY_REDACTION_REFUSED') throw error
          await out(`job ${jobId}: ${(error as Error).message}`)
          failed = true
        }
      }
      return failed ? 1 : 0
    })
  }
})
