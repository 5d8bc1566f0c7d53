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
