"""SyncClient, lookup and CustomerFeed against a real in-process grpc.aio HqServer (plaintext,
127.0.0.1, port 0) with a small typed in-memory CentralStore and an in-memory outbox."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import pytest

from gateway.hq.service import HqServer, serves
from gateway.hq.store import CentralStore, SyncEntry
from gateway.mesh.sync import Backoff, CustomerFeed, SyncClient, lookup, make_channel
from gateway.protos import load
from gateway.store.model import OutboxEntry

pb2, pb2_grpc = load("sync")


class FakeCentralStore:
    """In-memory CentralStore: per-site high water, applied entries, a customer change log."""

    def __init__(self) -> None:
        self.hw: dict[str, int] = {}
        self.applied: dict[str, list[SyncEntry]] = {}
        self.calls = 0
        self.customers: list[dict[str, Any]] = []
        self.changes: list[tuple[int, dict[str, Any]]] = []
        self.apply_gate: asyncio.Event | None = None
        self.lookup_delay_s = 0.0

    async def apply_batch(self, site: str, entries: Sequence[SyncEntry]) -> int:
        if self.apply_gate is not None:
            await self.apply_gate.wait()
        self.calls += 1
        hw = self.hw.get(site, 0)
        for e in entries:
            if e.seq > hw:
                self.applied.setdefault(site, []).append(e)
                hw = e.seq
        self.hw[site] = hw
        return hw

    async def high_water(self, site: str) -> int:
        return self.hw.get(site, 0)

    async def lookup_customers(
        self,
        *,
        phone: str | None = None,
        customer_id: str | None = None,
        region: str | None = None,
        name: str | None = None,
        limit: int = 10,
    ) -> list[dict[str, Any]]:
        if self.lookup_delay_s:
            await asyncio.sleep(self.lookup_delay_s)
        out = [
            c
            for c in self.customers
            if (phone is None or c.get("phone") == phone)
            and (customer_id is None or c.get("id") == customer_id)
            and (region is None or c.get("region") == region)
            and (name is None or name in c.get("name", ""))
        ]
        return out[:limit]

    async def customer_changes(
        self, after_rev: int, limit: int = 500
    ) -> list[tuple[int, dict[str, Any]]]:
        return [(r, c) for r, c in self.changes if r > after_rev][:limit]

    async def counts(self) -> dict[str, int]:
        return {"customers": len(self.customers)}

    async def close(self) -> None:
        pass

    def change(self, customer: dict[str, Any]) -> int:
        rev = len(self.changes) + 1
        self.changes.append((rev, customer))
        return rev

    def seqs(self, site: str) -> list[int]:
        return [e.seq for e in self.applied.get(site, [])]


def _typed(store: FakeCentralStore) -> CentralStore:
    return store  # mypy checks the fake against the Protocol here


class FakeOutbox:
    """In-memory outbox with the site store's peek/trim/depth semantics."""

    def __init__(self, clock: Callable[[], float] = lambda: 1000.0) -> None:
        self.entries: list[OutboxEntry] = []
        self.next_seq = 1
        self.clock = clock
        self.trim_enabled = True
        self.nonempty_peeks = 0

    def add(self, n: int, kind: str = "cdr", ts: float | None = None) -> None:
        for _ in range(n):
            seq = self.next_seq
            self.next_seq += 1
            created = self.clock() if ts is None else ts
            self.entries.append(OutboxEntry(seq, kind, {"n": seq}, created))

    async def peek(self, after_seq: int, limit: int) -> list[OutboxEntry]:
        out = [e for e in self.entries if e.seq > after_seq][:limit]
        if out and limit > 1:  # not the client's 1-entry look at the head (for lag)
            self.nonempty_peeks += 1
        return out

    async def trim(self, upto_seq: int) -> int:
        if not self.trim_enabled:
            return 0
        before = len(self.entries)
        self.entries = [e for e in self.entries if e.seq > upto_seq]
        return before - len(self.entries)

    async def depth(self) -> int:
        return len(self.entries)


def _client(outbox: FakeOutbox, port: int, **kw: Any) -> SyncClient:
    return SyncClient(
        "shanghai",
        f"127.0.0.1:{port}",
        None,
        peek=outbox.peek,
        trim=outbox.trim,
        depth=outbox.depth,
        **kw,
    )


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def _run(coro: Callable[[], Awaitable[None]], timeout: float = 20.0) -> None:
    asyncio.run(asyncio.wait_for(coro(), timeout))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_batches_arrive_in_order_and_acks_trim() -> None:
    async def main() -> None:
        store = FakeCentralStore()
        hq = HqServer(_typed(store), listen="127.0.0.1:0", credentials=None, grace_s=0.1)
        port = await hq.start()
        outbox = FakeOutbox()
        outbox.add(1234)
        client = _client(outbox, port, batch=100, window=4)
        await client.start()
        try:
            await _until(lambda: client.acked_seq == 1234)
            await _until(lambda: not outbox.entries)
            assert store.seqs("shanghai") == list(range(1, 1235))
            assert client.connected
            assert client.acked_total == 1234
            assert hq.applied_total == 1234 and hq.duplicates_total == 0
            assert hq.high_water == {"shanghai": 1234}
            assert client.applied_rate > 0
            outbox.add(5)  # new writes flow on the same stream
            client.notify()
            await _until(lambda: client.acked_seq == 1239)
            assert store.seqs("shanghai")[-5:] == [1235, 1236, 1237, 1238, 1239]
            await client.refresh()
            assert client.outbox_depth == 0
            assert client.lag_s == 0.0
        finally:
            await client.stop()
            await hq.stop()

    _run(main)


def test_window_bounds_batches_in_flight_and_lag_counts_unacked() -> None:
    now = [2000.0]

    async def main() -> None:
        store = FakeCentralStore()
        store.apply_gate = asyncio.Event()  # HQ accepts batches but applies none yet
        hq = HqServer(_typed(store), listen="127.0.0.1:0", credentials=None, grace_s=0.1)
        port = await hq.start()
        outbox = FakeOutbox()
        outbox.add(1000, ts=1990.0)
        client = _client(outbox, port, batch=50, window=3, clock=lambda: now[0])
        await client.start()
        try:
            # window batches sent plus one peeked and staged, then the sender waits for room.
            await _until(lambda: outbox.nonempty_peeks == 4)
            await asyncio.sleep(0.2)
            assert outbox.nonempty_peeks == 4
            assert client.acked_seq == 0
            assert client.lag_s == pytest.approx(10.0)
            await client.refresh()
            assert client.outbox_depth == 1000
            store.apply_gate.set()
            await _until(lambda: client.acked_seq == 1000)
            await _until(lambda: not outbox.entries)
            assert store.seqs("shanghai") == list(range(1, 1001))
            assert client.lag_quantile(0.99) == pytest.approx(10.0)
        finally:
            await client.stop()
            await hq.stop()

    _run(main)


def test_hq_down_site_keeps_working_then_drains_in_order() -> None:
    now = [5000.0]

    async def main() -> None:
        port = _free_port()
        outbox = FakeOutbox(clock=lambda: now[0])
        outbox.add(10)
        client = _client(outbox, port, backoff_max=0.2, clock=lambda: now[0], stats_interval_s=0.05)
        await client.start()
        try:
            await asyncio.sleep(0.3)
            assert not client.connected
            now[0] += 7.5
            outbox.add(10)  # the site keeps writing; the outbox grows
            await client.refresh()
            assert client.outbox_depth == 20
            assert client.lag_s == pytest.approx(7.5)
            store = FakeCentralStore()
            hq = HqServer(_typed(store), listen=f"127.0.0.1:{port}", credentials=None, grace_s=0.1)
            await hq.start()
            try:
                await _until(lambda: client.acked_seq == 20)
                assert store.seqs("shanghai") == list(range(1, 21))
                await _until(lambda: client.outbox_depth == 0)
                assert client.lag_s == 0.0
            finally:
                await hq.stop()
        finally:
            await client.stop()

    _run(main)


def test_restart_resumes_after_hq_high_water_and_applies_nothing_twice() -> None:
    async def main() -> None:
        store = FakeCentralStore()
        hq = HqServer(_typed(store), listen="127.0.0.1:0", credentials=None, grace_s=0.1)
        port = await hq.start()
        outbox = FakeOutbox()
        outbox.trim_enabled = False  # the site dies before it can trim: acked rows remain
        outbox.add(300)
        first = _client(outbox, port, batch=64)
        await first.start()
        await _until(lambda: first.acked_seq == 300)
        await first.stop()
        assert len(outbox.entries) == 300
        outbox.trim_enabled = True
        outbox.add(50)
        second = _client(outbox, port, batch=64)  # a restarted site: knows nothing
        await second.start()
        try:
            await _until(lambda: second.acked_seq == 350)
            # the hello told the site where HQ was: it trimmed and sent only the new entries
            assert store.seqs("shanghai") == list(range(1, 351))
            assert hq.duplicates_total == 0
            await _until(lambda: not outbox.entries)
        finally:
            await second.stop()
            await hq.stop()

    _run(main)


def test_hq_restart_mid_stream_delivers_everything_exactly_once() -> None:
    async def main() -> None:
        store = FakeCentralStore()
        hq = HqServer(_typed(store), listen="127.0.0.1:0", credentials=None, grace_s=0.0)
        port = await hq.start()
        outbox = FakeOutbox()
        outbox.add(20_000)
        client = _client(outbox, port, batch=200, window=8, backoff_max=0.2)
        await client.start()
        try:
            await _until(lambda: client.acked_seq > 2000)
            await hq.stop()  # mid-stream
            assert client.acked_seq < 20_000
            outbox.add(100)
            hq = HqServer(_typed(store), listen=f"127.0.0.1:{port}", credentials=None, grace_s=0.1)
            await hq.start()
            await _until(lambda: client.acked_seq == 20_100, timeout=10)
            assert store.seqs("shanghai") == list(range(1, 20_101))
            assert client.reconnects >= 1
        finally:
            await client.stop()
            await hq.stop()

    _run(main)


def test_duplicate_entries_are_skipped_and_a_second_stream_supersedes_the_first() -> None:
    def batch(*seqs: int) -> Any:
        return pb2.SyncBatch(
            entries=[
                pb2.SyncEntry(seq=s, kind="cdr", payload_json=b'{"a":1}', created_ts=1.0)
                for s in seqs
            ]
        )

    async def main() -> None:
        store = FakeCentralStore()
        hq = HqServer(_typed(store), listen="127.0.0.1:0", credentials=None, grace_s=0.1)
        port = await hq.start()
        channel = make_channel(f"127.0.0.1:{port}", None)
        stub = pb2_grpc.HqStub(channel)
        try:
            old = stub.Sync()
            await old.write(pb2.SyncBatch(site="gz"))
            assert (await old.read()).hello
            await old.write(batch(1, 2, 3))
            assert (await old.read()).high_water == 3
            new = stub.Sync()
            await new.write(pb2.SyncBatch(site="gz"))
            hello = await new.read()
            assert hello.hello and hello.high_water == 3
            await new.write(batch(2, 3, 4))  # a resend overlapping what HQ has
            ack = await new.read()
            assert ack.high_water == 4 and ack.received == 3
            assert store.seqs("gz") == [1, 2, 3, 4]
            assert hq.duplicates_total == 2
            await old.write(batch(5))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await old.read()
            assert err.value.code() == grpc.StatusCode.ABORTED
            assert store.seqs("gz") == [1, 2, 3, 4]
            bad = stub.Sync()
            await bad.write(pb2.SyncBatch(site=""))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await bad.read()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            new.cancel()
        finally:
            await channel.close()
            await hq.stop()

    _run(main)


def test_lookup_answers_within_budget_and_none_when_slow_or_down() -> None:
    async def main() -> None:
        store = FakeCentralStore()
        store.customers = [
            {"id": "c1", "phone": "+8613800000001", "name": "Li Lei", "region": "cn-east"},
            {"id": "c2", "phone": "+8613800000002", "name": "Han Meimei", "region": "cn-east"},
        ]
        hq = HqServer(_typed(store), listen="127.0.0.1:0", credentials=None, grace_s=0.1)
        port = await hq.start()
        channel = make_channel(f"127.0.0.1:{port}", None)
        loop = asyncio.get_running_loop()
        try:
            await lookup(channel, phone="+8613800000001", budget_s=2.0)  # warm the connection
            t0 = loop.time()
            got = await lookup(channel, phone="+8613800000001")
            assert loop.time() - t0 < 0.05
            assert got == [store.customers[0]]
            assert await lookup(channel, region="cn-east", limit=1) == [store.customers[0]]
            assert await lookup(channel, name="Mei") == [store.customers[1]]
            assert await lookup(channel, phone="+8600") == []
            assert await lookup(channel) is None  # no field: INVALID_ARGUMENT -> None
            store.lookup_delay_s = 1.0
            t0 = loop.time()
            assert await lookup(channel, phone="+8613800000001", budget_s=0.05) is None
            assert loop.time() - t0 < 0.08
        finally:
            await channel.close()
            await hq.stop()
        down = make_channel(f"127.0.0.1:{_free_port()}", None)
        try:
            t0 = loop.time()
            assert await lookup(down, phone="+8613800000001", budget_s=0.05) is None
            assert loop.time() - t0 < 0.08
        finally:
            await down.close()
        assert await lookup(object(), phone="x") is None

    _run(main)


def test_customer_feed_pushes_relevant_changes_and_resumes_after_reconnect() -> None:
    async def main() -> None:
        store = FakeCentralStore()
        store.change({"id": "c1", "sites": ["shanghai"], "vip": False})
        store.change({"id": "c2", "sites": ["guangzhou"], "vip": True})
        store.change({"id": "c3", "region": "cn-east", "vip": True})
        hq = HqServer(
            _typed(store),
            listen="127.0.0.1:0",
            credentials=None,
            grace_s=0.1,
            poll_s=5.0,
            site_regions={"shanghai": ["cn-east"]},
        )
        port = await hq.start()
        got: list[tuple[int, str, bool]] = []

        async def on_update(rev: int, customer: dict[str, Any]) -> None:
            got.append((rev, customer["id"], customer["vip"]))

        feed = CustomerFeed(
            "shanghai", f"127.0.0.1:{port}", None, on_update=on_update, backoff_max=0.2
        )
        await feed.start()
        try:
            await _until(lambda: len(got) == 2)
            assert got == [(1, "c1", False), (3, "c3", True)]
            store.change({"id": "c1", "sites": ["shanghai"], "vip": True})  # flagged VIP at HQ
            hq.notify_changes()
            await _until(lambda: len(got) == 3, timeout=2.0)  # well before the 5 s poll
            assert got[-1] == (4, "c1", True)
            await hq.stop()
            store.change({"id": "c4", "sites": ["shanghai"], "vip": True})
            hq = HqServer(_typed(store), listen=f"127.0.0.1:{port}", credentials=None, grace_s=0.1)
            await hq.start()
            await _until(lambda: len(got) == 4)
            assert got[-1] == (5, "c4", True)
            assert feed.last_rev == 5
        finally:
            await feed.stop()
            await hq.stop()

    _run(main)


def test_serves() -> None:
    assert serves("sh", {"sites": ["sh", "gz"]})
    assert not serves("bj", {"sites": ["sh", "gz"]})
    assert serves("sh", {"home_site": "sh"})
    assert serves("sh", {"site": "gz", "region": "cn-east"}, regions=["cn-east"])
    assert not serves("sh", {"region": "cn-south"}, regions=["cn-east"])
    assert serves("sh", {"id": "c9"})  # no routing info: every site
    assert serves("shanghai", {"region": "shanghai"})
    merged = {"customer_id": "C1", "region": None, "_stamps": {"vip": {"site": "hq"}}}
    assert serves("hq", merged)
    assert not serves("sh", merged)
    assert serves("sh", {**merged, "_stamps": {"vip": {"site": "hq"}, "name": {"site": "sh"}}})


def test_backoff_doubles_to_the_cap_with_jitter_and_resets() -> None:
    b = Backoff(0.1, 1.0, rand=lambda: 1.0)
    assert [round(b.next_delay(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next_delay() == pytest.approx(0.1)
    low = Backoff(0.1, 1.0, rand=lambda: 0.0)
    assert low.next_delay() == pytest.approx(0.05)


def test_client_rejects_bad_settings() -> None:
    outbox = FakeOutbox()
    with pytest.raises(ValueError):
        _client(outbox, 1, batch=0)
