-- Twin of migrations/sqlite/0008_history_pruning.sql: run-history retention (see there).

-- The events of a pruned run go with it (deleted after the run row); every other event stays
-- append-only.
CREATE FUNCTION events_delete_pruned_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.run_id IS NULL OR EXISTS (SELECT 1 FROM runs WHERE id = OLD.run_id) THEN
        RAISE EXCEPTION 'events are append-only (only the events of a pruned run are deleted)';
    END IF;
    RETURN OLD;
END;
$$;
DROP TRIGGER events_no_delete ON events;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_delete_pruned_only();

-- Counters since the database was created: pruning does not lower them.
DROP TRIGGER step_failures_after_delete ON steps;
DROP TRIGGER download_totals_after_delete ON downloads;

CREATE INDEX runs_by_finish ON runs (finished_at, id) WHERE finished_at IS NOT NULL;

CREATE INDEX exports_by_run ON exports (run_id);
CREATE INDEX restore_sessions_by_run ON restore_sessions (run_id);
CREATE INDEX session_intents_by_run ON session_intents (run_id);
