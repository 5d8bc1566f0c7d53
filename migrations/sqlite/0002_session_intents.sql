-- Explore requests restorectl sent whose session it has not recorded yet: the request is in
-- flight, or its answer was lost (a timeout, a broken connection, a crash before the session
-- row was written). The server may have opened a session nobody knows about; the engine's
-- sweep lists the server's sessions created around `requested_at`, stops those of the same
-- organisation that the store does not know, and deletes the intent.
CREATE TABLE session_intents (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    server              TEXT NOT NULL,
    organization_id     TEXT NOT NULL,
    organization_name   TEXT NOT NULL,
    run_id              TEXT REFERENCES runs (id),
    requested_at        INTEGER NOT NULL
) STRICT;
CREATE INDEX session_intents_by_server ON session_intents (server);
