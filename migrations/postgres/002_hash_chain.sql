-- Tamper evidence: each row's hash covers the previous row's hash and every stored field that
-- is not derived from the raw body (see src/store/chain.ts). Rows written before this migration
-- have no hash; the chain starts at the first row that has one.
ALTER TABLE events ADD COLUMN prev_hash TEXT;
ALTER TABLE events ADD COLUMN hash TEXT;

-- The chain's head: the last seq handed out and its hash. Appends lock this row, so they take
-- turns and seq follows commit order; a failed append rolls it back, so seqs have no gaps unless
-- rows are deleted, which verify then reports.
CREATE TABLE g2sentry_chain (
  id   INTEGER PRIMARY KEY CHECK (id = 1),
  seq  BIGINT  NOT NULL,
  hash TEXT
);
INSERT INTO g2sentry_chain (id, seq, hash)
SELECT 1, coalesce(max(seq), 0), NULL FROM events;
