-- 0003: callback requests. A caller who would rather not wait leaves a number and keeps their
-- place in the queue (a virtual entry, by original arrival); the request survives a restart.

CREATE TABLE callbacks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    number       TEXT    NOT NULL,               -- the number to call back (as dialled out)
    queue        TEXT    NOT NULL,
    call_id      TEXT    NOT NULL,               -- the call that asked for it
    caller       TEXT    NOT NULL,
    arrived_ts   REAL    NOT NULL,               -- the original call's arrival: its place in line
    requested_ts REAL    NOT NULL,
    not_before   REAL    NOT NULL,               -- scheduled time / next retry
    attempts     INTEGER NOT NULL DEFAULT 0,
    status       TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'connected', 'failed', 'cancelled')),
    agent        TEXT,                           -- who took it
    last_status  INTEGER,                        -- SIP status of the last attempt
    done_ts      REAL
);

CREATE INDEX callbacks_pending ON callbacks (status, not_before);
