-- Twin of migrations/sqlite/0006_failure_and_byte_totals.sql: failed steps per error class and
-- the sum of downloaded bytes, kept by triggers (see there).
CREATE TABLE step_failure_counts (
    error_class TEXT PRIMARY KEY,
    n           BIGINT NOT NULL
);

INSERT INTO step_failure_counts (error_class, n)
    SELECT COALESCE(error_class, 'unknown'), COUNT(*) FROM steps WHERE state = 'failed'
    GROUP BY COALESCE(error_class, 'unknown');

CREATE FUNCTION step_failures_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.state = 'failed' THEN
        UPDATE step_failure_counts SET n = n - 1
            WHERE error_class = COALESCE(OLD.error_class, 'unknown');
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.state = 'failed' THEN
        INSERT INTO step_failure_counts (error_class, n)
            VALUES (COALESCE(NEW.error_class, 'unknown'), 1)
            ON CONFLICT (error_class) DO UPDATE SET n = step_failure_counts.n + 1;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER step_failures_after_insert AFTER INSERT ON steps
    FOR EACH ROW WHEN (NEW.state = 'failed') EXECUTE FUNCTION step_failures_follow();
CREATE TRIGGER step_failures_after_update AFTER UPDATE OF state, error_class ON steps
    FOR EACH ROW
    WHEN ((OLD.state = 'failed' OR NEW.state = 'failed')
          AND (OLD.state IS DISTINCT FROM NEW.state
               OR OLD.error_class IS DISTINCT FROM NEW.error_class))
    EXECUTE FUNCTION step_failures_follow();
CREATE TRIGGER step_failures_after_delete AFTER DELETE ON steps
    FOR EACH ROW WHEN (OLD.state = 'failed') EXECUTE FUNCTION step_failures_follow();

CREATE TABLE download_totals (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    bytes BIGINT NOT NULL
);

INSERT INTO download_totals (id, bytes)
    VALUES (1, (SELECT COALESCE(SUM(bytes_durable), 0) FROM downloads));

CREATE FUNCTION download_totals_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE download_totals
        SET bytes = bytes
            + CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN NEW.bytes_durable ELSE 0 END
            - CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN OLD.bytes_durable ELSE 0 END
        WHERE id = 1;
    RETURN NULL;
END;
$$;
CREATE TRIGGER download_totals_after_insert AFTER INSERT ON downloads
    FOR EACH ROW EXECUTE FUNCTION download_totals_follow();
CREATE TRIGGER download_totals_after_update AFTER UPDATE OF bytes_durable ON downloads
    FOR EACH ROW EXECUTE FUNCTION download_totals_follow();
CREATE TRIGGER download_totals_after_delete AFTER DELETE ON downloads
    FOR EACH ROW EXECUTE FUNCTION download_totals_follow();
