import type { G2SentryStore, ReconcileCandidate } from '../../store/contract.js'
import { PartnerApiClient, type ClientLogger } from '../../partner-api/client.js'
import { memoryWindow } from '../../partner-api/rate-limiter.js'
import { Reconciler, reconcilingStore, type JobCheck } from '../../partner-api/reconciler.js'
import { defineCommand, UsageError, wholeNumber, type Out } from '../command.js'
import { withLog } from '../open-log.js'

const PAGE = 100
/** G2 Sentry's window, and the share of its 60 requests the CLI takes (as the plugin's default). */
const WINDOW_MS = 60_000
const REQUESTS_PER_MINUTE = 50
/** A long run says how far it got on stderr every this many jobs… */
const PROGRESS_EVERY_JOBS = 100
/** …or this many ms, whichever comes first. */
const PROGRESS_EVERY_MS = 10_000

/** Progress and the client's warnings (429 pauses, long waits for the rate limit) go to stderr, never a token. */
const stderr = (line: string): void => { process.stderr.write(line + '\n') }
const stderrLog: ClientLogger = {
  warn: (fields, message) => stderr(`${message.replace(/^g2sentry: /, 'g2sentry reconcile: ')} ${JSON.stringify(fields)}`)
}

/** The line for a job whose answer is worth a line; undefined for one G2 Sentry agrees with. */
function describeCheck (check: JobCheck, dryRun: boolean): string | undefined {
  const { jobId, from, to } = check
  switch (check.result) {
    case 'reconciled': return dryRun ? `job ${jobId}: ${from} -> ${to} (dry run, not appended)` : `job ${jobId}: ${from} -> ${to} (seq ${check.seq})`
    case 'conflict': return `job ${jobId}: ${from}, but G2 Sentry says ${to}: the projection moved past it, not applied (conflict)`
    case 'superseded': return `job ${jobId}: ${from} -> ${to} not appended: a newer row arrived meanwhile (run again)`
    case 'not_found': return `job ${jobId}: unknown to G2 Sentry`
    case 'unusable': return `job ${jobId}: G2 Sentry answered ${check.answered ?? 'something unusable'}: not applied` +
      (check.failures !== undefined && check.failures > 1 ? ` (${check.failures} times in a row)` : '')
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
reported as a conflict and not applied. An answer that cannot be used for a job (an unknown
status, another job's, not JSON, a 4xx, a 5xx after the retries, a redirect, too large) is
printed for that job, recorded in the log's database (the server's rounds then leave the job
alone for a while) and the run goes on with the other jobs. Requests share the rate limit (50
in any 60 s) with a server reconciling on the same database. A long run prints its progress on
stderr every ${PROGRESS_EVERY_JOBS} jobs or ${PROGRESS_EVERY_MS / 1000} s.
  --job      ask only about this job, whatever its status (repeatable)
  --dry-run  ask, and print what would change, writing nothing at all to the database
             (it opens it read-only: it must be an up-to-date g2sentry log)
  --api      the Partner API's http(s) base URL (default $G2SENTRY_API_URL)
The partner key and secret come from $G2SENTRY_PARTNER_KEY and $G2SENTRY_PARTNER_SECRET.
Exit code 0 when every job asked about had a usable answer; 1 when some did not (after the whole
run), or when G2 Sentry refused the credentials or could not be reached (the run stops there).`,
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
    if (!isHttpUrl(baseUrl)) throw new UsageError(`the Partner API's URL must be an http(s) URL, e.g. https://partner-api-demo.g2sentry.com (got ${JSON.stringify(baseUrl.slice(0, 100))})`)
    if (partnerKey === undefined || partnerKey === '' || partnerSecret === undefined || partnerSecret === '') {
      throw new UsageError('reconcile needs $G2SENTRY_PARTNER_KEY and $G2SENTRY_PARTNER_SECRET')
    }
    const jobIds = values.job?.map((job) => wholeNumber('job', job) as number)
    const dryRun = values['dry-run'] === true
    // A dry run opens the log read-only: it creates, migrates and records nothing, and counts its
    // own requests in memory against the shared window it reads.
    return withLog(values.db, dryRun ? 'read' : 'write', async (store) => {
      const options = { baseUrl, partnerKey, partnerSecret, requestsPerMinute: REQUESTS_PER_MINUTE, log: stderrLog }
      const { state } = reconcilingStore(store)
      // The shared client is loaded here (with its metrics): the other commands start faster without it.
      const client = dryRun
        ? new PartnerApiClient({ ...options, window: memoryWindow(REQUESTS_PER_MINUTE, WINDOW_MS, (since) => state.requestTimes(partnerKey, since)) })
        : (await import('../../partner-api/start.js')).sharedClient(store, options, { log: stderrLog })
      const tally = progress()
      const reconciler = new Reconciler({ store, client, quietForMs: 0, onCheck: tally.add })
      const interrupt = () => reconciler.close()
      process.once('SIGINT', interrupt).once('SIGTERM', interrupt)
      try {
        return await run(store, reconciler, tally.counts, jobIds, dryRun, out)
      } finally {
        process.off('SIGINT', interrupt).off('SIGTERM', interrupt)
      }
    })
  }
})

const isHttpUrl = (value: string): boolean => {
  try {
    const url = new URL(value)
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== ''
  } catch {
    return false
  }
}

/** Counts each check as it comes and says how far the run got on stderr, every so many jobs or seconds. */
function progress (): { counts: Map<JobCheck['result'], number>; add: (check: JobCheck) => void } {
  const counts = new Map<JobCheck['result'], number>()
  const started = Date.now()
  let asked = 0
  let said = { jobs: 0, at: started }
  return {
    counts,
    add (check) {
      asked++
      counts.set(check.result, (counts.get(check.result) ?? 0) + 1)
      const now = Date.now()
      if (asked - said.jobs >= PROGRESS_EVERY_JOBS || now - said.at >= PROGRESS_EVERY_MS) {
        said = { jobs: asked, at: now }
        stderr(`g2sentry reconcile: ${asked} jobs asked about in ${Math.round((now - started) / 1000)} s, ${counts.get('unusable') ?? 0} unusable answers so far`)
      }
    }
  }
}

async function run (store: G2SentryStore, reconciler: Reconciler, counts: Map<JobCheck['result'], number>, jobIds: number[] | undefined,
  dryRun: boolean, out: Out): Promise<number> {
  const pages = jobIds === undefined ? openJobs(store) : named(store, jobIds, out)
  for await (const page of pages) {
    const report = await reconciler.check(page, { dryRun })
    for (const check of report.checks) {
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
  return (counts.get('unusable') ?? 0) > 0 ? 1 : 0
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
    `${n('conflict')} conflicts, ${n('not_found')} unknown, ${n('superseded')} superseded` +
    `${n('unusable') > 0 ? `, ${n('unusable')} unusable answers` : ''}${n('error') > 0 ? `, ${n('error')} failed` : ''}`
}
