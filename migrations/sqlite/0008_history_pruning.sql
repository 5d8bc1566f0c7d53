-- Run-history retention (`history.keepFor` / `history.keepRuns`, docs/daemon.md "Run history"):
-- the daemon deletes finished runs older than that, with their steps, downloads, restore
-- sessions, deleted exports, delivered notifications and events, in small transactions.

-- The events of a pruned run go with it; every other event stays append-only. A run's events
-- are deleted after the run row, so "the run no longer exists" is what allows the delete.
DROP TRIGGER events_no_delete;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    WHEN OLD.run_id IS NULL OR EXISTS (SELECT 1 FROM runs WHERE id = OLD.run_id)
BEGIN SELECT RAISE(ABORT, 'events are append-only (only the events of a pruned run are deleted)'); END;

-- The failed-steps and downloaded-bytes totals are Prometheus counters
-- (`restorectl_step_failures_total`, `restorectl_download_bytes_total`): totals since the
-- database was created, which pruning must not lower (a counter that drops reads as a reset,
-- and `increase()` would report the whole total again). Pruning is the only delete of steps and
-- downloads, so the delete triggers go. `run_counts` never had one, for the same reason.
DROP TRIGGER step_failures_after_delete;
DROP TRIGGER download_totals_after_delete;

-- Runs by finish time: the metrics' "runs finished since" read every 5 s (it used to walk every
-- run), and pruning's walk from the oldest finished run.
CREATE INDEX runs_by_finish ON runs (finished_at, id) WHERE finished_at IS NOT NULL;

-- What pruning deletes (or checks) by run.
CREATE INDEX exports_by_run ON exports (run_id);
CREATE INDEX restore_sessions_by_run ON restore_sessions (run_id);
CREATE INDEX session_intents_by_run ON session_intents (run_id);
