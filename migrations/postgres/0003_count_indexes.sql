-- Twin of migrations/sqlite/0003_count_indexes.sql: indexes for the daemon's periodic reads.
CREATE INDEX jobs_by_state ON jobs (state);
CREATE INDEX jobs_next_fire ON jobs (name, next_fire_at, state)
    WHERE next_fire_at IS NOT NULL AND state <> 'removed';
CREATE INDEX job_files_invalid ON job_files (path) WHERE valid = 0 AND removed_at IS NULL;
