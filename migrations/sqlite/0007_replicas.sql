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
