"""Overflow between two site gateways with a real etcd, gRPC handoff and SIPp peers.

Shanghai (127.0.0.2) has a queue whose only agent is logged in but has no phone, so callers
wait; its policy sends a caller who waited 2 s to Guangzhou (127.0.0.3), where a SIPp agent
answers. The INVITE that rings Guangzhou's agent carries the caller's context, and both sites'
interaction records share the handoff id and the original arrival time.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.mesh import tls as mesh_tls

from . import peers
from .etcd_server import ETCD_BIN, EtcdServer
from .gateway import AGENTS, TEST_IVR, GatewayThread, HqThread, site_config

pytestmark = pytest.mark.integration

if ETCD_BIN is None:
    pytest.skip("etcd binary not found (apt-get install etcd-server)", allow_module_level=True)

SITES = {"shanghai": "127.0.0.2", "guangzhou": "127.0.0.3"}


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path / "etcd").start()
    yield server
    server.stop(kill=True)


def _support(overflow: dict[str, Any] | None, members: list[str]) -> list[dict[str, Any]]:
    q: dict[str, Any] = {
        "name": "support",
        "members": members,
        "strategy": "linear",
        "ring_timeout": 5,
        "wrapup": 0,
        "announce_every": 30,
        "join_rule": "always",
        "leave_rule": "never",
    }
    if overflow is not None:
        q["overflow"] = overflow
    sales = {"name": "sales", "members": members, "wrapup": 0}  # the test IVR names it
    return [q, sales]


@pytest.fixture
def mesh_pair(
    tmp_path: Path, etcd: EtcdServer
) -> Iterator[Callable[..., tuple[GatewayThread, GatewayThread, int]]]:
    started: list[GatewayThread] = []

    def make(
        overflow: dict[str, Any] | None,
        *,
        gz_logged_in: bool = True,
        hq: HqThread | None = None,
        schedules: dict[str, Any] | None = None,
        tls: bool = False,
    ) -> tuple[GatewayThread, GatewayThread, int]:
        ports = {s: peers.free_port(ip, "both") for s, ip in SITES.items()}
        tls_ports = {s: peers.free_port(ip, "tcp") for s, ip in SITES.items()}
        pki = tmp_path / "pki"
        if tls:
            mesh_tls.make_ca(pki)
            for site, ip in SITES.items():
                mesh_tls.issue(pki, site, ips=[ip])
        carrier = peers.free_port("127.0.0.1", "udp")
        second = peers.free_port("127.0.0.1", "udp")  # a second carrier port (two callers at once)
        gws = {}
        for site, ip in SITES.items():
            other = next(s for s in SITES if s != site)
            cfg = site_config(
                ("127.0.0.1", carrier),
                tmp_path / f"{site}.db",
                more_carriers=[second],
                queues=_support(overflow if site == "shanghai" else None, ["1001"]),
                ivr=TEST_IVR,
                extra={
                    "site": {"name": site},
                    "sip": {"listen": ip}
                    | (
                        {"transports": ["udp", "tcp", "tls"], "tls_port": tls_ports[site]}
                        if tls
                        else {}
                    ),
                    "http": {"listen": ip},
                    "mesh": {
                        **({"pki": str(pki)} if tls else {}),
                        "etcd": [etcd.endpoint],
                        "lease_ttl": 2,
                        "load_interval": 0.2,
                        "handoff_listen": f"{ip}:0",
                        "reservation_ttl": 5,
                        **({"hq": hq.listen} if hq is not None else {}),
                    },
                },
            )
            cfg["trunks"].append(
                {
                    "name": f"to-{other}",
                    "peers": [f"{SITES[other]}:{(tls_ports if tls else ports)[other]}"],
                    "transport": "tls" if tls else "udp",
                    "site": other,
                    # digest both ways: each side challenges the other's INVITEs
                    "username": "mesh-sh-gz",
                    "password": "mesh-secret",
                    "inbound_auth": True,
                }
            )
            cfg["media"]["rtp_port_min"], cfg["media"]["rtp_port_max"] = _rtp(site)
            if schedules:
                cfg["schedules"] = schedules
            gw = GatewayThread(cfg, sip_port=ports[site]).__enter__()
            started.append(gw)
            gws[site] = gw
        sh, gz = gws["shanghai"], gws["guangzhou"]
        gz.second_carrier = second  # type: ignore[attr-defined]
        if not gz_logged_in:
            gz.call(lambda: gz.gw.cc.agent_command("1001", "logout"))
        # Each site sees the other's load in etcd before the test goes on.
        for a, b in ((sh, "guangzhou"), (gz, "shanghai")):
            a.wait_for(
                lambda a=a, b=b: (
                    bool(a.gw.mesh.remote_queues("support"))
                    or (not gz_logged_in and b == "guangzhou" and a.gw.mesh.view().alive(b))
                ),
                10,
                f"{b} in the mesh view",
            )
        return sh, gz, carrier

    yield make
    for gw in reversed(started):
        gw.__exit__(None, None, None)


def _rtp(site: str) -> tuple[int, int]:
    base = peers.free_port("127.0.0.1", "udp", even=True, span=40, step=1)
    return base, base + 39


def _register_agent(
    sipp_factory: Callable[..., peers.Sipp], gw: GatewayThread, ext: str = "1001"
) -> peers.Sipp:
    port = peers.free_port("127.0.0.1", "udp")
    reg = sipp_factory(
        "register.xml", gw.sip, local_port=port, service=ext, auth=(ext, AGENTS[ext]),
        extra_args=["-auth_uri", gw.sip], timeout=10,
    )  # fmt: skip
    assert reg.start().wait(15).ok, reg.result().describe()
    return sipp_factory(
        "agent_uas.xml", local_port=port, calls=1, timeout=60, name=f"agent-{ext}-{gw.cfg.name}",
    ).start()  # fmt: skip


def _caller(
    sipp_factory: Callable[..., peers.Sipp], gw: GatewayThread, port: int, talk_ms: int
) -> peers.Sipp:
    """A carrier caller to the support queue (the SIPp must come from the trunk's port)."""
    return sipp_factory(
        "caller_ivr.xml", gw.sip, local_port=port, service="+864000", calls=1,
        keys={"talk_ms": str(talk_ms), "d1_ms": "0", "digit1": "-", "d2_ms": "0", "digit2": "-"},
        timeout=30,
    )  # fmt: skip


def _interactions(gw: GatewayThread) -> list[dict[str, Any]]:
    return list(gw.call(lambda: gw.gw.store.interactions(100)))


@pytest.fixture
def hq(tmp_path: Path) -> Iterator[HqThread]:
    doc = site_config(("127.0.0.1", 9), tmp_path / "hq-site.db")
    doc["site"] = {"name": "hq"}
    doc["hq"] = {"listen": "127.0.0.1:0", "database": f"sqlite:///{tmp_path / 'central.db'}"}
    server = HqThread(doc).start()
    yield server
    server.close()


def test_a_caller_who_waited_too_long_moves_to_the_other_site_with_context(
    mesh_pair: Callable[..., tuple[GatewayThread, GatewayThread, int]],
    sipp_factory: Callable[..., peers.Sipp],
    hq: HqThread,
) -> None:
    sh, gz, carrier = mesh_pair({"max_wait": 2, "targets": ["guangzhou"]}, hq=hq)
    agent = _register_agent(sipp_factory, gz)
    caller = _caller(sipp_factory, sh, carrier, talk_ms=8000)
    t0 = time.time()
    caller.start()
    result = caller.wait(40)
    assert result.ok, result.describe()
    agent_result = agent.wait(15)
    assert agent_result.ok, agent_result.describe()
    lines = [ln for ln in agent_result.log_lines if "CONTEXT " in ln]
    assert lines, agent_result.describe()
    ctx = dict(kv.split("=", 1) for kv in lines[0].split("CONTEXT ", 1)[1].split())
    assert ctx["site"] == "shanghai" and ctx["caller"] == "+8613800138000", ctx
    arrival = float(ctx["arrival"])
    assert t0 - 1 < arrival < t0 + 2, (t0, ctx)

    sh.wait_for(lambda: len(sh.gw.store.interactions(10)) == 1, 10, "shanghai's record")
    gz.wait_for(lambda: len(gz.gw.store.interactions(10)) == 1, 10, "guangzhou's record")
    (out,) = _interactions(sh)
    (inn,) = _interactions(gz)
    assert out["outcome"] == "overflowed" and out["overflow_to"] == "guangzhou", out
    assert inn["outcome"] == "answered" and inn["from_site"] == "shanghai", inn
    assert out["handoff_id"] and out["handoff_id"] == inn["handoff_id"]
    # The receiving site keeps the original arrival: the wait includes the time at Shanghai.
    assert abs(inn["arrived_ts"] - out["arrived_ts"]) < 0.01
    assert inn["answered_ts"] - inn["arrived_ts"] >= 2.0, inn
    assert gz.call(lambda: gz.gw.cc.mesh.overflowed_in) == 1
    assert sh.call(lambda: sh.gw.cc.mesh.overflowed_out) == 1
    # At HQ the two legs' records are linked by the handoff id.
    for gw in (sh, gz):
        gw.wait_for(lambda gw=gw: gw.gw.store.outbox_depth() == 0, 10, "records synced")
    assert hq.app is not None and hq.app.store is not None
    rows = hq.run(_hq_interactions(hq.app.store, out["handoff_id"]))
    assert sorted(r[0] for r in rows) == ["guangzhou", "shanghai"], rows


async def _hq_interactions(store: Any, handoff_id: str) -> list[tuple[str, str]]:
    conn = store._conn  # SqliteCentralStore: read on its worker thread
    sql = "SELECT site, call_id FROM interactions WHERE handoff_id = ?"
    return await store._run(lambda: list(conn.execute(sql, (handoff_id,))))


def test_no_overflow_when_the_other_site_has_nobody_logged_in(
    mesh_pair: Callable[..., tuple[GatewayThread, GatewayThread, int]],
    sipp_factory: Callable[..., peers.Sipp],
) -> None:
    sh, gz, carrier = mesh_pair({"max_wait": 1, "targets": ["*"]}, gz_logged_in=False)
    caller = _caller(sipp_factory, sh, carrier, talk_ms=8000)
    caller.start()
    sh.wait_for(lambda: sh.gw.cc.queues["support"].line.live_count() == 1, 10, "caller queued")
    time.sleep(3.5)  # well past max_wait: the policy fires, but no site can take the call
    assert sh.call(lambda: sh.gw.cc.queues["support"].line.live_count()) == 1
    assert sh.call(lambda: sh.gw.cc.mesh.overflowed_out) == 0
    assert gz.call(lambda: gz.gw.cc.mesh.overflowed_in) == 0
    caller.stop()


def _put(url: str, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url,
        data=json.dumps(doc).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_hq_publishes_the_overflow_rule_and_sites_apply_it_live(
    mesh_pair: Callable[..., tuple[GatewayThread, GatewayThread, int]],
    sipp_factory: Callable[..., peers.Sipp],
    etcd: EtcdServer,
    tmp_path: Path,
) -> None:
    doc = site_config(("127.0.0.1", 9), tmp_path / "hq-site.db")
    doc["site"] = {"name": "hq"}
    doc["hq"] = {
        "listen": "127.0.0.1:0",
        "database": f"sqlite:///{tmp_path / 'central.db'}",
        "http": "127.0.0.1:0",
    }
    doc["mesh"] = {"etcd": [etcd.endpoint]}
    hq = HqThread(doc).start()
    try:
        sh, gz, carrier = mesh_pair(None)  # neither site's own file overflows anything
        assert sh.call(lambda: dict(sh.gw.cc.mesh.policies)) == {}
        assert hq.app is not None
        url = f"http://127.0.0.1:{hq.app.http_port}/api/policies/overflow"
        status, body = _put(url, {"support": {"max_wait": "soon"}})
        assert status == 400 and "support.max_wait" in body["reason"], body
        status, _ = _put(url, {"support": {"max_wait": 1, "targets": ["guangzhou"]}})
        assert status == 200
        sh.wait_for(lambda: "support" in sh.gw.cc.mesh.policies, 5, "the rule at Shanghai")
        # Written past HQ's check, straight into etcd: each site refuses it, keeps the last good.
        gz.run(_put_raw(etcd.endpoint, b'{"support": {"max_hops": 99}}'))
        sh.wait_for(lambda: sh.gw.mesh.registry.policy_rejected >= 1, 5, "the bad rule refused")
        assert sh.call(lambda: sh.gw.cc.mesh.policies["support"].max_wait_s) == 1
        agent = _register_agent(sipp_factory, gz)
        caller = _caller(sipp_factory, sh, carrier, talk_ms=5000).start()
        assert caller.wait(30).ok
        assert agent.wait(15).ok
        assert sh.call(lambda: sh.gw.cc.mesh.overflowed_out) == 1
        # The same service rules at every site: announcements and the service-level threshold.
        service = f"http://127.0.0.1:{hq.app.http_port}/api/policies/service"
        status, body = _put(service, {"support": {"announce_every": 5}})
        assert status == 400 and "support.announce_every" in body["reason"], body
        status, _ = _put(service, {"support": {"announce_every": 45, "service_level_s": 30}})
        assert status == 200
        for gw in (sh, gz):
            q = gw.gw.cc.queues["support"]
            gw.wait_for(lambda q=q: q.cfg.announce_every == 45, 5, "the rules at each site")
            assert gw.call(lambda q=q: q.figures.config.service_level_s) == 30
        # One prompt set for every site: new calls start in Mandarin.
        status, _ = _put(
            f"http://127.0.0.1:{hq.app.http_port}/api/policies/prompts", {"language": "cmn"}
        )
        assert status == 200
        sh.wait_for(lambda: sh.gw.cc.language == "cmn", 5, "the prompt set at Shanghai")
    finally:
        hq.close()


async def _put_raw(endpoint: str, value: bytes) -> None:
    from gateway.mesh.etcd import connect
    from gateway.mesh.registry import config_key

    client = await connect([endpoint])
    try:
        await client.put(config_key("overflow"), value)
    finally:
        await client.close()


def test_a_site_that_dies_leaves_routing_within_the_ttl_and_no_call_is_sent_there(
    mesh_pair: Callable[..., tuple[GatewayThread, GatewayThread, int]],
    sipp_factory: Callable[..., peers.Sipp],
) -> None:
    sh, gz, carrier = mesh_pair({"max_wait": 1, "targets": ["guangzhou"]})
    _register_agent(sipp_factory, gz)  # Guangzhou could take the call ...
    # ... but its gateway dies: its lease is not revoked, it just stops being kept alive.
    t0 = time.monotonic()
    gz.run(gz.gw.mesh.registry.stop(revoke=False))
    sh.wait_for(lambda: not sh.gw.mesh.view().alive("guangzhou"), 6, "Guangzhou gone")
    gone_after = time.monotonic() - t0
    assert gone_after < 2 + 3, gone_after  # TTL 2 s (etcd's floor) plus its expiry sweep
    caller = _caller(sipp_factory, sh, carrier, talk_ms=8000).start()
    sh.wait_for(lambda: sh.gw.cc.queues["support"].line.live_count() == 1, 10, "caller queued")
    time.sleep(3)  # past max_wait: nowhere to go, the caller keeps their place here
    assert sh.call(lambda: sh.gw.cc.mesh.overflowed_out) == 0
    assert sh.call(lambda: sh.gw.cc.queues["support"].line.live_count()) == 1
    caller.stop()


def test_with_etcd_down_each_site_serves_its_own_callers(
    mesh_pair: Callable[..., tuple[GatewayThread, GatewayThread, int]],
    sipp_factory: Callable[..., peers.Sipp],
    etcd: EtcdServer,
) -> None:
    sh, gz, carrier = mesh_pair({"max_wait": 1, "targets": ["guangzhou"]})
    _register_agent(sipp_factory, gz)
    etcd.stop(kill=True)
    sh.wait_for(lambda: not sh.gw.mesh.registry.connected, 10, "Shanghai notices etcd is gone")
    # The last view is stale: no overflow is attempted, and Shanghai's own agent answers.
    local = _register_agent(sipp_factory, sh)
    caller = _caller(sipp_factory, sh, carrier, talk_ms=3000).start()
    assert caller.wait(30).ok, caller.result().describe()
    assert local.wait(15).ok, local.result().describe()
    assert sh.call(lambda: sh.gw.cc.mesh.overflowed_out) == 0
    sh.wait_for(lambda: len(sh.gw.store.interactions(5)) == 1, 10, "the interaction")
    (row,) = _interactions(sh)
    assert row["outcome"] == "answered" and row["overflow_to"] is None, row


def test_agents_dial_each_other_across_sites_by_extension(
    tmp_path: Path, sipp_factory: Callable[..., peers.Sipp]
) -> None:
    ports = {s: peers.free_port(ip, "both") for s, ip in SITES.items()}
    exts = {"shanghai": {"1001": "pw-1001"}, "guangzhou": {"2001": "pw-2001"}}
    prefix = {"shanghai": "1", "guangzhou": "2"}
    gws = {}
    try:
        for site, ip in SITES.items():
            other = next(s for s in SITES if s != site)
            doc = site_config(
                ("127.0.0.1", peers.free_port("127.0.0.1", "udp")),
                tmp_path / f"{site}.db",
                agents=exts[site],
                extra={"site": {"name": site}, "sip": {"listen": ip}, "http": {"listen": ip}},
            )
            doc["groups"] = []
            doc["trunks"][0]["dids"] = {}
            del doc["trunks"][0]["default_destination"]
            doc["trunks"].append(
                {
                    "name": f"to-{other}",
                    "peers": [f"{SITES[other]}:{ports[other]}"],
                    "site": other,
                    "extensions": [prefix[other]],
                    "username": "mesh",
                    "password": "mesh-secret",
                    "inbound_auth": True,
                }
            )
            doc["media"]["rtp_port_min"], doc["media"]["rtp_port_max"] = _rtp(site)
            gws[site] = GatewayThread(doc, sip_port=ports[site]).__enter__()
        sh, gz = gws["shanghai"], gws["guangzhou"]
        port = peers.free_port("127.0.0.1", "udp")
        reg = sipp_factory(
            "register.xml", gz.sip, local_port=port, service="2001", auth=("2001", "pw-2001"),
            extra_args=["-auth_uri", gz.sip], timeout=10,
        )  # fmt: skip
        assert reg.start().wait(15).ok, reg.result().describe()
        callee = sipp_factory("agent_uas.xml", local_port=port, calls=1, timeout=30).start()
        caller = sipp_factory(
            "invite_auth.xml", sh.sip, service="2001", auth=("1001", "pw-1001"),
            extra_args=["-auth_uri", f"2001@{sh.sip}"], keys={"caller": "1001"}, timeout=15,
        )  # fmt: skip
        result = caller.start().wait(20)
        assert result.final_statuses == [200], result.describe()
        assert callee.wait(15).ok, callee.result().describe()
        sh.wait_for(lambda: len(sh.gw.store.recent_cdrs(5)) == 1, 5, "Shanghai's CDR")
        (cdr,) = sh.call(lambda: sh.gw.store.recent_cdrs(5))
        assert cdr.trunk == "to-guangzhou" and cdr.callee == "2001", cdr
    finally:
        for gw in gws.values():
            gw.__exit__(None, None, None)


def test_an_overflowed_caller_keeps_their_original_place_and_the_agent_sees_the_context_first(
    mesh_pair: Callable[..., tuple[GatewayThread, GatewayThread, int]],
    sipp_factory: Callable[..., peers.Sipp],
) -> None:
    sh, gz, carrier = mesh_pair({"max_wait": 2, "targets": ["guangzhou"]})
    agent = _register_agent(sipp_factory, gz)
    gz.call(lambda: gz.gw.cc.agent_command("1001", "pause"))  # Guangzhou's line builds up
    # Nobody at Shanghai at all: any wait at Guangzhou is better (an equal one would not be).
    sh.call(lambda: sh.gw.cc.agent_command("1001", "logout"))
    early = _caller(sipp_factory, sh, carrier, talk_ms=12000).start()  # first, at Shanghai
    time.sleep(1.0)
    late = _caller(sipp_factory, gz, gz.second_carrier, talk_ms=12000).start()  # type: ignore[attr-defined]
    line = gz.gw.cc.queues["support"].line
    gz.wait_for(lambda: line.live_count() == 2, 10, "both callers waiting at Guangzhou")
    order = gz.call(
        lambda: [gz.gw.cc.contacts[e.call_id].record.from_site for e in line.ordered(time.time())]
    )
    # The caller from Shanghai arrived first, so is first, though they joined this queue second.
    assert order == ["shanghai", None], order
    events = _EventReader(f"http://127.0.0.3:{gz.gw.http_port}/api/agents/1001/events")
    try:
        gz.call(lambda: gz.gw.cc.agent_command("1001", "unpause"))
        offer = events.next_event(10)
    finally:
        events.close()
    assert offer["event"] == "offer" and offer["from_site"] == "shanghai", offer
    assert offer["caller"] == "+8613800138000" and offer["waited_s"] >= 2.0, offer
    first = agent.wait(30)
    lines = [ln for ln in first.log_lines if "CONTEXT " in ln]
    assert lines and "site=shanghai" in lines[0], first.describe()
    early.stop()
    late.stop()


class _EventReader:
    """Reads a server-sent event stream in a thread (the agent desktop's view)."""

    def __init__(self, url: str) -> None:
        import queue
        import threading

        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._resp = urllib.request.urlopen(url, timeout=30)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self._resp:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    self._events.put(json.loads(line[6:]))
        except Exception:  # closed under the reader by close(): the stream is over
            pass

    def next_event(self, timeout: float) -> dict[str, Any]:
        return self._events.get(timeout=timeout)

    def close(self) -> None:
        self._resp.close()


def test_a_closed_site_sends_its_callers_to_one_that_is_open(
    mesh_pair: Callable[..., tuple[GatewayThread, GatewayThread, int]],
    sipp_factory: Callable[..., peers.Sipp],
) -> None:
    never = {"timezone": "UTC", "week": {}}  # closed round the clock
    sh, gz, carrier = mesh_pair(
        {"when_closed": True, "hours": "shut", "targets": ["guangzhou"]},
        schedules={"shut": never},
    )
    remote = _register_agent(sipp_factory, gz)  # nobody answers at Shanghai: it is closed
    caller = _caller(sipp_factory, sh, carrier, talk_ms=4000).start()
    assert caller.wait(30).ok, caller.result().describe()
    assert remote.wait(15).ok, remote.result().describe()
    assert sh.call(lambda: sh.gw.cc.mesh.overflowed_out) == 1


def test_overflow_between_sites_goes_over_mutual_tls(
    mesh_pair: Callable[..., tuple[GatewayThread, GatewayThread, int]],
    sipp_factory: Callable[..., peers.Sipp],
) -> None:
    """The inter-site trunk set to ``transport = "tls"``: the overflow INVITE, its responses and
    the BYE travel over TLS, each site knows the other by its certificate's name, and the
    receiving agent still gets the context."""
    sh, gz, carrier = mesh_pair({"max_wait": 1, "targets": ["guangzhou"]}, tls=True)
    agent = _register_agent(sipp_factory, gz)
    caller = _caller(sipp_factory, sh, carrier, talk_ms=2000)
    caller.start()
    result = caller.wait(30)
    assert result.ok, result.describe()
    agent_result = agent.wait(15)
    assert agent_result.ok, agent_result.describe()
    lines = [ln for ln in agent_result.log_lines if "CONTEXT " in ln]
    assert lines and "site=shanghai" in lines[0], agent_result.describe()
    gz.wait_for(lambda: len(gz.gw.store.interactions(10)) == 1, 10, "guangzhou's record")
    (inn,) = _interactions(gz)
    assert inn["outcome"] == "answered" and inn["from_site"] == "shanghai", inn
    # Both ends of the connection were verified: each holds the other's certificate name.
    assert "shanghai" in gz.call(lambda: set(gz.gw.tls.names.values()))
    assert "guangzhou" in sh.call(lambda: set(sh.gw.tls.names.values()))
    gz.wait_for(lambda: len(gz.gw.store.recent_cdrs(10)) == 1, 10, "guangzhou's CDR")
    (cdr,) = gz.call(lambda: gz.gw.store.recent_cdrs(10))
    assert cdr.trunk == "to-shanghai" and cdr.direction == "inbound", cdr
    assert "ccgw_sip_tls_handshake_failures_total 0" in gz.metrics()


def _tls_client(gw: GatewayThread, ctx: ssl.SSLContext, server_name: str) -> ssl.SSLSocket:
    raw = socket.create_connection((gw.gw.cfg.sip.listen, gw.gw.tls_port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname=server_name)


def test_the_tls_listener_takes_only_mesh_certificates_and_a_stranger_is_no_trunk(
    mesh_pair: Callable[..., tuple[GatewayThread, GatewayThread, int]], tmp_path: Path
) -> None:
    _sh, gz, _carrier = mesh_pair(None, tls=True)
    pki, other = tmp_path / "pki", tmp_path / "other-ca"
    mesh_tls.make_ca(other)
    mesh_tls.issue(other, "shanghai", ips=["127.0.0.1"])  # the right name, from a foreign CA
    mesh_tls.issue(pki, "beijing", ips=["127.0.0.1"])  # the mesh CA, but no trunk has its name

    def client(ca: Path, cert: Path | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        if cert is not None:
            ctx.load_cert_chain(str(ca / f"{cert}.pem"), str(ca / f"{cert}-key.pem"))
        return ctx

    # No client certificate, then one from another CA: the handshake fails, counted and logged.
    for ctx in (client(pki, None), client(other, Path("shanghai"))):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            s = _tls_client(gz, ctx, "guangzhou")
            s.sendall(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
            assert s.recv(100) == b""  # TLS 1.3: the refusal arrives after the handshake
            raise ConnectionError("closed")
    gz.wait_for(lambda: gz.gw.tls.handshake_failures == 2, 5, "two refused handshakes")
    assert "ccgw_sip_tls_handshake_failures_total 2" in gz.metrics()

    # A mesh certificate whose name is no inter-site trunk: its INVITE to an outside number is
    # an unauthenticated call like any other (challenged), never a trunk call to the PSTN.
    with _tls_client(gz, client(pki, Path("beijing")), "guangzhou") as s:
        host, port = s.getsockname()[:2]
        invite = (
            f"INVITE sip:+4930123456@{gz.gw.cfg.sip.listen} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {host}:{port};branch=z9hG4bK-tls-1;rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:x@beijing>;tag=a\r\n"
            f"To: <sip:+4930123456@{gz.gw.cfg.sip.listen}>\r\nCall-ID: tls-stranger\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:x@{host}:{port};transport=tls>\r\n"
            "Content-Type: application/sdp\r\nContent-Length: 0\r\n\r\n"
        )
        s.sendall(invite.encode())
        s.settimeout(5)
        reply = b""
        while not re.search(rb"SIP/2.0 [2-6]\d\d [^\r]*\r\n(.+\r\n)*\r\n", reply):
            chunk = s.recv(4096)
            assert chunk, reply
            reply += chunk
    finals = re.findall(rb"SIP/2.0 ([2-6]\d\d)", reply)
    assert finals == [b"407"], reply
    assert gz.call(lambda: gz.gw.b2bua.counters.refused) >= 1
