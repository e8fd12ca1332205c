-- Jobs whose last status answer from G2 Sentry was unusable (an unknown status, another job's,
-- not JSON, a 4xx, a 5xx after the retries, a redirect, an answer too large): what was answered
-- (a short description written by the reconciler, never the body or a token), when, how many
-- times in a row, and when the job may be asked again (exponential backoff). A usable answer
-- deletes the row.
CREATE TABLE reconcile_failures (
  job_id           BIGINT  PRIMARY KEY,
  failures         INTEGER NOT NULL,
  first_failed_at  BIGINT  NOT NULL,
  failed_at        BIGINT  NOT NULL,
  retry_at         BIGINT  NOT NULL,
  answer           TEXT    NOT NULL CHECK (char_length(answer) <= 300)
);
