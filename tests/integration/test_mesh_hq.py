"""A site gateway and the HQ service over mutual TLS: records reach HQ exactly once, HQ's
customer changes reach the site, and a VIP flagged at HQ waits at VIP priority at the site.

HQ runs on SQLite and on a real PostgreSQL (started by the fixture); SIPp is the carrier.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.mesh.tls import issue, make_ca

from . import peers
from .gateway import TEST_IVR, GatewayThread, HqThread, site_config
from .pg_server import PgServer, serve_pg

pytestmark = pytest.mark.integration

CALLER = "+8613800138000"  # what caller_ivr.xml sends as the calling number


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d)
    issue(d, "hq", ips=["127.0.0.1"])
    issue(d, "shanghai", ips=["127.0.0.2"])
    return d


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    yield from serve_pg()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'central.db'}"
    server: PgServer = request.getfixturevalue("pg")
    return server.create_database()


@pytest.fixture
def mesh(
    tmp_path: Path, pki: Path, database: str
) -> Iterator[Callable[..., tuple[HqThread, GatewayThread, int]]]:
    made: list[Any] = []

    def make() -> tuple[HqThread, GatewayThread, int]:
        hq_doc = site_config(("127.0.0.1", 9), tmp_path / "hq-site.db")
        hq_doc["site"] = {"name": "hq"}
        hq_doc["hq"] = {
            "listen": "127.0.0.1:0",
            "database": database,
            "pki": str(pki),
            "http": "127.0.0.1:0",
        }
        hq = HqThread(hq_doc).start()
        made.append(hq)
        carrier = peers.free_port("127.0.0.1", "udp")
        queues = [
            {"name": "support", "members": ["1001"], "wrapup": 0, "vip_priority": 7},
            {"name": "sales", "members": ["1001"], "wrapup": 0},
        ]
        doc = site_config(
            ("127.0.0.1", carrier),
            tmp_path / "shanghai.db",
            queues=queues,
            ivr=TEST_IVR,
            extra={
                "site": {"name": "shanghai"},
                "sip": {"listen": "127.0.0.2"},
                "http": {"listen": "127.0.0.2"},
                "mesh": {"hq": hq.listen, "pki": str(pki), "lookup_budget": 0.2},
            },
        )
        gw = GatewayThread(doc).__enter__()
        made.append(gw)
        return hq, gw, carrier

    yield make
    for obj in reversed(made):
        if isinstance(obj, GatewayThread):
            obj.__exit__(None, None, None)
        else:
            obj.close()


def _calls(sipp_factory: Callable[..., peers.Sipp], gw: GatewayThread, port: int, n: int) -> None:
    sipp = sipp_factory(
        "caller_ivr.xml", gw.sip, local_port=port, service="+864000", calls=n, rate=10,
        keys={"talk_ms": "300", "d1_ms": "0", "digit1": "-", "d2_ms": "0", "digit2": "-"},
        timeout=60,
    )  # fmt: skip
    result = sipp.start().wait(60)
    assert result.ok, result.describe()


def test_every_record_reaches_hq_once_even_across_an_hq_restart(
    mesh: Callable[..., tuple[HqThread, GatewayThread, int]],
    sipp_factory: Callable[..., peers.Sipp],
) -> None:
    hq, gw, carrier = mesh()
    _calls(sipp_factory, gw, carrier, 10)
    gw.wait_for(lambda: gw.gw.store.outbox_depth() == 0, 20, "the outbox drained to HQ")
    first = hq.counts()
    assert first["cdrs"] == 10 and first["interactions"] == 10, first
    hq.stop()  # HQ down: the site keeps answering; its outbox grows
    _calls(sipp_factory, gw, carrier, 10)
    gw.wait_for(lambda: gw.gw.store.outbox_depth() >= 20, 20, "records kept in the outbox")
    assert not gw.call(lambda: gw.gw.mesh.sync.connected)
    hq.start()  # back on the same port: the outbox drains in order, nothing applied twice
    gw.wait_for(lambda: gw.gw.store.outbox_depth() == 0, 30, "the outbox drained after HQ")
    counts = hq.counts()
    assert counts["cdrs"] == 20 and counts["interactions"] == 20, counts
    metrics = gw.metrics()
    assert "ccgw_sync_connected 1" in metrics and "ccgw_sync_acked_total 40" in metrics, metrics


def test_a_vip_flagged_at_hq_waits_at_vip_priority_at_the_site(
    mesh: Callable[..., tuple[HqThread, GatewayThread, int]],
    sipp_factory: Callable[..., peers.Sipp],
) -> None:
    hq, gw, carrier = mesh()
    hq.api(
        "/api/customers/C-100",
        {"fields": {"name": "Li Lei", "phones": [CALLER], "vip": True}, "author": "supervisor"},
    )
    # HQ pushes the change to the site, which then knows the caller without asking.
    gw.wait_for(lambda: bool(gw.gw.customers.by_phone(CALLER)), 10, "the record at the site")
    gw.call(lambda: gw.gw.cc.agent_command("1001", "pause"))  # nobody answers: the call waits
    sipp = sipp_factory(
        "caller_ivr.xml", gw.sip, local_port=carrier, service="+864000", calls=1,
        keys={"talk_ms": "3000", "d1_ms": "0", "digit1": "-", "d2_ms": "0", "digit2": "-"},
        timeout=30,
    ).start()  # fmt: skip
    line = gw.gw.cc.queues["support"].line
    gw.wait_for(lambda: line.live_count() == 1, 10, "the caller queued")
    entry = gw.call(lambda: line.entries()[0])
    assert entry.priority == 7 and entry.customer_id == "C-100", entry
    call_id = entry.call_id
    ctx = gw.call(lambda: gw.gw.cc.call_context(call_id))
    assert ctx["customer"]["name"] == "Li Lei" and ctx["customer"]["vip"] is True, ctx
    assert sipp.wait(20).ok
    gw.wait_for(lambda: len(gw.gw.store.interactions(5)) == 1, 10, "the interaction")
    (row,) = gw.call(lambda: gw.gw.store.interactions(5))
    assert row["customer_id"] == "C-100"
    # An edit at the site goes to HQ and is kept in the history there with who made it.
    req = urllib.request.Request(
        f"http://127.0.0.2:{gw.gw.http_port}/api/customers/C-100",
        data=json.dumps({"fields": {"notes": "prefers mornings"}, "author": "1001"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert json.loads(r.read())["notes"] == "prefers mornings"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        (rec,) = hq.api("/api/customers?customer_id=C-100")
        if rec.get("notes") == "prefers mornings":
            break
        time.sleep(0.1)
    assert rec["notes"] == "prefers mornings" and rec["vip"] is True, rec
    history = hq.api("/api/customers/C-100/history")
    assert len(history) >= 4, history  # name, phones, vip at HQ; notes from the site
