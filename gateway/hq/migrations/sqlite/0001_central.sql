-- 0001 (SQLite): HQ's central database. Every row a site sends keeps (site, local_id) as its
-- identity, so a site's later updates (a callback's status) land on the same row and equal ids
-- from two sites never collide. Timestamps are Unix epoch seconds (REAL). Payloads are the
-- site's row as JSON (the truth); the other columns are copies for indexes.

-- Per site: the greatest outbox seq applied. Advanced in the same transaction as the rows.
CREATE TABLE sync_state (
    site        TEXT    PRIMARY KEY,
    high_water  INTEGER NOT NULL DEFAULT 0,
    updated_ts  REAL    NOT NULL
) WITHOUT ROWID;

CREATE TABLE counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO counters (name, value) VALUES ('customer_rev', 0);

CREATE TABLE cdrs (
    site        TEXT    NOT NULL,
    local_id    INTEGER NOT NULL,                 -- the site's cdrs.id
    call_id     TEXT,
    start_ts    REAL,
    caller      TEXT,
    callee      TEXT,
    agent       TEXT,
    payload     TEXT    NOT NULL,                 -- the site's row as JSON
    seq         INTEGER NOT NULL,                 -- outbox seq that last wrote the row
    received_ts REAL    NOT NULL,
    PRIMARY KEY (site, local_id)
);
CREATE INDEX cdrs_call_id ON cdrs (call_id);
CREATE INDEX cdrs_start_ts ON cdrs (start_ts);

CREATE TABLE interactions (
    site        TEXT    NOT NULL,
    local_id    INTEGER NOT NULL,
    call_id     TEXT,
    arrived_ts  REAL,
    caller      TEXT,
    customer_id TEXT,
    queue       TEXT,
    agent       TEXT,
    payload     TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    received_ts REAL    NOT NULL,
    PRIMARY KEY (site, local_id)
);
CREATE INDEX interactions_call_id ON interactions (call_id);
CREATE INDEX interactions_customer ON interactions (customer_id, arrived_ts);

CREATE TABLE voicemails (
    site        TEXT    NOT NULL,
    local_id    INTEGER NOT NULL,
    call_id     TEXT,
    box         TEXT,
    caller      TEXT,
    created_ts  REAL,
    payload     TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    received_ts REAL    NOT NULL,
    PRIMARY KEY (site, local_id)
);
CREATE INDEX voicemails_box ON voicemails (box, created_ts);

CREATE TABLE callbacks (
    site        TEXT    NOT NULL,
    local_id    INTEGER NOT NULL,
    number      TEXT,
    queue       TEXT,
    status      TEXT,
    call_id     TEXT,
    agent       TEXT,
    payload     TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    received_ts REAL    NOT NULL,
    PRIMARY KEY (site, local_id)
);
CREATE INDEX callbacks_status ON callbacks (status);

-- Entries HQ does not understand (a kind from a newer site, a malformed payload): kept, never
-- dropped, so a later HQ can replay them.
CREATE TABLE unknown_entries (
    site        TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    created_ts  REAL    NOT NULL,                 -- when the site wrote it
    received_ts REAL    NOT NULL,
    PRIMARY KEY (site, seq)
);

-- Merged customer records (gateway/store/merge.py). rev: from counters.customer_rev, set on
-- every change, so "rev > n" is the change feed to the sites.
CREATE TABLE customers (
    customer_id TEXT    PRIMARY KEY,
    record      TEXT    NOT NULL,                 -- merged record with "_stamps" (JSON)
    name        TEXT    NOT NULL DEFAULT '',
    name_lc     TEXT    NOT NULL DEFAULT '',
    region      TEXT,
    rev         INTEGER NOT NULL UNIQUE,
    updated_hlc TEXT    NOT NULL,
    updated_ts  REAL    NOT NULL
);
CREATE INDEX customers_region ON customers (region);
CREATE INDEX customers_name_lc ON customers (name_lc);

CREATE TABLE customer_phones (
    phone       TEXT NOT NULL,                    -- normalised (merge.normalize_phone)
    customer_id TEXT NOT NULL,
    PRIMARY KEY (phone, customer_id)
) WITHOUT ROWID;
CREATE INDEX customer_phones_customer ON customer_phones (customer_id);

-- Every field change received, one row per field; append-only (triggers below).
CREATE TABLE customer_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id TEXT    NOT NULL,
    field       TEXT    NOT NULL,
    value       TEXT    NOT NULL,                 -- the new value as JSON
    hlc         TEXT    NOT NULL,                 -- stamp of the change (HLC text)
    site        TEXT    NOT NULL,                 -- site where the change was made
    author      TEXT    NOT NULL,
    from_site   TEXT    NOT NULL,                 -- site whose outbox carried it
    seq         INTEGER NOT NULL,                 -- that outbox's seq
    received_ts REAL    NOT NULL,
    UNIQUE (customer_id, field, hlc, site)
);
CREATE INDEX customer_history_customer ON customer_history (customer_id, hlc);

CREATE TRIGGER customers_never_deleted BEFORE DELETE ON customers
BEGIN
    SELECT RAISE(ABORT, 'customer records are never deleted');
END;

CREATE TRIGGER customer_history_no_delete BEFORE DELETE ON customer_history
BEGIN
    SELECT RAISE(ABORT, 'customer history is append-only');
END;

CREATE TRIGGER customer_history_no_update BEFORE UPDATE ON customer_history
BEGIN
    SELECT RAISE(ABORT, 'customer history is append-only');
END;
