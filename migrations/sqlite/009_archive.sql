-- Archiving (docs/design.md, "Archiving"): how many of each job's log rows the archives moved out
-- of the log, counted up to the latest checkpoint, for GET /jobs/:jobId/events.
ALTER TABLE checkpoint_jobs ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
