-- The reconciler's queue: one row per open job (not Completed or Canceled), kept by a trigger on
-- the log as rows are appended, so a round's candidates and the oldest-unchecked gauge are index
-- lookups whatever the number of open jobs or the size of the log (before: one pass over every
-- open job and its rows, each round and each scrape).
--   last_seq, last_at  the job's last row and when it was received
--   assignments        its JobAssigned rows so far
--   ambiguous_seq      the last row that callbacks alone cannot decide (0: none): a stale row, a
--                      withdrawal applied after two or more assignments, or a first row that is
--                      not an assignment
--   checked_at/_seq    the reconciler's last usable answer, and the last row it covered
--   news_at            max(last_at, checked_at): a job is quiet when this is old enough
--   ambiguous          1 while ambiguous_seq > checked_seq (a column, so that it can be indexed)
--   retry_at           after an unusable answer, the rounds leave the job alone until then
CREATE TABLE reconcile_queue (
  job_id        BIGINT  PRIMARY KEY,
  last_seq      BIGINT  NOT NULL,
  last_at       BIGINT  NOT NULL,
  assignments   INTEGER NOT NULL,
  ambiguous_seq BIGINT  NOT NULL,
  checked_at    BIGINT,
  checked_seq   BIGINT  NOT NULL DEFAULT 0,
  news_at       BIGINT  NOT NULL,
  ambiguous     INTEGER NOT NULL,
  retry_at      BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX reconcile_queue_due ON reconcile_queue (ambiguous, news_at, job_id);

-- A row of an open job updates its queue row; an applied row creates it (a job's first row); an
-- applied Completed or Canceled removes it for good (a terminal status never moves), and the
-- job's failure record with it (nobody asks about it again). Rows of a terminal job (stale,
-- duplicates) find no queue row and add none.
-- The function keeps the schema it was created in (SET search_path FROM CURRENT): a row inserted
-- by a session with another search_path still reaches this schema's queue.
CREATE FUNCTION reconcile_queue_on_event() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
  decided boolean;
BEGIN
  UPDATE reconcile_queue q SET
    last_seq = NEW.seq,
    last_at = NEW.received_at,
    assignments = q.assignments + CASE WHEN NEW.event_type = 'JobAssigned' THEN 1 ELSE 0 END,
    ambiguous_seq = CASE WHEN NEW.outcome = 'stale' OR (NEW.event_type = 'JobWithdrawed' AND NEW.outcome = 'applied' AND q.assignments >= 2)
      THEN NEW.seq ELSE q.ambiguous_seq END,
    news_at = greatest(q.news_at, NEW.received_at),
    ambiguous = CASE WHEN (CASE WHEN NEW.outcome = 'stale' OR (NEW.event_type = 'JobWithdrawed' AND NEW.outcome = 'applied' AND q.assignments >= 2)
      THEN NEW.seq ELSE q.ambiguous_seq END) > q.checked_seq THEN 1 ELSE 0 END
  WHERE q.job_id = NEW.job_id;
  decided := FOUND;
  IF NOT decided AND NEW.outcome = 'applied' THEN
    INSERT INTO reconcile_queue (job_id, last_seq, last_at, assignments, ambiguous_seq, news_at, ambiguous)
    VALUES (NEW.job_id, NEW.seq, NEW.received_at, CASE WHEN NEW.event_type = 'JobAssigned' THEN 1 ELSE 0 END,
      CASE WHEN NEW.event_type <> 'JobAssigned' THEN NEW.seq ELSE 0 END, NEW.received_at,
      CASE WHEN NEW.event_type <> 'JobAssigned' THEN 1 ELSE 0 END)
    ON CONFLICT (job_id) DO NOTHING;
  END IF;
  IF NEW.outcome = 'applied' AND NEW.job_status IN ('Completed', 'Canceled') THEN
    DELETE FROM reconcile_queue WHERE job_id = NEW.job_id;
    DELETE FROM reconcile_failures WHERE job_id = NEW.job_id;
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER reconcile_queue_on_event AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION reconcile_queue_on_event();

-- The open jobs of a log written before this migration, with what the old queries computed.
INSERT INTO reconcile_queue (job_id, last_seq, last_at, assignments, ambiguous_seq, checked_at, checked_seq, news_at, ambiguous, retry_at)
SELECT job_id, last_seq, last_at, assignments, ambiguous_seq, checked_at, coalesce(checked_seq, 0),
  greatest(last_at, coalesce(checked_at, 0)), CASE WHEN ambiguous_seq > coalesce(checked_seq, 0) THEN 1 ELSE 0 END, retry_at
FROM (
  SELECT j.job_id, c.checked_at, c.checked_seq, coalesce(f.retry_at, 0) AS retry_at,
    (SELECT max(e.seq) FROM events e WHERE e.job_id = j.job_id) AS last_seq,
    (SELECT e.received_at FROM events e WHERE e.job_id = j.job_id ORDER BY e.seq DESC LIMIT 1) AS last_at,
    (SELECT count(*) FROM events a WHERE a.job_id = j.job_id AND a.event_type = 'JobAssigned') AS assignments,
    greatest(
      coalesce((SELECT max(s.seq) FROM events s WHERE s.job_id = j.job_id AND s.outcome = 'stale'), 0),
      coalesce((SELECT max(w.seq) FROM events w WHERE w.job_id = j.job_id AND w.event_type = 'JobWithdrawed' AND w.outcome = 'applied'
        AND (SELECT count(*) FROM events a WHERE a.job_id = j.job_id AND a.seq < w.seq AND a.event_type = 'JobAssigned') >= 2), 0),
      coalesce((SELECT CASE WHEN f.event_type <> 'JobAssigned' THEN f.seq ELSE 0 END FROM events f WHERE f.job_id = j.job_id ORDER BY f.seq LIMIT 1), 0)
    ) AS ambiguous_seq
  FROM jobs j
  LEFT JOIN reconcile_checks c ON c.job_id = j.job_id
  LEFT JOIN reconcile_failures f ON f.job_id = j.job_id
  WHERE j.status NOT IN ('Completed', 'Canceled')
) AS open;
