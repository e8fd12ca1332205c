// Archiving (docs/design.md, "Archiving"): the rows up to a seq moved out of the log into a file
// that proves itself (archive-file.ts), vouched for by a checkpoint row in the chain that names
// the file's SHA-256 and keeps the projection as of its last row, then deleted from the log.
import { createHash } from 'node:crypto'
import { open, unlink } from 'node:fs/promises'
import { basename, dirname } from 'node:path'
import type { JobState } from '../domain/types.js'
import { isSignedBy } from '../domain/verify-signature.js'
import { errors } from '../errors.js'
import type { CheckpointJob, G2SentryStore, LogArchive, SpaceReport } from '../store/contract.js'
import { ARCHIVE_FORMAT, ARCHIVE_VERSION, archiveLine, projectionHash, projectRow, type ArchiveCheckpointLine, type ArchiveHeader } from './archive-file.js'
import { linkProblem, rowProblem, type Link } from './audit-check.js'
import type { CheckpointRecord } from './records.js'
import { readLogStream } from './read-log.js'

export interface ArchiveOptions {
  /** The last seq to archive. */
  through: number
  /** The file to write; it must not exist. */
  out: string
  /** With secrets, every callback row whose body is kept must be signed by one of them. */
  secrets?: readonly string[] | undefined
  /** Seqs deleted per transaction (default: the store's, 1,000 on SQLite, 5,000 on PostgreSQL). */
  batchSize?: number | undefined
  /** Stop once the checkpoint is written, leaving the rows (for tests of a deletion cut short). */
  keepRows?: boolean | undefined
  /** The time of the header and the record (ms); default now. */
  now?: number | undefined
}

export interface ArchiveResult {
  fromSeq: number
  throughSeq: number
  rows: number
  jobs: number
  file: string
  bytes: number
  sha256: string
  projectionHash: string
  checkpointSeq: number
  deleted: number
  space: SpaceReport | null
  /**
   * True when `through` was the latest checkpoint's and some of its rows were still in the log
   * (the deletion had been cut short): only the deletion ran, and the rest describes that checkpoint.
   */
  resumed: boolean
}

/** Bytes gathered before a write to the file. */
const CHUNK = 256 * 1024

const refuse = (why: string) => new errors.ARCHIVE_REFUSED(why)

/** The store's archive methods, or an error naming what it lacks. */
function archiveOf (store: G2SentryStore): LogArchive {
  const { latestCheckpoint, checkpointJobs, checkpoint, deleteArchived, reclaimSpace, archivedEvents } = store
  if (latestCheckpoint === undefined || checkpointJobs === undefined || checkpoint === undefined || deleteArchived === undefined ||
    reclaimSpace === undefined || archivedEvents === undefined) throw new errors.INVALID_OPTION('this store cannot archive')
  return {
    latestCheckpoint: latestCheckpoint.bind(store),
    checkpointJobs: checkpointJobs.bind(store),
    checkpoint: checkpoint.bind(store),
    deleteArchived: deleteArchived.bind(store),
    reclaimSpace: reclaimSpace.bind(store),
    archivedEvents: archivedEvents.bind(store)
  }
}

/**
 * Archives the log's rows after the latest checkpoint up to `through`: checks each as verify
 * does while writing it to `out`, fsyncs the file, appends the checkpoint row, then deletes the
 * rows a batch at a time and gives their space back. With `through` the latest checkpoint's and
 * rows up to it still in the log (a deletion cut short), finishes the deletion only. Refuses (FST_G2SENTRY_ARCHIVE_REFUSED,
 * nothing written to the log, no file left) when `through` is past the chain head or a consumer's
 * checkpoint, not after the latest checkpoint, or when a row to archive does not verify.
 */
export async function archiveLog (store: G2SentryStore, options: ArchiveOptions): Promise<ArchiveResult> {
  const archive = archiveOf(store)
  const { through } = options
  if (!Number.isSafeInteger(through) || through < 1) throw new errors.INVALID_OPTION(`through must be a positive whole number, got ${through}`)
  const head = await store.chainHead()
  const latest = await archive.latestCheckpoint()
  const after = latest?.record.through ?? 0
  if (through > (head?.seq ?? 0)) throw refuse(`seq ${through} is past the chain's head (seq ${head?.seq ?? 0})`)
  if (through === after && latest !== undefined && ((await store.readLog({ limit: 1 }))[0]?.seq ?? Infinity) <= after) {
    // The checkpoint was written but the deletion was cut short (a crash, a kill): finish it.
    return finishDeletion(archive, options, latest.seq, latest.record)
  }
  if (through <= after) throw refuse(`seq ${through} is archived already: the latest checkpoint (seq ${latest?.seq ?? 0}) covers rows up to ${after}`)
  for (const consumer of await store.listConsumers()) {
    if (consumer.checkpoint < through) throw refuse(`consumer ${consumer.name} has handled rows up to seq ${consumer.checkpoint} only; it would miss the rest`)
  }

  const states = new Map<number, JobState>()
  const archived = new Map<number, number>()
  const lastSeqs = new Map<number, number>()
  for (const job of await archive.checkpointJobs()) {
    const { archived: count, lastSeq, ...state } = job
    states.set(job.jobId, state)
    archived.set(job.jobId, count)
    lastSeqs.set(job.jobId, lastSeq)
  }
  const now = options.now ?? Date.now()
  const header: ArchiveHeader = {
    format: ARCHIVE_FORMAT, version: ARCHIVE_VERSION, fromSeq: after + 1, throughSeq: through, prevHash: latest?.record.hash ?? null, createdAt: new Date(now).toISOString()
  }
  const keys = options.secrets ?? []
  const digest = createHash('sha256')
  const file = await open(options.out, 'wx')
  let bytes = 0
  let pending = ''
  const write = async (text: string, force = false) => {
    pending += text
    if (pending.length < CHUNK && !force) return
    const chunk = Buffer.from(pending)
    pending = ''
    digest.update(chunk)
    bytes += chunk.length
    await file.write(chunk)
  }
  let record: CheckpointRecord
  try {
    await write(JSON.stringify(header) + '\n')
    let previous: Link | undefined = after > 0 ? { seq: after, hash: latest?.record.hash ?? null } : undefined
    let rows = 0
    for await (const row of readLogStream(store, { afterSeq: after, toSeq: through, pageSize: 5000 })) {
      const link = linkProblem(row, previous)
      const problem = link === undefined ? null : link ?? rowProblem(row)
      if (problem !== null) throw refuse(`row ${row.seq} does not verify (${problem}); run g2sentry verify`)
      if (keys.length > 0 && row.source === 'callback' && row.redactedBy === null && !isSignedBy(row.rawBody, row.signature, keys)) {
        throw refuse(`row ${row.seq} is signed by none of the given secrets`)
      }
      const replayed = projectRow(states, row)
      if (replayed !== undefined && replayed !== row.outcome) throw refuse(`row ${row.seq} was ${row.outcome} live but replays to ${replayed}`)
      if (row.source !== 'redaction' && row.source !== 'checkpoint') {
        archived.set(row.jobId, (archived.get(row.jobId) ?? 0) + 1)
        lastSeqs.set(row.jobId, row.seq)
      }
      await write(archiveLine(row) + '\n')
      previous = { seq: row.seq, hash: row.hash }
      rows++
    }
    if (previous?.seq !== through) throw refuse(`seq ${through} is not in the log (the last row up to it is ${previous?.seq ?? 'none'})`)
    const projection = projectionHash(states.values())
    const last: ArchiveCheckpointLine = { kind: 'checkpoint', throughSeq: through, throughHash: previous.hash, rows, projectionHash: projection, jobs: states.size }
    await write(JSON.stringify(last) + '\n', true)
    await file.sync()
    record = { through, hash: previous.hash, rows, file: basename(options.out), sha256: digest.digest('hex'), projection, jobs: states.size }
  } catch (error) {
    await file.close()
    await unlink(options.out)
    throw error
  }
  await file.close()
  await syncDirectory(dirname(options.out))

  const jobs: CheckpointJob[] = [...states.values()].map((state) => ({ ...state, archived: archived.get(state.jobId) ?? 0, lastSeq: lastSeqs.get(state.jobId) ?? 0 }))
  let checkpointSeq: number
  try {
    ({ seq: checkpointSeq } = await archive.checkpoint({ record, jobs, at: now, after, readAt: head?.seq ?? 0 }))
  } catch (error) {
    // No checkpoint vouches for the file: it must not be mistaken for an archive.
    await unlink(options.out)
    throw error
  }
  const result: ArchiveResult = {
    fromSeq: after + 1,
    throughSeq: through,
    rows: record.rows,
    jobs: record.jobs,
    file: options.out,
    bytes,
    sha256: record.sha256,
    projectionHash: record.projection,
    checkpointSeq,
    deleted: 0,
    space: null,
    resumed: false
  }
  if (options.keepRows === true) return result
  result.deleted = await archive.deleteArchived(through, { batchSize: options.batchSize })
  result.space = await archive.reclaimSpace()
  return result
}

/** The deletion of an archive whose checkpoint is written, carried on from the first row left; no file is written. */
async function finishDeletion (archive: LogArchive, options: ArchiveOptions, checkpointSeq: number, record: CheckpointRecord): Promise<ArchiveResult> {
  const deleted = await archive.deleteArchived(record.through, { batchSize: options.batchSize })
  return {
    fromSeq: 0,
    throughSeq: record.through,
    rows: record.rows,
    jobs: record.jobs,
    file: record.file,
    bytes: 0,
    sha256: record.sha256,
    projectionHash: record.projection,
    checkpointSeq,
    deleted,
    space: await archive.reclaimSpace(),
    resumed: true
  }
}

/** Makes the file's directory entry durable too (a no-op where a directory cannot be opened to sync). */
async function syncDirectory (dir: string): Promise<void> {
  let handle
  try {
    handle = await open(dir, 'r')
    await handle.sync()
  } catch {
    // Windows cannot fsync a directory.
  } finally {
    await handle?.close()
  }
}
