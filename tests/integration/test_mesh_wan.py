"""HQ and a site across a WAN with latency, loss and a partition, in network namespaces.

Two namespaces, ``ccgw-<pid>-hq`` and ``ccgw-<pid>-sh``, are joined through a core router
(tests/integration/netns.py builds and removes them; nothing touches the host's interfaces).
HQ (``ccgw hq``, SQLite) runs in the first at 10.250.1.1; the Shanghai site gateway
(``ccgw run``, ``[mesh] hq = "10.250.1.1:7400"``, mutual TLS) in the second at 10.250.2.1,
with its carrier and its agent's phone (both SIPp) beside it: SIP and RTP stay inside the site,
only the site↔HQ traffic (sync, look-ups, HQ's change feed) crosses the WAN. Site's link: 20 ms
each way (40 ms RTT) and 1 % loss each way, by ``tc netem`` or, on kernels without
``sch_netem``, the lab's user-space shaper (same semantics; the RTT is measured to prove it).

1. Latency and loss: every call is answered by the agent and every record (CDRs and
   interactions) reaches HQ exactly once: HQ's rows equal the site's rows, ``(local id,
   Call-ID)`` for ``(local id, Call-ID)``, and HQ applied each outbox entry once.
2. Partition: the core cuts the site's link. The site keeps answering calls and keeps its
   records in the outbox (its /metrics: ``ccgw_sync_connected 0``, ``ccgw_sync_outbox_depth``
   growing); HQ keeps serving too (its API edits a customer the site also edits). After the
   link heals every record converges within a bound: the site's calls at HQ, once each; HQ's
   customer edit at the site; a customer edited on both sides merged alike on both.

The test skips with the reason when the machine can't (not root, no ``ip``, no namespaces,
neither netem nor TUN, no SIPp). Every process is started by the test and ended by its PID.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.mesh.tls import issue, make_ca

from . import peers
from .gateway import AGENTS, TEST_IVR, site_config
from .netns import NetnsUnavailable, WanLab, unavailable_reason
from .procs import metric, to_toml, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
SITE = "shanghai"
HQ_GRPC, HQ_HTTP = 7400, 8090
API_TOKEN = "wan-test-api-token-0123"  # HTTP off loopback (the namespaces' addresses) needs one
SITE_SIP, SITE_HTTP = 5060, 8080
CARRIER_SIP, CARRIER_MEDIA = 5070, 6000
AGENT_SIP, AGENT_MEDIA = 5080, 6010
DELAY_MS, LOSS_PCT = 20, 1.0
CONVERGE_S = 40.0
"""Bound on convergence after healing: gRPC notices the dead link by keepalive (10 s + 5 s),
then reconnects within its backoff (5 s at most) and drains."""


# --------------------------------------------------------------------------------------------
# plumbing: processes in namespaces (configs written with procs.to_toml)


class NsSipp(peers.Sipp):
    """:class:`peers.Sipp` run inside a lab namespace, on fixed ports (the namespace is new and
    empty, so every port is free): argv gets the ``ip netns exec`` prefix and :meth:`start`
    checks the bind inside the namespace."""

    def __init__(self, lab: WanLab, node: str, scenario: str, remote: str | None, **kw: Any):
        self.lab, self.node = lab, node
        super().__init__(scenario, remote, local_host=lab.addr(node), **kw)

    def argv(self) -> list[str]:
        return self.lab.exec_prefix(self.node) + super().argv()

    def start(self, wait_bound: float = 5.0) -> NsSipp:
        self._spawn(self.argv())
        deadline = time.monotonic() + wait_bound
        while time.monotonic() < deadline and self.running():
            if self.lab.bound(self.node, self.local_host, self.local_port, "udp"):
                return self
            time.sleep(0.05)
        if not self.running():
            return self  # ended at once: wait() reports it
        raise RuntimeError(f"SIPp did not bind {self.address}\n{self.describe()}")


class Ccgw(peers.ManagedProcess):
    """``python -m gateway.cli ARGS`` inside a namespace; ready when it prints its banner."""

    def __init__(self, lab: WanLab, node: str, args: list[str], *, workdir: Path, **kw: Any):
        super().__init__(f"ccgw-{node}", workdir, kw.pop("registry", None))
        self.argv = [
            *lab.exec_prefix(node),
            *("env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "gateway.cli", *args),
        ]

    def start(self, banner: str, timeout: float = 30.0) -> Ccgw:
        self._spawn(self.argv, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if banner in self.stdout_text():
                return self
            if not self.running():
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start\n{self.describe()}")


def _wait(cond: Callable[[], T], timeout: float, what: str) -> T:
    # HTTP inside a namespace not up yet, or the link down: not yet
    return wait_until(cond, timeout, what, errors=(OSError, AssertionError, KeyError))


def _rows(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return list(conn.execute(sql, args).fetchall())
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# the mesh across the lab


class WanMesh:
    """HQ and one site, each in its namespace, with the helpers the tests read them with."""

    def __init__(self, lab: WanLab, tmp: Path, pki: Path, reg: peers.ProcessRegistry) -> None:
        self.lab, self.tmp, self.pki, self.reg = lab, tmp, pki, reg
        self.hq_ip, self.site_ip = lab.addr("hq"), lab.addr("sh")
        self.hq_db = tmp / "central.db"
        self.site_db = tmp / f"{SITE}.db"
        self.work = tmp / "work"
        self.hq: Ccgw | None = None
        self.site: Ccgw | None = None

    def start(self) -> WanMesh:
        hq_doc = site_config(("127.0.0.1", 9), self.tmp / "hq-site.db")
        hq_doc["site"] = {"name": "hq"}
        hq_doc["http"]["api_token"] = API_TOKEN
        hq_doc["hq"] = {
            "listen": f"{self.hq_ip}:{HQ_GRPC}",
            "database": f"sqlite:///{self.hq_db}",
            "pki": str(self.pki),
            "http": f"{self.hq_ip}:{HQ_HTTP}",
        }
        (self.tmp / "hq.toml").write_text(to_toml(hq_doc))
        site_doc = site_config(
            (self.site_ip, CARRIER_SIP),
            self.site_db,
            rtp_range=(20000, 20199),
            queues=[
                {"name": "support", "members": ["1001"], "wrapup": 0, "ring_timeout": 5},
                {"name": "sales", "members": ["1001"], "wrapup": 0},
            ],
            ivr=TEST_IVR,
            extra={
                "site": {"name": SITE},
                "sip": {"listen": self.site_ip, "port": SITE_SIP},
                "http": {"listen": self.site_ip, "port": SITE_HTTP, "api_token": API_TOKEN},
                # 0.2 s: a look-up over 40 ms RTT (and an occasional lost segment) fits
                "mesh": {"hq": f"{self.hq_ip}:{HQ_GRPC}", "pki": str(self.pki),
                         "lookup_budget": 0.2},
            },
        )  # fmt: skip
        (self.tmp / "site.toml").write_text(to_toml(site_doc))
        self.hq = Ccgw(
            self.lab, "hq", ["hq", "--config", str(self.tmp / "hq.toml")],
            workdir=self.work, registry=self.reg,
        ).start("ccgw hq hq:")  # fmt: skip
        self.site = Ccgw(
            self.lab, "sh", ["run", "--config", str(self.tmp / "site.toml")],
            workdir=self.work, registry=self.reg,
        ).start(f"ccgw site {SITE}:")  # fmt: skip
        return self

    # -- HTTP inside the namespaces

    def _http(self, node: str, url: str, body: dict[str, Any] | None = None) -> str:
        def go() -> str:
            req = urllib.request.Request(
                url,
                data=None if body is None else json.dumps(body).encode(),
                method="GET" if body is None else "POST",
                headers={
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {API_TOKEN}",
                },
            )
            with urllib.request.urlopen(req, timeout=5) as r:
                return str(r.read().decode())

        return self.lab.call(node, go)

    def site_metrics(self) -> str:
        return self._http("sh", f"http://{self.site_ip}:{SITE_HTTP}/metrics")

    def hq_metrics(self) -> str:
        return self._http("hq", f"http://{self.hq_ip}:{HQ_HTTP}/metrics")

    def site_api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return json.loads(self._http("sh", f"http://{self.site_ip}:{SITE_HTTP}{path}", body))

    def hq_api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return json.loads(self._http("hq", f"http://{self.hq_ip}:{HQ_HTTP}{path}", body))

    def sync_connected(self) -> float | None:
        return metric(self.site_metrics(), "ccgw_sync_connected")

    # -- records on both sides

    def site_records(self) -> dict[str, list[tuple[Any, ...]]]:
        return {
            t: _rows(self.site_db, f"SELECT id, call_id FROM {t} ORDER BY id")
            for t in ("cdrs", "interactions")
        }

    def hq_records(self) -> dict[str, list[tuple[Any, ...]]]:
        if not self.hq_db.exists():
            return {"cdrs": [], "interactions": []}
        return {
            t: _rows(
                self.hq_db,
                f"SELECT local_id, call_id FROM {t} WHERE site = ? ORDER BY local_id",
                (SITE,),
            )
            for t in ("cdrs", "interactions")
        }

    def site_last_seq(self) -> int:
        rows = _rows(self.site_db, "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
        return int(rows[0][0]) if rows else 0

    def converged(self) -> bool:
        """HQ holds exactly the site's records, the outbox is empty and HQ applied every
        entry the site ever wrote, each once."""
        if self.hq_records() != self.site_records():
            return False
        metrics = self.site_metrics()
        if metric(metrics, "ccgw_sync_outbox_depth") != 0:
            return False
        hq = self.hq_metrics()
        last = self.site_last_seq()
        return (
            metric(hq, "ccgw_hq_sync_high_water") == last
            and metric(hq, "ccgw_hq_sync_applied_total") == last
        )

    # -- calls

    def agent(self, calls: int) -> NsSipp:
        """Agent 1001's phone: registers, then answers ``calls`` calls."""
        ext = "1001"
        gw = f"{self.site_ip}:{SITE_SIP}"
        reg = NsSipp(
            self.lab, "sh", "register.xml", gw, workdir=self.work, registry=self.reg,
            local_port=AGENT_SIP, media_port=AGENT_MEDIA, service=ext, auth=(ext, AGENTS[ext]),
            extra_args=["-auth_uri", gw], timeout=10, name="agent-register",
        )  # fmt: skip
        res = reg.start().wait(15)
        assert res.ok, res.describe()
        return NsSipp(
            self.lab, "sh", "agent_uas.xml", None, workdir=self.work, registry=self.reg,
            local_port=AGENT_SIP, media_port=AGENT_MEDIA, calls=calls, timeout=80,
            name="agent-1001",
        ).start()  # fmt: skip

    def calls(self, n: int, name: str) -> peers.SippResult:
        """``n`` carrier calls to the support queue, one at a time; waits for them to end."""
        sipp = NsSipp(
            self.lab, "sh", "caller_ivr.xml", f"{self.site_ip}:{SITE_SIP}",
            workdir=self.work, registry=self.reg, local_port=CARRIER_SIP,
            media_port=CARRIER_MEDIA, service="+864000", calls=n, rate=10,
            keys={"talk_ms": "700", "d1_ms": "0", "digit1": "-", "d2_ms": "0", "digit2": "-"},
            extra_args=["-l", "1"], timeout=40, name=name,
        )  # fmt: skip
        return sipp.start().wait(45)


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d)
    issue(d, "hq", ips=["10.250.1.1"])
    issue(d, SITE, ips=["10.250.2.1"])
    return d


@pytest.fixture
def lab() -> Iterator[WanLab]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"WAN test needs network namespaces: {reason}")
    if peers.SIPP_BIN is None:
        pytest.skip("sipp binary not found (apt-get install sip-tester)")
    wan = WanLab(("hq", "sh"))
    try:
        wan.setup()
    except NetnsUnavailable as exc:
        pytest.skip(f"WAN test cannot build its namespaces: {exc}")
    try:
        yield wan
    finally:
        wan.teardown()


@pytest.fixture
def mesh(
    lab: WanLab, tmp_path: Path, pki: Path, peer_registry: peers.ProcessRegistry
) -> Iterator[WanMesh]:
    m = WanMesh(lab, tmp_path, pki, peer_registry)
    lab.netem(DELAY_MS, LOSS_PCT, "sh")
    yield m.start()
    # peer_registry ends every process by PID; the lab then deletes the namespaces


# --------------------------------------------------------------------------------------------
# tests


def test_every_record_reaches_hq_once_over_40ms_rtt_and_loss(mesh: WanMesh) -> None:
    rtt = mesh.lab.connect_rtt("sh", mesh.hq_ip, HQ_GRPC)
    assert 0.035 <= rtt < 0.5, f"site→HQ TCP connect took {rtt * 1000:.1f} ms, want ~40 ms"
    _wait(lambda: mesh.sync_connected() == 1, 15, "the site's sync stream to HQ")
    n = 8
    agent = mesh.agent(n)
    res = mesh.calls(n, "carrier")
    assert res.ok and res.successful == n, res.describe()
    answered = agent.wait(15)
    assert answered.ok and answered.successful == n, answered.describe()
    site = mesh.site_records()
    assert len(site["cdrs"]) == n and len(site["interactions"]) == n, site
    _wait(mesh.converged, 20, "every record at HQ exactly once")
    assert mesh.hq_records() == site
    print(f"site→HQ RTT {rtt * 1000:.1f} ms; {mesh.lab.stats()}")


def test_a_partitioned_site_keeps_serving_and_converges_after_healing(mesh: WanMesh) -> None:
    _wait(lambda: mesh.sync_connected() == 1, 15, "the site's sync stream to HQ")
    before, during = 2, 4
    agent = mesh.agent(before + during)
    mesh.site_api("/api/customers/C-WAN-3", {"fields": {"name": "Both Sides"}, "author": "1001"})
    res = mesh.calls(before, "carrier-before")
    assert res.ok, res.describe()
    _wait(mesh.converged, 20, "the first calls at HQ")
    _wait(
        lambda: mesh.hq_api("/api/customers/C-WAN-3")["name"] == "Both Sides",
        10,
        "the site's new customer C-WAN-3 at HQ",
    )
    hq_before = mesh.hq_records()

    mesh.lab.partition("sh")
    t_cut = time.monotonic()
    # Both sides keep serving: HQ takes edits, the site answers calls and keeps its records.
    mesh.hq_api(
        "/api/customers/C-WAN-1",
        {"fields": {"name": "Han Mei", "region": SITE}, "author": "supervisor"},
    )
    mesh.hq_api("/api/customers/C-WAN-3", {"fields": {"tier": "gold"}, "author": "supervisor"})
    mesh.site_api("/api/customers/C-WAN-2", {"fields": {"name": "Li Lei"}, "author": "1001"})
    mesh.site_api("/api/customers/C-WAN-3", {"fields": {"notes": "mornings"}, "author": "1001"})
    res = mesh.calls(during, "carrier-during")
    assert res.ok and res.successful == during, res.describe()
    site = mesh.site_records()
    assert len(site["cdrs"]) == before + during, site
    assert len(site["interactions"]) == before + during, site
    _wait(lambda: mesh.sync_connected() == 0, 25, "ccgw_sync_connected 0 at the site")
    detected = time.monotonic() - t_cut
    depth = _wait(
        lambda: (metric(mesh.site_metrics(), "ccgw_sync_outbox_depth") or 0) >= 2 * during + 2,
        5,
        "the partition's records in the outbox",
    )
    assert depth
    assert mesh.hq_records() == hq_before, "records crossed a cut link"

    mesh.lab.heal("sh")
    t_heal = time.monotonic()
    _wait(mesh.converged, CONVERGE_S, "every record at HQ exactly once after healing")
    converged = time.monotonic() - t_heal
    assert mesh.hq_records() == site
    # Customers converge both ways; the record edited on both sides merged field by field.
    _wait(
        lambda: mesh.site_api("/api/customers/C-WAN-1")["name"] == "Han Mei",
        CONVERGE_S,
        "HQ's edit at the site",
    )
    assert mesh.hq_api("/api/customers/C-WAN-2")["name"] == "Li Lei"

    def merged() -> bool:
        at_site = mesh.site_api("/api/customers/C-WAN-3")
        at_hq = mesh.hq_api("/api/customers/C-WAN-3")
        want = {"name": "Both Sides", "tier": "gold", "notes": "mornings"}
        return all(at_site.get(k) == v and at_hq.get(k) == v for k, v in want.items())

    _wait(merged, 10, "C-WAN-3 merged alike at the site and at HQ")
    answered = agent.wait(15)
    assert answered.ok and answered.successful == before + during, answered.describe()
    print(
        f"partition noticed in {detected:.1f} s; converged {converged:.1f} s after healing;"
        f" {mesh.lab.stats()}"
    )
