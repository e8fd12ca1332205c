-- The event log: every verified delivery, in the order it was committed. Append-only.
CREATE TABLE events (
  seq            INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id         INTEGER NOT NULL,
  event_type     TEXT    NOT NULL,
  job_status     TEXT    NOT NULL,
  job_name       TEXT    NOT NULL,
  guardian_phone TEXT,
  raw_body       BLOB    NOT NULL,
  signature      TEXT    NOT NULL,
  content_hash   TEXT    NOT NULL,
  received_at    INTEGER NOT NULL,
  outcome        TEXT    NOT NULL CHECK (outcome IN ('applied', 'duplicate', 'stale', 'unsupported')),
  same_as        INTEGER
);
CREATE INDEX events_by_job ON events (job_id, seq);

-- The projection: one row per job, always rebuildable from the log.
CREATE TABLE jobs (
  job_id          INTEGER PRIMARY KEY,
  job_name        TEXT    NOT NULL,
  status          TEXT    NOT NULL,
  guardian_phone  TEXT,
  last_event_type TEXT    NOT NULL,
  version         INTEGER NOT NULL,
  event_count     INTEGER NOT NULL,
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL
);
CREATE INDEX jobs_by_status ON jobs (status, job_id);

-- Signed bodies that could not be read as a callback, kept for inspection and retry.
CREATE TABLE quarantine (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  reason       TEXT    NOT NULL,
  detail       TEXT    NOT NULL,
  raw_body     BLOB    NOT NULL,
  signature    TEXT    NOT NULL,
  content_type TEXT,
  received_at  INTEGER NOT NULL
);
