-- The log's lifecycle: erasure, archiving and chain version 2 (docs/design.md, "Personal data,
-- erasure and archiving").
--   source 'redaction' / 'checkpoint'  a row that records an act on the log itself: job_id 0, event
--                      type Redaction or Checkpoint, outcome 'recorded', the record as JSON in
--                      raw_body (no personal data), no signature
--   chain_version      1: the hash of src/store/chain.ts's first version (every row before this
--                      migration); 2: the hash covers the parsed fields and, for a callback or an
--                      API row, content_hash is an HMAC of the signature and the body keyed by
--                      the row's own secret salt
--   salt               the row's 32 random bytes (version 2 callback and API rows); erasure deletes it
--   redacted_by        the seq of the redaction record that erased the row's personal data
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt, keeping every row, the
-- last seq handed out, its index and its triggers (https://www.sqlite.org/lang_altertable.html).
CREATE TABLE events_v8 (
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
  outcome        TEXT    NOT NULL CHECK (outcome IN ('applied', 'duplicate', 'stale', 'unsupported', 'recorded')),
  same_as        INTEGER,
  prev_hash      TEXT,
  hash           TEXT,
  source         TEXT    NOT NULL DEFAULT 'callback' CHECK (source IN ('callback', 'api', 'redaction', 'checkpoint')),
  chain_version  INTEGER NOT NULL DEFAULT 1,
  salt           BLOB,
  redacted_by    INTEGER
);
INSERT INTO events_v8 (seq, job_id, event_type, job_status, job_name, guardian_phone, raw_body, signature, content_hash,
  received_at, outcome, same_as, prev_hash, hash, source)
SELECT seq, job_id, event_type, job_status, job_name, guardian_phone, raw_body, signature, content_hash,
  received_at, outcome, same_as, prev_hash, hash, source FROM events ORDER BY seq;
-- The last seq handed out, which may be past the last row (a deleted row shows in verify).
DELETE FROM sqlite_sequence WHERE name = 'events_v8';
INSERT INTO sqlite_sequence (name, seq) SELECT 'events_v8', seq FROM sqlite_sequence WHERE name = 'events';
DROP TABLE events;
ALTER TABLE events_v8 RENAME TO events;
CREATE INDEX events_by_job ON events (job_id, seq);
CREATE INDEX events_redacted ON events (redacted_by, seq) WHERE redacted_by IS NOT NULL;
CREATE INDEX events_records ON events (source, seq) WHERE source IN ('redaction', 'checkpoint');

CREATE TRIGGER reconcile_queue_on_event AFTER INSERT ON events
BEGIN
  UPDATE reconcile_queue SET
    last_seq = NEW.seq,
    last_at = NEW.received_at,
    assignments = assignments + (NEW.event_type = 'JobAssigned'),
    ambiguous_seq = CASE WHEN NEW.outcome = 'stale' OR (NEW.event_type = 'JobWithdrawed' AND NEW.outcome = 'applied' AND assignments >= 2)
      THEN NEW.seq ELSE ambiguous_seq END,
    news_at = max(news_at, NEW.received_at),
    ambiguous = (CASE WHEN NEW.outcome = 'stale' OR (NEW.event_type = 'JobWithdrawed' AND NEW.outcome = 'applied' AND assignments >= 2)
      THEN NEW.seq ELSE ambiguous_seq END) > checked_seq
  WHERE job_id = NEW.job_id AND last_seq < NEW.seq;
END;
-- Separate triggers, so that most rows (redeliveries, news of an open job) run only the one above.
-- SQLite does not promise an order between them: the update skips the row the insert just made
-- (last_seq = NEW.seq), and a closing row never makes one.
CREATE TRIGGER reconcile_queue_on_applied AFTER INSERT ON events WHEN NEW.outcome = 'applied' AND NEW.job_status NOT IN ('Completed', 'Canceled')
BEGIN
  INSERT OR IGNORE INTO reconcile_queue (job_id, last_seq, last_at, assignments, ambiguous_seq, news_at, ambiguous)
    VALUES (NEW.job_id, NEW.seq, NEW.received_at, NEW.event_type = 'JobAssigned',
      CASE WHEN NEW.event_type <> 'JobAssigned' THEN NEW.seq ELSE 0 END, NEW.received_at, NEW.event_type <> 'JobAssigned');
END;
CREATE TRIGGER reconcile_queue_on_closed AFTER INSERT ON events WHEN NEW.outcome = 'applied' AND NEW.job_status IN ('Completed', 'Canceled')
BEGIN
  DELETE FROM reconcile_queue WHERE job_id = NEW.job_id;
  DELETE FROM reconcile_failures WHERE job_id = NEW.job_id;
END;

-- A quarantined body erased by a redaction: the seq of its record.
ALTER TABLE quarantine ADD COLUMN redacted_by INTEGER;

-- The projection as it stood at the latest archive's checkpoint (its `through` seq): where a
-- rebuild starts once the rows before it are archived. Its hash is in the checkpoint row.
CREATE TABLE checkpoint_jobs (
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

-- Retention's walk: terminal jobs (Completed, Canceled) by the time of their last row.
CREATE INDEX jobs_terminal ON jobs (updated_at, job_id) WHERE status IN ('Completed', 'Canceled');
