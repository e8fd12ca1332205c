import { availableParallelism } from 'node:os'
import type { G2SentryStore, RebuildReport } from '../store/contract.js'
import { errors } from '../errors.js'
import { canReopen } from '../store/log-reader.js'
import { checkRange, joinRanges, type JoinedRanges } from './audit-check.js'
import { auditRedactions, type RedactionAudit } from './audit-redactions.js'
import { projectionHash } from './archive-file.js'
import type { Link } from './audit-check.js'
import { checkInThisThread, checkInWorkerThreads, type CheckRanges, type RangeJob } from './audit-workers.js'

/** What `auditLog` found: the chain, the signatures and the projection. */
export interface AuditReport {
  events: number
  chain: {
    ok: boolean
    /** The first row that breaks the chain, and why. */
    firstBrokenSeq: number | null
    problem: string | null
    /** Rows written before the chain existed (migration 002), at the start of the log. */
    unchainedRows: number
  }
  /** Seqs of callback rows that none of the given secrets signs; null when no secret was given. */
  unsigned: number[] | null
  /** Rows the reconciler wrote from the Partner API's answers: chained, not signed. */
  apiRows: number
  /**
   * Erasure: the redaction records, the rows they erased and every mismatch between the two
   * (src/log/audit-redactions.ts); null for a store without the lifecycle methods.
   */
  redactions: RedactionAudit | null
  projection: RebuildReport
  /**
   * The latest archive, when the log was archived: the rows up to `through` are in its file and
   * the chain is checked from the row after it; `projectionOk` says whether the projection kept
   * at the checkpoint (which a rebuild starts from) still has the hash the checkpoint names.
   */
  archive: { checkpointSeq: number; through: number; file: string; sha256: string; projectionOk: boolean } | null
  ok: boolean
}

export interface AuditOptions {
  /** Every secret in use over the log's lifetime; without any, signatures are not checked. */
  secrets?: readonly string[] | undefined
  /**
   * Where the store's log is, as `openStore` takes it (a SQLite file, or a `postgres://` URL with
   * `?schema=`): worker threads open it read-only, each on a connection of its own. Without it
   * (or for an in-memory SQLite database) every check runs in this thread.
   */
  database?: string | undefined
  /**
   * Worker threads for the per-row checks (default `os.availableParallelism()`); 0 checks in this
   * thread. A log of one range (`rangeSize` rows or fewer) is checked in this thread.
   */
  workers?: number | undefined
  /** Seqs per range a worker checks at a time (default 20,000). */
  rangeSize?: number | undefined
  /** Rows read per query (default 1000). */
  pageSize?: number | undefined
}

const RANGE_SIZE = 20_000
const PAGE_SIZE = 1000

/**
 * Checks the whole log: that every row links to the one before it and its stored fields match
 * its hash and its raw body, that no row is missing (at the end either), that a configured
 * secret signs every callback row (rows from the Partner API are counted apart), and that a
 * rebuild equals the stored projection with every row replaying to the outcome it was given live.
 * With `database`, worker threads check the rows, a seq range at a time, while this thread
 * replays the projection; the report is the one a single pass in seq order gives
 * (docs/design.md, "Verify in parallel").
 */
export async function auditLog (store: G2SentryStore, options: AuditOptions = {}): Promise<AuditReport> {
  const secrets = options.secrets ?? []
  const rangeSize = positive('rangeSize', options.rangeSize ?? RANGE_SIZE)
  const pageSize = positive('pageSize', options.pageSize ?? PAGE_SIZE)
  const workers = options.workers ?? availableParallelism()
  if (!Number.isSafeInteger(workers) || workers < 0) throw new errors.INVALID_OPTION(`workers must be a whole number, got ${workers}`)
  const { database } = options
  const archive = await archiveOf(store)
  const start = archive?.start
  if (database !== undefined && canReopen(database) && workers > 0) {
    // Ranges up to the head as it is now; the last range takes whatever follows.
    const ranges = Math.ceil((((await store.chainHead())?.seq ?? 0) - (start?.seq ?? 0)) / rangeSize)
    if (ranges > 1) return inRanges(store, { database, secrets, ranges, rangeSize, pageSize, start: start?.seq }, checkInWorkerThreads(Math.min(workers, ranges)), archive)
  }
  const checked = joinRanges([await checkRange({ page: (after, _upTo, limit) => store.readLog({ afterSeq: after, limit }) }, secrets, start?.seq ?? 0, undefined, pageSize)],
    await store.chainHead(), start)
  return assemble(checked, await store.rebuild({ dryRun: true }), await redactionsOf(store, start?.seq), secrets, archive)
}

interface ArchiveFound {
  start: Link
  report: NonNullable<AuditReport['archive']>
}

/** The latest archive's checkpoint, and whether the projection kept with it still has its hash. */
async function archiveOf (store: G2SentryStore): Promise<ArchiveFound | undefined> {
  if (store.latestCheckpoint === undefined || store.checkpointJobs === undefined) return undefined
  const latest = await store.latestCheckpoint()
  if (latest === undefined) return undefined
  const { record } = latest
  const projectionOk = projectionHash(await store.checkpointJobs()) === record.projection
  return {
    start: { seq: record.through, hash: record.hash },
    report: { checkpointSeq: latest.seq, through: record.through, file: record.file, sha256: record.sha256, projectionOk }
  }
}

/** The redaction pass, on a store that has the lifecycle methods. */
async function redactionsOf (store: G2SentryStore, archivedThrough = 0): Promise<RedactionAudit | null> {
  const { readRecords, redactedBy, countRedacted } = store
  if (readRecords === undefined || redactedBy === undefined || countRedacted === undefined) return null
  return auditRedactions({ readRecords: readRecords.bind(store), redactedBy: redactedBy.bind(store), countRedacted: countRedacted.bind(store) }, archivedThrough)
}

/**
 * `auditLog` on `database` in ranges of `rangeSize` (one at least), checked by `check`: worker
 * threads, or, for the tests, this thread. Not part of the package's API.
 */
export async function auditInRanges (
  store: G2SentryStore, options: { database: string; secrets?: readonly string[]; rangeSize: number; pageSize: number }, check: CheckRanges = checkInThisThread
): Promise<AuditReport> {
  const archive = await archiveOf(store)
  const start = archive?.start.seq ?? 0
  const ranges = Math.max(1, Math.ceil((((await store.chainHead())?.seq ?? 0) - start) / options.rangeSize))
  return inRanges(store, { ...options, secrets: options.secrets ?? [], ranges, start }, check, archive)
}

async function inRanges (store: G2SentryStore, job: RangeJob, check: CheckRanges, archive: ArchiveFound | undefined): Promise<AuditReport> {
  const checking = check(job)
  try {
    // The projection replays in seq order in this thread while the ranges are checked.
    const [{ reports, head }, projection] = await Promise.all([checking.result, store.rebuild({ dryRun: true })])
    return assemble(joinRanges(reports, head, archive?.start), projection, await redactionsOf(store, archive?.start.seq), job.secrets, archive)
  } finally {
    await checking.terminate()
  }
}

function assemble (checked: JoinedRanges, projection: RebuildReport, redactions: RedactionAudit | null, secrets: readonly string[], archive?: ArchiveFound): AuditReport {
  const { broken } = checked
  const report: AuditReport = {
    events: checked.events,
    chain: { ok: broken === null, firstBrokenSeq: broken?.seq ?? null, problem: broken?.problem ?? null, unchainedRows: checked.unchainedRows },
    unsigned: secrets.length > 0 ? checked.unsigned : null,
    apiRows: checked.apiRows,
    redactions,
    projection,
    archive: archive?.report ?? null,
    ok: false
  }
  report.ok = (archive?.report.projectionOk ?? true) && report.chain.ok && checked.unsigned.length === 0 && (redactions?.problems.length ?? 0) === 0 && projection.differingJobs.length === 0 && projection.outcomeMismatches.length === 0
  return report
}

function positive (name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw new errors.INVALID_OPTION(`${name} must be a positive whole number, got ${value}`)
  return value
}
