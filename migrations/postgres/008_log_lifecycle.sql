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
ALTER TABLE events DROP CONSTRAINT events_outcome_check;
ALTER TABLE events ADD CONSTRAINT events_outcome_check CHECK (outcome IN ('applied', 'duplicate', 'stale', 'unsupported', 'recorded'));
ALTER TABLE events DROP CONSTRAINT events_source_check;
ALTER TABLE events ADD CONSTRAINT events_source_check CHECK (source IN ('callback', 'api', 'redaction', 'checkpoint'));
ALTER TABLE events ADD COLUMN chain_version SMALLINT NOT NULL DEFAULT 1;
ALTER TABLE events ADD COLUMN salt BYTEA;
ALTER TABLE events ADD COLUMN redacted_by BIGINT;
CREATE INDEX events_redacted ON events (redacted_by, seq) WHERE redacted_by IS NOT NULL;
CREATE INDEX events_records ON events (source, seq) WHERE source IN ('redaction', 'checkpoint');

-- A quarantined body erased by a redaction: the seq of its record.
ALTER TABLE quarantine ADD COLUMN redacted_by BIGINT;

-- The projection as it stood at the latest archive's checkpoint (its `through` seq): where a
-- rebuild starts once the rows before it are archived. Its hash is in the checkpoint row.
CREATE TABLE checkpoint_jobs (
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

-- Retention's walk: terminal jobs (Completed, Canceled) by the time of their last row.
CREATE INDEX jobs_terminal ON jobs (updated_at, job_id) WHERE status IN ('Completed', 'Canceled');
