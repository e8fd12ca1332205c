-- The event log: every verified delivery. Append-only. seq is global; within one job it follows
-- the order in which appends took the job's lock, which is the order the projection saw them.
CREATE TABLE events (
  seq            BIGSERIAL PRIMARY KEY,
  job_id         BIGINT  NOT NULL,
  event_type     TEXT    NOT NULL,
  job_status     TEXT    NOT NULL,
  job_name       TEXT    NOT NULL,
  guardian_phone TEXT,
  raw_body       BYTEA   NOT NULL,
  signature      TEXT    NOT NULL,
  content_hash   TEXT    NOT NULL,
  received_at    BIGINT  NOT NULL,
  outcome        TEXT    NOT NULL CHECK (outcome IN ('applied', 'duplicate', 'stale', 'unsupported')),
  same_as        BIGINT
);
CREATE INDEX events_by_job ON events (job_id, seq);

-- The projection: one row per job, always rebuildable from the log.
CREATE TABLE jobs (
  job_id          BIGINT  PRIMARY KEY,
  job_name        TEXT    NOT NULL,
  status          TEXT    NOT NULL,
  guardian_phone  TEXT,
  last_event_type TEXT    NOT NULL,
  version         INTEGER NOT NULL,
  event_count     INTEGER NOT NULL,
  created_at      BIGINT  NOT NULL,
  updated_at      BIGINT  NOT NULL
);
CREATE INDEX jobs_by_status ON jobs (status, job_id);

-- Signed bodies that could not be read as a callback, kept for inspection and retry.
CREATE TABLE quarantine (
  id           BIGSERIAL PRIMARY KEY,
  reason       TEXT    NOT NULL,
  detail       TEXT    NOT NULL,
  raw_body     BYTEA   NOT NULL,
  signature    TEXT    NOT NULL,
  content_type TEXT,
  received_at  BIGINT  NOT NULL
);
