-- Twin of migrations/sqlite/0007_replicas.sql: the replica name of each daemon instance and the
-- leadership lease (see there).
ALTER TABLE daemon_instances ADD COLUMN name TEXT;

CREATE TABLE leadership (
    id           BIGINT PRIMARY KEY CHECK (id = 1),
    holder       TEXT NOT NULL,
    since        BIGINT NOT NULL,
    renewed_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    term         BIGINT NOT NULL
);

-- Claiming walks the claimable runs in claim order and stops at the first one, instead of
-- reading and sorting every queued run under the store's write lock (a queue of 10,000 runs
-- made each claim take ~100 ms with several replicas waiting on the lock; bench/replicas.sh).
CREATE INDEX runs_claim_order ON runs (scheduled_for, id)
    WHERE state IN ('queued', 'waiting_retry', 'running');
