-- Where each log row came from: a signed callback, or the Partner API's answer that the
-- reconciler wrote (event type Reconciled, no signature). Rows before this migration are callbacks.
ALTER TABLE events ADD COLUMN source TEXT NOT NULL DEFAULT 'callback' CHECK (source IN ('callback', 'api'));

-- When the reconciler last had G2 Sentry's answer for a job, and the job's last seq it covered:
-- a job is not asked again until it has news or has been quiet for quietFor.
CREATE TABLE reconcile_checks (
  job_id      INTEGER PRIMARY KEY,
  checked_at  INTEGER NOT NULL,
  checked_seq INTEGER NOT NULL
);

-- The Partner API's rate limit, shared by every process on this database: the send time of each
-- request in the last window per partner key (a sliding log), and a pause after a 429.
CREATE TABLE partner_limits (
  partner_key  TEXT    PRIMARY KEY,
  paused_until INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE partner_requests (
  partner_key TEXT    NOT NULL,
  sent_at     INTEGER NOT NULL
);
CREATE INDEX partner_requests_window ON partner_requests (partner_key, sent_at);
