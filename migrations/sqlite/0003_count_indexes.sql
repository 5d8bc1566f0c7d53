-- Indexes for the daemon's periodic reads (`/metrics` and the systemd status every 5 s, the
-- per-job next-fire series every 60 s), so that with thousands of jobs they read a few index
-- pages instead of every row of `jobs` and `job_files`.

-- Jobs per state: a covering index for `GROUP BY state`.
CREATE INDEX jobs_by_state ON jobs (state);

-- The stored next fire of every live job, in name order (a covering, partial index).
CREATE INDEX jobs_next_fire ON jobs (name, next_fire_at, state)
    WHERE next_fire_at IS NOT NULL AND state <> 'removed';

-- Invalid job files that are present: usually none, so the count reads an empty index.
CREATE INDEX job_files_invalid ON job_files (path) WHERE valid = 0 AND removed_at IS NULL;
