-- Where the search of a Search step stands, so a crash continues from the last durable page
-- instead of searching again from the start: the page cursor after the last page whose hits
-- are fsynced in the step's part file, that file's length and hit count at that point, and the
-- restore session the cursor's `setId` belongs to (another session pages by offset). One row
-- per step while it searches; removed when the step is done, and with its step.
CREATE TABLE search_progress (
    step_id     INTEGER PRIMARY KEY REFERENCES steps (id) ON DELETE CASCADE,
    session_id  TEXT,
    cursor      TEXT NOT NULL,      -- JSON: next offset, limit, setId, `_links.next`, pages, items
    pages       INTEGER NOT NULL,   -- pages durable in the part file
    hits        INTEGER NOT NULL,   -- hits durable in the part file
    part_bytes  INTEGER NOT NULL,   -- length of the part file after them
    updated_at  INTEGER NOT NULL
) STRICT;
