-- The daemon reads the failed steps per error class and the downloaded bytes every 5 s
-- (`/metrics`). Both used to read every failed step and every download, growing with the
-- history; these tables keep them by triggers, so each read is a few rows whatever the history.

-- Failed steps per error class (`unknown` when a failed step has no class). A count that drops
-- to 0 stays as a row with n = 0.
CREATE TABLE step_failure_counts (
    error_class TEXT PRIMARY KEY,
    n           INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO step_failure_counts (error_class, n)
    SELECT COALESCE(error_class, 'unknown'), COUNT(*) FROM steps WHERE state = 'failed'
    GROUP BY COALESCE(error_class, 'unknown');

CREATE TRIGGER step_failures_after_insert AFTER INSERT ON steps
    WHEN NEW.state = 'failed'
BEGIN
    INSERT INTO step_failure_counts (error_class, n) VALUES (COALESCE(NEW.error_class, 'unknown'), 1)
        ON CONFLICT (error_class) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER step_failures_after_update AFTER UPDATE OF state, error_class ON steps
    WHEN (OLD.state = 'failed' OR NEW.state = 'failed')
         AND (OLD.state IS NOT NEW.state OR OLD.error_class IS NOT NEW.error_class)
BEGIN
    UPDATE step_failure_counts SET n = n - 1
        WHERE OLD.state = 'failed' AND error_class = COALESCE(OLD.error_class, 'unknown');
    INSERT INTO step_failure_counts (error_class, n)
        SELECT COALESCE(NEW.error_class, 'unknown'), 1 WHERE NEW.state = 'failed'
        ON CONFLICT (error_class) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER step_failures_after_delete AFTER DELETE ON steps
    WHEN OLD.state = 'failed'
BEGIN
    UPDATE step_failure_counts SET n = n - 1
        WHERE error_class = COALESCE(OLD.error_class, 'unknown');
END;

-- The sum of `downloads.bytes_durable`, in one row.
CREATE TABLE download_totals (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    bytes INTEGER NOT NULL
) STRICT;

INSERT INTO download_totals (id, bytes)
    VALUES (1, (SELECT COALESCE(SUM(bytes_durable), 0) FROM downloads));

CREATE TRIGGER download_totals_after_insert AFTER INSERT ON downloads
BEGIN
    UPDATE download_totals SET bytes = bytes + NEW.bytes_durable WHERE id = 1;
END;

CREATE TRIGGER download_totals_after_update AFTER UPDATE OF bytes_durable ON downloads
BEGIN
    UPDATE download_totals SET bytes = bytes + NEW.bytes_durable - OLD.bytes_durable WHERE id = 1;
END;

CREATE TRIGGER download_totals_after_delete AFTER DELETE ON downloads
BEGIN
    UPDATE download_totals SET bytes = bytes - OLD.bytes_durable WHERE id = 1;
END;
