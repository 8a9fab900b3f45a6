"""HQ's central database behind one async interface: SQLite (embedded default) or PostgreSQL.

Sites send their outbox (:class:`SyncEntry`, numbered by the site's never-reused ``seq``); HQ
applies each entry exactly once: :meth:`CentralStore.apply_batch` skips every ``seq`` at or below
the site's high-water mark and advances the mark in the same transaction as the rows, so a replay
after a lost ack, a duplicate or a crash between commit and ack changes nothing.

Rows keep the sending site's ``(site, local id)`` as identity: later entries for the same row (a
callback's status) patch it, equal ids from two sites never collide. Customer changes are merged
with :func:`gateway.store.merge.merge` (field-level LWW on HLC stamps) and every field change is
appended to ``customer_history``; both tables refuse deletes. Entries of a kind HQ does not know,
or with a malformed payload, are kept in ``unknown_entries`` (with a warning), never dropped and
never blocking the site's stream.

Schema: ``gateway/hq/migrations/<dialect>/NNNN_name.sql``, applied at open (the rules of
:mod:`gateway.store.migrate`). :func:`open_central_store` picks the backend from a URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from gateway.store.base import StoreError
from gateway.store.customers import CUSTOMER_KIND, customer_search_sql
from gateway.store.merge import STAMPS, CustomerChange, merge
from gateway.store.migrate import (
    Migration,
    apply_migrations,
    load_migrations,
    pending_migrations,
)

__all__ = [
    "COUNTED_TABLES",
    "CentralStore",
    "PostgresCentralStore",
    "SqliteCentralStore",
    "SyncEntry",
    "hq_migrations",
    "open_central_store",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

COUNTED_TABLES: Final = (
    "cdrs",
    "interactions",
    "voicemails",
    "callbacks",
    "customers",
    "customer_history",
    "unknown_entries",
)
"""The tables :meth:`CentralStore.counts` reports."""


@dataclass(frozen=True, slots=True)
class SyncEntry:
    """One site outbox entry as HQ receives it (mirrors :class:`gateway.store.OutboxEntry`)."""

    seq: int
    """The site's outbox sequence number: increases strictly, never reused."""
    kind: str
    """``"cdr"``, ``"interaction"``, ``"voicemail"``, ``"callback"``, ``"customer"``, ..."""
    payload: dict[str, Any]
    """The site's row as JSON (with its local ``"id"``), or a customer change payload."""
    created_ts: float
    """When the site wrote the entry (Unix epoch seconds)."""
    raw: str | None = None
    """The payload's JSON text as received, stored as is (no encoding again) when the row is
    not merged with another entry of the batch; ``None``: encode ``payload``."""


class CentralStore(Protocol):
    """HQ's central database. Every method is a coroutine; each write is one transaction."""

    async def apply_batch(self, site: str, entries: Sequence[SyncEntry]) -> int:
        """Apply the entries with ``seq`` above ``site``'s high-water mark, in ``seq`` order,
        in one transaction with the new mark; return the mark after. Replays and duplicates
        are no-ops; gaps in ``seq`` are allowed."""
        ...

    async def high_water(self, site: str) -> int:
        """The greatest ``seq`` applied for ``site`` (0 before its first batch)."""
        ...

    async def lookup_customers(
        self,
        *,
        phone: str | None = None,
        customer_id: str | None = None,
        region: str | None = None,
        name: str | None = None,
        limit: int = 10,
    ) -> list[dict[str, Any]]:
        """Merged customer records matching every criterion given (``phone`` in any
        formatting, ``name`` a case-blind substring), by customer id. ``ValueError`` when no
        criterion is given."""
        ...

    async def customer_changes(
        self, after_rev: int, limit: int = 500
    ) -> list[tuple[int, dict[str, Any]]]:
        """``(rev, merged record)`` of customers changed after revision ``after_rev``, by
        ``rev`` (each customer once, at its latest rev): the HQ → site change feed."""
        ...

    async def counts(self) -> dict[str, int]:
        """Rows per table (:data:`COUNTED_TABLES`)."""
        ...

    async def close(self) -> None:
        """Release the database (idempotent)."""
        ...


# --- pure planning, shared by both backends ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _RowKind:
    table: str
    columns: tuple[tuple[str, type], ...]
    """Payload keys copied to indexed columns, with their type (``str`` or ``float``)."""


_ROW_KINDS: Final[Mapping[str, _RowKind]] = {
    "cdr": _RowKind(
        "cdrs",
        (("call_id", str), ("start_ts", float), ("caller", str), ("callee", str), ("agent", str)),
    ),
    "interaction": _RowKind(
        "interactions",
        (
            ("call_id", str),
            ("arrived_ts", float),
            ("caller", str),
            ("customer_id", str),
            ("queue", str),
            ("agent", str),
            ("handoff_id", str),
        ),
    ),
    "voicemail": _RowKind(
        "voicemails",
        (("call_id", str), ("box", str), ("caller", str), ("created_ts", float)),
    ),
    "callback": _RowKind(
        "callbacks",
        (("number", str), ("queue", str), ("status", str), ("call_id", str), ("agent", str)),
    ),
}


_dumps: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
"""Compact JSON text (one shared encoder: ``json.dumps`` builds one per call)."""


def _column(value: Any, kind: type) -> Any:
    """``value`` if it has the column's type, else ``None`` (the payload keeps the truth)."""
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else None
    return value if isinstance(value, str) else None


@dataclass(slots=True)
class _BatchPlan:
    high_water: int
    rows: dict[str, dict[int, tuple[list[Any], dict[str, Any], int, str | None]]] = field(
        default_factory=dict
    )
    """Table → local id → (indexed columns, payload, last seq): entries for one row within
    the batch already combined, so each row is written once."""
    changes: list[tuple[int, CustomerChange]] = field(default_factory=list)
    unknown: list[tuple[Any, ...]] = field(default_factory=list)
    unknown_kinds: dict[str, int] = field(default_factory=dict)
    missing: int = 0
    """Sequence numbers skipped between the old high-water mark and this batch, or inside it:
    a site's outbox has no gaps, so any is a fault (a site restored from an old backup, a bug)
    to log loudly; the batch is applied all the same (refusing would stop the site's sync)."""


def _plan_batch(
    site: str, entries: Iterable[SyncEntry], high_water: int, now: float
) -> _BatchPlan | None:
    """What applying ``entries`` above ``high_water`` writes; ``None`` when nothing is new."""
    fresh: dict[int, SyncEntry] = {}
    for e in entries:
        if e.seq > high_water and e.seq not in fresh:
            fresh[e.seq] = e
    if not fresh:
        return None
    plan = _BatchPlan(high_water=max(fresh))
    plan.missing = max(fresh) - high_water - len(fresh)
    for seq in sorted(fresh):
        e = fresh[seq]
        payload = e.payload
        reason: str | None = None
        row_kind = _ROW_KINDS.get(e.kind)
        if not isinstance(payload, dict):
            reason = "payload is not a JSON object"
        elif row_kind is not None:
            local_id = payload.get("id")
            if isinstance(local_id, int) and not isinstance(local_id, bool):
                cols = [_column(payload.get(name), kind) for name, kind in row_kind.columns]
                table = plan.rows.setdefault(row_kind.table, {})
                earlier = table.get(local_id)
                raw = e.raw
                if earlier is not None:  # a later entry patches the row (as the upsert does)
                    old_cols, old_payload, _, _ = earlier
                    cols = [o if n is None else n for n, o in zip(cols, old_cols, strict=True)]
                    payload = {**old_payload, **payload}
                    raw = None
                table[local_id] = (cols, payload, seq, raw)
                continue
            reason = f"{e.kind} payload has no integer 'id'"
        elif e.kind == CUSTOMER_KIND:
            try:
                plan.changes.append((seq, CustomerChange.from_payload(payload)))
                continue
            except ValueError as exc:
                reason = f"bad customer change: {exc}"
        else:
            reason = f"unknown kind {e.kind!r}"
        plan.unknown_kinds[e.kind] = plan.unknown_kinds.get(e.kind, 0) + 1
        plan.unknown.append((site, seq, e.kind, _dumps(payload), reason, float(e.created_ts), now))
    return plan


@dataclass(slots=True)
class _CustomerPlan:
    history: list[tuple[Any, ...]]
    upserts: list[tuple[Any, ...]]
    """Parameters without ``rev`` (appended once revs are allocated)."""
    phones_changed: list[str]
    phones: list[tuple[str, str]]


def _plan_customers(
    site: str,
    changes: Sequence[tuple[int, CustomerChange]],
    current: Mapping[str, dict[str, Any]],
    now: float,
) -> _CustomerPlan:
    merged: dict[str, dict[str, Any]] = {}
    history: list[tuple[Any, ...]] = []
    for seq, change in changes:
        cid = change.customer_id
        merged[cid] = merge(merged.get(cid, current.get(cid)), change)
        hlc = str(change.hlc)
        for name, value in change.fields.items():
            history.append(
                (cid, name, _dumps(value), hlc, change.site, change.author, site, seq, now)
            )
    upserts: list[tuple[Any, ...]] = []
    phones_changed: list[str] = []
    phones: list[tuple[str, str]] = []
    for cid in sorted(merged):
        record, old = merged[cid], current.get(cid)
        if record == old:
            continue
        name = record["name"] or ""
        stamp = max((s["hlc"] for s in record[STAMPS].values()), default="")
        upserts.append((cid, _dumps(record), name, name.lower(), record["region"], stamp, now))
        if old is None or old.get("phones") != record["phones"]:
            phones_changed.append(cid)
            phones.extend((p, cid) for p in record["phones"])
    return _CustomerPlan(history, upserts, phones_changed, phones)


def _row_params(
    site: str, rows: Mapping[int, tuple[list[Any], dict[str, Any], int, str | None]], now: float
) -> list[tuple[Any, ...]]:
    return [
        (site, local_id, *cols, _dumps(payload) if raw is None else raw, seq, now)
        for local_id, (cols, payload, seq, raw) in rows.items()
    ]


def _log_unknown(site: str, plan: _BatchPlan) -> None:
    if plan.missing:
        log.error(
            "site %s: %d outbox entr%s missing below seq %d (a gap in what the site sent)",
            site,
            plan.missing,
            "y" if plan.missing == 1 else "ies",
            plan.high_water,
        )
    for kind, n in plan.unknown_kinds.items():
        log.warning(
            "site %s: kept %d %r entr%s HQ cannot apply in unknown_entries",
            site,
            n,
            kind,
            "y" if n == 1 else "ies",
        )


# --- SQL: written once with ``?`` placeholders; PostgreSQL gets ``%s`` ------------------------


@dataclass(frozen=True, slots=True)
class _Sql:
    row_upsert: Mapping[str, str]
    unknown: str
    history: str
    load_customers: str
    customer_upsert: str
    phones_delete: str
    phones_insert: str
    next_revs: str
    get_high_water: str
    set_high_water: str
    changes: str


def _build_sql(postgres: bool) -> _Sql:
    json_param = "?::jsonb" if postgres else "?"
    row_upsert = {}
    for kind in _ROW_KINDS.values():
        names = [n for n, _ in kind.columns]
        merged_payload = (
            "t.payload || excluded.payload"
            if postgres
            else ("ccgw_json_merge(t.payload, excluded.payload)")
        )
        sets = ", ".join(f"{n} = coalesce(excluded.{n}, t.{n})" for n in names)
        if postgres:
            # One statement per table: every row's values as arrays (rows are unique by key).
            types = [
                "text",
                "bigint",
                *("float8" if k is float else "text" for _, k in kind.columns),
            ]
            types += ["text", "bigint", "float8"]
            cols = ["site", "local_id", *names, "payload", "seq", "received_ts"]
            picks = ", ".join("u.payload::jsonb" if c == "payload" else f"u.{c}" for c in cols)
            source = (
                f"SELECT {picks}"
                f" FROM unnest({', '.join(f'?::{t}[]' for t in types)}) AS u ({', '.join(cols)})"
            )
        else:
            source = f"VALUES (?, ?, {', '.join('?' * len(names))}, ?, ?, ?)"
        row_upsert[kind.table] = (
            f"INSERT INTO {kind.table} AS t (site, local_id, {', '.join(names)}, payload, seq, "
            f"received_ts) {source} "
            f"ON CONFLICT (site, local_id) DO UPDATE SET {sets}, payload = {merged_payload}, "
            "seq = excluded.seq, received_ts = excluded.received_ts"
        )
    ids = "= ANY(?)" if postgres else "IN (SELECT value FROM json_each(?))"
    sql = _Sql(
        row_upsert=row_upsert,
        unknown=(
            "INSERT INTO unknown_entries (site, seq, kind, payload, reason, created_ts, "
            f"received_ts) VALUES (?, ?, ?, {json_param}, ?, ?, ?) ON CONFLICT DO NOTHING"
        ),
        history=(
            "INSERT INTO customer_history (customer_id, field, value, hlc, site, author, "
            "from_site, seq, received_ts) "
            + (
                "SELECT u.c, u.f, u.v::jsonb, u.h, u.s, u.a, u.fs, u.q, u.r FROM unnest("
                "?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], "
                "?::bigint[], ?::float8[]) AS u (c, f, v, h, s, a, fs, q, r)"
                if postgres
                else "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )
            + " ON CONFLICT DO NOTHING"
        ),
        load_customers=(
            f"SELECT customer_id, record FROM customers WHERE customer_id {ids}"
            + (" FOR UPDATE" if postgres else "")
        ),
        customer_upsert=(
            "INSERT INTO customers (customer_id, record, name, name_lc, region, updated_hlc, "
            "updated_ts, rev) "
            + (
                "SELECT u.c, u.r::jsonb, u.n, u.l, u.g, u.h, u.t, u.v FROM unnest(?::text[], "
                "?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::float8[], "
                "?::bigint[]) AS u (c, r, n, l, g, h, t, v) "
                if postgres
                else "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            )
            + "ON CONFLICT (customer_id) DO UPDATE SET record = excluded.record, "
            "name = excluded.name, name_lc = excluded.name_lc, region = excluded.region, "
            "updated_hlc = excluded.updated_hlc, updated_ts = excluded.updated_ts, "
            "rev = excluded.rev"
        ),
        phones_delete=f"DELETE FROM customer_phones WHERE customer_id {ids}",
        phones_insert=(
            "INSERT INTO customer_phones (phone, customer_id) "
            + ("SELECT * FROM unnest(?::text[], ?::text[])" if postgres else "VALUES (?, ?)")
            + " ON CONFLICT DO NOTHING"
        ),
        next_revs=(
            "UPDATE counters SET value = value + ? WHERE name = 'customer_rev' RETURNING value"
        ),
        get_high_water="SELECT high_water FROM sync_state WHERE site = ?"
        + (" FOR UPDATE" if postgres else ""),
        set_high_water=(
            "INSERT INTO sync_state (site, high_water, updated_ts) VALUES (?, ?, ?) "
            "ON CONFLICT (site) DO UPDATE SET high_water = excluded.high_water, "
            "updated_ts = excluded.updated_ts"
        ),
        changes="SELECT rev, record FROM customers WHERE rev > ? ORDER BY rev LIMIT ?",
    )
    if not postgres:
        return sql
    # The unnest() arrays go in binary format (%b): psycopg's text format escapes every element.
    return _Sql(
        row_upsert={t: _pg(s).replace("%s::", "%b::") for t, s in sql.row_upsert.items()},
        history=_pg(sql.history).replace("%s::", "%b::"),
        customer_upsert=_pg(sql.customer_upsert).replace("%s::", "%b::"),
        phones_insert=_pg(sql.phones_insert).replace("%s::", "%b::"),
        **{
            name: _pg(getattr(sql, name))
            for name in _Sql.__dataclass_fields__
            if name not in ("row_upsert", "history", "customer_upsert", "phones_insert")
        },
    )


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as one list per column (the arrays of a PostgreSQL ``unnest`` insert)."""
    return [list(col) for col in zip(*rows, strict=True)]


def _pg(query: str) -> str:
    # None of our statements has a literal "?" or "%": placeholders are the only ones.
    assert "%" not in query
    return query.replace("?", "%s")


_SQLITE_SQL: Final = _build_sql(postgres=False)
_PG_SQL: Final = _build_sql(postgres=True)


def hq_migrations(dialect: str) -> list[Migration]:
    """The HQ schema steps for ``dialect`` (``"sqlite"`` or ``"postgres"``)."""
    if dialect not in ("sqlite", "postgres"):
        raise ValueError(f"unknown dialect {dialect!r}")
    return load_migrations(Path(__file__).with_name("migrations") / dialect)


def _json_merge(base: str | None, patch: str | None) -> str | None:
    """SQLite function ``ccgw_json_merge(a, b)``: the top-level keys of JSON object ``a``
    overwritten by those of ``b`` (like PostgreSQL's ``jsonb || jsonb``)."""
    if base is None or patch is None:
        return patch if base is None else base
    out = json.loads(base)
    out.update(json.loads(patch))
    return _dumps(out)


# --- SQLite ----------------------------------------------------------------------------------


class SqliteCentralStore:
    """:class:`CentralStore` on one SQLite file, all calls on one dedicated worker thread (WAL
    journal, ``synchronous=NORMAL``: a commit survives a crash of the process). Open with
    :meth:`open`."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="hq-sqlite"
        )
        self._conn: sqlite3.Connection | None = None
        self.applied: list[int] = []
        """Migration versions applied by this open."""

    @classmethod
    async def open(
        cls, path: str | Path, *, clock: Callable[[], float] = time.time
    ) -> SqliteCentralStore:
        """Open (creating it and its directory if needed) and migrate the database."""
        store = cls(str(path), clock=clock)
        try:
            await store._run(store._open_sync)
        except BaseException:
            await store.close()
            raise
        return store

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise StoreError("the central store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open_sync(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        self._conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable against a process crash
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA cache_size=-32768")  # 32 MiB
        conn.create_function("ccgw_json_merge", 2, _json_merge, deterministic=True)
        self.applied = apply_migrations(conn, hq_migrations("sqlite"))

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the central store is closed")
        return self._conn

    # apply ---------------------------------------------------------------------------------

    async def apply_batch(self, site: str, entries: Sequence[SyncEntry]) -> int:
        """See :meth:`CentralStore.apply_batch`."""
        if not site:
            raise ValueError("site is empty")
        return await self._run(self._apply_sync, site, list(entries))

    def _apply_sync(self, site: str, entries: list[SyncEntry]) -> int:
        conn = self._db()
        q = _SQLITE_SQL
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(q.get_high_water, (site,)).fetchone()
            high_water = 0 if row is None else int(row[0])
            now = self._clock()
            plan = _plan_batch(site, entries, high_water, now)
            if plan is None:
                conn.execute("ROLLBACK")
                return high_water
            for table, rows in plan.rows.items():
                conn.executemany(q.row_upsert[table], _row_params(site, rows, now))
            if plan.unknown:
                conn.executemany(q.unknown, plan.unknown)
            if plan.changes:
                ids = _dumps(sorted({c.customer_id for _, c in plan.changes}))
                current = {
                    cid: json.loads(record)
                    for cid, record in conn.execute(q.load_customers, (ids,))
                }
                cp = _plan_customers(site, plan.changes, current, now)
                conn.executemany(q.history, cp.history)
                if cp.upserts:
                    last = int(conn.execute(q.next_revs, (len(cp.upserts),)).fetchone()[0])
                    first = last - len(cp.upserts) + 1
                    conn.executemany(
                        q.customer_upsert,
                        [(*u, first + i) for i, u in enumerate(cp.upserts)],
                    )
                if cp.phones_changed:
                    conn.execute(q.phones_delete, (_dumps(cp.phones_changed),))
                    conn.executemany(q.phones_insert, cp.phones)
            conn.execute(q.set_high_water, (site, plan.high_water, now))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        _log_unknown(site, plan)
        return plan.high_water

    # reads ---------------------------------------------------------------------------------

    async def high_water(self, site: str) -> int:
        """See :meth:`CentralStore.high_water`."""
        return await self._run(self._high_water_sync, site)

    def _high_water_sync(self, site: str) -> int:
        row = self._db().execute(_SQLITE_SQL.get_high_water, (site,)).fetchone()
        return 0 if row is None else int(row[0])

    async def lookup_customers(
        self,
        *,
        phone: str | None = None,
        customer_id: str | None = None,
        region: str | None = None,
        name: str | None = None,
        limit: int = 10,
    ) -> list[dict[str, Any]]:
        """See :meth:`CentralStore.lookup_customers`."""
        sql, args = customer_search_sql(phone, customer_id, region, name, limit)
        if not sql:
            return []
        return await self._run(self._records_sync, sql, args)

    def _records_sync(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in self._db().execute(sql, args)]

    async def customer_changes(
        self, after_rev: int, limit: int = 500
    ) -> list[tuple[int, dict[str, Any]]]:
        """See :meth:`CentralStore.customer_changes`."""
        return await self._run(self._changes_sync, after_rev, limit)

    def _changes_sync(self, after_rev: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        rows = self._db().execute(_SQLITE_SQL.changes, (after_rev, max(0, limit)))
        return [(int(rev), json.loads(record)) for rev, record in rows]

    async def customer_history(self, customer_id: str) -> list[dict[str, Any]]:
        """History rows of ``customer_id`` (one per field change), oldest stamp first."""
        return await self._run(self._history_sync, customer_id)

    def _history_sync(self, customer_id: str) -> list[dict[str, Any]]:
        cur = self._db().execute(_HISTORY_SQL, (customer_id,))
        names = [d[0] for d in cur.description]
        out = [dict(zip(names, r, strict=True)) for r in cur]
        for r in out:
            r["value"] = json.loads(r["value"])
        return out

    async def counts(self) -> dict[str, int]:
        """See :meth:`CentralStore.counts`."""
        return await self._run(self._counts_sync)

    def _counts_sync(self) -> dict[str, int]:
        conn = self._db()
        return {
            t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in COUNTED_TABLES
        }

    async def close(self) -> None:
        """See :meth:`CentralStore.close`."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)


_HISTORY_COLUMNS: Final = (
    "customer_id",
    "field",
    "value",
    "hlc",
    "site",
    "author",
    "from_site",
    "seq",
    "received_ts",
)
_HISTORY_SQL: Final = (
    f"SELECT {', '.join(_HISTORY_COLUMNS)} "
    "FROM customer_history WHERE customer_id = ? ORDER BY hlc, site, author, id"
)


# --- PostgreSQL ------------------------------------------------------------------------------

# pg_advisory_xact_lock key held while migrating, so two HQ processes never migrate at once.
_MIGRATION_LOCK: Final = 0x63636777  # "ccgw"

_PG_VERSION_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_ts double precision NOT NULL
)
"""


class PostgresCentralStore:
    """:class:`CentralStore` on PostgreSQL through one ``psycopg.AsyncConnection`` (calls are
    serialised; a broken connection is reopened on the next call). Open with :meth:`open`."""

    def __init__(self, url: str, conn: Any, *, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self._conn: Any = conn
        self._clock = clock
        self._lock = asyncio.Lock()
        self._closed = False
        self.applied: list[int] = []
        """Migration versions applied by this open."""

    @classmethod
    async def open(
        cls, url: str, *, clock: Callable[[], float] = time.time
    ) -> PostgresCentralStore:
        """Connect to ``url`` (a libpq URL) and migrate the database."""
        conn = await cls._connect(url)
        store = cls(url, conn, clock=clock)
        try:
            store.applied = await store._migrate(hq_migrations("postgres"))
        except BaseException:
            await conn.close()
            raise
        return store

    @staticmethod
    async def _connect(url: str) -> Any:
        import psycopg  # imported here: the SQLite default does not need it

        try:
            return await psycopg.AsyncConnection.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc

    async def _db(self) -> Any:
        if self._closed:
            raise StoreError("the central store is closed")
        if self._conn.closed or self._conn.broken:
            log.warning("PostgreSQL connection lost; reconnecting")
            self._conn = await self._connect(self.url)
        return self._conn

    async def _migrate(self, migrations: list[Migration]) -> list[int]:
        conn = await self._db()
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(_PG_VERSION_TABLE)
            cur = await conn.execute("SELECT version, checksum FROM schema_version")
            applied = {int(v): c for v, c in await cur.fetchall()}
            todo = pending_migrations(applied, migrations, "this HQ")
            for mig in todo:
                try:
                    await conn.execute(mig.sql)  # no parameters: multi-statement allowed
                except Exception as exc:
                    raise StoreError(
                        f"migration {mig.version:04d}_{mig.name} failed: {exc}"
                    ) from exc
                await conn.execute(
                    "INSERT INTO schema_version (version, name, checksum, applied_ts) "
                    "VALUES (%s, %s, %s, %s)",
                    (mig.version, mig.name, mig.checksum, time.time()),
                )
        return [m.version for m in todo]

    async def apply_batch(self, site: str, entries: Sequence[SyncEntry]) -> int:
        """See :meth:`CentralStore.apply_batch`."""
        if not site:
            raise ValueError("site is empty")
        q = _PG_SQL
        async with self._lock:
            conn = await self._db()
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute(
                    "INSERT INTO sync_state (site, high_water, updated_ts) VALUES (%s, 0, %s) "
                    "ON CONFLICT (site) DO NOTHING",
                    (site, self._clock()),
                )
                await cur.execute(q.get_high_water, (site,))  # FOR UPDATE: one writer per site
                high_water = int((await cur.fetchone())[0])
                now = self._clock()
                plan = _plan_batch(site, entries, high_water, now)
                if plan is None:
                    return high_water
                for table, rows in plan.rows.items():
                    await cur.execute(q.row_upsert[table], _columns(_row_params(site, rows, now)))
                if plan.unknown:
                    await cur.executemany(q.unknown, plan.unknown)
                if plan.changes:
                    ids = sorted({c.customer_id for _, c in plan.changes})
                    await cur.execute(q.load_customers, (ids,))
                    current = {cid: record for cid, record in await cur.fetchall()}
                    cp = _plan_customers(site, plan.changes, current, now)
                    if cp.history:
                        await cur.execute(q.history, _columns(cp.history))
                    if cp.upserts:
                        await cur.execute(q.next_revs, (len(cp.upserts),))
                        last = int((await cur.fetchone())[0])
                        first = last - len(cp.upserts) + 1
                        await cur.execute(
                            q.customer_upsert,
                            _columns([(*u, first + i) for i, u in enumerate(cp.upserts)]),
                        )
                    if cp.phones_changed:
                        await cur.execute(q.phones_delete, (cp.phones_changed,))
                        if cp.phones:
                            await cur.execute(q.phones_insert, _columns(cp.phones))
                await cur.execute(q.set_high_water, (site, plan.high_water, now))
        _log_unknown(site, plan)
        return plan.high_water

    async def high_water(self, site: str) -> int:
        """See :meth:`CentralStore.high_water`."""
        async with self._lock:
            conn = await self._db()
            cur = await conn.execute("SELECT high_water FROM sync_state WHERE site = %s", (site,))
            row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    async def lookup_customers(
        self,
        *,
        phone: str | None = None,
        customer_id: str | None = None,
        region: str | None = None,
        name: str | None = None,
        limit: int = 10,
    ) -> list[dict[str, Any]]:
        """See :meth:`CentralStore.lookup_customers`."""
        sql, args = customer_search_sql(phone, customer_id, region, name, limit)
        if not sql:
            return []
        return [r[0] for r in await self._fetch(_pg(sql), args)]

    async def customer_changes(
        self, after_rev: int, limit: int = 500
    ) -> list[tuple[int, dict[str, Any]]]:
        """See :meth:`CentralStore.customer_changes`."""
        rows = await self._fetch(_PG_SQL.changes, [after_rev, max(0, limit)])
        return [(int(rev), record) for rev, record in rows]

    async def customer_history(self, customer_id: str) -> list[dict[str, Any]]:
        """History rows of ``customer_id`` (one per field change), oldest stamp first."""
        names = _HISTORY_COLUMNS
        rows = await self._fetch(_pg(_HISTORY_SQL), [customer_id])
        return [dict(zip(names, r, strict=True)) for r in rows]

    async def counts(self) -> dict[str, int]:
        """See :meth:`CentralStore.counts`."""
        out = {}
        for t in COUNTED_TABLES:
            rows = await self._fetch(f"SELECT count(*) FROM {t}", [])
            out[t] = int(rows[0][0])
        return out

    async def _fetch(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._lock:
            conn = await self._db()
            cur = await conn.execute(sql, args)
            return list(await cur.fetchall())

    async def close(self) -> None:
        """See :meth:`CentralStore.close`."""
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            await self._conn.close()


async def open_central_store(url: str) -> CentralStore:
    """Open HQ's database named by ``url``: ``sqlite:///abs/path.db``, ``sqlite:relative.db``,
    ``sqlite::memory:`` or ``postgresql://user@host:port/db`` (also ``postgres://``)."""
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresCentralStore.open(url)
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:") :]
        if rest.startswith("///"):
            path = rest[2:]  # sqlite:///abs/path → /abs/path
        elif rest.startswith("//"):
            raise ValueError(f"{url!r}: use sqlite:///absolute/path or sqlite:relative/path")
        else:
            path = rest
        if not path:
            raise ValueError(f"{url!r} names no database file")
        return await SqliteCentralStore.open(path)
    raise ValueError(f"unsupported central store URL {url!r} (sqlite:... or postgresql://...)")
