-- A quarantined body that a retry appended to the log keeps its row, with the seq it became.
ALTER TABLE quarantine ADD COLUMN retried_seq BIGINT;
CREATE INDEX quarantine_pending ON quarantine (id) WHERE retried_seq IS NULL;
