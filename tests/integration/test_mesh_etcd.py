"""The mesh registry against a real etcd v3 server (tests/integration/etcd_server.py).

Leases use ttl=2 s to keep the tests fast. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.mesh.etcd import EtcdClient, EtcdUnavailable, connect
from gateway.mesh.registry import (
    MeshView,
    QueueLoad,
    SiteRecord,
    SiteRegistry,
    publish_policy,
    site_key,
)

try:
    from .etcd_server import ETCD_BIN, EtcdServer
except ImportError:
    from etcd_server import ETCD_BIN, EtcdServer  # type: ignore[no-redef]

pytestmark = pytest.mark.integration

T = TypeVar("T")
TTL = 2.0


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A started etcd on free loopback ports; killed by PID at teardown."""
    if ETCD_BIN is None:
        pytest.skip("etcd binary not found (apt-get install etcd-server)")
    server = EtcdServer(tmp_path / "etcd")
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def run(coro: Coroutine[Any, Any, T], timeout: float = 40.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Loads:
    """The site's queue figures; the test moves them."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.waiting = 0

    def __call__(self) -> list[QueueLoad]:
        return [
            QueueLoad(
                site=self.site,
                queue="sales",
                waiting=self.waiting,
                available=3,
                available_by_skill={"sales": 3},
                logged_in_by_skill={"sales": 4},
                ewt_s=5.0 * self.waiting,
                service_level=0.9,
                oldest_wait_s=0.0,
                ts=time.time(),
            )
        ]


@dataclass
class Gate:
    """Lets a test hold one registry away from etcd while others reach it."""

    endpoint: str
    open: bool = True
    access: Any = None  # gateway.mesh.etcd.EtcdAccess: TLS, user

    async def connect(self) -> EtcdClient:
        if not self.open:
            raise EtcdUnavailable("gate closed by the test")
        return await connect([self.endpoint], op_timeout=1.0, access=self.access)


def registry(
    endpoint: str, site: str, access: Any = None, **kw: Any
) -> tuple[SiteRegistry, Loads, Gate]:
    gate = Gate(endpoint, access=access)
    loads = Loads(site)
    me = SiteRecord(
        site=site,
        region="cn",
        sip="127.0.0.1:5070",
        handoff="127.0.0.1:7070",
        http="127.0.0.1:8070",
        skills=("sales",),
        started=time.time(),
    )
    kw.setdefault("ttl", TTL)
    kw.setdefault("backoff_max", 0.5)
    return SiteRegistry(gate.connect, me, load_source=loads, **kw), loads, gate


async def wait_view(
    reg: SiteRegistry, pred: Callable[[MeshView], bool], timeout: float, what: str
) -> MeshView:
    try:
        return await reg.wait_until(pred, timeout)
    except TimeoutError:
        pytest.fail(f"{reg.me.site}: {what} not seen within {timeout}s; view={reg.view()}")


async def wait_true(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not true within {timeout}s")
        await asyncio.sleep(0.02)


def test_two_sites_see_each_other_and_live_load(etcd: EtcdServer) -> None:
    async def main() -> None:
        a, _, _ = registry(etcd.endpoint, "sh")
        b, lb, _ = registry(etcd.endpoint, "gz")
        try:
            await a.start()
            await b.start()
            assert a.connected and b.connected
            va = await wait_view(a, lambda v: ("gz", "sales") in v.loads, 1.5, "gz's load")
            vb = await wait_view(b, lambda v: ("sh", "sales") in v.loads, 1.5, "sh's load")
            assert va.sites["gz"].handoff == "127.0.0.1:7070" and "sh" not in va.sites
            assert vb.loads[("sh", "sales")].available_by_skill == {"sales": 3}
            lb.waiting = 4  # published at the next tick (load_interval 1 s)
            va = await wait_view(
                a, lambda v: v.loads[("gz", "sales")].waiting == 4, 1.5, "gz's new load"
            )
            assert va.loads_for("sales")[0].ewt_s == 20.0
        finally:
            await a.stop()
            await b.stop()

    run(main())


def test_crashed_site_vanishes_within_ttl_and_rejoins(etcd: EtcdServer) -> None:
    async def main() -> None:
        a, _, _ = registry(etcd.endpoint, "sh")
        b, _, _ = registry(etcd.endpoint, "gz")
        b2, _, _ = registry(etcd.endpoint, "gz")
        try:
            await a.start()
            await b.start()
            await wait_view(a, lambda v: v.alive("gz"), 1.5, "gz")
            t0 = time.monotonic()
            await b.stop(revoke=False)  # crash: the lease is left to expire
            v = await wait_view(a, lambda v: not v.alive("gz"), TTL + 1.0, "gz gone")
            gone_after = time.monotonic() - t0
            assert v.loads == {}  # its load left with it
            assert gone_after > 0.3, "the site must be held by its lease, not deleted at stop"
            await b2.start()
            await wait_view(a, lambda v: ("gz", "sales") in v.loads, 1.5, "gz back")
        finally:
            await a.stop()
            await b2.stop()

    run(main())


def test_clean_stop_removes_the_site_at_once(etcd: EtcdServer) -> None:
    async def main() -> None:
        a, _, _ = registry(etcd.endpoint, "sh")
        b, _, _ = registry(etcd.endpoint, "gz", ttl=30.0)
        try:
            await a.start()
            await b.start()
            await wait_view(a, lambda v: v.alive("gz"), 1.5, "gz")
            await b.stop()
            await wait_view(a, lambda v: not v.alive("gz") and not v.loads, 0.5, "gz gone")
            client = await connect([etcd.endpoint])
            try:
                items, _ = await client.get_prefix("/ccgw/")
            finally:
                await client.close()
            assert [k for k, _ in items if "gz" in k] == []
        finally:
            await a.stop()

    run(main())


def test_etcd_outage_keeps_serving_and_catches_up(
    etcd: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        a, _, gate = registry(etcd.endpoint, "sh")
        b, lb, _ = registry(etcd.endpoint, "gz")
        hq = await connect([etcd.endpoint])
        bj: EtcdClient | None = None
        try:
            await publish_policy(hq, "overflow", {"threshold_s": 30})
            await hq.close()
            await a.start()
            await b.start()
            await wait_view(a, lambda v: ("gz", "sales") in v.loads, 1.5, "gz")
            assert a.policies() == {"overflow": {"threshold_s": 30}}

            caplog.clear()
            with caplog.at_level(logging.WARNING, "gateway.mesh.registry"):
                await asyncio.to_thread(etcd.stop)
                await wait_true(lambda: not a.connected, 3.0, "sh sees the outage")
                v = a.view()
                assert v.alive("gz") and ("gz", "sales") in v.loads  # last view kept
                assert v.lost_at is not None and a.stale_s >= 0.0
                await asyncio.sleep(1.5)  # several retries, all failing
                # sh stays away while etcd comes back and the mesh changes
                gate.open = False
                await asyncio.to_thread(etcd.start)
                mine = [
                    r
                    for r in caplog.records
                    if r.name == "gateway.mesh.registry"
                    and r.levelno >= logging.WARNING
                    and "site sh " in r.getMessage()
                ]
            assert len(mine) == 1, [r.getMessage() for r in mine]
            assert "etcd unreachable" in mine[0].getMessage()
            assert a.view().alive("gz")

            hq = await connect([etcd.endpoint])
            await publish_policy(hq, "overflow", {"threshold_s": 45})
            bj = await connect([etcd.endpoint])
            lease = await bj.grant_lease(30)
            bj_rec = SiteRecord("bj", "cn-north", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
            await bj.put(site_key("bj"), bj_rec.to_json().encode(), lease=lease)
            lb.waiting = 7
            await wait_true(lambda: b.connected, 5.0, "gz reconnects by itself")
            assert not a.connected

            gate.open = True
            v = await wait_view(a, lambda v: v.connected, 5.0, "sh reconnected")
            assert a.reconnects == 1
            assert v.alive("bj") and v.sites["bj"] == bj_rec
            assert a.policies() == {"overflow": {"threshold_s": 45}}
            await wait_view(a, lambda v: v.loads[("gz", "sales")].waiting == 7, 2.0, "gz load")
            # sh registered again, under a new lease, and the others see it
            await wait_view(b, lambda v: ("sh", "sales") in v.loads, 2.0, "sh back at gz")
            items, _ = await hq.get_prefix(site_key("sh"))
            assert len(items) == 1
        finally:
            await a.stop()
            await b.stop()
            await hq.close()
            if bj is not None:
                await bj.close()

    run(main(), timeout=60.0)


@dataclass(frozen=True)
class Overflow:
    threshold_s: float


def validate(name: str, doc: dict[str, Any]) -> object:
    if name != "overflow":
        return doc
    t = doc.get("threshold_s")
    if isinstance(t, bool) or not isinstance(t, int | float) or t <= 0:
        raise ValueError(f"threshold_s must be a positive number, not {t!r}")
    return Overflow(float(t))


def test_bad_policy_is_refused_and_last_good_kept(
    etcd: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        applied: list[tuple[str, object]] = []
        a, _, _ = registry(
            etcd.endpoint,
            "sh",
            policy_validator=validate,
            on_policy=lambda n, v: applied.append((n, v)),
        )
        hq = await connect([etcd.endpoint])
        try:
            await a.start()
            await publish_policy(hq, "overflow", {"threshold_s": 30})
            await wait_true(lambda: a.policies() == {"overflow": Overflow(30.0)}, 2.0, "good")
            with caplog.at_level(logging.WARNING, "gateway.mesh.registry"):
                await publish_policy(hq, "overflow", {"threshold_s": -5})
                await wait_true(lambda: a.policy_rejected == 1, 2.0, "rejection")
            assert a.policies() == {"overflow": Overflow(30.0)}
            assert any("threshold_s" in r.getMessage() for r in caplog.records)
            await hq.put("/ccgw/config/overflow", b"{not json")
            await wait_true(lambda: a.policy_rejected == 2, 2.0, "second rejection")
            await publish_policy(hq, "overflow", {"threshold_s": 12})
            await wait_true(lambda: a.policies() == {"overflow": Overflow(12.0)}, 2.0, "new")
            assert applied == [("overflow", Overflow(30.0)), ("overflow", Overflow(12.0))]
        finally:
            await a.stop()
            await hq.close()

    run(main())


def test_etcd_server_restarts_on_same_port_with_its_data(etcd: EtcdServer) -> None:
    async def main() -> None:
        c = await connect([etcd.endpoint])
        await c.put("/ccgw/config/x", b"{}")
        await c.close()
        port, pid = etcd.client_port, etcd.pid
        await asyncio.to_thread(etcd.restart, kill=True)
        assert etcd.client_port == port and etcd.pid != pid
        c = await connect([etcd.endpoint])
        try:
            items, rev = await c.get_prefix("/ccgw/")
        finally:
            await c.close()
        assert items == [("/ccgw/config/x", b"{}")] and rev >= 2

    run(main())


def test_over_tls_with_client_certificates_only_mesh_members_reach_etcd(tmp_path: Path) -> None:
    """etcd with ``--client-cert-auth`` and a certificate from the mesh CA: sites with
    ``etcd_tls`` (their own certificate) register and see each other; a plain client, and one
    whose certificate comes from another CA, are turned away."""
    if ETCD_BIN is None:
        pytest.skip("etcd binary not found (apt-get install etcd-server)")
    from gateway.config_mesh import MeshConfig, etcd_access
    from gateway.mesh import tls

    pki, other = tmp_path / "pki", tmp_path / "other"
    tls.make_ca(pki)
    for name in ("etcd", "sh", "gz"):
        tls.issue(pki, name, ips=["127.0.0.1"])
    tls.make_ca(other)
    tls.issue(other, "sh", ips=["127.0.0.1"])  # the right name from the wrong CA
    server = EtcdServer(tmp_path / "etcd", pki=pki).start()

    def access(folder: Path, name: str) -> Any:
        return etcd_access(
            MeshConfig(etcd=(server.endpoint,), pki=str(folder), etcd_tls=True), name
        )

    async def main() -> None:
        a, _, _ = registry(server.endpoint, "sh", access(pki, "sh"))
        b, _, _ = registry(server.endpoint, "gz", access(pki, "gz"))
        try:
            await a.start()
            await b.start()
            assert a.connected and b.connected
            await wait_view(a, lambda v: ("gz", "sales") in v.loads, 3, "gz's load over TLS")
            await wait_view(b, lambda v: "sh" in v.sites, 3, "sh over TLS")
        finally:
            await a.stop()
            await b.stop()
        with pytest.raises(EtcdUnavailable):
            await connect([server.endpoint], op_timeout=1.0)  # plain gRPC to a TLS port
        with pytest.raises(EtcdUnavailable):
            await connect([server.endpoint], op_timeout=1.0, access=access(other, "sh"))

    try:
        run(main())
    finally:
        server.cleanup()


def test_with_etcd_auth_on_a_site_needs_its_user(etcd: EtcdServer) -> None:
    """etcd ``--auth`` (enabled over its gRPC API, as ``etcdctl auth enable`` does): a site
    with ``etcd_username`` / ``etcd_password`` registers; without them, or with a wrong
    password, it cannot read."""
    import grpc
    from aetcd import rpc

    from gateway.mesh.etcd import EtcdAccess

    async def enable_auth() -> None:
        async with grpc.aio.insecure_channel(etcd.endpoint) as channel:
            auth = rpc.AuthStub(channel)
            await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password="root-secret-1"))
            await auth.RoleAdd(rpc.AuthRoleAddRequest(name="root"))
            await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
            await auth.AuthEnable(rpc.AuthEnableRequest())

    async def main() -> None:
        await enable_auth()
        reg, _, _ = registry(etcd.endpoint, "sh", EtcdAccess(None, "root", "root-secret-1"))
        try:
            await reg.start()
            assert reg.connected
            await wait_view(reg, lambda v: True, 2, "a view")
        finally:
            await reg.stop()
        for access in (None, EtcdAccess(None, "root", "wrong-password")):
            with pytest.raises(EtcdUnavailable):
                client = await connect([etcd.endpoint], op_timeout=1.0, access=access)
                try:
                    await client.get_prefix("/ccgw/")
                finally:
                    await client.close()

    run(main())
