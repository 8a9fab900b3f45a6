"""A site gateway with real peers: SIPp as the carrier, baresip as the agents' phones.

Every call crosses real sockets on loopback: carrier → gateway (B2BUA, RTP relay) → agent phone.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import audio, peers
from .gateway import AGENTS, TEST_IVR, GatewayThread, site_config

pytestmark = pytest.mark.integration


@pytest.fixture
def carrier_port() -> int:
    return peers.free_port("127.0.0.1", "udp")


@pytest.fixture
def make_gateway(tmp_path: Path, carrier_port: int) -> Iterator[Callable[..., GatewayThread]]:
    started: list[GatewayThread] = []

    def make(**kw: object) -> GatewayThread:
        cfg = site_config(("127.0.0.1", carrier_port), tmp_path / "site.db", **kw)  # type: ignore[arg-type]
        gw = GatewayThread(cfg).__enter__()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.__exit__(None, None, None)


def _agent(
    baresip_factory: Callable[..., peers.Baresip], gw: GatewayThread, ext: str, **kw: object
) -> peers.Baresip:
    phone = baresip_factory(ext, registrar=gw.sip, password=AGENTS[ext], **kw)
    phone.start()
    phone.wait_registered(10)
    return phone


def _cdrs(gw: GatewayThread) -> list:  # type: ignore[type-arg]
    return gw.call(lambda: gw.gw.store.recent_cdrs(50))


def test_carrier_call_reaches_registered_agent_with_audio_both_ways(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    gw = make_gateway()
    phone = _agent(baresip_factory, gw, "1001", tone_hz=440.0)
    assert gw.call(lambda: gw.gw.registrar.bindings_count()) == 1
    carrier = sipp_factory(
        "carrier_uac.xml", gw.sip, local_port=carrier_port, service="+861000",
        keys={"talk_ms": "3000"}, tone_hz=1000.0, timeout=20,
    )  # fmt: skip
    result = carrier.start().wait(25)
    assert result.ok, result.describe()
    # The relay saw both directions: the carrier's tone towards the phone, the phone's towards it.
    gw.wait_for(lambda: gw.gw.b2bua.active_calls == 0, 5, "the call to end")
    totals = gw.call(lambda: gw.gw.relay.totals)
    assert totals["packets_in"] > 150, totals
    assert totals["packets_relayed"] > 150, totals
    # What the phone heard is the carrier's 1000 Hz tone (±5 %).
    phone.stop()
    heard = phone.recordings("dec")
    assert heard, "baresip recorded nothing"
    freq = audio.dominant_frequency(max(heard, key=lambda p: p.stat().st_size))
    assert 950 < freq < 1050, freq
    gw.wait_for(lambda: len(gw.gw.store.recent_cdrs(5)) == 1, 5, "the CDR")
    cdr = _cdrs(gw)[0]
    assert cdr.direction == "inbound" and cdr.agent == "1001" and cdr.answer_ts is not None
    assert cdr.hangup_side == "caller" and cdr.trunk == "carrier"
    assert gw.call(lambda: gw.gw.store.outbox_depth()) == 1  # the CDR's outbox row
    assert gw.call(lambda: gw.gw.relay.active_sessions) == 0  # ports returned


def test_agent_hangs_up_first(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    gw = make_gateway()
    phone = _agent(baresip_factory, gw, "1001")
    carrier = sipp_factory(
        "carrier_uac_wait_bye.xml", gw.sip, local_port=carrier_port, service="+861000", timeout=20
    )
    carrier.start()
    gw.wait_for(lambda: gw.gw.b2bua.counters.answered == 1, 10, "the agent to answer")
    time.sleep(1.0)
    phone.hangup()
    result = carrier.wait(15)
    assert result.ok, result.describe()
    gw.wait_for(lambda: len(gw.gw.store.recent_cdrs(5)) == 1, 5, "the CDR")
    assert _cdrs(gw)[0].hangup_side == "callee"


def test_carrier_cancels_before_answer(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    gw = make_gateway()
    _agent(baresip_factory, gw, "1001", answermode="manual")
    carrier = sipp_factory(
        "carrier_uac_cancel.xml", gw.sip, local_port=carrier_port, service="+861000", timeout=20
    )
    result = carrier.start().wait(25)
    assert result.ok, result.describe()
    gw.wait_for(lambda: len(gw.gw.store.recent_cdrs(5)) == 1, 5, "the CDR")
    cdr = _cdrs(gw)[0]
    assert cdr.cause_code == 487 and cdr.answer_ts is None
    gw.wait_for(lambda: gw.gw.relay.active_sessions == 0, 5, "the relay ports back")


def test_no_answer_ends_with_480_and_cancels_the_phone(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    gw = make_gateway(no_answer_timeout=2.0)
    phone = _agent(baresip_factory, gw, "1001", answermode="manual")
    carrier = sipp_factory(
        "carrier_uac_expect_error.xml", gw.sip, local_port=carrier_port, service="+861000",
        timeout=20,
    )  # fmt: skip
    result = carrier.start().wait(25)
    assert result.ok, result.describe()
    assert 480 in result.final_statuses, result.describe()
    # The phone stopped ringing: it saw the CANCEL (baresip reports the call closed).
    phone.wait_event("CALL_CLOSED", 5)


def test_busy_agent_gives_486(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    carrier_port: int,
) -> None:
    gw = make_gateway()
    # The "phone" is SIPp: it registers from a port, then answers INVITEs there with 486.
    agent_port = peers.free_port("127.0.0.1", "udp")
    reg = sipp_factory(
        "register.xml", gw.sip, local_port=agent_port, service="1002",
        auth=("1002", AGENTS["1002"]), extra_args=["-auth_uri", gw.sip], timeout=10,
    )  # fmt: skip
    assert reg.start().wait(15).ok, reg.result().describe()
    busy = sipp_factory("agent_uas_busy.xml", local_port=agent_port, timeout=20).start()
    carrier = sipp_factory(
        "carrier_uac_expect_error.xml", gw.sip, local_port=carrier_port, service="+861002",
        timeout=20,
    )  # fmt: skip
    result = carrier.start().wait(25)
    assert 486 in result.final_statuses, result.describe()
    busy.stop()


def test_hold_and_resume_pass_through(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    gw = make_gateway()
    _agent(baresip_factory, gw, "1001")
    carrier = sipp_factory(
        "carrier_uac_hold.xml", gw.sip, local_port=carrier_port, service="+861000", timeout=25
    )
    result = carrier.start().wait(30)
    assert result.ok, result.describe()
    msgs = result.messages()
    # The hold answer the carrier got says the phone will only receive (or nothing).
    assert "a=recvonly" in msgs or "a=inactive" in msgs, msgs[-3000:]


def test_dtmf_by_rfc4733_and_info_is_reported_once_each(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    gw = make_gateway()
    _agent(baresip_factory, gw, "1001")
    carrier = sipp_factory(
        "carrier_uac_dtmf.xml", gw.sip, local_port=carrier_port, service="+861000",
        dtmf_digits="42", keys={"info_digit": "7"}, timeout=25,
    )  # fmt: skip
    result = carrier.start().wait(30)
    assert result.ok, result.describe()
    digits = gw.call(lambda: [d for _, leg, d in gw.gw.dtmf_recent if leg == "a"])
    assert digits == ["4", "2", "7"], digits
    assert "ccgw_dtmf_digits_total 3" in gw.metrics()


def _register_sipp(sipp_factory: Callable[..., peers.Sipp], gw: GatewayThread, ext: str) -> int:
    """Register ``ext`` from a fresh port with SIPp; return the port (a SIPp UAS listens there)."""
    port = peers.free_port("127.0.0.1", "udp")
    reg = sipp_factory(
        "register.xml", gw.sip, local_port=port, service=ext, auth=(ext, AGENTS[ext]),
        extra_args=["-auth_uri", gw.sip], timeout=10,
    )  # fmt: skip
    assert reg.start().wait(15).ok, reg.result().describe()
    return port


def test_ring_all_rings_every_agent_and_exactly_one_wins(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    gw = make_gateway()
    phones = [_agent(baresip_factory, gw, ext, answermode="manual") for ext in AGENTS]
    carrier = sipp_factory(
        "carrier_uac.xml", gw.sip, local_port=carrier_port, service="+862000",
        keys={"talk_ms": "1500"}, timeout=20,
    )  # fmt: skip
    carrier.start()
    for p in phones:
        p.wait_event("CALL_INCOMING", 10)
    phones[1].accept()
    result = carrier.wait(20)
    assert result.ok, result.describe()
    # The two others stopped ringing (CANCEL), the winner talked until the carrier's BYE.
    for p in phones:
        p.wait_event("CALL_CLOSED", 5)
    established = [
        p.ext for p in phones if any(e.get("type") == "CALL_ESTABLISHED" for e in p.events)
    ]
    assert established == ["1002"], established
    gw.wait_for(lambda: len(gw.gw.store.recent_cdrs(5)) == 1, 5, "the CDR")
    cdr = _cdrs(gw)[0]
    assert cdr.agent == "1002" and cdr.destination == "group:all"


def test_ring_all_race_of_two_answers_keeps_one_and_hangs_up_the_other(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    gw = make_gateway()
    phones = [_agent(baresip_factory, gw, ext) for ext in ("1001", "1002")]  # both auto-answer
    carrier = sipp_factory(
        "carrier_uac.xml", gw.sip, local_port=carrier_port, service="+862000",
        keys={"talk_ms": "2000"}, timeout=20,
    )  # fmt: skip
    result = carrier.start().wait(20)
    assert result.ok, result.describe()
    gw.wait_for(lambda: gw.gw.b2bua.active_calls == 0, 5, "the call to end")
    # Whatever the race, one call reached the carrier and no phone is left in a call.
    for p in phones:
        p.wait_event("CALL_CLOSED", 5)
    assert gw.call(lambda: gw.gw.b2bua.counters.answered) == 1
    assert gw.call(lambda: gw.gw.relay.active_sessions) == 0


def test_hunt_group_tries_agents_in_order(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    gw = make_gateway(ring_timeout=1.0)
    quiet = [_agent(baresip_factory, gw, ext, answermode="manual") for ext in ("1001", "1002")]
    last = _agent(baresip_factory, gw, "1003")
    carrier = sipp_factory(
        "carrier_uac.xml", gw.sip, local_port=carrier_port, service="+863000",
        keys={"talk_ms": "1000"}, timeout=20,
    )  # fmt: skip
    t0 = time.monotonic()
    result = carrier.start().wait(20)
    assert result.ok, result.describe()
    assert time.monotonic() - t0 > 2.0  # two ring timeouts passed before 1003 answered
    rang = [p.wait_event("CALL_INCOMING", 1)["_t"] for p in quiet]
    rang.append(last.wait_event("CALL_ESTABLISHED", 1)["_t"])  # auto-answer: no INCOMING event
    assert rang == sorted(rang), rang
    for p in quiet:
        p.wait_event("CALL_CLOSED", 2)
    gw.wait_for(lambda: len(gw.gw.store.recent_cdrs(5)) == 1, 5, "the CDR")
    assert _cdrs(gw)[0].agent == "1003"


def test_stalled_media_ends_the_call(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    carrier_port: int,
) -> None:
    gw = make_gateway(stall_timeout=2.0)
    port = _register_sipp(sipp_factory, gw, "1001")
    agent = sipp_factory("agent_uas.xml", local_port=port, timeout=20).start()  # sends no RTP
    # SIPp's built-in uac sends no RTP either, and would hold the call for 30 s.
    carrier = sipp_factory(
        "uac", gw.sip, local_port=carrier_port, service="+861000",
        extra_args=["-d", "30000"], timeout=20,
    )  # fmt: skip
    carrier.start()
    gw.wait_for(lambda: gw.gw.b2bua.counters.answered == 1, 10, "the answer")
    t0 = time.monotonic()
    gw.wait_for(lambda: gw.gw.b2bua.counters.stalled == 1, 6, "the stall")
    assert time.monotonic() - t0 < 4.5
    assert agent.wait(10).ok  # the agent got its BYE and answered it
    gw.wait_for(lambda: len(gw.gw.store.recent_cdrs(5)) == 1, 5, "the CDR")
    cdr = _cdrs(gw)[0]
    assert cdr.hangup_side == "system" and "Media" in cdr.cause_text
    carrier.stop()


def test_agent_on_tcp_registers_and_takes_a_call_over_its_connection(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    gw = make_gateway()
    phone = baresip_factory("1001", registrar=f"{gw.sip};transport=tcp", password=AGENTS["1001"])
    phone.start()
    phone.wait_registered(10)
    binding = gw.call(lambda: gw.gw.registrar.lookup("1001", time.time()))[0]
    assert binding.source.transport == "TCP"
    carrier = sipp_factory(
        "carrier_uac.xml", gw.sip, local_port=carrier_port, service="+861000",
        keys={"talk_ms": "1000"}, timeout=20,
    )  # fmt: skip
    result = carrier.start().wait(20)
    assert result.ok, result.describe()
    phone.wait_event("CALL_CLOSED", 5)
    assert gw.call(lambda: gw.gw.b2bua.counters.answered) == 1


def test_keepalive_removes_a_dead_phone_and_keeps_a_live_one(
    make_gateway: Callable[..., GatewayThread],
    baresip_factory: Callable[..., peers.Baresip],
) -> None:
    # T1 = 100 ms makes an unanswered OPTIONS time out (timer F = 64 T1) in 6.4 s: short for
    # the test, long enough that a live phone on a loaded machine still answers in time.
    gw = make_gateway(extra={"sip": {"T1": 0.1, "options_ping_interval": 1.0}})
    live = _agent(baresip_factory, gw, "1001")
    dead = _agent(baresip_factory, gw, "1002")
    assert gw.call(lambda: gw.gw.registrar.bindings_count()) == 2
    dead.kill(grace=0)
    gw.wait_for(lambda: gw.gw.registrar.bindings_count() == 1, 30, "the dead phone's removal")
    assert gw.call(lambda: [b.user for b in gw.gw.registrar.lookup("1001", time.time())]) == [
        "1001"
    ]
    assert gw.call(lambda: gw.gw.edge.counters.keepalive_removed) == 1
    assert live.running()


def test_internal_call_between_agents_transcodes_pcma_to_pcmu_both_ways(
    make_gateway: Callable[..., GatewayThread],
    baresip_factory: Callable[..., peers.Baresip],
) -> None:
    gw = make_gateway()
    caller = _agent(baresip_factory, gw, "1001", codecs=("PCMA",), tone_hz=600.0)
    callee = _agent(baresip_factory, gw, "1002", codecs=("PCMU",), tone_hz=1400.0)
    caller.dial(f"sip:1002@{gw.sip}")
    callee.wait_event("CALL_ESTABLISHED", 10)
    time.sleep(3.0)
    legs = gw.call(lambda: [(s.stats("a"), s.stats("b")) for s in gw.gw.relay._sessions.values()])
    assert len(legs) == 1
    a, b = legs[0]
    assert (a["codec_pt"], b["codec_pt"]) == (8, 0)  # A-law caller, μ-law callee
    assert a["packets_in"] > 100 and b["packets_in"] > 100  # both directions flowed
    assert a["lost"] == 0 and b["lost"] == 0
    caller.hangup()
    callee.wait_event("CALL_CLOSED", 5)
    gw.wait_for(lambda: len(gw.gw.store.recent_cdrs(5)) == 1, 5, "the CDR")
    cdr = _cdrs(gw)[0]
    assert cdr.direction == "internal" and cdr.caller == "1001" and cdr.agent == "1002"
    caller.stop()
    callee.stop()
    # Each phone heard the other's tone, through the A-law ⇄ μ-law transcoder.
    for phone, want in ((caller, 1400.0), (callee, 600.0)):
        rec = max(phone.recordings("dec"), key=lambda p: p.stat().st_size)
        freq = audio.dominant_frequency(rec)
        assert abs(freq - want) < want * 0.05, (phone.ext, freq)


def test_a_hundred_calls_leave_nothing_behind(
    make_gateway: Callable[..., GatewayThread],
    sipp_factory: Callable[..., peers.Sipp],
    carrier_port: int,
) -> None:
    # T1 = 50 ms: the transactions' linger timers (D, I, J, K) end within a second or two.
    gw = make_gateway(extra={"sip": {"T1": 0.05}})
    gw.call(lambda: setattr(gw.gw.b2bua, "linger", 0.5))
    port = _register_sipp(sipp_factory, gw, "1001")
    agent = sipp_factory("agent_uas.xml", local_port=port, calls=100, timeout=60).start()
    carrier = sipp_factory(
        "carrier_uac.xml", gw.sip, local_port=carrier_port, service="+861000", calls=100,
        rate=20, keys={"talk_ms": "200", "audio": "off"}, timeout=60,
    )  # fmt: skip
    result = carrier.start().wait(60)
    assert result.ok and result.successful == 100, result.describe()
    assert agent.wait(10).ok
    gw.wait_for(lambda: gw.gw.b2bua.active_calls == 0, 5, "every call to end")
    gw.wait_for(
        lambda: not gw.gw.b2bua.calls and not gw.gw.b2bua.txns, 5, "call state to be forgotten"
    )
    gw.wait_for(lambda: gw.gw.endpoint.layer.transaction_count() == 0, 10, "transactions to end")
    assert gw.call(lambda: gw.gw.relay.active_sessions) == 0
    # Ports still taken are exactly the idle pairs kept bound for the next calls (the pool).
    assert gw.call(lambda: gw.gw.relay.ports.in_use == gw.gw.relay.pooled)
    gw.wait_for(lambda: gw.gw.cdrs_written == 100, 10, "a hundred CDRs")
    assert gw.call(lambda: gw.gw.endpoint.counters.tu_errors) == 0


def test_behind_nat_the_advertised_address_is_what_peers_see(
    make_gateway: Callable[..., GatewayThread], carrier_port: int
) -> None:
    """``[sip] advertise`` / ``[media] advertise``: a site bound to its private address puts
    its public one in Contact and SDP, so the carrier's ACK, BYE and RTP come to the router.
    Here the "router" is the test, sending to the gateway's real address."""
    public = "127.0.0.9"
    gw = make_gateway(
        queues=[{"name": "support", "members": ["1001"]}, {"name": "sales", "members": ["1001"]}],
        ivr=TEST_IVR,
        extra={"sip": {"advertise": public}},
    )
    host, port = gw.gw.cfg.sip.listen, gw.gw.sip_port
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", carrier_port))
    sock.settimeout(5)
    me = f"127.0.0.1:{carrier_port}"
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )

    def request(method: str, cseq: int, to_tag: str = "", body: str = "") -> bytes:
        to = f"<sip:+865000@{host}>" + (f";tag={to_tag}" if to_tag else "")
        return (
            f"{method} sip:+865000@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {me};branch=z9hG4bK-nat-{method}-{cseq};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:+8613800138000@{me}>;tag=nat\r\nTo: {to}\r\n"
            f"Call-ID: nat-test\r\nCSeq: {cseq} {method}\r\nContact: <sip:c@{me}>\r\n"
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()

    def final(method: str) -> str:
        while True:
            text = sock.recv(65535).decode()
            if text.startswith("SIP/2.0 1") or f" {method}\r\n" not in text:
                continue
            return text

    sock.sendto(request("INVITE", 1, body=sdp), (host, port))
    ok = final("INVITE")
    assert ok.startswith("SIP/2.0 200"), ok
    contact = re.search(r"\r\nContact: <sip:[^@]+@([^:;>]+)", ok)
    assert contact is not None and contact.group(1) == public, ok
    assert f"c=IN IP4 {public}\r\n" in ok, ok  # media from the router, too
    to_tag = re.search(r"\r\nTo: [^\r]*;tag=([^;\r]+)", ok)
    assert to_tag is not None
    sock.sendto(request("ACK", 1, to_tag.group(1)), (host, port))
    sock.sendto(request("BYE", 2, to_tag.group(1)), (host, port))
    assert final("BYE").startswith("SIP/2.0 200")
    sock.close()
    gw.wait_for(lambda: len(gw.gw.store.recent_cdrs(5)) == 1, 10, "the CDR")
