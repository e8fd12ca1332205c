import type { G2SentryStore, ReconcileCandidate } from '../../domain/types.js'
import { Reconciler, reconcilingStore, type JobCheck } from '../../partner-api/reconciler.js'
import { defineCommand, UsageError, wholeNumber, type Out } from '../command.js'
import { withLog } from '../open-log.js'

const PAGE = 100

/** The line for a job whose answer is worth a line; undefined for one G2 Sentry agrees with. */
function describeCheck (check: JobCheck, dryRun: boolean): string | undefined {
  const { jobId, from, to } = check
  switch (check.result) {
    case 'reconciled': return dryRun ? `job ${jobId}: ${from} -> ${to} (dry run, not appended)` : `job ${jobId}: ${from} -> ${to} (seq ${check.seq})`
    case 'conflict': return `job ${jobId}: ${from}, but G2 Sentry says ${to}: the projection moved past it, not applied (conflict)`
    case 'superseded': return `job ${jobId}: ${from} -> ${to} not appended: a newer row arrived meanwhile (run again)`
    case 'not_found': return `job ${jobId}: unknown to G2 Sentry`
    default: return undefined
  }
}

async function * openJobs (store: G2SentryStore): AsyncGenerator<ReconcileCandidate[]> {
  const { state } = reconcilingStore(store)
  let afterJobId = 0
  for (;;) {
    const page = await state.candidates({ now: Date.now(), quietFor: 0, limit: PAGE, allOpen: true, afterJobId })
    if (page.length > 0) yield page
    if (page.length < PAGE) return
    afterJobId = (page[page.length - 1] as ReconcileCandidate).jobId
  }
}

export const reconcile = defineCommand({
  summary: 'ask G2 Sentry\'s Partner API about open jobs and write what differs into the log',
  usage: 'Usage: g2sentry reconcile --db FILE|URL [--job N]... [--dry-run] [--api URL]',
  help: `Asks G2 Sentry (GET /jobs/{id}/status) about every job that is not Completed or Canceled,
or only about each --job, and appends a Reconciled row (source api) for each one whose status
differs and that the projection rules would apply: a cancellation, a lost or late withdrawal.
Prints one line per job that differs and a summary. A status the projection has moved past is
reported as a conflict and not applied. Requests share the rate limit (50 in any 60 s) with a
server reconciling on the same database.
  --job      ask only about this job, whatever its status (repeatable)
  --dry-run  ask, and print what would change, appending nothing
  --api      the Partner API's base URL (default $G2SENTRY_API_URL)
The partner key and secret come from $G2SENTRY_PARTNER_KEY and $G2SENTRY_PARTNER_SECRET.
Exit code 0 when every job was asked about; 1 when G2 Sentry refused the credentials or could
not be reached.`,
  options: {
    db: { type: 'string' },
    job: { type: 'string', multiple: true },
    'dry-run': { type: 'boolean' },
    api: { type: 'string' }
  },
  async run (values, { out }) {
    const baseUrl = values.api ?? process.env.G2SENTRY_API_URL
    const partnerKey = process.env.G2SENTRY_PARTNER_KEY
    const partnerSecret = process.env.G2SENTRY_PARTNER_SECRET
    if (baseUrl === undefined || baseUrl === '') throw new UsageError('reconcile needs the Partner API\'s URL: --api URL or $G2SENTRY_API_URL')
    if (partnerKey === undefined || partnerKey === '' || partnerSecret === undefined || partnerSecret === '') {
      throw new UsageError('reconcile needs $G2SENTRY_PARTNER_KEY and $G2SENTRY_PARTNER_SECRET')
    }
    const jobIds = values.job?.map((job) => wholeNumber('job', job) as number)
    const dryRun = values['dry-run'] === true
    // Even a dry run writes: its requests take slots in the shared rate-limit window.
    return withLog(values.db, 'write', async (store) => {
      // Loaded here (with its metrics): the other commands start faster without it.
      const { sharedClient } = await import('../../partner-api/start.js')
      const client = sharedClient(store, { baseUrl, partnerKey, partnerSecret, requestsPerMinute: 50 })
      const reconciler = new Reconciler({ store, client, quietFor: 0 })
      return run(store, reconciler, jobIds, dryRun, out)
    })
  }
})

async function run (store: G2SentryStore, reconciler: Reconciler, jobIds: number[] | undefined, dryRun: boolean, out: Out): Promise<number> {
  const counts = new Map<JobCheck['result'], number>()
  const pages = jobIds === undefined ? openJobs(store) : named(store, jobIds, out)
  for await (const page of pages) {
    const report = await reconciler.check(page, { dryRun })
    for (const check of report.checks) {
      counts.set(check.result, (counts.get(check.result) ?? 0) + 1)
      const line = describeCheck(check, dryRun)
      if (line !== undefined) await out(line)
    }
    if (report.stopped !== undefined) {
      await out(`stopped: ${report.stopped.message}`)
      await out(summary(counts, dryRun))
      return 1
    }
  }
  await out(summary(counts, dryRun))
  return 0
}

async function * named (store: G2SentryStore, jobIds: number[], out: Out): AsyncGenerator<ReconcileCandidate[]> {
  const { state } = reconcilingStore(store)
  const found = await state.candidates({ now: Date.now(), quietFor: 0, limit: jobIds.length, jobIds })
  const known = new Set(found.map((c) => c.jobId))
  for (const jobId of jobIds) if (!known.has(jobId)) await out(`job ${jobId}: not in the log, not asked about`)
  yield found
}

function summary (counts: Map<JobCheck['result'], number>, dryRun: boolean): string {
  const n = (result: JobCheck['result']) => counts.get(result) ?? 0
  const asked = [...counts.values()].reduce((a, b) => a + b, 0)
  return `asked about ${asked} jobs: ${n('reconciled')} ${dryRun ? 'would be reconciled' : 'reconciled'}, ${n('equal')} equal, ` +
    `${n('conflict')} conflicts, ${n('not_found')} unknown, ${n('superseded')} superseded${n('error') > 0 ? `, ${n('error')} failed` : ''}`
}
