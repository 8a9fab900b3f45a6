"""The contact centre with real peers: SIPp callers (DTMF by INFO), SIPp and baresip agents."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import peers
from .gateway import AGENTS, TEST_IVR, GatewayThread, site_config
from .smtp_sink import SmtpSink

pytestmark = pytest.mark.integration


def _queues(strategy: str = "rrmemory", **kw: Any) -> list[dict[str, Any]]:
    support = {
        "name": "support",
        "members": list(AGENTS),
        "strategy": strategy,
        "ring_timeout": 3,
        "wrapup": 0,
        "short_abandon_s": 0,
        "announce_every": 10,
        **kw,
    }
    sales = {"name": "sales", "members": ["1001"], "strategy": "linear", "wrapup": 0}
    return [support, sales]


@pytest.fixture
def carrier_port() -> int:
    return peers.free_port("127.0.0.1", "udp")


@pytest.fixture
def make_gateway(tmp_path: Path, carrier_port: int) -> Iterator[Callable[..., GatewayThread]]:
    started: list[GatewayThread] = []

    def make(strategy: str = "rrmemory", **kw: Any) -> GatewayThread:
        queue_kw = kw.pop("queue", {})
        cfg = site_config(
            ("127.0.0.1", carrier_port),
            tmp_path / "site.db",
            queues=_queues(strategy, **queue_kw),
            ivr=TEST_IVR,
            **kw,
        )
        gw = GatewayThread(cfg).__enter__()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.__exit__(None, None, None)


def _sipp_agents(
    sipp_factory: Callable[..., peers.Sipp], gw: GatewayThread, exts: list[str], calls: int
) -> dict[str, peers.Sipp]:
    """SIPp agents: each registers from a port, then answers up to ``calls`` calls there."""
    out = {}
    for ext in exts:
        port = peers.free_port("127.0.0.1", "udp")
        reg = sipp_factory(
            "register.xml", gw.sip, local_port=port, service=ext, auth=(ext, AGENTS[ext]),
            extra_args=["-auth_uri", gw.sip], timeout=10,
        )  # fmt: skip
        assert reg.start().wait(15).ok, reg.result().describe()
        out[ext] = sipp_factory(
            "agent_uas.xml", local_port=port, calls=calls, timeout=60, name=f"agent-{ext}"
        ).start()
    return out


def _caller(
    sipp_factory: Callable[..., peers.Sipp],
    gw: GatewayThread,
    port: int,
    did: str = "+864000",
    *,
    talk_ms: int = 1000,
    digits: tuple[tuple[int, str], ...] = ((0, "-"), (0, "-")),
    calls: int = 1,
    rate: float | None = None,
    timeout: float = 30,
) -> peers.Sipp:
    (d1, k1), (d2, k2) = digits
    return sipp_factory(
        "caller_ivr.xml", gw.sip, local_port=port, service=did, calls=calls, rate=rate,
        keys={"talk_ms": str(talk_ms), "d1_ms": str(d1), "digit1": k1, "d2_ms": str(d2),
              "digit2": k2},
        timeout=timeout,
    )  # fmt: skip


def _interactions(gw: GatewayThread) -> list[dict[str, Any]]:
    return list(reversed(gw.call(lambda: gw.gw.store.interactions(100))))


def _api(gw: GatewayThread, path: str, method: str = "GET") -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{gw.gw.http_port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def test_round_robin_queue_hands_calls_out_in_turn(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    carrier_port: int,
) -> None:
    gw = make_gateway("rrmemory")
    agents = _sipp_agents(sipp_factory, gw, list(AGENTS), calls=2)
    caller = _caller(sipp_factory, gw, carrier_port, talk_ms=300, calls=6, rate=1)
    result = caller.start().wait(40)
    assert result.ok and result.successful == 6, result.describe()
    gw.wait_for(lambda: len(gw.gw.store.interactions(10)) == 6, 10, "six interactions")
    order = [r["agent"] for r in _interactions(gw)]
    assert order == ["1001", "1002", "1003", "1001", "1002", "1003"], order
    assert all(r["outcome"] == "answered" and r["queue"] == "support" for r in _interactions(gw))
    for a in agents.values():
        a.stop()
    snap = _api(gw, "/api/queues/support")
    assert snap["day"]["answered"] == 6 and snap["day"]["offered"] == 6, snap


def test_longest_idle_picks_the_agent_idle_longest(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    carrier_port: int,
) -> None:
    gw = make_gateway("longest_idle")
    _sipp_agents(sipp_factory, gw, ["1003", "1001", "1002"], calls=3)
    # Log in order 1002, 1003, 1001 via pause/unpause: idle_since follows that order.
    for ext in ("1001", "1002", "1003"):
        _api(gw, f"/api/agents/{ext}/pause", "POST")
    for ext in ("1002", "1003", "1001"):
        _api(gw, f"/api/agents/{ext}/unpause", "POST")
        time.sleep(0.05)
    caller = _caller(sipp_factory, gw, carrier_port, talk_ms=300, calls=3, rate=1)
    assert caller.start().wait(30).ok, caller.result().describe()
    gw.wait_for(lambda: len(gw.gw.store.interactions(10)) == 3, 10, "three interactions")
    assert [r["agent"] for r in _interactions(gw)] == ["1002", "1003", "1001"]


def test_ivr_menu_routes_by_dtmf_and_records_the_path(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    carrier_port: int,
) -> None:
    gw = make_gateway("linear")
    _sipp_agents(sipp_factory, gw, ["1001"], calls=1)
    # Press 1 (sales) while the menu plays (barge-in).
    caller = _caller(
        sipp_factory, gw, carrier_port, "+865000", talk_ms=1500, digits=((2500, "1"), (0, "-"))
    )
    result = caller.start().wait(30)
    assert result.ok, result.describe()
    gw.wait_for(lambda: len(gw.gw.store.interactions(10)) == 1, 10, "the interaction")
    rec = _interactions(gw)[0]
    assert rec["queue"] == "sales" and rec["agent"] == "1001" and rec["outcome"] == "answered"
    assert "main/menu:1" in rec["ivr_path"], rec["ivr_path"]


def test_abandoned_call_is_counted_and_frees_nothing_it_should_not(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    carrier_port: int,
) -> None:
    gw = make_gateway("ringall")
    # Nobody's phone is registered: the caller waits, hears the queue, and gives up.
    caller = _caller(sipp_factory, gw, carrier_port, talk_ms=2500)
    assert caller.start().wait(20).ok, caller.result().describe()
    gw.wait_for(lambda: len(gw.gw.store.interactions(10)) == 1, 10, "the interaction")
    rec = _interactions(gw)[0]
    assert rec["outcome"] == "abandoned" and rec["agent"] is None and rec["wait_s"] > 2.0
    snap = _api(gw, "/api/queues/support")
    assert snap["day"]["abandoned"] == 1 and snap["waiting"] == 0, snap
    assert all(a["state"] == "available" for a in _api(gw, "/api/agents"))
    assert "ccgw_queue_abandoned" in gw.metrics()


def test_vip_caller_jumps_the_line(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    ports = [peers.free_port("127.0.0.1", "udp") for _ in range(3)]
    gw = make_gateway("linear", queue={"members": ["1001"]}, more_carriers=ports)
    phone = baresip_factory("1001", registrar=gw.sip, password=AGENTS["1001"], answermode="manual")
    phone.start()
    phone.wait_registered(10)
    _api(gw, "/api/agents/1001/pause", "POST")  # nobody answers while the line builds up
    normal = [
        _caller(sipp_factory, gw, port, "+865000", talk_ms=9000, digits=((1500, "2"), (0, "-")))
        for port in ports[:2]
    ]  # fmt: skip
    for c in normal:
        c.start()
        time.sleep(0.3)
    time.sleep(2.5)
    vip = _caller(
        sipp_factory, gw, ports[2], "+865000", talk_ms=6000,
        digits=((1500, "3"), (0, "-")),
    )  # fmt: skip
    vip.start()
    line = gw.gw.cc.queues["support"].line
    gw.wait_for(lambda: line.live_count() == 3, 10, "three waiting")
    vip_id = gw.call(lambda: next(e.call_id for e in line.entries() if e.priority == 10))
    _api(gw, "/api/agents/1001/unpause", "POST")
    phone.wait_event("CALL_INCOMING", 5)
    # The call offered first is the VIP's, although two callers were waiting before it.
    assert gw.call(lambda: gw.gw.cc.agents.get("1001").call_id) == vip_id
    for c in [*normal, vip]:
        c.stop()


def test_no_agent_logged_in_sends_the_caller_to_voicemail_which_is_fetchable(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    carrier_port: int,
) -> None:
    import http.server
    import threading

    hooks: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hooks.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    mail = SmtpSink().__enter__()
    cc = {"webhook": hook_url, "smtp": mail.address, "mail_to": ["supervisor@sh.example"]}
    gw = make_gateway("ringall", extra={"cc": cc})
    for ext in AGENTS:
        _api(gw, f"/api/agents/{ext}/logout", "POST")
    caller = _caller(sipp_factory, gw, carrier_port, talk_ms=6000)  # speaks (a tone) throughout
    assert caller.start().wait(20).ok, caller.result().describe()
    gw.wait_for(lambda: len(gw.gw.store.voicemails(None, 5)) == 1, 5, "the voicemail")
    msgs = _api(gw, "/api/voicemail")
    assert len(msgs) == 1 and msgs[0]["box"] == "support" and msgs[0]["seconds"] > 1.0, msgs
    url = f"http://127.0.0.1:{gw.gw.http_port}/api/voicemail/{msgs[0]['id']}.wav"
    with urllib.request.urlopen(url, timeout=5) as r:
        wav = r.read()
    assert wav[:4] == b"RIFF" and len(wav) > 8000
    rec = _interactions(gw)[0]
    assert rec["outcome"] == "voicemail"
    deadline = time.monotonic() + 5
    while not hooks and time.monotonic() < deadline:
        time.sleep(0.05)
    server.shutdown()
    assert hooks and hooks[0]["event"] == "voicemail" and hooks[0]["data"]["box"] == "support"
    # And an e-mail to the supervisor, with the recording attached.
    assert mail.received.wait(10)
    mail.__exit__(None, None, None)
    (msg,) = mail.messages
    assert msg["To"] == "supervisor@sh.example" and "support" in msg["Subject"], msg
    (att,) = list(msg.iter_attachments())
    assert att.get_content_type() == "audio/wav" and att.get_content()[:4] == b"RIFF"


def test_agent_logs_out_and_in_with_feature_codes_from_the_phone(
    make_gateway: Callable[..., GatewayThread],
    baresip_factory: Callable[..., peers.Baresip],
) -> None:
    gw = make_gateway("linear")
    phone = baresip_factory("1002", registrar=gw.sip, password=AGENTS["1002"])
    phone.start()
    phone.wait_registered(10)

    def state() -> str:
        return str(next(a["state"] for a in _api(gw, "/api/agents") if a["extension"] == "1002"))

    assert state() == "available"
    phone.dial(f"sip:*46@{gw.sip}")  # log out: a beep, "goodbye", and the gateway hangs up
    phone.wait_event("CALL_CLOSED", 15)
    assert state() == "logged_out"
    since = len(phone.events)
    phone.dial(f"sip:*45@{gw.sip}")
    phone.wait_event("CALL_CLOSED", 15, since=since)
    assert state() == "available"
    rec = _interactions(gw)
    assert [r["outcome"] for r in rec] == ["feature", "feature"]


def test_a_waiting_caller_hears_hold_position_and_wait_prompts_then_music(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    rtp_peer_factory: Callable[..., peers.RtpPeer],
    carrier_port: int,
) -> None:
    import numpy as np

    from gateway.cc.prompts import PromptLibrary

    gw = make_gateway("ringall")  # nobody is registered: the caller waits
    ear = rtp_peer_factory()
    caller = sipp_factory(
        "caller_ivr.xml", gw.sip, local_port=carrier_port, service="+864000",
        keys={"talk_ms": "7000", "d1_ms": "0", "digit1": "-", "d2_ms": "0", "digit2": "-",
              "audio": "off", "sdp_port": str(ear.port)},
        timeout=20,
    )  # fmt: skip
    assert caller.start().wait(20).ok, caller.result().describe()
    heard = ear.samples(0).astype(np.float64)
    assert len(heard) > 5 * 8000, len(heard)  # a steady 50 packets/s while waiting
    prompts = PromptLibrary()["en"]
    for pid in ("please_hold", "position_is"):
        ref = prompts.samples(pid).astype(np.float64)
        # Normalised cross-correlation: the prompt is in what the caller heard (G.711 round trip).
        corr = np.correlate(heard, ref, mode="valid")
        energy = np.sqrt(np.convolve(heard**2, np.ones(len(ref)), mode="valid") * np.sum(ref**2))
        best = float(np.max(corr / np.maximum(energy, 1e-9)))
        assert best > 0.9, (pid, best)


def _pending(gw: GatewayThread) -> list[dict[str, Any]]:
    return gw.call(lambda: gw.gw.store.callbacks(None))


def test_callback_keeps_its_place_survives_a_restart_and_is_placed_agent_first(
    tmp_path: Path,
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    cfg = site_config(
        ("127.0.0.1", carrier_port), tmp_path / "site.db",
        queues=_queues("linear", members=["1001"]), ivr=TEST_IVR,
    )  # fmt: skip
    # 1. Nobody is free: the caller presses 9, leaves their number (their own) and hangs up.
    with GatewayThread(cfg) as gw:
        _api(gw, "/api/agents/1001/pause", "POST")
        caller = _caller(
            sipp_factory, gw, carrier_port, "+865000", talk_ms=6000, digits=((1500, "9"), (0, "-"))
        )
        caller.start().wait(20)  # the gateway hangs up after "we will call you back"
        gw.wait_for(lambda: len(gw.gw.cc.callbacks) == 1, 10, "the callback request")
        rows = _pending(gw)
        assert [r["status"] for r in rows] == ["pending"] and rows[0]["number"] == "+8613800138000"
    # 2. The gateway restarts: the request is back in its queue, in its original place.
    with GatewayThread(cfg) as gw:
        assert gw.call(lambda: len(gw.gw.cc.callbacks)) == 1
        line = gw.gw.cc.queues["support"].line
        assert gw.call(lambda: [e.virtual for e in line.entries()]) == [True]
        # 3. An agent becomes free: their phone rings first, then the customer is dialled.
        carrier = sipp_factory("carrier_uas.xml", local_port=carrier_port, timeout=30).start()
        phone = baresip_factory("1001", registrar=gw.sip, password=AGENTS["1001"])
        phone.start()
        phone.wait_registered(10)
        gw.wait_for(lambda: bool(gw.gw.edge.locate("1001")), 5, "the registration")
        gw.call(gw.gw.cc.dispatch)
        phone.wait_event("CALL_ESTABLISHED", 10)
        gw.wait_for(
            lambda: gw.gw.store.callbacks(None)[0]["status"] == "connected", 10, "the customer"
        )
        time.sleep(1.0)
        phone.hangup()
        result = carrier.wait(15)
        assert result.ok, result.describe()
        assert any("DIALLED +8613800138000" in line for line in result.log_lines)
        row = _pending(gw)[0]
        assert row["agent"] == "1001" and row["attempts"] == 1
        assert gw.call(lambda: line.live_count()) == 0


def test_an_agent_whose_phone_dies_while_ringing_is_not_left_stuck(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    gw = make_gateway("linear", queue={"members": ["1001"]})
    phone = baresip_factory("1001", registrar=gw.sip, password=AGENTS["1001"], answermode="manual")
    phone.start()
    phone.wait_registered(10)
    caller = _caller(sipp_factory, gw, carrier_port, talk_ms=30000)
    caller.start()
    phone.wait_event("CALL_INCOMING", 10)
    phone.kill(grace=0)  # the phone dies while it rings

    def agent() -> dict[str, Any]:
        return next(a for a in _api(gw, "/api/agents") if a["extension"] == "1001")

    assert agent()["state"] == "ringing"
    # Each offer to the dead phone ends at the ring timeout (3 s) and the agent is free again;
    # the waiting call is offered again, and after three unanswered offers the agent is paused
    # ("no-answer"): a state a supervisor sees, never a stuck RINGING or ON_CALL.
    deadline = time.monotonic() + 20
    seen_free = False
    state = agent()
    while time.monotonic() < deadline:
        state = agent()
        seen_free = seen_free or state["state"] != "ringing"
        if state["state"] == "paused":
            break
        time.sleep(0.1)
    assert seen_free
    assert state["state"] == "paused" and state["pause_reason"] == "no-answer", state
    assert state["call_id"] is None, state
    assert gw.call(lambda: gw.gw.cc.queues["support"].line.live_count()) == 1  # still waiting
    caller.stop()


def test_a_callback_scheduled_for_a_requested_time_is_placed_then_and_not_before(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    gw = make_gateway("linear", queue={"members": ["1001"]})
    phone = baresip_factory("1001", registrar=gw.sip, password=AGENTS["1001"])
    phone.start()
    phone.wait_registered(10)
    carrier = sipp_factory("carrier_uas.xml", local_port=carrier_port, timeout=30).start()
    url = f"http://127.0.0.1:{gw.gw.http_port}/api/callbacks"
    bad = _post_json(url, {"number": "1002", "queue": "support", "at": 0})
    assert bad[0] == 400 and "not an external number" in bad[1]["reason"], bad  # no toll fraud
    naive = _post_json(url, {"number": "+8613900139000", "queue": "support", "at": "2026-11-26"})
    assert naive[0] == 400 and "UTC offset" in naive[1]["reason"], naive
    due = time.time() + 3
    status, body = _post_json(url, {"number": "+8613900139000", "queue": "support", "at": due})
    assert status == 201, body
    line = gw.gw.cc.queues["support"].line
    time.sleep(1.5)  # not yet: nothing waits in the queue, nobody rings
    assert gw.call(lambda: line.live_count()) == 0
    phone.wait_event("CALL_ESTABLISHED", 10)  # when it is due: the agent first ...
    assert time.time() >= due - 0.1
    gw.wait_for(lambda: gw.gw.store.callbacks(None)[0]["status"] == "connected", 10, "the customer")
    time.sleep(0.5)
    phone.hangup()
    result = carrier.wait(15)
    assert result.ok and any("DIALLED +8613900139000" in ln for ln in result.log_lines)


def test_with_an_api_token_no_callback_reaches_the_pstn_without_it(
    make_gateway: Callable[..., GatewayThread],
) -> None:
    """A callback dials the PSTN: with ``[http] api_token`` set, the API asks for it, a missing
    and a wrong token get the same 401, repeated failures ban the source, nothing is placed."""
    token = "callback-token-0123456789"
    gw = make_gateway(
        "linear",
        queue={"members": ["1001"]},
        extra={"http": {"api_token": token}, "security": {"fail_limit": 3}},
    )
    url = f"http://127.0.0.1:{gw.gw.http_port}/api/callbacks"
    doc = {"number": "+8613900139000", "queue": "support", "at": time.time() + 3600}
    missing = _post_json(url, doc)
    wrong = _post_json(url, doc, token="x" * 20)
    assert missing[0] == wrong[0] == 401 and missing[1] == wrong[1], (missing, wrong)
    assert gw.call(lambda: gw.gw.store.callbacks(None)) == []
    status, body = _post_json(url, doc, token=token)
    assert status == 201, body
    assert len(gw.call(lambda: gw.gw.store.callbacks(None))) == 1
    for _ in range(3):
        assert _post_json(url, doc)[0] == 401
    assert _post_json(url, doc, token=token)[0] == 429  # banned now, even with the token
    metrics = gw.metrics()
    assert "ccgw_http_auth_failures_total 5" in metrics
    assert "ccgw_http_auth_bans_total 1" in metrics


def _post_json(
    url: str, doc: dict[str, Any], token: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_fewest_calls_gives_the_next_call_to_the_agent_who_took_fewest(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    carrier_port: int,
) -> None:
    gw = make_gateway("fewest_calls")
    _sipp_agents(sipp_factory, gw, list(AGENTS), calls=4)
    for ext in ("1002", "1003"):
        _api(gw, f"/api/agents/{ext}/pause", "POST")
    first = _caller(sipp_factory, gw, carrier_port, talk_ms=300, calls=2, rate=1)
    assert first.start().wait(30).ok, first.result().describe()  # 1001 alone takes two
    for ext in ("1002", "1003"):
        _api(gw, f"/api/agents/{ext}/unpause", "POST")
    gw.wait_for(lambda: len(gw.gw.store.interactions(10)) == 2, 10, "two interactions")
    more = _caller(sipp_factory, gw, carrier_port, talk_ms=300, calls=4, rate=1)
    assert more.start().wait(40).ok, more.result().describe()
    gw.wait_for(lambda: len(gw.gw.store.interactions(10)) == 6, 10, "six interactions")
    order = [r["agent"] for r in _interactions(gw)]
    # 1002 and 1003 (no calls yet) come before 1001 (two); then the counts are even again.
    assert order[:2] == ["1001", "1001"] and sorted(order[2:4]) == ["1002", "1003"], order
    counts = {a: order.count(a) for a in AGENTS}
    assert counts == {"1001": 2, "1002": 2, "1003": 2}, order


def test_random_spreads_calls_over_the_agents_in_no_fixed_order(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    carrier_port: int,
) -> None:
    import random

    gw = make_gateway("random")
    gw.gw.cc.rng = random.Random(
        20261125
    )  # the choices are the gateway's; the seed makes them repeatable
    _sipp_agents(sipp_factory, gw, list(AGENTS), calls=12)
    caller = _caller(sipp_factory, gw, carrier_port, talk_ms=200, calls=12, rate=2)
    assert caller.start().wait(40).ok, caller.result().describe()
    gw.wait_for(lambda: len(gw.gw.store.interactions(20)) == 12, 10, "twelve interactions")
    order = [r["agent"] for r in _interactions(gw)]
    assert set(order) == set(AGENTS), order  # everyone gets calls ...
    rotation = [list(AGENTS)[i % 3] for i in range(12)]
    assert order != rotation, order  # ... but not in turn


def test_ivr_menu_takes_rfc4733_digits_from_the_media(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    carrier_port: int,
) -> None:
    gw = make_gateway("linear")
    _sipp_agents(sipp_factory, gw, ["1001"], calls=1)
    # "1" as RTP telephone-events (RFC 4733) while the welcome plays (barge-in): sales.
    caller = sipp_factory(
        "carrier_uac_dtmf.xml", gw.sip, local_port=carrier_port, service="+865000",
        dtmf_digits="1", keys={"dtmf_ms": "1500", "info_digit": "#", "talk_ms": "1500"},
        timeout=30,
    )  # fmt: skip
    result = caller.start().wait(30)
    assert result.ok, result.describe()
    gw.wait_for(lambda: len(gw.gw.store.interactions(10)) == 1, 10, "the interaction")
    rec = _interactions(gw)[0]
    assert rec["queue"] == "sales" and rec["agent"] == "1001", rec
    assert "main/menu:1" in rec["ivr_path"], rec["ivr_path"]


def test_a_known_customer_reaches_their_named_agent_first(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    carrier_port: int,
) -> None:
    gw = make_gateway("linear")  # linear would offer 1001 first
    _sipp_agents(sipp_factory, gw, ["1001", "1002"], calls=1)
    status, record = _post_json(
        f"http://127.0.0.1:{gw.gw.http_port}/api/customers/C-7",
        {"fields": {"name": "Zhou Min", "phones": ["+8613800138000"], "named_agent": "1002"},
         "author": "1003"},
    )  # fmt: skip
    assert status == 200 and record["named_agent"] == "1002", record
    caller = _caller(sipp_factory, gw, carrier_port, talk_ms=500)
    assert caller.start().wait(30).ok, caller.result().describe()
    gw.wait_for(lambda: len(gw.gw.store.interactions(10)) == 1, 10, "the interaction")
    rec = _interactions(gw)[0]
    assert rec["agent"] == "1002" and rec["customer_id"] == "C-7", rec
