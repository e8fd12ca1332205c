-- Leases: a named piece of work (a consumer, the reconciler) that one holder at a time may do.
-- A holder renews before expires_at (ms since the epoch); when it does not, another may take
-- over. token grows by one whenever the holder changes, so a write fenced with the token it was
-- given fails once someone else has held the lease.
CREATE TABLE leases (
  name            TEXT    PRIMARY KEY,
  holder          TEXT    NOT NULL,
  token           INTEGER NOT NULL,
  acquired_at     INTEGER NOT NULL,
  expires_at      INTEGER NOT NULL
);

-- Durable consumers: the last seq each named consumer has handled, kept next to the log.
CREATE TABLE consumer_checkpoints (
  name            TEXT    PRIMARY KEY,
  checkpoint      INTEGER NOT NULL,
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL
);

-- Rows a consumer gave up on after its attempts ran out: kept, listed and retryable.
CREATE TABLE consumer_parked (
  consumer        TEXT    NOT NULL,
  seq             INTEGER NOT NULL,
  attempts        INTEGER NOT NULL,
  error           TEXT    NOT NULL,
  parked_at       INTEGER NOT NULL,
  -- Set by a retry request; the consumer then hands the row to its handler again.
  retry_requested INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (consumer, seq)
);
