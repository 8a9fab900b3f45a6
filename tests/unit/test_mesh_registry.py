"""The mesh registry without etcd: pure view/policy code, and the asyncio adapter over a fake.

The fake (:class:`FakeEtcd` + :class:`FakeClient`) keeps revisions, leases, history and watches
like etcd v3 does, and can cut off a group of clients ("partition") to play an outage.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.mesh.etcd import EtcdClient, EtcdUnavailable, LeaseNotFound, WatchEvent
from gateway.mesh.registry import (
    MeshState,
    MeshView,
    PolicyBook,
    QueueLoad,
    SiteRecord,
    SiteRegistry,
    config_key,
    load_key,
    parse_key,
    publish_policy,
    site_key,
)

T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# records and keys


def rec(site: str, **kw: Any) -> SiteRecord:
    base: dict[str, Any] = {
        "region": "cn",
        "sip": "127.0.0.1:5060",
        "handoff": "127.0.0.1:7000",
        "http": "127.0.0.1:8080",
        "skills": ("sales",),
        "started": 1.0,
    }
    base.update(kw)
    return SiteRecord(site=site, **base)


def load(site: str, queue: str = "sales", **kw: Any) -> QueueLoad:
    base: dict[str, Any] = {"waiting": 1, "available": 2, "ts": 10.0}
    base.update(kw)
    return QueueLoad(site=site, queue=queue, **base)


def test_site_record_round_trips() -> None:
    r = rec("sh", skills=["sales", "vip"])
    assert r.skills == ("sales", "vip")
    assert SiteRecord.from_json(r.to_json()) == r
    assert SiteRecord.from_json(r.to_json().encode()) == r


@pytest.mark.parametrize(
    "data, field",
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"site":"sh"}', "'region'"),
        (json.dumps({**json.loads(rec("sh").to_json()), "skills": "x"}).encode(), "'skills'"),
        (json.dumps({**json.loads(rec("sh").to_json()), "started": "x"}).encode(), "'started'"),
        (json.dumps({**json.loads(rec("sh").to_json()), "site": "a/b"}).encode(), "key segment"),
    ],
)
def test_site_record_rejects_malformed(data: bytes, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SiteRecord.from_json(data)


_names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,8}", fullmatch=True)
_counts = st.dictionaries(_names, st.integers(0, 50), max_size=4)
_secs = st.floats(0, 1e6, allow_nan=False)


@given(
    st.builds(
        QueueLoad,
        site=_names,
        queue=_names,
        waiting=st.integers(0, 1000),
        available=st.integers(0, 1000),
        available_by_skill=_counts,
        logged_in_by_skill=_counts,
        ewt_s=_secs,
        service_level=st.none() | st.floats(0, 1),
        oldest_wait_s=_secs,
        ts=_secs,
    )
)
def test_queue_load_round_trips(ld: QueueLoad) -> None:
    back = QueueLoad.from_json(ld.to_json())
    assert back == ld
    assert back.figures() == ld.figures()


@pytest.mark.parametrize(
    "change, field",
    [
        ({"waiting": -1}, "'waiting'"),
        ({"waiting": True}, "'waiting'"),
        ({"service_level": 1.5}, "0..1"),
        ({"ewt_s": "soon"}, "'ewt_s'"),
        ({"available_by_skill": {"a": -1}}, "'available_by_skill'"),
    ],
)
def test_queue_load_rejects_malformed(change: dict[str, Any], field: str) -> None:
    doc = {**json.loads(load("sh").to_json()), **change}
    with pytest.raises(ValueError, match=field):
        QueueLoad.from_json(json.dumps(doc))


def test_keys_build_and_parse() -> None:
    assert site_key("sh") == "/ccgw/sites/sh"
    assert load_key("sh", "sales") == "/ccgw/load/sh/sales"
    assert config_key("overflow") == "/ccgw/config/overflow"
    assert parse_key("/ccgw/sites/sh") == ("site", ("sh",))
    assert parse_key("/ccgw/load/sh/sales") == ("load", ("sh", "sales"))
    assert parse_key("/ccgw/config/hours") == ("config", ("hours",))
    for other in ("/ccgw/locks/x", "/ccgw/load/sh", "/ccgw/sites/a/b", "/other", "/ccgw/sites/"):
        assert parse_key(other) is None
    with pytest.raises(ValueError):
        site_key("a/b")
    with pytest.raises(ValueError):
        load_key("sh", "")


# --------------------------------------------------------------------------------------------
# MeshState / MeshView (pure)


def ev(kind: str, key: str, value: bytes | str = b"", revision: int = 0) -> WatchEvent:
    v = value.encode() if isinstance(value, str) else value
    return WatchEvent(kind, key, v, revision)  # type: ignore[arg-type]


def test_state_from_snapshot_excludes_me_and_dead_sites_loads() -> None:
    st_ = MeshState("sh")
    ch = st_.reset(
        [
            (site_key("sh"), rec("sh").to_json().encode()),
            (site_key("gz"), rec("gz").to_json().encode()),
            (load_key("sh", "sales"), load("sh").to_json().encode()),
            (load_key("gz", "sales"), load("gz").to_json().encode()),
            (load_key("bj", "sales"), load("bj").to_json().encode()),  # bj not registered
            ("/ccgw/locks/cb-1", b"x"),
            (config_key("overflow"), b'{"a":1}'),
        ],
        7,
    )
    assert ch.view_changed and ch.config == (("overflow", b'{"a":1}'),)
    v = st_.view(True, None)
    assert v.me == "sh" and set(v.sites) == {"gz"} and v.revision == 7
    assert list(v.loads) == [("gz", "sales")]
    assert v.alive("gz") and not v.alive("sh") and not v.alive("bj")
    assert [ld.site for ld in v.loads_for("sales")] == ["gz"]
    assert st_.has_site("sh")


def test_state_applies_events_in_revision_order() -> None:
    s = MeshState("sh")
    s.reset([], 5)
    assert s.apply(ev("put", site_key("gz"), rec("gz").to_json(), 4)).view_changed is False
    assert s.apply(ev("put", site_key("gz"), rec("gz").to_json(), 6)).view_changed
    assert s.apply(ev("put", load_key("gz", "q1"), load("gz", "q1").to_json(), 7)).view_changed
    assert s.apply(ev("put", load_key("gz", "q2"), load("gz", "q2").to_json(), 8)).view_changed
    v = s.view(True, None)
    assert [ld.queue for ld in v.loads_of("gz")] == ["q1", "q2"]
    # same value again: not a change
    assert not s.apply(ev("put", site_key("gz"), rec("gz").to_json(), 9)).view_changed
    # lease expiry deletes the site key first: its loads leave the view with it
    assert s.apply(ev("delete", site_key("gz"), revision=10)).view_changed
    assert s.view(True, None).loads == {}
    assert s.revision == 10
    assert s.apply(ev("delete", load_key("gz", "q1"), revision=11)).view_changed
    assert not s.apply(ev("delete", load_key("gz", "q1"), revision=12)).view_changed
    # an older event is ignored
    assert not s.apply(ev("put", site_key("gz"), rec("gz").to_json(), 11)).view_changed


def test_state_applies_every_event_of_one_revision() -> None:
    # a lease expiry deletes all its keys in one revision: each delete must be applied
    s = MeshState("sh")
    s.reset(
        [
            (site_key("gz"), rec("gz").to_json().encode()),
            (load_key("gz", "q1"), load("gz", "q1").to_json().encode()),
        ],
        4,
    )
    assert s.apply(ev("delete", load_key("gz", "q1"), revision=5)).view_changed
    assert s.apply(ev("delete", site_key("gz"), revision=5)).view_changed
    assert s.view(True, None).sites == {}


def test_state_ignores_malformed_values_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    s = MeshState("sh")
    s.reset([(site_key("gz"), rec("gz").to_json().encode())], 1)
    with caplog.at_level(logging.WARNING, "gateway.mesh.registry"):
        assert s.apply(ev("put", site_key("gz"), b"garbage", 2)).view_changed  # dropped
        assert not s.apply(ev("put", site_key("gz"), b"garbage2", 3)).view_changed
        # a record under someone else's key is malformed too
        assert not s.apply(ev("put", site_key("bj"), rec("gz").to_json(), 4)).view_changed
    assert len([r for r in caplog.records if "malformed" in r.message]) == 2
    assert s.view(True, None).sites == {}
    assert s.apply(ev("put", site_key("gz"), rec("gz").to_json(), 5)).view_changed


def test_state_reset_reports_config_differences() -> None:
    s = MeshState("sh")
    s.reset([(config_key("a"), b"1"), (config_key("b"), b"2")], 3)
    ch = s.reset([(config_key("a"), b"1"), (config_key("c"), b"3")], 9)
    assert ch.config == (("c", b"3"), ("b", None))
    assert not ch.view_changed
    assert s.apply(ev("delete", config_key("a"), revision=10)).config == (("a", None),)
    assert s.apply(ev("put", config_key("c"), b"4", 11)).config == (("c", b"4"),)


def test_view_staleness() -> None:
    s = MeshState("sh")
    assert s.view(False, None).stale_s(100.0) == float("inf")
    assert s.view(True, 50.0).stale_s(100.0) == 0.0
    assert s.view(True, 50.0).lost_at is None
    assert s.view(False, 50.0).stale_s(100.0) == 50.0


def test_sites_with_skill() -> None:
    s = MeshState("sh")
    s.reset(
        [
            (site_key("gz"), rec("gz", skills=("vip",)).to_json().encode()),
            (site_key("bj"), rec("bj", skills=("vip", "sales")).to_json().encode()),
        ],
        2,
    )
    assert [r.site for r in s.view(True, None).sites_with_skill("vip")] == ["bj", "gz"]


# --------------------------------------------------------------------------------------------
# PolicyBook (pure)


@dataclass(frozen=True)
class Overflow:
    threshold_s: float


def validate(name: str, doc: dict[str, Any]) -> object:
    if name == "overflow":
        t = doc.get("threshold_s")
        if not isinstance(t, int | float) or t <= 0:
            raise ValueError("threshold_s must be a positive number")
        return Overflow(float(t))
    return doc


def test_policy_book_keeps_last_good() -> None:
    b = PolicyBook(validate)
    out = b.offer("overflow", b'{"threshold_s": 30}')
    assert out.kind == "applied" and out.value == Overflow(30.0)
    bad = b.offer("overflow", b'{"threshold_s": -1}')
    assert bad.kind == "rejected" and "threshold_s" in bad.reason
    assert b.policies() == {"overflow": Overflow(30.0)}
    assert b.offer("overflow", b"not json").kind == "rejected"
    assert b.offer("overflow", b"[1, 2]").kind == "rejected"
    assert b.rejected == 3
    # the same bytes twice are evaluated once
    assert b.offer("overflow", b"[1, 2]").kind == "unchanged"
    assert b.rejected == 3
    assert b.offer("overflow", b'{"threshold_s": 20}').value == Overflow(20.0)
    assert b.offer("overflow", None).kind == "removed"
    assert b.offer("overflow", None).kind == "unchanged"
    assert b.policies() == {}


def test_policy_book_without_validator_keeps_dicts() -> None:
    b = PolicyBook()
    assert b.offer("hours", b'{"mon": "9-18"}').value == {"mon": "9-18"}


# --------------------------------------------------------------------------------------------
# a fake etcd


class FakeEtcd:
    """An in-memory etcd v3 keyspace: revisions, leases, history, watches, partitions."""

    def __init__(self) -> None:
        self.kv: dict[str, tuple[bytes, int | None]] = {}
        self.revision = 1
        self.history: list[WatchEvent] = []
        self.leases: set[int] = set()
        self._next_lease = 100
        self.watches: list[tuple[str, str, asyncio.Queue[WatchEvent | Exception]]] = []
        self.cut: set[str] = set()
        self.puts = 0

    def check(self, group: str) -> None:
        if group in self.cut:
            raise EtcdUnavailable(f"partitioned: {group}")

    def partition(self, group: str) -> None:
        self.cut.add(group)
        for g, _, q in self.watches:
            if g == group:
                q.put_nowait(EtcdUnavailable("stream broke"))
        self.watches = [w for w in self.watches if w[0] != group]

    def heal(self, group: str) -> None:
        self.cut.discard(group)

    def _emit(self, e: WatchEvent) -> None:
        self.history.append(e)
        for _, prefix, q in self.watches:
            if e.key.startswith(prefix):
                q.put_nowait(e)

    def put(self, key: str, value: bytes, lease: int | None = None) -> None:
        if lease is not None and lease not in self.leases:
            raise LeaseNotFound(str(lease))
        self.revision += 1
        self.puts += 1
        self.kv[key] = (value, lease)
        self._emit(WatchEvent("put", key, value, self.revision))

    def delete(self, key: str) -> None:
        if key in self.kv:
            self.revision += 1
            del self.kv[key]
            self._emit(WatchEvent("delete", key, b"", self.revision))

    def grant(self) -> int:
        self._next_lease += 1
        self.leases.add(self._next_lease)
        return self._next_lease

    def expire(self, lease: int) -> None:
        """The lease's TTL passed: drop it and its keys, all in one revision (as etcd does)."""
        self.leases.discard(lease)
        keys = sorted(k for k, (_, ls) in self.kv.items() if ls == lease)
        if keys:
            self.revision += 1
        for key in keys:
            del self.kv[key]
            self._emit(WatchEvent("delete", key, b"", self.revision))

    def lease_of(self, key: str) -> int | None:
        return self.kv[key][1] if key in self.kv else None


class FakeClient:
    """:class:`EtcdClient` over :class:`FakeEtcd`, in partition group ``group``."""

    def __init__(self, server: FakeEtcd, group: str) -> None:
        self.s = server
        self.group = group
        self.closed = False

    async def put(self, key: str, value: bytes, lease: int | None = None) -> None:
        self.s.check(self.group)
        self.s.put(key, value, lease)

    async def get_prefix(self, prefix: str) -> tuple[list[tuple[str, bytes]], int]:
        self.s.check(self.group)
        return sorted((k, v) for k, (v, _) in self.s.kv.items() if k.startswith(prefix)), (
            self.s.revision
        )

    async def delete(self, key: str) -> None:
        self.s.check(self.group)
        self.s.delete(key)

    async def grant_lease(self, ttl: float) -> int:
        self.s.check(self.group)
        return self.s.grant()

    async def refresh_lease(self, lease: int) -> None:
        self.s.check(self.group)
        if lease not in self.s.leases:
            raise LeaseNotFound(str(lease))

    async def revoke_lease(self, lease: int) -> None:
        self.s.check(self.group)
        self.s.expire(lease)

    async def watch_prefix(
        self, prefix: str, start_revision: int | None
    ) -> AsyncIterator[WatchEvent]:
        self.s.check(self.group)
        q: asyncio.Queue[WatchEvent | Exception] = asyncio.Queue()
        if start_revision is not None:
            for e in self.s.history:
                if e.revision >= start_revision and e.key.startswith(prefix):
                    q.put_nowait(e)
        entry = (self.group, prefix, q)
        self.s.watches.append(entry)
        try:
            while True:
                item = await q.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            if entry in self.s.watches:
                self.s.watches.remove(entry)

    async def close(self) -> None:
        self.closed = True


def _typecheck(c: FakeClient) -> EtcdClient:
    return c  # mypy proves the fake satisfies the protocol


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 20))


class Loads:
    """A load_source whose figures the test changes."""

    def __init__(self, site: str, queues: Iterable[str] = ("sales",)) -> None:
        self.site = site
        self.items = {q: load(site, q) for q in queues}
        self.fail = False

    def __call__(self) -> list[QueueLoad]:
        if self.fail:
            raise RuntimeError("contact centre not ready")
        return list(self.items.values())


FAST: dict[str, Any] = {
    "ttl": 0.3,
    "load_interval": 0.03,
    "backoff_max": 0.05,
    "backoff_initial": 0.01,
}


def make(
    server: FakeEtcd, site: str, group: str | None = None, **kw: Any
) -> tuple[SiteRegistry, Loads, list[FakeClient]]:
    clients: list[FakeClient] = []

    async def connect() -> EtcdClient:
        server.check(group or site)
        c = FakeClient(server, group or site)
        clients.append(c)
        return c

    loads = Loads(site)
    opts = {**FAST, **kw}
    return SiteRegistry(connect, rec(site), load_source=loads, **opts), loads, clients


async def until(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.005)


# --------------------------------------------------------------------------------------------
# SiteRegistry over the fake


def test_two_registries_see_each_other_and_their_load() -> None:
    async def main() -> None:
        s = FakeEtcd()
        views: list[MeshView] = []
        a, _, _ = make(s, "sh", on_view=views.append)
        b, lb, _ = make(s, "gz")
        await a.start()
        await b.start()
        assert a.connected and b.connected
        va = await a.wait_until(lambda v: ("gz", "sales") in v.loads, 2)
        assert set(va.sites) == {"gz"} and va.connected and va.stale_s(0) == 0
        vb = await b.wait_until(lambda v: v.alive("sh"), 2)
        assert "sh" not in a.view().sites  # own site excluded
        assert vb.sites["sh"] == rec("sh")
        # live load moves
        lb.items["sales"] = load("gz", waiting=9, ewt_s=42.0)
        va = await a.wait_until(lambda v: v.loads[("gz", "sales")].waiting == 9, 2)
        assert va.loads_for("sales")[0].ewt_s == 42.0
        assert views and views[-1].alive("gz")
        await a.stop()
        await b.stop()
        assert s.kv == {}  # both revoked their leases

    run(main())


def test_unchanged_load_is_not_republished_every_tick() -> None:
    async def main() -> None:
        s = FakeEtcd()
        a, la, _ = make(s, "sh", load_heartbeat=10.0)
        await a.start()
        before = s.puts
        await asyncio.sleep(0.2)  # ~6 ticks
        assert s.puts == before
        la.items["sales"] = load("sh", waiting=5)
        await until(lambda: s.puts == before + 1)
        # a queue that goes away is deleted
        la.items["vip"] = load("sh", "vip")
        await until(lambda: load_key("sh", "vip") in s.kv)
        del la.items["vip"]
        await until(lambda: load_key("sh", "vip") not in s.kv)
        # a failing load source is logged and skipped; the site stays registered
        la.fail = True
        await asyncio.sleep(0.1)
        assert site_key("sh") in s.kv and a.connected
        await a.stop()

    run(main())


def test_crashed_site_vanishes_when_its_lease_expires_and_rejoins() -> None:
    async def main() -> None:
        s = FakeEtcd()
        a, _, _ = make(s, "sh")
        b, _, _ = make(s, "gz")
        await a.start()
        await b.start()
        await a.wait_until(lambda v: v.alive("gz"), 2)
        lease = b.lease
        assert lease is not None
        await b.stop(revoke=False)  # crash: nothing revoked
        assert site_key("gz") in s.kv
        s.expire(lease)  # the TTL passes
        v = await a.wait_until(lambda v: not v.alive("gz"), 2)
        assert v.loads == {}
        b2, _, _ = make(s, "gz")
        await b2.start()
        await a.wait_until(lambda v: v.alive("gz") and ("gz", "sales") in v.loads, 2)
        await a.stop()
        await b2.stop()

    run(main())


def test_outage_keeps_view_warns_once_and_catches_up(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        s = FakeEtcd()
        t = [1000.0]
        a, _, clients = make(s, "sh", clock=lambda: t[0])
        b, lb, _ = make(s, "gz")
        await a.start()
        await b.start()
        await publish_policy(FakeClient(s, "hq"), "overflow", {"threshold_s": 30})
        await a.wait_until(lambda v: v.alive("gz"), 2)
        await until(lambda: "overflow" in a.policies())
        first_lease = a.lease
        with caplog.at_level(logging.DEBUG, "gateway.mesh.registry"):
            s.partition("sh")
            await until(lambda: not a.connected)
            t[0] = 1010.0
            v = a.view()
            assert v.alive("gz") and not v.connected and v.lost_at == 1000.0
            assert a.stale_s == 10.0
            await asyncio.sleep(0.3)  # several failed retries
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1, [r.message for r in warnings]
            assert "etcd unreachable" in warnings[0].message
            # while sh is away: a new site joins, gz's load moves, HQ changes policy, and
            # sh's lease expires
            c, _, _ = make(s, "bj")
            await c.start()
            lb.items["sales"] = load("gz", waiting=7)
            await until(lambda: json.loads(s.kv[load_key("gz", "sales")][0])["waiting"] == 7)
            await publish_policy(FakeClient(s, "hq"), "overflow", {"threshold_s": 45})
            assert first_lease is not None
            s.expire(first_lease)
            s.heal("sh")
            v = await a.wait_until(lambda v: v.connected, 2)
        assert a.reconnects == 1
        assert v.alive("bj") and v.loads[("gz", "sales")].waiting == 7
        assert a.policies()["overflow"] == {"threshold_s": 45}
        assert a.lease != first_lease and s.lease_of(site_key("sh")) == a.lease
        await b.wait_until(lambda v: v.alive("sh"), 2)
        assert all(cl.closed for cl in clients[:-1])
        # a second outage warns again (once)
        caplog.clear()
        with caplog.at_level(logging.WARNING, "gateway.mesh.registry"):
            s.partition("sh")
            await until(lambda: not a.connected)
            await asyncio.sleep(0.1)
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        s.heal("sh")
        await a.wait_until(lambda v: v.connected, 2)
        assert a.reconnects == 2
        for r in (a, b, c):
            await r.stop()

    run(main())


def test_reconnect_revokes_the_old_lease() -> None:
    # after an etcd restart the old lease lives a full TTL more: what is left on it
    # (a queue dropped during the outage) must go at once
    async def main() -> None:
        s = FakeEtcd()
        a, la, _ = make(s, "sh")
        la.items["vip"] = load("sh", "vip")
        await a.start()
        old = a.lease
        assert old is not None and s.lease_of(load_key("sh", "vip")) == old
        s.partition("sh")
        await until(lambda: not a.connected)
        del la.items["vip"]
        s.heal("sh")
        await a.wait_until(lambda v: v.connected, 2)
        assert old not in s.leases and a.lease in s.leases
        assert load_key("sh", "vip") not in s.kv
        assert s.lease_of(load_key("sh", "sales")) == a.lease
        await a.stop()

    run(main())


def test_start_without_etcd_serves_and_joins_later() -> None:
    async def main() -> None:
        s = FakeEtcd()
        s.partition("sh")
        a, _, _ = make(s, "sh")
        await a.start()
        assert not a.connected
        assert a.view().stale_s(0) == float("inf") and a.view().sites == {}
        s.heal("sh")
        await a.wait_until(lambda v: v.connected, 2)
        assert a.reconnects == 0 and site_key("sh") in s.kv
        await a.stop()

    run(main())


def test_bad_policy_rejected_last_good_kept(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        s = FakeEtcd()
        applied: list[tuple[str, object]] = []
        a, _, _ = make(
            s,
            "sh",
            policy_validator=validate,
            on_policy=lambda n, v: applied.append((n, v)),
        )
        hq = FakeClient(s, "hq")
        await publish_policy(hq, "overflow", {"threshold_s": 30})
        await a.start()
        assert a.policies() == {"overflow": Overflow(30.0)}
        with caplog.at_level(logging.WARNING, "gateway.mesh.registry"):
            await publish_policy(hq, "overflow", {"threshold_s": "soon"})
            await until(lambda: a.policy_rejected == 1)
        assert a.policies() == {"overflow": Overflow(30.0)}
        assert any("rejected" in r.message and "threshold_s" in r.message for r in caplog.records)
        await publish_policy(hq, "overflow", {"threshold_s": 10})
        await until(lambda: a.policies() == {"overflow": Overflow(10.0)})
        await hq.delete(config_key("overflow"))
        await until(lambda: a.policies() == {})
        assert applied == [
            ("overflow", Overflow(30.0)),
            ("overflow", Overflow(10.0)),
            ("overflow", None),
        ]
        await a.stop()

    run(main())


def test_publish_policy_validates_first() -> None:
    async def main() -> None:
        s = FakeEtcd()
        with pytest.raises(ValueError):
            await publish_policy(FakeClient(s, "hq"), "overflow", {}, validator=validate)
        assert s.kv == {}
        await publish_policy(
            FakeClient(s, "hq"), "overflow", {"threshold_s": 5}, validator=validate
        )
        assert json.loads(s.kv[config_key("overflow")][0]) == {"threshold_s": 5}

    run(main())


def test_lease_expired_while_reachable_registers_again() -> None:
    async def main() -> None:
        s = FakeEtcd()
        a, _, _ = make(s, "sh")
        b, _, _ = make(s, "gz")
        await a.start()
        await b.start()
        old = a.lease
        assert old is not None
        s.expire(old)  # e.g. the event loop stalled longer than the TTL
        await until(lambda: a.lease_renewals == 1)
        await b.wait_until(lambda v: v.alive("sh"), 2)
        assert a.connected and a.reconnects == 0 and a.lease != old
        await a.stop()
        await b.stop()

    run(main())


def test_callbacks_that_raise_do_not_break_the_registry() -> None:
    async def main() -> None:
        s = FakeEtcd()

        def boom(_: object, __: object = None) -> None:
            raise RuntimeError("consumer bug")

        a, _, _ = make(s, "sh", on_view=boom, on_policy=boom)
        b, _, _ = make(s, "gz")
        await a.start()
        await b.start()
        await publish_policy(FakeClient(s, "hq"), "hours", {"mon": "9-18"})
        await a.wait_until(lambda v: v.alive("gz"), 2)
        await until(lambda: "hours" in a.policies())
        assert a.connected
        await a.stop()
        await b.stop()

    run(main())


def test_stop_is_idempotent_and_start_twice_refused() -> None:
    async def main() -> None:
        s = FakeEtcd()
        a, _, _ = make(s, "sh")
        await a.start()
        with pytest.raises(RuntimeError):
            await a.start()
        await a.stop()
        await a.stop()
        assert not a.connected

    run(main())
