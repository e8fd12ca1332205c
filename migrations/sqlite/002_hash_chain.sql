-- Tamper evidence: each row's hash covers the previous row's hash and every stored field that
-- is not derived from the raw body (see src/store/chain.ts). Rows written before this migration
-- have no hash; the chain starts at the first row that has one.
ALTER TABLE events ADD COLUMN prev_hash TEXT;
ALTER TABLE events ADD COLUMN hash TEXT;
