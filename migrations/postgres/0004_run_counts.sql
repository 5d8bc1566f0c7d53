-- Twin of migrations/sqlite/0004_run_counts.sql: runs per job and state kept by triggers, and
-- the index for every job's last success (see there for the measurements behind it).
CREATE TABLE run_counts (
    job_name TEXT NOT NULL,
    state    TEXT NOT NULL,
    n        BIGINT NOT NULL,
    PRIMARY KEY (job_name, state)
);

INSERT INTO run_counts (job_name, state, n)
    SELECT job_name, state, COUNT(*) FROM runs GROUP BY job_name, state;

CREATE FUNCTION run_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        UPDATE run_counts SET n = n - 1 WHERE job_name = OLD.job_name AND state = OLD.state;
    END IF;
    INSERT INTO run_counts (job_name, state, n) VALUES (NEW.job_name, NEW.state, 1)
        ON CONFLICT (job_name, state) DO UPDATE SET n = run_counts.n + 1;
    RETURN NULL;
END;
$$;
CREATE TRIGGER run_counts_after_insert AFTER INSERT ON runs
    FOR EACH ROW EXECUTE FUNCTION run_counts_follow();
CREATE TRIGGER run_counts_after_state AFTER UPDATE OF state ON runs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION run_counts_follow();

CREATE INDEX runs_job_state_finished ON runs (job_name, state, finished_at);
