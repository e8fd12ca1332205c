-- Leases: a named piece of work (a consumer, the reconciler) that one holder at a time may do.
-- A holder renews before expires_at (ms since the epoch); when it does not, another may take
-- over. token grows by one whenever the holder changes, so a write fenced with the token it was
-- given fails once someone else has held the lease.
CREATE TABLE leases (
  name            TEXT    PRIMARY KEY,
  holder          TEXT    NOT NULL,
  token           BIGINT  NOT NULL,
  acquired_at     BIGINT  NOT NULL,
  expires_at      BIGINT  NOT NULL
);

-- Durable consumers: the last seq each named consumer has handled, kept next to the log.
CREATE TABLE consumer_checkpoints (
  name            TEXT    PRIMARY KEY,
  checkpoint      BIGINT  NOT NULL,
  created_at      BIGINT  NOT NULL,
  updated_at      BIGINT  NOT NULL
);

-- Rows a consumer gave up on after its attempts ran out: kept, listed and retryable.
CREATE TABLE consumer_parked (
  consumer        TEXT    NOT NULL,
  seq             BIGINT  NOT NULL,
  attempts        INTEGER NOT NULL,
  error           TEXT    NOT NULL,
  parked_at       BIGINT  NOT NULL,
  -- Set by a retry request; the consumer then hands the row to its handler again.
  retry_requested BOOLEAN NOT NULL DEFAULT false,
  PRIMARY KEY (consumer, seq)
);
