-- Archiving (docs/design.md, "Archiving"): how many of each job's log rows the archives moved out
-- of the log, counted up to the latest checkpoint, for GET /jobs/:jobId/events; and the seq of the
-- job's last archived row, which a conditional append (the reconciler's) compares with once every
-- row of the job is archived.
ALTER TABLE checkpoint_jobs ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
ALTER TABLE checkpoint_jobs ADD COLUMN last_seq BIGINT NOT NULL DEFAULT 0;
