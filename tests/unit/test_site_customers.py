"""The site customer repository: record, history and outbox in one transaction; no deletes."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.store.customers import CUSTOMER_KIND, ExportFilter, SiteCustomers
from gateway.store.hlc import Hlc, HlcClock
from gateway.store.merge import CustomerChange
from gateway.store.sqlite import SqliteSiteStore


class FakeMs:
    def __init__(self, t: int = 1_700_000_000_000) -> None:
        self.t = t

    def __call__(self) -> int:
        self.t += 1
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> SqliteSiteStore:
    return SqliteSiteStore(tmp_path / "site.db", clock=lambda: 1.0)


def site(store: SqliteSiteStore, name: str = "sh", **kw: Any) -> SiteCustomers:
    return SiteCustomers(store, name, now=lambda: 2.0, **kw)


def test_upsert_writes_record_history_and_outbox(store: SqliteSiteStore) -> None:
    customers = site(store)
    clock = HlcClock("sh", FakeMs())
    change = customers.upsert(
        "C1", {"name": "Li Lei", "phones": ["+86 21 5555 0100"], "vip": True}, "1001", clock=clock
    )
    rec = customers.get("C1")
    assert rec is not None
    assert (rec["name"], rec["phones"], rec["vip"], rec["tier"]) == (
        "Li Lei",
        ["+862155550100"],
        True,
        None,
    )
    assert rec["_stamps"]["name"] == {"hlc": str(change.hlc), "site": "sh", "author": "1001"}
    (entry,) = store.outbox_peek()
    assert entry.kind == CUSTOMER_KIND
    assert entry.payload == change.to_payload()
    assert CustomerChange.from_payload(entry.payload) == change
    assert customers.history("C1") == [change]


def test_edits_stack_up_in_history(store: SqliteSiteStore) -> None:
    customers = site(store)
    clock = HlcClock("sh", FakeMs())
    first = customers.upsert("C1", {"name": "Li", "tier": "gold"}, "1001", clock=clock)
    second = customers.upsert("C1", {"name": "Li Lei", "tier": None}, "1002", clock=clock)
    rec = customers.get("C1")
    assert rec is not None and (rec["name"], rec["tier"]) == ("Li Lei", None)
    assert customers.history("C1") == [first, second]
    assert [e.seq for e in store.outbox_peek()] == [1, 2]


class FailingOutboxStore(SqliteSiteStore):
    def append_outbox(self, conn: sqlite3.Connection, kind: str, payload: dict[str, Any]) -> int:
        raise OSError("disk full")


def test_a_failed_outbox_write_leaves_nothing(tmp_path: Path) -> None:
    store = FailingOutboxStore(tmp_path / "site.db")
    customers = site(store)
    with pytest.raises(OSError):
        customers.upsert("C1", {"name": "Li"}, "1001", clock=HlcClock("sh", FakeMs()))
    assert customers.get("C1") is None
    assert customers.history("C1") == []
    assert customers.by_phone("+8610") == []


def test_invalid_change_writes_nothing(store: SqliteSiteStore) -> None:
    customers = site(store)
    clock = HlcClock("sh", FakeMs())
    for fields in ({"delete": True}, {"name": None}, {"shoe": 1}, {"customer_id": "C2"}):
        with pytest.raises(ValueError):
            customers.upsert("C1", fields, "1001", clock=clock)
    assert customers.get("C1") is None
    assert store.outbox_depth() == 0


def test_export_filter_keeps_local_fields_local(store: SqliteSiteStore) -> None:
    customers = site(store, export_filter=ExportFilter(customer_fields=frozenset({"name"})))
    clock = HlcClock("sh", FakeMs())
    customers.upsert("C1", {"name": "Li", "notes": "private"}, "1001", clock=clock)
    customers.upsert("C1", {"notes": "still private"}, "1001", clock=clock)
    (entry,) = store.outbox_peek()
    assert entry.payload["fields"] == {"name": "Li"}
    rec = customers.get("C1")
    assert rec is not None and rec["notes"] == "still private"


def test_export_filter_can_keep_customers_local(store: SqliteSiteStore) -> None:
    flt = ExportFilter(kinds=frozenset({"cdr"}))
    assert flt.allows_kind("cdr") and not flt.allows_kind("customer")
    customers = site(store, export_filter=flt)
    customers.upsert("C1", {"name": "Li"}, "1001", clock=HlcClock("sh", FakeMs()))
    assert store.outbox_depth() == 0
    assert customers.get("C1") is not None
    with pytest.raises(ValueError):
        ExportFilter(customer_fields=frozenset({"shoe_size"}))


def test_apply_remote_merges_without_outbox_and_only_once(store: SqliteSiteStore) -> None:
    customers = site(store)
    clock = HlcClock("sh", FakeMs(1000))
    remote = CustomerChange(
        "C1", {"name": "Lee", "phones": ["+8620"]}, Hlc(5000, 3, "gz"), "gz", "7"
    )
    rec = customers.apply_remote(remote, clock=clock)
    assert customers.apply_remote(remote) == rec
    assert store.outbox_depth() == 0
    assert customers.history("C1") == [remote]
    # The clock observed the remote stamp: a local edit made next orders after it and wins.
    local = customers.upsert("C1", {"name": "Li"}, "1001", clock=clock)
    assert local.hlc > remote.hlc
    assert [r["name"] for r in customers.by_phone("+8620")] == ["Li"]


def test_two_sites_converge_whatever_the_exchange_order(tmp_path: Path) -> None:
    sh_store = SqliteSiteStore(tmp_path / "sh.db")
    gz_store = SqliteSiteStore(tmp_path / "gz.db")
    sh, gz = site(sh_store, "sh"), site(gz_store, "gz")
    sh_clock, gz_clock = HlcClock("sh", FakeMs(1000)), HlcClock("gz", FakeMs(1000))
    a = sh.upsert("C1", {"name": "Li", "tier": "gold"}, "1001", clock=sh_clock)
    b = gz.upsert("C1", {"name": "Lee", "notes": "called twice"}, "2001", clock=gz_clock)
    c = sh.upsert("C1", {"vip": True}, "1001", clock=sh_clock)
    for change in (c, a, a):
        gz.apply_remote(change)
    sh.apply_remote(b)
    assert sh.get("C1") == gz.get("C1")
    rec = sh.get("C1")
    assert rec is not None
    # Equal wall time and counter: the node breaks the tie ("sh" > "gz").
    assert (rec["name"], rec["tier"], rec["notes"], rec["vip"]) == (
        "Li",
        "gold",
        "called twice",
        True,
    )
    assert len(sh.history("C1")) == len(gz.history("C1")) == 3


def test_apply_remote_record_from_the_hq_feed(tmp_path: Path) -> None:
    sh = site(SqliteSiteStore(tmp_path / "sh.db"), "sh")
    gz = site(SqliteSiteStore(tmp_path / "gz.db"), "gz")
    sh.upsert("C1", {"name": "Li", "phones": ["+8610"]}, "1001", clock=HlcClock("sh", FakeMs()))
    sh.upsert("C1", {"tier": "gold"}, "1002", clock=HlcClock("sh", FakeMs(2 * 10**12)))
    rec = sh.get("C1")
    assert rec is not None
    assert gz.apply_remote_record(rec) == rec
    assert gz.get("C1") == rec
    assert [r["customer_id"] for r in gz.by_phone("+8610")] == ["C1"]


def test_lookups(store: SqliteSiteStore) -> None:
    customers = site(store)
    clock = HlcClock("sh", FakeMs())
    customers.upsert(
        "C1", {"name": "Li Lei", "phones": ["+8610", "+8611"], "region": "sh"}, "a", clock=clock
    )
    customers.upsert(
        "C2", {"name": "Han Meimei", "phones": ["+8610"], "region": "gz"}, "a", clock=clock
    )
    customers.upsert("C1", {"phones": ["+8612"]}, "a", clock=clock)

    def ids(rows: list[dict[str, Any]]) -> list[str]:
        return [r["customer_id"] for r in rows]

    assert ids(customers.by_phone("+86 10")) == ["C2"]
    assert ids(customers.by_phone("+8612")) == ["C1"]
    assert customers.by_phone("+8611") == []  # replaced
    assert customers.by_phone("anonymous") == []
    assert ids(customers.search(region="gz")) == ["C2"]
    assert ids(customers.search(name="LEI")) == ["C1"]
    assert ids(customers.search(customer_id="C2")) == ["C2"]
    assert customers.get("nobody") is None
    with pytest.raises(ValueError):
        customers.search()


def test_records_and_history_cannot_be_deleted(store: SqliteSiteStore) -> None:
    customers = site(store)
    customers.upsert("C1", {"name": "Li"}, "1001", clock=HlcClock("sh", FakeMs()))
    assert not any("delete" in name or "remove" in name for name in dir(SiteCustomers))
    for sql in (
        "DELETE FROM customers",
        "DELETE FROM customer_history",
        "UPDATE customer_history SET value = '\"x\"'",
    ):
        with pytest.raises(sqlite3.IntegrityError), store.transaction() as conn:
            conn.execute(sql)
    assert customers.get("C1") is not None
    assert len(customers.history("C1")) == 1
