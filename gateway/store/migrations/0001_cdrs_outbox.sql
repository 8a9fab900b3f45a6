-- 0001: call detail records and the outbox that carries every site write to HQ.
-- Timestamps are Unix epoch seconds (REAL); durations are seconds.

CREATE TABLE cdrs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id     TEXT    NOT NULL,                 -- SIP Call-ID of the leg that started the call
    site        TEXT    NOT NULL,                 -- [site] name that wrote the record
    direction   TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound', 'internal')),
    caller      TEXT    NOT NULL,                 -- calling number / extension as received
    callee      TEXT    NOT NULL,                 -- dialled number / extension
    destination TEXT,                             -- routed destination, e.g. 'group:sales'
    agent       TEXT,                             -- extension of the agent who answered
    start_ts    REAL    NOT NULL,                 -- call arrived / was placed
    answer_ts   REAL,                             -- 200 OK; NULL when never answered
    end_ts      REAL    NOT NULL,                 -- BYE / CANCEL / failure
    duration_s  REAL    NOT NULL CHECK (duration_s >= 0),  -- end_ts - start_ts
    billsec_s   REAL    NOT NULL CHECK (billsec_s >= 0),   -- end_ts - answer_ts, 0 if unanswered
    cause_code  INTEGER NOT NULL,                 -- SIP status of the outcome (200 = answered)
    cause_text  TEXT    NOT NULL,                 -- e.g. 'normal clearing', 'busy', 'no answer'
    hangup_side TEXT    CHECK (hangup_side IN ('caller', 'callee', 'system')),
    trunk       TEXT                              -- [[trunks]] name for PSTN legs
);

CREATE INDEX cdrs_start_ts ON cdrs (start_ts);
CREATE INDEX cdrs_call_id ON cdrs (call_id);

-- AUTOINCREMENT: a seq is never reused, even after the rows below it are trimmed, so HQ can
-- de-duplicate on (site, seq).
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL,                  -- 'cdr', later 'customer', 'interaction', ...
    payload    TEXT    NOT NULL CHECK (json_valid(payload)),
    created_ts REAL    NOT NULL
);
