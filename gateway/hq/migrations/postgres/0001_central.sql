-- 0001 (PostgreSQL): HQ's central database; the same tables and columns as sqlite/0001.
-- Every row a site sends keeps (site, local_id) as its identity, so a site's later updates (a
-- callback's status) land on the same row and equal ids from two sites never collide.
-- Timestamps are Unix epoch seconds (double precision). Payloads are the site's row as JSONB.

CREATE TABLE sync_state (
    site        text             PRIMARY KEY,
    high_water  bigint           NOT NULL DEFAULT 0,   -- greatest outbox seq applied
    updated_ts  double precision NOT NULL
);

CREATE TABLE counters (
    name  text   PRIMARY KEY,
    value bigint NOT NULL
);

INSERT INTO counters (name, value) VALUES ('customer_rev', 0);

CREATE TABLE cdrs (
    site        text             NOT NULL,
    local_id    bigint           NOT NULL,         -- the site's cdrs.id
    call_id     text,
    start_ts    double precision,
    caller      text,
    callee      text,
    agent       text,
    payload     jsonb            NOT NULL,         -- the site's row
    seq         bigint           NOT NULL,         -- outbox seq that last wrote the row
    received_ts double precision NOT NULL,
    PRIMARY KEY (site, local_id)
);
CREATE INDEX cdrs_call_id ON cdrs (call_id);
CREATE INDEX cdrs_start_ts ON cdrs (start_ts);

CREATE TABLE interactions (
    site        text             NOT NULL,
    local_id    bigint           NOT NULL,
    call_id     text,
    arrived_ts  double precision,
    caller      text,
    customer_id text,
    queue       text,
    agent       text,
    payload     jsonb            NOT NULL,
    seq         bigint           NOT NULL,
    received_ts double precision NOT NULL,
    PRIMARY KEY (site, local_id)
);
CREATE INDEX interactions_call_id ON interactions (call_id);
CREATE INDEX interactions_customer ON interactions (customer_id, arrived_ts);

CREATE TABLE voicemails (
    site        text             NOT NULL,
    local_id    bigint           NOT NULL,
    call_id     text,
    box         text,
    caller      text,
    created_ts  double precision,
    payload     jsonb            NOT NULL,
    seq         bigint           NOT NULL,
    received_ts double precision NOT NULL,
    PRIMARY KEY (site, local_id)
);
CREATE INDEX voicemails_box ON voicemails (box, created_ts);

CREATE TABLE callbacks (
    site        text             NOT NULL,
    local_id    bigint           NOT NULL,
    number      text,
    queue       text,
    status      text,
    call_id     text,
    agent       text,
    payload     jsonb            NOT NULL,
    seq         bigint           NOT NULL,
    received_ts double precision NOT NULL,
    PRIMARY KEY (site, local_id)
);
CREATE INDEX callbacks_status ON callbacks (status);

-- Entries HQ does not understand: kept, never dropped.
CREATE TABLE unknown_entries (
    site        text             NOT NULL,
    seq         bigint           NOT NULL,
    kind        text             NOT NULL,
    payload     jsonb            NOT NULL,
    reason      text             NOT NULL,
    created_ts  double precision NOT NULL,         -- when the site wrote it
    received_ts double precision NOT NULL,
    PRIMARY KEY (site, seq)
);

-- Merged customer records; rev from counters.customer_rev, set on every change.
CREATE TABLE customers (
    customer_id text             PRIMARY KEY,
    record      jsonb            NOT NULL,
    name        text             NOT NULL DEFAULT '',
    name_lc     text             NOT NULL DEFAULT '',
    region      text,
    rev         bigint           NOT NULL UNIQUE,
    updated_hlc text             NOT NULL,
    updated_ts  double precision NOT NULL
);
CREATE INDEX customers_region ON customers (region);
CREATE INDEX customers_name_lc ON customers (name_lc);

CREATE TABLE customer_phones (
    phone       text NOT NULL,
    customer_id text NOT NULL,
    PRIMARY KEY (phone, customer_id)
);
CREATE INDEX customer_phones_customer ON customer_phones (customer_id);

-- Every field change received, one row per field; append-only (triggers below).
CREATE TABLE customer_history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text             NOT NULL,
    field       text             NOT NULL,
    value       jsonb            NOT NULL,
    hlc         text             COLLATE "C" NOT NULL,  -- byte order = stamp order
    site        text             NOT NULL,
    author      text             NOT NULL,
    from_site   text             NOT NULL,
    seq         bigint           NOT NULL,
    received_ts double precision NOT NULL,
    UNIQUE (customer_id, field, hlc, site)
);
CREATE INDEX customer_history_customer ON customer_history (customer_id, hlc);

CREATE FUNCTION ccgw_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0];
END
$$;

CREATE TRIGGER customers_never_deleted BEFORE DELETE ON customers
    FOR EACH ROW EXECUTE FUNCTION ccgw_refuse('customer records are never deleted');
CREATE TRIGGER customer_history_append_only BEFORE DELETE OR UPDATE ON customer_history
    FOR EACH ROW EXECUTE FUNCTION ccgw_refuse('customer history is append-only');
CREATE TRIGGER customers_never_truncated BEFORE TRUNCATE ON customers
    FOR EACH STATEMENT EXECUTE FUNCTION ccgw_refuse('customer records are never deleted');
CREATE TRIGGER customer_history_never_truncated BEFORE TRUNCATE ON customer_history
    FOR EACH STATEMENT EXECUTE FUNCTION ccgw_refuse('customer history is append-only');
