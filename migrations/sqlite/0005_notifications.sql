-- The notification outbox (SPEC §11, docs/notifications.md): one row per (event, target),
-- written in the same transaction as the state change that caused it, deleted never (a
-- delivered row keeps `delivered_at` as history). The deliverer reads the due, undelivered rows.
CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY,
    delivery        TEXT NOT NULL UNIQUE,   -- UUID: the idempotency key, the same on every retry
    target          TEXT NOT NULL,          -- a key of notifications.targets
    event           TEXT NOT NULL,          -- failed | needs_attention | missed | invalid | recovered | succeeded | stale
    job_name        TEXT,
    run_id          TEXT,
    payload         TEXT NOT NULL,          -- the webhook body (JSON, version 1), sent verbatim
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL
);

CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE delivered_at IS NULL;
CREATE INDEX notifications_by_run ON notifications (run_id);
