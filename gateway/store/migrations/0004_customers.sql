-- 0004: customer records, merged across sites (gateway/store/merge.py), and their history.
-- A record is never deleted and history is append-only: the triggers below refuse it, so no
-- code path (and no agent) can remove a customer or rewrite what was changed.

CREATE TABLE customers (
    customer_id TEXT    PRIMARY KEY,              -- one identity across every site
    record      TEXT    NOT NULL CHECK (json_valid(record)),  -- merged record with "_stamps"
    name        TEXT    NOT NULL DEFAULT '',      -- copied from record for look-ups
    name_lc     TEXT    NOT NULL DEFAULT '',      -- lower-case name, for case-blind search
    region      TEXT,
    updated_hlc TEXT    NOT NULL,                 -- greatest stamp of any field (HLC text)
    updated_ts  REAL    NOT NULL                  -- Unix epoch seconds of the last local write
) WITHOUT ROWID;

CREATE INDEX customers_region ON customers (region);
CREATE INDEX customers_name_lc ON customers (name_lc);

-- Look-up index: one row per (normalised phone, customer). Rebuilt from the record on every
-- write; it is derived data, not history.
CREATE TABLE customer_phones (
    phone       TEXT NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers (customer_id),
    PRIMARY KEY (phone, customer_id)
) WITHOUT ROWID;

CREATE INDEX customer_phones_customer ON customer_phones (customer_id);

-- Every field change ever made or received, one row per field. (customer_id, field, hlc, site)
-- is unique, so receiving the same change twice records it once.
CREATE TABLE customer_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id TEXT    NOT NULL,
    field       TEXT    NOT NULL,
    value       TEXT    NOT NULL CHECK (json_valid(value)),  -- the new value as JSON
    hlc         TEXT    NOT NULL,                 -- stamp of the change (HLC text)
    site        TEXT    NOT NULL,                 -- site where the change was made
    author      TEXT    NOT NULL,                 -- agent id / "import" / ...
    applied_ts  REAL    NOT NULL,                 -- when this site stored it (Unix seconds)
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
