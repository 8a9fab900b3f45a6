"""The site store on SQLite (stdlib ``sqlite3``, WAL journal, ``synchronous=NORMAL``)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from gateway.store.base import StoreError
from gateway.store.migrate import Migration, apply_migrations, load_migrations
from gateway.store.model import Cdr, OutboxEntry

__all__ = ["SqliteSiteStore"]

_CDR_COLUMNS: Final = (
    "call_id",
    "site",
    "direction",
    "caller",
    "callee",
    "destination",
    "agent",
    "start_ts",
    "answer_ts",
    "end_ts",
    "duration_s",
    "billsec_s",
    "cause_code",
    "cause_text",
    "hangup_side",
    "trunk",
)
_INSERT_CDR: Final = (
    f"INSERT INTO cdrs ({', '.join(_CDR_COLUMNS)}) VALUES ({', '.join('?' * len(_CDR_COLUMNS))})"
)
_encode: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
"""Compact JSON (one shared encoder: ``json.dumps`` with options builds one per call)."""
_INSERT_OUTBOX: Final = "INSERT INTO outbox (kind, payload, created_ts) VALUES (?, ?, ?)"


_INTERACTION_COLUMNS = (
    "call_id",
    "site",
    "caller",
    "dialled",
    "queue",
    "agent",
    "arrived_ts",
    "queued_ts",
    "answered_ts",
    "ended_ts",
    "wait_s",
    "talk_s",
    "wrapup_s",
    "outcome",
    "ivr_path",
    "variables",
    "customer_id",
    "handoff_id",
    "overflow_to",
    "from_site",
)


class SqliteSiteStore:
    """:class:`~gateway.store.base.SiteStore` on one SQLite file (or ``":memory:"``).

    Opening applies pending migrations (see :mod:`gateway.store.migrate`); ``applied`` lists
    the versions applied by this open. ``clock`` stamps outbox rows (default ``time.time``). The
    connection may be used from any thread, one call at a time (an internal lock serialises).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        migrations: list[Migration] | None = None,
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0  # transaction nesting on the lock's owner: >0 inside a group
        self._read_conn: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: autocommit; transactions are explicit BEGIN/COMMIT below.
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL-safe
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self.applied = apply_migrations(
                self._conn, load_migrations() if migrations is None else migrations
            )
        except BaseException:
            self._conn.close()
            raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on error). For
        repositories that add tables: write the row and its outbox entry (``append_outbox``)
        inside the same block. Nested in another (same thread), it is a savepoint: a group of
        writes commits once, and one that fails leaves the others intact."""
        with self._lock:
            if self._depth:  # inside an open transaction (a group commit): a savepoint
                name = f"sp{self._depth}"
                self._conn.execute(f"SAVEPOINT {name}")
                self._depth += 1
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute(f"ROLLBACK TO {name}")
                    self._conn.execute(f"RELEASE {name}")
                    raise
                finally:
                    self._depth -= 1
                self._conn.execute(f"RELEASE {name}")
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
            self._conn.execute("COMMIT")

    export_kinds: frozenset[str] | None = None
    """Record kinds that go to HQ (``[mesh] export``); ``None``: all. Others get no outbox
    entry at all: they stay at the site."""

    def append_outbox(self, conn: sqlite3.Connection, kind: str, payload: dict[str, Any]) -> int:
        """Add an outbox entry inside an open :meth:`transaction`; return its ``seq`` (0 when
        ``kind`` is not exported)."""
        if self.export_kinds is not None and kind not in self.export_kinds:
            return 0
        text = _encode(payload)
        cur = conn.execute(_INSERT_OUTBOX, (kind, text, self._clock()))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def write_cdr(self, cdr: Cdr) -> int:
        """Insert ``cdr`` and its ``"cdr"`` outbox entry in one transaction; return the CDR id."""
        if cdr.id is not None:
            raise ValueError("this CDR was already written (id is set)")
        row = (
            cdr.call_id,
            cdr.site,
            cdr.direction,
            cdr.caller,
            cdr.callee,
            cdr.destination,
            cdr.agent,
            cdr.start_ts,
            cdr.answer_ts,
            cdr.end_ts,
            cdr.duration_s,
            cdr.billsec_s,
            cdr.cause_code,
            cdr.cause_text,
            cdr.hangup_side,
            cdr.trunk,
        )
        with self.transaction() as conn:
            cur = conn.execute(_INSERT_CDR, row)
            assert cur.lastrowid is not None
            cdr_id = cur.lastrowid
            payload = cdr.to_dict()
            payload["id"] = cdr_id
            self.append_outbox(conn, "cdr", payload)
        return cdr_id

    def write_interaction(self, row: dict[str, Any]) -> int:
        """Insert an interaction record and its ``"interaction"`` outbox entry (one
        transaction); ``row`` has the ``interactions`` columns but ``id``. Returns the id."""
        cols = [c for c in _INTERACTION_COLUMNS if c in row]
        values = [
            json.dumps(row[c], ensure_ascii=False) if c == "variables" else row[c] for c in cols
        ]
        sql = f"INSERT INTO interactions ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        with self.transaction() as conn:
            cur = conn.execute(sql, values)
            assert cur.lastrowid is not None
            self.append_outbox(conn, "interaction", {**row, "id": cur.lastrowid})
        return cur.lastrowid

    def write_voicemail(self, meta: dict[str, Any]) -> int:
        """Insert a voicemail message's metadata and its outbox entry; returns the id."""
        cols = ["box", "call_id", "caller", "queue", "path", "seconds", "created_ts"]
        sql = f"INSERT INTO voicemails ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        with self.transaction() as conn:
            cur = conn.execute(sql, [meta.get(c) for c in cols])
            assert cur.lastrowid is not None
            self.append_outbox(conn, "voicemail", {**meta, "id": cur.lastrowid})
        return cur.lastrowid

    def voicemails(self, box: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Voicemail metadata, newest first (of one ``box`` when given)."""
        sql = "SELECT * FROM voicemails"
        args: list[Any] = []
        if box is not None:
            sql += " WHERE box = ?"
            args.append(box)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return self._dicts(sql, args)

    def add_callback(self, row: dict[str, Any]) -> int:
        """Store a callback request (and its outbox entry); returns its id."""
        cols = ["number", "queue", "call_id", "caller", "arrived_ts", "requested_ts", "not_before"]
        sql = f"INSERT INTO callbacks ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        with self.transaction() as conn:
            cur = conn.execute(sql, [row[c] for c in cols])
            assert cur.lastrowid is not None
            self.append_outbox(conn, "callback", {**row, "id": cur.lastrowid, "status": "pending"})
        return cur.lastrowid

    def update_callback(self, cb_id: int, **changes: Any) -> None:
        """Change a callback's status, attempts, agent ... (with an outbox entry)."""
        allowed = {"status", "attempts", "agent", "last_status", "done_ts", "not_before"}
        bad = set(changes) - allowed
        if bad:
            raise ValueError(f"cannot change {sorted(bad)} of a callback")
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self.transaction() as conn:
            conn.execute(f"UPDATE callbacks SET {sets} WHERE id = ?", [*changes.values(), cb_id])
            self.append_outbox(conn, "callback", {"id": cb_id, **changes})

    def callbacks(self, status: str | None = "pending") -> list[dict[str, Any]]:
        """Callback requests (pending ones by default), oldest arrival first."""
        if status is None:
            return self._dicts("SELECT * FROM callbacks ORDER BY arrived_ts", [])
        return self._dicts("SELECT * FROM callbacks WHERE status = ? ORDER BY arrived_ts", [status])

    def interactions(self, limit: int = 100) -> list[dict[str, Any]]:
        """Interaction records, newest first."""
        rows = self._dicts("SELECT * FROM interactions ORDER BY id DESC LIMIT ?", [limit])
        for r in rows:
            r["variables"] = json.loads(r["variables"])
        return rows

    def _dicts(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def recent_cdrs(self, limit: int = 50) -> list[Cdr]:
        """The newest ``limit`` CDRs (by id), newest first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT id, {', '.join(_CDR_COLUMNS)} FROM cdrs ORDER BY id DESC LIMIT ?",
                (max(0, limit),),
            ).fetchall()
        out = []
        for row in rows:
            fields = dict(zip(("id", *_CDR_COLUMNS), row, strict=True))
            del fields["duration_s"], fields["billsec_s"]  # derived from the timestamps
            out.append(Cdr(**fields))
        return out

    def _reader(self) -> tuple[sqlite3.Connection, Any]:
        """A second connection for the sync client's outbox reads (WAL: readers never wait for
        the writer's transaction, which may hold a whole group of writes), and its lock."""
        if self._read_conn is None or self.path == ":memory:":
            if self.path == ":memory:":
                return self._conn, self._lock
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            self._read_conn = conn
        return self._read_conn, self._read_lock

    def outbox_peek(
        self, after_seq: int = 0, limit: int = 100, *, raw: bool = False
    ) -> list[OutboxEntry]:
        """Up to ``limit`` entries with ``seq > after_seq``, oldest first; with ``raw`` each
        payload is its stored JSON text. Reads what is committed, without waiting for a write
        in progress."""
        conn, lock = self._reader()
        with lock:
            rows = conn.execute(
                "SELECT seq, kind, payload, created_ts FROM outbox WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after_seq, max(0, limit)),
            ).fetchall()
        if raw:
            return [OutboxEntry(seq, kind, payload, ts) for seq, kind, payload, ts in rows]
        return [OutboxEntry(seq, kind, json.loads(payload), ts) for seq, kind, payload, ts in rows]

    def outbox_trim(self, upto_seq: int) -> int:
        """Delete entries with ``seq <= upto_seq``; return how many went."""
        with self.transaction() as conn:
            return conn.execute("DELETE FROM outbox WHERE seq <= ?", (upto_seq,)).rowcount

    def outbox_depth(self) -> int:
        """Entries waiting in the outbox (committed ones)."""
        conn, lock = self._reader()
        with lock:
            return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        """Close the connections (idempotent)."""
        with self._read_lock:
            if self._read_conn is not None:
                self._read_conn.close()
                self._read_conn = None
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteSiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
