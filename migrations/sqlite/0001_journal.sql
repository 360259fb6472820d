-- The outcome journal (src/journal): one row per settled event.
-- Times are unix milliseconds; `calls` is a JSON array of target calls.
-- AUTOINCREMENT so that an id is never reused, even once retention has
-- emptied the table: paging cursors are ids.
CREATE TABLE provisioner_journal (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    provisioner TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    action      TEXT,
    group_name  TEXT,
    subject     TEXT,
    result      TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    api_calls   INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    redelivered BOOLEAN NOT NULL,
    worker      TEXT    NOT NULL,
    calls       TEXT    NOT NULL
);

-- Filters page newest first (by id), so each filtered column is indexed with
-- the id; `at_ms` alone serves retention by age and time ranges.
CREATE INDEX provisioner_journal_at ON provisioner_journal (at_ms);
CREATE INDEX provisioner_journal_event ON provisioner_journal (event_id, id);
CREATE INDEX provisioner_journal_subject ON provisioner_journal (subject, id);
CREATE INDEX provisioner_journal_provisioner ON provisioner_journal (provisioner, id);
CREATE INDEX provisioner_journal_group ON provisioner_journal (group_name, id);
