-- Several replicas on one database (docs/ha.md). Each daemon instance carries the replica name
-- an operator recognises (`replicaName`, default host name and pid), and one row says which
-- replica leads: it alone applies the job files, enqueues scheduled fires and consumes operator
-- requests, for as long as it renews its lease (`expires_at`). On SQLite the lone daemon is
-- always the leader; the table is the same so that status and tests read one shape.
ALTER TABLE daemon_instances ADD COLUMN name TEXT;

CREATE TABLE leadership (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    holder       TEXT NOT NULL,      -- daemon_instances.id of the leader
    since        INTEGER NOT NULL,   -- when this holder took the lead
    renewed_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    term         INTEGER NOT NULL    -- +1 at every change of holder
) STRICT;

-- Claiming walks the claimable runs in claim order and stops at the first one, instead of
-- reading and sorting every queued run under the store's write lock (a queue of 10,000 runs
-- made each claim take ~100 ms with several replicas waiting on the lock; bench/replicas.sh).
CREATE INDEX runs_claim_order ON runs (scheduled_for, id)
    WHERE state IN ('queued', 'waiting_retry', 'running');
