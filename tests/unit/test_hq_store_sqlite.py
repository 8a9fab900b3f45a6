"""HQ central store on SQLite: exactly-once apply, high-water marks, customer merge and look-up.

The test bodies take a ``backend`` fixture; tests/integration/test_hq_store_pg.py imports them
and runs the same bodies against a real PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.hq.store import CentralStore, SqliteCentralStore, SyncEntry, open_central_store
from gateway.store.base import StoreError
from gateway.store.hlc import Hlc
from gateway.store.merge import CustomerChange


@dataclass
class Backend:
    """How a test reaches one database: open the store, run raw SQL beside it."""

    url: str
    raw: Callable[[str], None]
    """Run one SQL statement on a separate connection (autocommit); raises on error."""
    fail_trigger_sql: list[str]
    """Statements that make inserting an interaction with call_id 'boom' fail."""

    async def open(self) -> CentralStore:
        return await open_central_store(self.url)


def _sqlite_raw(path: Path) -> Callable[[str], None]:
    def run(sql: str) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()

    return run


@pytest.fixture
def backend(tmp_path: Path) -> Backend:
    path = tmp_path / "hq" / "central.db"
    return Backend(
        url=f"sqlite:///{path}",
        raw=_sqlite_raw(path),
        fail_trigger_sql=[
            "CREATE TRIGGER boom BEFORE INSERT ON interactions WHEN NEW.call_id = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'boom'); END"
        ],
    )


def run(backend: Backend, body: Callable[[CentralStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = await backend.open()
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


# --- entry builders -------------------------------------------------------------------------


def cdr(seq: int, local_id: int, call_id: str = "call", **extra: Any) -> SyncEntry:
    payload = {"id": local_id, "call_id": call_id, "start_ts": 1000.0 + local_id, **extra}
    return SyncEntry(seq, "cdr", payload, 1000.0 + seq)


def interaction(seq: int, local_id: int, call_id: str = "call") -> SyncEntry:
    payload = {"id": local_id, "call_id": call_id, "arrived_ts": 5.0, "variables": {"a": 1}}
    return SyncEntry(seq, "interaction", payload, 1000.0 + seq)


def customer(
    seq: int, cid: str, fields: dict[str, Any], wall: int, site: str = "sh", author: str = "1001"
) -> SyncEntry:
    change = CustomerChange(cid, fields, Hlc(wall, 0, site), site, author)
    return SyncEntry(seq, "customer", change.to_payload(), 1000.0 + seq)


# --- exactly once ---------------------------------------------------------------------------


def test_open_applies_migrations_once(backend: Backend) -> None:
    async def body(store: CentralStore) -> None:
        assert getattr(store, "applied", None) == [1, 2]
        again = await backend.open()
        try:
            assert getattr(again, "applied", None) == []
        finally:
            await again.close()

    run(backend, body)


def test_replays_and_overlaps_apply_once(backend: Backend) -> None:
    async def body(store: CentralStore) -> None:
        batch = [cdr(s, s) for s in range(1, 11)]
        assert await store.apply_batch("sh", batch) == 10
        assert await store.apply_batch("sh", batch) == 10  # a replay after a lost ack
        assert await store.apply_batch("sh", [cdr(s, s) for s in range(5, 16)]) == 15
        assert await store.apply_batch("sh", []) == 15
        assert (await store.counts())["cdrs"] == 15
        assert await store.high_water("sh") == 15

    run(backend, body)


def test_high_water_is_per_site_and_equal_ids_do_not_collide(backend: Backend) -> None:
    async def body(store: CentralStore) -> None:
        assert await store.high_water("sh") == 0
        assert await store.apply_batch("sh", [cdr(1, 1, "leg-a"), cdr(2, 2, "x")]) == 2
        assert await store.apply_batch("gz", [cdr(7, 1, "leg-b")]) == 7
        assert await store.high_water("sh") == 2
        assert await store.high_water("gz") == 7
        assert await store.high_water("bj") == 0
        assert (await store.counts())["cdrs"] == 3

    run(backend, body)


def test_gap_is_applied_logged_as_an_error_and_late_lower_seqs_are_ignored(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(store: CentralStore) -> None:
        with caplog.at_level(logging.ERROR, logger="gateway.hq.store"):
            assert await store.apply_batch("sh", [cdr(1, 1), cdr(2, 2), cdr(5, 5)]) == 5
        assert "2 outbox entries missing below seq 5" in caplog.text
        assert await store.apply_batch("sh", [cdr(3, 3), cdr(4, 4)]) == 5
        assert (await store.counts())["cdrs"] == 3

    run(backend, body)


def test_batch_out_of_order_and_duplicated_is_applied_in_seq_order(backend: Backend) -> None:
    async def body(store: CentralStore) -> None:
        insert = SyncEntry(
            1, "callback", {"id": 9, "number": "+8613800000000", "queue": "sales"}, 1.0
        )
        ringing = SyncEntry(2, "callback", {"id": 9, "status": "pending", "attempts": 1}, 2.0)
        done = SyncEntry(3, "callback", {"id": 9, "status": "connected", "agent": "1001"}, 3.0)
        batch = [done, ringing, insert, done, insert]
        assert await store.apply_batch("sh", batch) == 3
        assert (await store.counts())["callbacks"] == 1
        assert await _callback(store, "sh", 9) == {
            "id": 9,
            "number": "+8613800000000",
            "queue": "sales",
            "status": "connected",
            "attempts": 1,
            "agent": "1001",
        }

    run(backend, body)


async def _callback(store: CentralStore, site: str, local_id: int) -> dict[str, Any]:
    if isinstance(store, SqliteCentralStore):

        def read() -> Any:
            conn = sqlite3.connect(store.path)
            try:
                return conn.execute(
                    "SELECT payload, status, agent FROM callbacks WHERE site = ? AND local_id = ?",
                    (site, local_id),
                ).fetchone()
            finally:
                conn.close()

        import json

        payload, status, agent = read()
        assert (status, agent) == ("connected", "1001")
        return dict(json.loads(payload))
    rows = await store._fetch(  # type: ignore[attr-defined]
        "SELECT payload, status, agent FROM callbacks WHERE site = %s AND local_id = %s",
        [site, local_id],
    )
    payload, status, agent = rows[0]
    assert (status, agent) == ("connected", "1001")
    return dict(payload)


def test_a_later_batch_updates_the_same_row(backend: Backend) -> None:
    async def body(store: CentralStore) -> None:
        await store.apply_batch(
            "sh",
            [
                SyncEntry(1, "callback", {"id": 9, "number": "+8613800000000"}, 1.0),
                SyncEntry(2, "callback", {"id": 9, "status": "pending", "attempts": 1}, 2.0),
            ],
        )
        await store.apply_batch(
            "sh", [SyncEntry(3, "callback", {"id": 9, "status": "connected", "agent": "1001"}, 3)]
        )
        assert (await store.counts())["callbacks"] == 1
        row = await _callback(store, "sh", 9)
        assert row["number"] == "+8613800000000" and row["attempts"] == 1

    run(backend, body)


def test_concurrent_replays_apply_once(backend: Backend) -> None:
    async def body(store: CentralStore) -> None:
        batch = [cdr(s, s) for s in range(1, 51)]
        marks = await asyncio.gather(*(store.apply_batch("sh", batch) for _ in range(5)))
        assert marks == [50] * 5
        assert (await store.counts())["cdrs"] == 50

    run(backend, body)


def test_unknown_kinds_and_malformed_payloads_are_kept(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(store: CentralStore) -> None:
        batch = [
            SyncEntry(1, "fax", {"pages": 3}, 1.0),
            SyncEntry(2, "cdr", {"call_id": "no-id"}, 2.0),
            SyncEntry(3, "customer", {"customer_id": "C1", "fields": {"delete": True}}, 3.0),
            cdr(4, 4),
        ]
        with caplog.at_level(logging.WARNING, logger="gateway.hq.store"):
            assert await store.apply_batch("sh", batch) == 4
        assert await store.apply_batch("sh", batch) == 4
        counts = await store.counts()
        assert counts["unknown_entries"] == 3
        assert counts["cdrs"] == 1 and counts["customers"] == 0
        assert "'fax'" in caplog.text

    run(backend, body)


def test_failed_batch_leaves_nothing_and_high_water_unchanged(backend: Backend) -> None:
    async def body(store: CentralStore) -> None:
        for sql in backend.fail_trigger_sql:
            backend.raw(sql)
        batch = [
            cdr(1, 1),
            customer(2, "C1", {"name": "Li Lei"}, 10),
            interaction(3, 1, "boom"),
        ]
        with pytest.raises(Exception, match="boom"):
            await store.apply_batch("sh", batch)
        assert await store.high_water("sh") == 0
        counts = await store.counts()
        assert counts["cdrs"] == counts["customers"] == counts["customer_history"] == 0
        assert await store.customer_changes(0) == []
        # The store still works after the rollback.
        assert await store.apply_batch("sh", batch[:2]) == 2
        assert (await store.counts())["customers"] == 1

    run(backend, body)


def test_applied_rows_survive_reopen(backend: Backend) -> None:
    async def body(store: CentralStore) -> None:
        await store.apply_batch("sh", [cdr(1, 1), customer(2, "C1", {"name": "Li Lei"}, 10)])
        await store.close()
        again = await backend.open()
        try:
            assert await again.high_water("sh") == 2
            assert await again.apply_batch("sh", [cdr(1, 1)]) == 2
            assert (await again.counts())["cdrs"] == 1
            assert [r["name"] for r in await again.lookup_customers(customer_id="C1")] == ["Li Lei"]
        finally:
            await again.close()

    run(backend, body)


# --- customers ------------------------------------------------------------------------------


def test_concurrent_edits_at_two_sites_resolve_the_same_in_any_order(backend: Backend) -> None:
    a = customer(1, "C1", {"name": "Li Lei", "tier": "gold"}, 100, site="sh", author="1001")
    b = customer(1, "C1", {"name": "Lee Lei", "notes": "prefers mornings"}, 105, site="gz")
    c = customer(2, "C1", {"tier": "silver"}, 90, site="sh", author="1002")

    async def body(store: CentralStore) -> None:
        await store.apply_batch("gz", [b])
        await store.apply_batch("sh", [c, a])
        (rec,) = await store.lookup_customers(customer_id="C1")
        assert rec["name"] == "Lee Lei"  # gz's later stamp wins
        assert rec["tier"] == "gold"  # sh's 100 beats sh's 90, whatever the arrival order
        assert rec["notes"] == "prefers mornings"
        assert rec["_stamps"]["tier"]["author"] == "1001"
        counts = await store.counts()
        assert counts["customers"] == 1
        assert counts["customer_history"] == 5  # nothing overwritten is lost

    run(backend, body)


def test_history_is_append_only_and_keeps_every_value(backend: Backend) -> None:
    async def body(store: CentralStore) -> None:
        await store.apply_batch("sh", [customer(1, "C1", {"name": "A"}, 10)])
        await store.apply_batch("sh", [customer(2, "C1", {"name": "B"}, 20)])
        await store.apply_batch("gz", [customer(1, "C1", {"name": "C"}, 15, site="gz")])
        hist = await store.customer_history("C1")  # type: ignore[attr-defined]
        assert [(h["value"], h["site"], h["from_site"]) for h in hist] == [
            ("A", "sh", "sh"),
            ("C", "gz", "gz"),
            ("B", "sh", "sh"),
        ]
        for sql in (
            "DELETE FROM customer_history",
            "UPDATE customer_history SET value = '\"X\"'",
            "DELETE FROM customers",
        ):
            with pytest.raises(Exception, match=r"never deleted|append-only"):
                backend.raw(sql)
        assert len(await store.customer_history("C1")) == 3  # type: ignore[attr-defined]
        assert (await store.counts())["customers"] == 1

    run(backend, body)


def test_lookup_by_each_key(backend: Backend) -> None:
    async def body(store: CentralStore) -> None:
        await store.apply_batch(
            "sh",
            [
                customer(
                    1,
                    "C1",
                    {"name": "Li Lei", "phones": ["+86 21 5555-0100"], "region": "shanghai"},
                    10,
                ),
                customer(
                    2, "C2", {"name": "Han Meimei", "phones": ["+862155550200"], "region": "sh"}, 11
                ),
                customer(
                    3,
                    "C3",
                    {"name": "LI_XIAO%", "phones": ["+862155550100"], "region": "shanghai"},
                    12,
                ),
            ],
        )

        async def ids(**kw: Any) -> list[str]:
            return [r["customer_id"] for r in await store.lookup_customers(**kw)]

        assert await ids(phone="+86 (21) 5555 0100") == ["C1", "C3"]
        assert await ids(phone="+862155550200") == ["C2"]
        assert await ids(phone="anonymous") == []
        assert await ids(customer_id="C2") == ["C2"]
        assert await ids(customer_id="nobody") == []
        assert await ids(region="shanghai") == ["C1", "C3"]
        assert await ids(name="li") == ["C1", "C3"]
        assert await ids(name="MEIMEI") == ["C2"]
        assert await ids(name="_xiao%") == ["C3"]  # wildcards are literal
        assert await ids(name="%") == ["C3"]
        assert await ids(region="shanghai", name="lei") == ["C1"]
        assert await ids(region="shanghai", limit=1) == ["C1"]
        with pytest.raises(ValueError):
            await store.lookup_customers()

    run(backend, body)


def test_phone_index_follows_the_merged_phones(backend: Backend) -> None:
    async def body(store: CentralStore) -> None:
        await store.apply_batch("sh", [customer(1, "C1", {"phones": ["+8610"]}, 10)])
        await store.apply_batch("sh", [customer(2, "C1", {"phones": ["+8620", "+8630"]}, 20)])
        await store.apply_batch("gz", [customer(1, "C1", {"phones": ["+8640"]}, 15, site="gz")])
        assert await store.lookup_customers(phone="+8610") == []
        assert await store.lookup_customers(phone="+8640") == []
        assert [r["phones"] for r in await store.lookup_customers(phone="+8630")] == [
            ["+8620", "+8630"]
        ]

    run(backend, body)


def test_customer_change_feed(backend: Backend) -> None:
    async def body(store: CentralStore) -> None:
        assert await store.customer_changes(0) == []
        await store.apply_batch(
            "sh", [customer(1, "C1", {"name": "A"}, 10), customer(2, "C2", {"name": "B"}, 11)]
        )
        feed = await store.customer_changes(0)
        assert [r["customer_id"] for _, r in feed] == ["C1", "C2"]
        last = feed[-1][0]
        await store.apply_batch("gz", [customer(1, "C1", {"tier": "gold"}, 12, site="gz")])
        feed2 = await store.customer_changes(last)
        assert [(r["customer_id"], r["name"], r["tier"]) for _, r in feed2] == [("C1", "A", "gold")]
        assert feed2[0][0] > last
        # A change that loses everywhere changes no record, so no new revision.
        await store.apply_batch("bj", [customer(1, "C1", {"tier": "tin"}, 1, site="bj")])
        assert await store.customer_changes(feed2[0][0]) == []
        # Each customer once, at its latest revision, in revision order; paging by limit.
        all_feed = await store.customer_changes(0)
        assert [r["customer_id"] for _, r in all_feed] == ["C2", "C1"]
        assert len(await store.customer_changes(0, limit=1)) == 1

    run(backend, body)


def test_mixed_batch_throughput(backend: Backend) -> None:
    """Not a benchmark; catches a quadratic or per-row-commit regression."""
    n_batches, size = 10, 500

    def batch(b: int) -> list[SyncEntry]:
        out = []
        for i in range(size):
            seq = b * size + i + 1
            if i % 10 == 0:
                out.append(customer(seq, f"C{seq % 97}", {"notes": f"n{seq}"}, seq))
            elif i % 3 == 0:
                out.append(interaction(seq, seq, f"call-{seq}"))
            else:
                out.append(cdr(seq, seq, f"call-{seq}", caller="+8613800000000", agent="1001"))
        random.Random(b).shuffle(out)
        return out

    batches = [batch(b) for b in range(n_batches)]

    async def body(store: CentralStore) -> None:
        t0 = time.perf_counter()
        for b in batches:
            await store.apply_batch("sh", b)
        rate = n_batches * size / (time.perf_counter() - t0)
        print(f"apply throughput: {rate:.0f} records/s")
        assert await store.high_water("sh") == n_batches * size
        assert rate > 2000

    run(backend, body)


# --- SQLite specifics -----------------------------------------------------------------------


def test_open_central_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    async def main() -> None:
        for url, path in (
            (f"sqlite:///{tmp_path}/abs.db", tmp_path / "abs.db"),
            ("sqlite:rel/hq.db", tmp_path / "rel" / "hq.db"),
        ):
            store = await open_central_store(url)
            await store.close()
            await store.close()  # idempotent
            assert path.exists()
            with pytest.raises(StoreError):
                await store.high_water("sh")
        mem = await open_central_store("sqlite::memory:")
        assert await mem.apply_batch("sh", [cdr(1, 1)]) == 1
        await mem.close()
        for bad in ("mysql://x", "sqlite:", "sqlite://host/x"):
            with pytest.raises(ValueError):
                await open_central_store(bad)

    asyncio.run(main())


def test_sqlite_store_uses_wal(tmp_path: Path) -> None:
    async def main() -> None:
        store = await open_central_store(f"sqlite:///{tmp_path}/hq.db")
        await store.apply_batch("sh", [cdr(1, 1)])
        await store.close()

    asyncio.run(main())
    conn = sqlite3.connect(tmp_path / "hq.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
