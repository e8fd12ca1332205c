// The archive file (docs/design.md, "Archiving"): NDJSON, a header line, one line per log row as
// the export writes it (body and salt in base64, so every byte survives), and the checkpoint line.
// The same checks verify makes on the log (audit-check.ts) are made on it line by line: what
// the file holds can be proved without the database.
import { createHash, createSecretKey, type KeyObject } from 'node:crypto'
import { projectEvent } from '../domain/project-status.js'
import type { EventSource, JobState, LogRow, RowOutcome, RowSource } from '../domain/types.js'
import { isSignedBy } from '../domain/verify-signature.js'
import { linkProblem, rowProblem, type Link } from './audit-check.js'
import { logRecord } from './export.js'

export const ARCHIVE_FORMAT = 'g2sentry-archive'
export const ARCHIVE_VERSION = 1

/** The archive's first line. */
export interface ArchiveHeader {
  format: typeof ARCHIVE_FORMAT
  version: typeof ARCHIVE_VERSION
  /** The first and the last row the file holds. */
  fromSeq: number
  throughSeq: number
  /** The hash the row at `fromSeq` links to: the previous archive's last, or null at the log's start. */
  prevHash: string | null
  createdAt: string
}

/** The archive's last line: what the checkpoint row in the log says of the file's rows. */
export interface ArchiveCheckpointLine {
  kind: 'checkpoint'
  throughSeq: number
  throughHash: string | null
  rows: number
  /** `projectionHash` of the projection as of `throughSeq`. */
  projectionHash: string
  jobs: number
}

/** One log row as an archive line: the export's fields, with the raw body and the salt in base64. */
export const archiveLine = (row: LogRow): string =>
  JSON.stringify({ ...logRecord(row), body: row.rawBody.toString('base64'), salt: row.salt === null ? null : row.salt.toString('base64') })

/**
 * The projection's hash, as a checkpoint keeps it: SHA-256 of one line per job in ascending job
 * id, each the JSON array `[jobId, jobName, status, lastEventType, version, eventCount,
 * createdAt, updatedAt]` and a newline. The phone is left out: it is personal data, and erasure
 * replaces it after the checkpoint is written (docs/design.md, "Archiving").
 */
export function projectionHash (jobs: Iterable<JobState>): string {
  const sorted = [...jobs].sort((a, b) => a.jobId - b.jobId)
  const digest = createHash('sha256')
  for (const job of sorted) {
    digest.update(JSON.stringify([job.jobId, job.jobName, job.status, job.lastEventType, job.version, job.eventCount, job.createdAt, job.updatedAt]) + '\n')
  }
  return digest.digest('hex')
}

/**
 * Applies one log row to `states`, as a replay does; the outcome it replays to, or undefined for
 * a record (a redaction or a checkpoint), which changes no job.
 */
export function projectRow (states: Map<number, JobState>, row: Pick<LogRow, 'jobId' | 'eventType' | 'jobStatus' | 'jobName' | 'guardianPhone' | 'receivedAt' | 'source'>): string | undefined {
  if (row.source === 'redaction' || row.source === 'checkpoint') return undefined
  const decision = projectEvent(states.get(row.jobId), {
    jobId: row.jobId,
    eventType: row.eventType,
    jobStatus: row.jobStatus,
    jobName: row.jobName,
    guardianPhone: row.guardianPhone ?? undefined,
    receivedAt: row.receivedAt,
    source: row.source as EventSource
  })
  if (decision.state !== undefined) states.set(row.jobId, decision.state)
  return decision.outcome
}

const isInt = (value: unknown): value is number => Number.isSafeInteger(value)
const isHashOrNull = (value: unknown): value is string | null => value === null || (typeof value === 'string' && /^[0-9a-f]{64}$/.test(value))
const isText = (value: unknown): value is string => typeof value === 'string'
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

/** A line read as the log row it holds, or undefined when it is not one. */
export function readRowLine (value: Record<string, unknown>): LogRow | undefined {
  const { seq, receivedAt, jobId, eventType, jobStatus, jobName, guardianPhone, outcome, source, sameAs, signature, contentHash, prevHash, hash, chainVersion, redactedBy, body, salt } = value
  const at = isText(receivedAt) ? Date.parse(receivedAt) : NaN
  if (!isInt(seq) || !isInt(jobId) || Number.isNaN(at) || !isText(eventType) || !isText(jobStatus) || !isText(jobName) ||
    !(guardianPhone === null || isText(guardianPhone)) || !isText(outcome) || !isText(source) || !(sameAs === null || isInt(sameAs)) ||
    !isText(signature) || !isText(contentHash) || !(prevHash === null || isText(prevHash)) || !(hash === null || isText(hash)) ||
    !isInt(chainVersion) || !(redactedBy === null || isInt(redactedBy)) || !isText(body) || !BASE64.test(body) ||
    !(salt === null || (isText(salt) && BASE64.test(salt)))) return undefined
  return {
    seq,
    jobId,
    eventType,
    jobStatus: jobStatus as LogRow['jobStatus'],
    jobName,
    guardianPhone,
    rawBody: Buffer.from(body, 'base64'),
    signature,
    contentHash,
    receivedAt: at,
    outcome: outcome as RowOutcome,
    source: source as RowSource,
    sameAs,
    prevHash,
    hash,
    chainVersion,
    salt: salt === null ? null : Buffer.from(salt, 'base64'),
    redactedBy
  }
}

function readHeader (value: Record<string, unknown>): ArchiveHeader | undefined {
  const { format, version, fromSeq, throughSeq, prevHash, createdAt } = value
  if (format !== ARCHIVE_FORMAT || version !== ARCHIVE_VERSION || !isInt(fromSeq) || fromSeq < 1 || !isInt(throughSeq) ||
    throughSeq < fromSeq || !isHashOrNull(prevHash) || !isText(createdAt) || Number.isNaN(Date.parse(createdAt))) return undefined
  return { format, version, fromSeq, throughSeq, prevHash, createdAt }
}

function readCheckpointLine (value: Record<string, unknown>): ArchiveCheckpointLine | undefined {
  const { kind, throughSeq, throughHash, rows, projectionHash: projection, jobs } = value
  if (kind !== 'checkpoint' || !isInt(throughSeq) || !isHashOrNull(throughHash) || !isInt(rows) || !isHashOrNull(projection) ||
    projection === null || !isInt(jobs)) return undefined
  return { kind, throughSeq, throughHash, rows, projectionHash: projection, jobs }
}

function parseLine (text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

/** Where the archive file before the next one ended: its last row, and the projection replayed through it. */
export interface ArchiveContinuation {
  last: Link
  states: Map<number, JobState>
}

/** A problem found in an archive file, by line (1 is the header). */
export interface ArchiveProblem { line: number; problem: string }

/** What `verifyArchive` found. */
export interface ArchiveReport {
  header: ArchiveHeader | null
  checkpoint: ArchiveCheckpointLine | null
  rows: number
  /** Rows a given secret signs, and callback rows none signs (null when no secret was given). */
  signed: number
  unsigned: number | null
  apiRows: number
  redactedRows: number
  records: number
  /**
   * Whether the projection replayed from the file's rows has the checkpoint's hash: checked for a
   * file that starts the log (`fromSeq` 1), or checked after the file before it; a later file
   * alone continues a projection it does not hold.
   */
  projection: 'ok' | 'differs' | 'not checked'
  /** The first problems found (at most 100), in line order. */
  problems: ArchiveProblem[]
  ok: boolean
  /** What the next file is checked after, when files are checked in order (`verify --archive A --archive B`). */
  next?: ArchiveContinuation | undefined
}

const MAX_PROBLEMS = 100

/**
 * Checks an archive file given as its lines, in order: the header; every row's link to the one
 * before it (the first to the header's `prevHash`), its fields against its hash and its body, as
 * verify checks the log; with `secrets`, that one signs each callback row whose body is kept;
 * and that the file ends exactly at the checkpoint line, whose seq, hash and row count match the
 * rows. Rows must run without a gap from `fromSeq` to `throughSeq`.
 */
export async function verifyArchive (
  lines: AsyncIterable<string> | Iterable<string>, secrets: readonly string[] = [], after?: ArchiveContinuation
): Promise<ArchiveReport> {
  const keys: KeyObject[] = secrets.map((secret) => createSecretKey(Buffer.from(secret, 'utf8')))
  const report: ArchiveReport = {
    header: null,
    checkpoint: null,
    rows: 0,
    signed: 0,
    unsigned: secrets.length > 0 ? 0 : null,
    apiRows: 0,
    redactedRows: 0,
    records: 0,
    projection: 'not checked',
    problems: [],
    ok: false
  }
  const problem = (line: number, text: string) => { if (report.problems.length < MAX_PROBLEMS) report.problems.push({ line, problem: text }) }
  const states = after?.states ?? new Map<number, JobState>()
  let previous: Link | undefined
  let number = 0
  let ended = false
  let replaying = false
  for await (const text of lines) {
    number++
    if (text === '' && number > 1) { problem(number, 'an empty line'); continue }
    const value = parseLine(text)
    if (number === 1) {
      report.header = value === undefined ? null : readHeader(value) ?? null
      if (report.header === null) {
        problem(1, `the first line is not a ${ARCHIVE_FORMAT} version ${ARCHIVE_VERSION} header`)
        break
      }
      if (after !== undefined && (report.header.fromSeq !== after.last.seq + 1 || report.header.prevHash !== after.last.hash)) {
        problem(1, `the file does not continue the one before it (which ends at seq ${after.last.seq})`)
      }
      // With the file before it, its rows replay from that file's projection.
      replaying = report.header.fromSeq === 1 || after !== undefined
      if (report.header.fromSeq > 1) previous = { seq: report.header.fromSeq - 1, hash: report.header.prevHash }
      else if (report.header.prevHash !== null) problem(1, 'the header starts the log (fromSeq 1) but names a previous hash')
      continue
    }
    if (ended) { problem(number, 'a line after the checkpoint line'); continue }
    if (value === undefined) { problem(number, 'the line is not a JSON object'); continue }
    if (value.kind === 'checkpoint') {
      ended = true
      report.checkpoint = readCheckpointLine(value) ?? null
      const { checkpoint, header } = report
      if (checkpoint === null) { problem(number, 'the checkpoint line is not well formed'); continue }
      if (checkpoint.throughSeq !== header?.throughSeq || checkpoint.throughSeq !== previous?.seq) {
        problem(number, `the checkpoint says through seq ${checkpoint.throughSeq}, the header ${header?.throughSeq ?? '?'}, the last row is ${previous?.seq ?? 'none'}`)
      }
      if (checkpoint.throughHash !== (previous?.hash ?? null)) problem(number, 'the checkpoint\'s throughHash is not the last row\'s hash')
      if (checkpoint.rows !== report.rows) problem(number, `the checkpoint says ${checkpoint.rows} rows, the file holds ${report.rows}`)
      if (replaying) {
        report.projection = projectionHash(states.values()) === checkpoint.projectionHash && states.size === checkpoint.jobs ? 'ok' : 'differs'
        if (report.projection === 'differs') problem(number, 'the projection replayed from the rows does not have the checkpoint\'s projectionHash')
      }
      continue
    }
    const row = readRowLine(value)
    if (row === undefined) { problem(number, 'the line is not a log row'); continue }
    report.rows++
    const link = linkProblem(row, previous)
    const found = link === undefined ? null : link ?? rowProblem(row)
    if (found !== null) problem(number, `seq ${row.seq}: ${found}`)
    if (row.source === 'redaction' || row.source === 'checkpoint') report.records++
    else if (row.redactedBy !== null) report.redactedRows++
    else if (row.source === 'api') report.apiRows++
    else if (keys.length > 0) {
      if (isSignedBy(row.rawBody, row.signature, keys)) report.signed++
      else {
        report.unsigned = (report.unsigned ?? 0) + 1
        problem(number, `seq ${row.seq}: signed by none of the given secrets`)
      }
    }
    // A file that starts the log replays from nothing; a later one continues states it does not hold.
    if (replaying) {
      const replayed = projectRow(states, row)
      if (replayed !== undefined && replayed !== row.outcome && found === null) problem(number, `seq ${row.seq}: was ${row.outcome} live, replays to ${replayed}`)
    }
    previous = { seq: row.seq, hash: row.hash }
  }
  if (number === 0) problem(1, 'the file is empty')
  else if (!ended && report.header !== null) problem(number + 1, 'the file ends without its checkpoint line (cut short?)')
  report.ok = report.problems.length === 0
  report.next = { last: previous ?? { seq: 0, hash: null }, states }
  return report
}
