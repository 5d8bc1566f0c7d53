-- restorectl state schema, version 1. Covers the whole life cycle of SPEC §5: jobs and their
-- versions, runs, steps, restore sessions, downloads, published files, operator requests and the
-- append-only event log.
--
-- Portability rules (a PostgreSQL backend comes later with its own migrations folder):
--   * times are INTEGER milliseconds since the Unix epoch (UTC); ids are TEXT (UUIDs) or INTEGER;
--   * JSON is stored as TEXT and only parsed in Rust; no SQLite-only functions in queries;
--   * STRICT and the triggers below are the only SQLite-specific parts.
-- Never edit this file once released: add a new numbered migration instead.

-- Every job file the daemon (or `plan`) has seen, valid or not. A file that does not parse has no
-- job name, so invalid files are tracked here rather than in `jobs`.
CREATE TABLE job_files (
    path           TEXT PRIMARY KEY,
    content_hash   TEXT NOT NULL,
    valid          INTEGER NOT NULL CHECK (valid IN (0, 1)),
    errors         TEXT NOT NULL DEFAULT '[]',      -- JSON array of located errors
    job_names      TEXT NOT NULL DEFAULT '[]',      -- JSON array of metadata.name found in it
    first_seen_at  INTEGER NOT NULL,
    last_seen_at   INTEGER NOT NULL,
    removed_at     INTEGER
) STRICT;

-- One row per job name. `active_version_id` is the last VALID version: an invalid edit records a
-- new (invalid) version and sets `state = 'invalid'`, but scheduling keeps using the active one.
CREATE TABLE jobs (
    name               TEXT PRIMARY KEY,
    kind               TEXT NOT NULL,
    file               TEXT NOT NULL,
    active_version_id  INTEGER REFERENCES job_versions (id),
    -- the version most recently applied, valid or not: tells "unchanged" from "changed" when the
    -- same invalid content is rescanned, and which errors `jobs` shows
    current_version_id INTEGER REFERENCES job_versions (id),
    state              TEXT NOT NULL CHECK (state IN ('active', 'invalid', 'removed')),
    errors             TEXT NOT NULL DEFAULT '[]',
    -- scheduler bookkeeping: the next fire instant is the source of truth (CRATES.md §3, approach B)
    schedule_key       TEXT,             -- cron + time zone the next fire was computed from
    next_fire_at       INTEGER,          -- NULL: not scheduled (one-shot, suspended, removed)
    last_fire_at       INTEGER,
    first_seen_at      INTEGER NOT NULL,
    last_seen_at       INTEGER NOT NULL,
    removed_at         INTEGER
) STRICT;

CREATE TABLE job_versions (
    id             INTEGER PRIMARY KEY,
    job_name       TEXT NOT NULL REFERENCES jobs (name),
    file           TEXT NOT NULL,
    spec_hash      TEXT NOT NULL,           -- normalised spec hash (hex SHA-256)
    spec_json      TEXT NOT NULL,           -- the normalised spec (no secret values, only references)
    valid          INTEGER NOT NULL CHECK (valid IN (0, 1)),
    errors         TEXT NOT NULL DEFAULT '[]',
    first_seen_at  INTEGER NOT NULL,
    last_seen_at   INTEGER NOT NULL,
    UNIQUE (job_name, spec_hash)
) STRICT;

CREATE TABLE runs (
    id                TEXT PRIMARY KEY,     -- UUID v7 (time ordered)
    job_name          TEXT NOT NULL REFERENCES jobs (name),
    job_version_id    INTEGER NOT NULL REFERENCES job_versions (id),
    spec_hash         TEXT NOT NULL,
    trigger           TEXT NOT NULL CHECK (trigger IN ('schedule', 'manual', 'one_shot')),
    scheduled_for     INTEGER NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('queued', 'running', 'waiting_retry', 'succeeded',
                          'succeeded_with_warnings', 'failed', 'cancelled', 'needs_attention',
                          'missed', 'skipped')),
    reason            TEXT,
    timeout_ms        INTEGER,                      -- the version's runTimeout, fixed at enqueue
    attempts          INTEGER NOT NULL DEFAULT 0,   -- how many times the run was claimed
    cancel_requested  INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    deadline_at       INTEGER,                      -- started_at + runTimeout
    next_attempt_at   INTEGER,                      -- when a waiting_retry run is due again
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    updated_at        INTEGER NOT NULL
) STRICT;
-- a one-shot job runs once per distinct spec content, even across removal and re-adding
CREATE UNIQUE INDEX runs_one_shot_once ON runs (job_name, spec_hash) WHERE trigger = 'one_shot';
-- a fire instant is enqueued (or recorded missed/skipped) at most once
CREATE UNIQUE INDEX runs_schedule_slot_once ON runs (job_name, scheduled_for) WHERE trigger = 'schedule';
CREATE INDEX runs_by_state ON runs (state);
CREATE INDEX runs_by_job ON runs (job_name, created_at);

CREATE TABLE steps (
    id                    INTEGER PRIMARY KEY,
    run_id                TEXT NOT NULL REFERENCES runs (id),
    seq                   INTEGER NOT NULL,
    mailbox_id            TEXT,             -- NULL for BulkRestore and organisation-wide Search
    mailbox_email         TEXT,
    mailbox_name          TEXT,
    is_archive            INTEGER NOT NULL DEFAULT 0 CHECK (is_archive IN (0, 1)),
    mailbox_ids           TEXT,             -- JSON array: the mailboxes of a BulkRestore step
    state                 TEXT NOT NULL CHECK (state IN ('pending', 'submitting', 'submitted',
                              'downloading', 'verifying', 'done', 'warning', 'failed', 'skipped',
                              'in_doubt')),
    attempts              INTEGER NOT NULL DEFAULT 0,
    next_attempt_at       INTEGER,
    restore_session_id    TEXT,             -- the explore session the step works in
    remote_operation_id   TEXT,             -- `sessionId` answered by a restore POST
    submitted_at          INTEGER,
    created_items         INTEGER,
    merged_items          INTEGER,
    failed_items          INTEGER,
    skipped_items         INTEGER,
    found_items           INTEGER,          -- Search: items written to the report
    error_class           TEXT,             -- retryable | permanent | auth | session_lost | ambiguous
    error_code            TEXT,             -- VB365 errorCode when known
    error_message         TEXT,
    operator_decision     TEXT CHECK (operator_decision IN ('resend', 'mark_done', 'mark_failed')),
    restore_posts         INTEGER NOT NULL DEFAULT 0,   -- restore POSTs sent for this step
    file_path             TEXT,             -- published export or report
    bytes                 INTEGER,
    sha256                TEXT,
    format                TEXT,             -- pst | zip | jsonl | csv
    started_at            INTEGER,
    finished_at           INTEGER,
    updated_at            INTEGER NOT NULL,
    UNIQUE (run_id, seq)
) STRICT;
CREATE INDEX steps_by_state ON steps (state);

-- Restore sessions the daemon opened, so none is leaked across crashes.
CREATE TABLE restore_sessions (
    id                TEXT PRIMARY KEY,     -- VB365 restore session id
    server            TEXT NOT NULL,
    organization_id   TEXT NOT NULL,
    point_in_time     TEXT,
    run_id            TEXT REFERENCES runs (id),
    state             TEXT NOT NULL CHECK (state IN ('open', 'stopping', 'stopped', 'lost')),
    keep_for_resume   INTEGER NOT NULL DEFAULT 0 CHECK (keep_for_resume IN (0, 1)),
    opened_at         INTEGER NOT NULL,
    stopped_at        INTEGER,
    updated_at        INTEGER NOT NULL
) STRICT;
CREATE INDEX restore_sessions_by_state ON restore_sessions (state);

-- One download per ExportPst step: durable progress for resume with `Range`.
CREATE TABLE downloads (
    step_id             INTEGER PRIMARY KEY REFERENCES steps (id),
    final_path          TEXT NOT NULL,
    partial_path        TEXT NOT NULL,
    restore_session_id  TEXT,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'downloading', 'verifying',
                            'published', 'failed')),
    bytes_durable       INTEGER NOT NULL DEFAULT 0,   -- bytes fsynced in the partial file
    expected_bytes      INTEGER,
    hasher_state        BLOB,                         -- SHA-256 state at bytes_durable
    resumed_from        TEXT NOT NULL DEFAULT '[]',   -- JSON array of offsets resumed from
    restarts            INTEGER NOT NULL DEFAULT 0,   -- server ignored Range / session lost
    sha256              TEXT,
    format              TEXT,
    started_at          INTEGER,
    finished_at         INTEGER,
    updated_at          INTEGER NOT NULL
) STRICT;

-- Files restorectl published (exports, manifests, search reports). Retention deletes only these.
CREATE TABLE exports (
    id              INTEGER PRIMARY KEY,
    job_name        TEXT NOT NULL,
    run_id          TEXT NOT NULL REFERENCES runs (id),
    step_id         INTEGER REFERENCES steps (id),
    mailbox_id      TEXT,
    mailbox_email   TEXT,
    path            TEXT NOT NULL UNIQUE,
    manifest_path   TEXT,
    format          TEXT NOT NULL,
    bytes           INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    deleted_at      INTEGER
) STRICT;
CREATE INDEX exports_by_job ON exports (job_name, created_at);

-- Requests written by operator commands (`run`, `cancel`, `resolve`), consumed by the daemon.
CREATE TABLE operator_requests (
    id             INTEGER PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('run', 'cancel', 'resolve')),
    job_name       TEXT,
    run_id         TEXT,
    decision       TEXT CHECK (decision IN ('resend', 'mark_done', 'mark_failed')),
    requested_by   TEXT,
    created_at     INTEGER NOT NULL,
    consumed_at    INTEGER,
    result         TEXT,            -- what the daemon did, or why it refused
    result_run_id  TEXT             -- the run a `run` request queued
) STRICT;
CREATE INDEX operator_requests_pending ON operator_requests (consumed_at);

-- Daemon instances: the single-instance lock and its holder.
CREATE TABLE daemon_instances (
    id            TEXT PRIMARY KEY,
    pid           INTEGER NOT NULL,
    host          TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    heartbeat_at  INTEGER NOT NULL,
    stopped_at    INTEGER
) STRICT;

-- Append-only history.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    job_name   TEXT,
    run_id     TEXT,
    step_id    INTEGER,
    message    TEXT NOT NULL,
    data       TEXT                 -- JSON object with details
) STRICT;
CREATE INDEX events_by_run ON events (run_id);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
