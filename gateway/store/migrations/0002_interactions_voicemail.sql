-- 0002: contact-centre records: one row per contact (interaction) and per voicemail message.
-- Timestamps are Unix epoch seconds (REAL); durations are seconds. Rows are never deleted by
-- agents: history is append-only (the seeds' rule for customer data).

CREATE TABLE interactions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id     TEXT    NOT NULL,                 -- SIP Call-ID of the caller's leg
    site        TEXT    NOT NULL,
    caller      TEXT    NOT NULL,
    dialled     TEXT    NOT NULL,
    queue       TEXT,                             -- the queue it waited in, if any
    agent       TEXT,                             -- the agent who answered, if any
    arrived_ts  REAL    NOT NULL,                 -- reached the gateway (original arrival)
    queued_ts   REAL,                             -- joined the queue
    answered_ts REAL,                             -- an agent answered
    ended_ts    REAL    NOT NULL,
    wait_s      REAL    NOT NULL CHECK (wait_s >= 0),
    talk_s      REAL    NOT NULL CHECK (talk_s >= 0),
    wrapup_s    REAL    NOT NULL CHECK (wrapup_s >= 0),
    outcome     TEXT    NOT NULL,                 -- answered | abandoned | voicemail | callback |
                                                  -- overflowed | ivr | feature
    ivr_path    TEXT    NOT NULL DEFAULT '',      -- e.g. 'main:welcome>lang[1]>menu[2]'
    variables   TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(variables)),
    customer_id TEXT
);

CREATE INDEX interactions_arrived ON interactions (arrived_ts);
CREATE INDEX interactions_call_id ON interactions (call_id);

CREATE TABLE voicemails (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    box        TEXT    NOT NULL,
    call_id    TEXT    NOT NULL,
    caller     TEXT    NOT NULL,
    queue      TEXT,
    path       TEXT    NOT NULL,                  -- the WAV file (8 kHz mono 16-bit)
    seconds    REAL    NOT NULL CHECK (seconds >= 0),
    created_ts REAL    NOT NULL,
    heard      INTEGER NOT NULL DEFAULT 0 CHECK (heard IN (0, 1))
);

CREATE INDEX voicemails_box ON voicemails (box, created_ts);
