"""Site -> HQ sync over gRPC with mutual TLS, end to end on 127.0.0.1.

Real pieces: the mesh PKI (gateway.mesh.tls), HqServer over TLS, the site's SqliteSiteStore outbox,
HQ's SqliteCentralStore, and for the crash tests HQ or the site in a child process killed with
SIGKILL mid-stream. Every child is ended by its PID at teardown.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.hq.service import HqServer
from gateway.hq.store import CentralStore, SyncEntry, open_central_store
from gateway.mesh import tls
from gateway.mesh.sync import CustomerFeed, StoreOutbox, SyncClient, lookup, make_channel
from gateway.protos import load
from gateway.store.customers import SiteCustomers
from gateway.store.hlc import Hlc, HlcClock
from gateway.store.merge import CustomerChange
from gateway.store.sqlite import SqliteSiteStore

pytestmark = pytest.mark.integration

pb2, pb2_grpc = load("sync")
ROOT = Path(__file__).resolve().parents[2]


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mesh CA with hq, shanghai and guangzhou; ``rogue/`` is another CA issuing "shanghai"."""
    d = tmp_path_factory.mktemp("pki")
    tls.make_ca(d)
    for name in ("hq", "shanghai", "guangzhou"):
        tls.issue(d, name)
    tls.make_ca(d / "rogue")
    tls.issue(d / "rogue", "shanghai")
    return d


class Children:
    """Child processes of one test, killed by PID at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(self, code: str, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


@pytest.fixture
def children() -> Iterator[Children]:
    c = Children()
    try:
        yield c
    finally:
        c.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _ready(proc: subprocess.Popen[str], timeout: float = 15.0) -> str:
    """The child's READY line (read in a thread so the event loop keeps running)."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout)
    assert line.startswith("READY"), f"child said {line!r}"
    return line.strip()


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def _run(coro: Callable[[], Awaitable[None]], timeout: float = 30.0) -> None:
    asyncio.run(asyncio.wait_for(coro(), timeout))


def _client(site: str, port: int, store: SqliteSiteStore, creds: Any, **kw: Any) -> SyncClient:
    outbox = StoreOutbox(store)
    return SyncClient(
        site,
        f"127.0.0.1:{port}",
        creds,
        peek=outbox.peek,
        trim=outbox.trim,
        depth=outbox.depth,
        **kw,
    )


def _fill_customer_changes(store: SqliteSiteStore, site: str, first: int, n: int) -> None:
    """``n`` outbox entries, each a one-field customer change (HQ appends one history row per
    applied change, so a double apply would show)."""
    wall = 1_700_000_000_000
    with store.transaction() as conn:
        for i in range(first, first + n):
            change = CustomerChange(
                f"C{i % 97}", {"notes": f"n{i}"}, Hlc(wall, i, site), site, "1001"
            )
            store.append_outbox(conn, "customer", change.to_payload())


def _fill_rows(store: SqliteSiteStore, n: int, start_id: int = 1) -> None:
    with store.transaction() as conn:
        for i in range(start_id, start_id + n):
            store.append_outbox(
                conn,
                "interaction",
                {"id": i, "call_id": f"call-{i}", "caller": "+8613800000000", "queue": "sales"},
            )


HQ_CHILD = """
import asyncio, sys
from pathlib import Path
from gateway.hq.service import HqServer
from gateway.hq.store import open_central_store
from gateway.mesh.tls import server_credentials

async def main():
    db, pki, port = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if db == "null":
        from tests.integration.test_hq_sync import NullStore
        store = NullStore()
    else:
        store = await open_central_store("sqlite://" + db)
    hq = HqServer(store, listen="127.0.0.1:" + port, credentials=server_credentials(pki, "hq"))
    await hq.start()
    print("READY", hq.port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

SITE_CHILD = """
import asyncio, sys
from pathlib import Path
from gateway.mesh.sync import StoreOutbox, SyncClient
from gateway.mesh.tls import channel_credentials
from gateway.store.sqlite import SqliteSiteStore

async def main():
    db, pki, target = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    out = StoreOutbox(SqliteSiteStore(db))
    c = SyncClient("shanghai", target, channel_credentials(pki, "shanghai"),
                   peek=out.peek, trim=out.trim, depth=out.depth, batch=200, window=4)
    await c.start()
    print("READY", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class SlowStore:
    """A CentralStore whose look-ups take ``delay_s`` (everything else from ``inner``)."""

    def __init__(self, inner: CentralStore, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s

    async def apply_batch(self, site: str, entries: Sequence[SyncEntry]) -> int:
        return await self.inner.apply_batch(site, entries)

    async def high_water(self, site: str) -> int:
        return await self.inner.high_water(site)

    async def lookup_customers(
        self,
        *,
        phone: str | None = None,
        customer_id: str | None = None,
        region: str | None = None,
        name: str | None = None,
        limit: int = 10,
    ) -> list[dict[str, Any]]:
        await asyncio.sleep(self.delay_s)
        return await self.inner.lookup_customers(
            phone=phone, customer_id=customer_id, region=region, name=name, limit=limit
        )

    async def customer_changes(
        self, after_rev: int, limit: int = 500
    ) -> list[tuple[int, dict[str, Any]]]:
        return await self.inner.customer_changes(after_rev, limit)

    async def counts(self) -> dict[str, int]:
        return await self.inner.counts()

    async def close(self) -> None:
        await self.inner.close()


class NullStore:
    """A CentralStore that keeps only high-water marks (for measuring the transport)."""

    def __init__(self) -> None:
        self.hw: dict[str, int] = {}

    async def apply_batch(self, site: str, entries: Sequence[SyncEntry]) -> int:
        hw = self.hw.get(site, 0)
        self.hw[site] = max([hw, *(e.seq for e in entries)])
        return self.hw[site]

    async def high_water(self, site: str) -> int:
        return self.hw.get(site, 0)

    async def lookup_customers(self, **kw: Any) -> list[dict[str, Any]]:
        return []

    async def customer_changes(
        self, after_rev: int, limit: int = 500
    ) -> list[tuple[int, dict[str, Any]]]:
        return []

    async def counts(self) -> dict[str, int]:
        return {}

    async def close(self) -> None:
        pass


# -- tests ---------------------------------------------------------------------------------------


def test_mutual_tls_sync_lookup_and_vip_push(pki: Path, tmp_path: Path) -> None:
    async def main() -> None:
        central = await open_central_store(f"sqlite://{tmp_path / 'hq.db'}")
        hq = HqServer(
            central,
            listen="127.0.0.1:0",
            credentials=tls.server_credentials(pki, "hq"),
            grace_s=0.2,
            poll_s=5.0,
        )
        port = await hq.start()
        site_db = SqliteSiteStore(tmp_path / "shanghai.db")
        customers = SiteCustomers(site_db, "shanghai")
        clock = HlcClock("shanghai", lambda: int(time.time() * 1000))
        customers.upsert(
            "C1", {"phones": ["+8613800000001"], "name": "Li Lei"}, "1001", clock=clock
        )
        _fill_rows(site_db, 100)
        sh = _client("shanghai", port, site_db, tls.channel_credentials(pki, "shanghai"))
        sh_updates: list[dict[str, Any]] = []
        gz_updates: list[dict[str, Any]] = []
        sh_feed = CustomerFeed(
            "shanghai",
            f"127.0.0.1:{port}",
            tls.channel_credentials(pki, "shanghai"),
            on_update=lambda rev, c: sh_updates.append(c),
        )
        gz_channel = make_channel(f"127.0.0.1:{port}", tls.channel_credentials(pki, "guangzhou"))
        gz_feed = CustomerFeed(
            "guangzhou",
            "",
            None,
            channel=gz_channel,
            on_update=lambda rev, c: gz_updates.append(c),
        )
        await sh.start()
        await sh_feed.start()
        await gz_feed.start()
        try:
            await _until(lambda: sh.acked_seq == 101)
            assert sh.connected
            assert hq.high_water == {"shanghai": 101}
            counts = await central.counts()
            assert counts["interactions"] == 100 and counts["customers"] == 1
            await _until(lambda: site_db.outbox_depth() == 0)

            # Another site looks the caller up at HQ within the 50 ms budget.
            await lookup(gz_channel, phone="+8613800000001", budget_s=2.0)  # warm TLS
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            found = await lookup(gz_channel, phone="+86 138 0000 0001", site="guangzhou")
            assert loop.time() - t0 < 0.05
            assert found is not None and [c["customer_id"] for c in found] == ["C1"]
            assert await lookup(sh, name="li lei") is not None  # through the client's channel

            # HQ flags C1 as VIP: pushed to shanghai (which serves C1), not to guangzhou.
            await _until(lambda: len(sh_updates) == 1)
            vip = CustomerChange("C1", {"vip": True}, clock.tick(), "hq", "admin")
            await central.apply_batch("hq", [SyncEntry(1, "customer", vip.to_payload(), 0.0)])
            hq.notify_changes()
            await _until(lambda: len(sh_updates) == 2, timeout=2.0)  # long before poll_s
            assert sh_updates[-1]["vip"] is True
            customers.apply_remote_record(sh_updates[-1])
            assert customers.get("C1")["vip"] is True  # type: ignore[index]
            await asyncio.sleep(0.2)
            assert gz_updates == []
        finally:
            await gz_feed.stop()
            await gz_channel.close()
            await sh_feed.stop()
            await sh.stop()
            await hq.stop()
            await central.close()
            site_db.close()

    _run(main)


def test_client_from_another_ca_or_without_certificate_is_refused(
    pki: Path, tmp_path: Path
) -> None:
    async def main() -> None:
        central = NullStore()
        hq = HqServer(central, listen="127.0.0.1:0", credentials=tls.server_credentials(pki, "hq"))
        port = await hq.start()
        site_db = SqliteSiteStore(tmp_path / "site.db")
        _fill_rows(site_db, 10)
        rogue_creds = tls.channel_credentials(pki / "rogue", "shanghai")
        # The rogue client trusts its own CA only; give it ours too so only HQ's check decides.
        ca = (pki / "ca.pem").read_bytes() + (pki / "rogue" / "ca.pem").read_bytes()
        rogue_creds = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=(pki / "rogue" / "shanghai-key.pem").read_bytes(),
            certificate_chain=(pki / "rogue" / "shanghai.pem").read_bytes(),
        )
        rogue = _client("shanghai", port, site_db, rogue_creds, backoff_max=0.2)
        await rogue.start()
        no_cert = make_channel(
            f"127.0.0.1:{port}", grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())
        )
        try:
            await asyncio.sleep(1.0)
            assert not rogue.connected
            assert rogue.acked_seq == 0
            assert "UNAVAILABLE" in rogue.last_error
            assert hq.high_water == {} and central.hw == {}
            assert await lookup(rogue, phone="+86138", budget_s=0.5) is None
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await pb2_grpc.HqStub(no_cert).Lookup(pb2.LookupRequest(phone="1"), timeout=2)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert site_db.outbox_depth() == 10  # nothing lost either
        finally:
            await no_cert.close()
            await rogue.stop()
            await hq.stop()
            site_db.close()

    _run(main)


def test_site_claiming_another_sites_name_is_refused(pki: Path, tmp_path: Path) -> None:
    async def main() -> None:
        central = NullStore()
        hq = HqServer(central, listen="127.0.0.1:0", credentials=tls.server_credentials(pki, "hq"))
        port = await hq.start()
        site_db = SqliteSiteStore(tmp_path / "site.db")
        _fill_rows(site_db, 10)
        creds = tls.channel_credentials(pki, "shanghai")
        liar = _client("guangzhou", port, site_db, creds, backoff_max=0.2)
        await liar.start()
        channel = make_channel(f"127.0.0.1:{port}", creds)
        try:
            await _until(lambda: "PERMISSION_DENIED" in liar.last_error, timeout=5)
            assert "certificate is for 'shanghai'" in liar.last_error
            assert not liar.connected and central.hw == {}
            stub = pb2_grpc.HqStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.Changes(pb2.ChangesRequest(site="guangzhou"), timeout=2):
                    pass
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert await lookup(channel, phone="1", site="guangzhou", budget_s=1.0) is None
            assert await lookup(channel, phone="1", site="shanghai", budget_s=1.0) == []
        finally:
            await channel.close()
            await liar.stop()
            await hq.stop()
            site_db.close()

    _run(main)


def test_hq_killed_mid_stream_and_restarted_applies_everything_exactly_once(
    pki: Path, tmp_path: Path, children: Children
) -> None:
    n_before, n_during = 20_000, 500
    db = str(tmp_path / "hq.db")
    port = _free_port()

    async def main() -> None:
        site_db = SqliteSiteStore(tmp_path / "shanghai.db")
        _fill_customer_changes(site_db, "shanghai", 1, n_before)
        first = children.spawn(HQ_CHILD, db, str(pki), str(port))
        await _ready(first)
        client = _client(
            "shanghai",
            port,
            site_db,
            tls.channel_credentials(pki, "shanghai"),
            batch=200,
            backoff_max=0.3,
        )
        await client.start()
        try:
            await _until(lambda: client.acked_seq >= 3000)
            os.kill(first.pid, signal.SIGKILL)  # kill -9 mid-stream
            first.wait(timeout=5)
            assert client.acked_seq < n_before
            await _until(lambda: not client.connected, timeout=5)
            # The site keeps working: new writes queue up behind the backlog.
            _fill_customer_changes(site_db, "shanghai", n_before + 1, n_during)
            second = children.spawn(HQ_CHILD, db, str(pki), str(port))
            await _ready(second)
            await _until(lambda: client.acked_seq == n_before + n_during, timeout=20)
            await _until(lambda: site_db.outbox_depth() == 0)
            second.kill()
            second.wait(timeout=5)
        finally:
            await client.stop()
        central = await open_central_store(f"sqlite://{db}")
        try:
            assert await central.high_water("shanghai") == n_before + n_during
            counts = await central.counts()
            # one history row per applied change: a change applied twice would add a row
            assert counts["customer_history"] == n_before + n_during
            assert counts["customers"] == 97
        finally:
            await central.close()
            site_db.close()

    _run(main, timeout=60)


def test_site_killed_mid_stream_resumes_without_loss_or_duplicates(
    pki: Path, tmp_path: Path, children: Children
) -> None:
    n = 20_000
    site_path = tmp_path / "shanghai.db"

    async def main() -> None:
        central = await open_central_store(f"sqlite://{tmp_path / 'hq.db'}")
        hq = HqServer(
            central,
            listen="127.0.0.1:0",
            credentials=tls.server_credentials(pki, "hq"),
            grace_s=0.2,
        )
        port = await hq.start()
        site_db = SqliteSiteStore(site_path)
        _fill_customer_changes(site_db, "shanghai", 1, n)
        child = children.spawn(SITE_CHILD, str(site_path), str(pki), f"127.0.0.1:{port}")
        await _ready(child)
        try:
            await _until(lambda: hq.applied_total >= 3000)
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=5)
            assert hq.applied_total < n
            client = _client("shanghai", port, site_db, tls.channel_credentials(pki, "shanghai"))
            await client.start()
            try:
                await _until(lambda: client.acked_seq == n, timeout=20)
            finally:
                await client.stop()
            assert site_db.outbox_depth() == 0
            assert hq.applied_total == n
            counts = await central.counts()
            assert counts["customer_history"] == n
        finally:
            await hq.stop()
            await central.close()
            site_db.close()

    _run(main, timeout=60)


def test_lookup_never_waits_longer_than_its_budget(pki: Path, tmp_path: Path) -> None:
    async def main() -> None:
        central = await open_central_store(f"sqlite://{tmp_path / 'hq.db'}")
        slow = SlowStore(central, delay_s=0.0)
        hq = HqServer(
            slow, listen="127.0.0.1:0", credentials=tls.server_credentials(pki, "hq"), grace_s=0.1
        )
        port = await hq.start()
        channel = make_channel(f"127.0.0.1:{port}", tls.channel_credentials(pki, "shanghai"))
        loop = asyncio.get_running_loop()
        try:
            assert await lookup(channel, phone="+8613800000009", budget_s=2.0) == []
            times = []
            for _ in range(20):
                t0 = loop.time()
                assert await lookup(channel, phone="+8613800000009") == []
                times.append(loop.time() - t0)
            assert max(times) < 0.05
            slow.delay_s = 0.5  # HQ is slow
            for budget in (0.05, 0.02):
                t0 = loop.time()
                assert await lookup(channel, phone="+8613800000009", budget_s=budget) is None
                assert loop.time() - t0 < budget + 0.02
            await hq.stop()  # HQ is down
            for _ in range(3):
                t0 = loop.time()
                assert await lookup(channel, phone="+8613800000009") is None
                assert loop.time() - t0 < 0.07
        finally:
            await channel.close()
            await hq.stop()
            await central.close()

    _run(main)


@pytest.mark.slow
def test_throughput_site_to_hq(pki: Path, tmp_path: Path, children: Children) -> None:
    """Site (this process) -> HQ (a child process, as deployed) over TLS on loopback.

    Measures the drain rate of a 40,000-entry backlog, then the sync lag while the site writes
    20,000 records/s (1,000 every 50 ms, on a thread like the site's writer). Prints one JSON
    line per HQ store; asserts conservative floors (shared CI machines vary)."""
    results: list[dict[str, Any]] = []

    async def measure(label: str, db: str, site_path: Path) -> None:
        port = _free_port()
        await _ready(children.spawn(HQ_CHILD, db, str(pki), str(port)))
        site_db = SqliteSiteStore(site_path)
        backlog = 40_000
        _fill_rows(site_db, backlog)
        client = _client("shanghai", port, site_db, tls.channel_credentials(pki, "shanghai"))
        t0 = time.perf_counter()
        await client.start()
        try:
            await _until(lambda: client.acked_seq == backlog, timeout=30)
            drain = backlog / (time.perf_counter() - t0)
            client.lag_samples.clear()
            next_id = backlog + 1
            start = time.perf_counter()
            for tick in range(60):
                await asyncio.to_thread(_fill_rows, site_db, 1000, next_id)
                client.notify()
                next_id += 1000
                delay = start + (tick + 1) * 0.05 - time.perf_counter()
                await asyncio.sleep(max(0.0, delay))
            offered = 60_000 / (time.perf_counter() - start)
            await _until(lambda: client.acked_seq == next_id - 1, timeout=30)
            results.append(
                {
                    "hq_store": label,
                    "drain_records_per_s": round(drain),
                    "steady_offered_per_s": round(offered),
                    "lag_p50_s": round(client.lag_quantile(0.5), 3),
                    "lag_p99_s": round(client.lag_quantile(0.99), 3),
                }
            )
        finally:
            await client.stop()
            site_db.close()

    async def main() -> None:
        await measure("null", "null", tmp_path / "a.db")
        await measure("sqlite", str(tmp_path / "hq.db"), tmp_path / "b.db")

    _run(main, timeout=120)
    for r in results:
        print(json.dumps(r))
    for r in results:
        assert r["drain_records_per_s"] > 5_000
        assert r["lag_p99_s"] < 2.0
