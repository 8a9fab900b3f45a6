"""Toll fraud, scanners and bad input against a running site gateway, with real peers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import peers
from .gateway import AGENTS, GatewayThread, site_config

pytestmark = pytest.mark.integration

EXTERNAL = "+8613800138000"
CARRIER = "127.0.0.5"  # the carrier's host is trusted (never banned): keep attackers off it
RFC4475 = Path(__file__).resolve().parent.parent / "data" / "rfc4475"


@pytest.fixture
def carrier_port() -> int:
    return peers.free_port(CARRIER, "udp")


@pytest.fixture
def gw(tmp_path: Path, carrier_port: int) -> Iterator[GatewayThread]:
    cfg = site_config((CARRIER, carrier_port), tmp_path / "site.db")
    with GatewayThread(cfg) as g:
        yield g


def _carrier_log_invites(carrier: peers.Sipp) -> int:
    return carrier.result().messages().count("INVITE sip:")


def test_unauthenticated_invite_to_pstn_is_challenged_never_forwarded(
    gw: GatewayThread, sipp_factory: Callable[..., peers.Sipp], carrier_port: int
) -> None:
    carrier = sipp_factory(
        "carrier_uas.xml", local_host=CARRIER, local_port=carrier_port, timeout=8
    ).start()
    fraud = sipp_factory(
        "carrier_uac_expect_error.xml", gw.sip, service=EXTERNAL, keys={"expect_status": "any"},
        timeout=8,
    )  # fmt: skip
    result = fraud.start().wait(12)
    # No credentials: 407, which this scenario cannot answer → SIPp counts it failed; the carrier
    # never saw an INVITE.
    assert "SIP/2.0 407" in result.messages(), result.describe()
    carrier.stop()
    assert _carrier_log_invites(carrier) == 0
    assert gw.call(lambda: gw.gw.b2bua.counters.refused) >= 1


@pytest.mark.parametrize("user", ["1001", "9999"])
def test_wrong_password_and_unknown_user_get_the_same_403(
    gw: GatewayThread, sipp_factory: Callable[..., peers.Sipp], carrier_port: int, user: str
) -> None:
    carrier = sipp_factory(
        "carrier_uas.xml", local_host=CARRIER, local_port=carrier_port, timeout=8
    ).start()
    fraud = sipp_factory(
        "invite_auth.xml", gw.sip, service=EXTERNAL, auth=(user, "wrong-password"),
        extra_args=["-auth_uri", f"{EXTERNAL}@{gw.sip}"], timeout=8,
    )  # fmt: skip
    result = fraud.start().wait(12)
    assert result.final_statuses == [403], result.describe()
    carrier.stop()
    assert _carrier_log_invites(carrier) == 0


def test_authenticated_agent_reaches_the_pstn(
    gw: GatewayThread, sipp_factory: Callable[..., peers.Sipp], carrier_port: int
) -> None:
    carrier = sipp_factory(
        "carrier_uas.xml", local_host=CARRIER, local_port=carrier_port, timeout=15
    ).start()
    agent = sipp_factory(
        "invite_auth.xml", gw.sip, service=EXTERNAL, auth=("1001", AGENTS["1001"]),
        extra_args=["-auth_uri", f"{EXTERNAL}@{gw.sip}"], keys={"caller": "1001"}, timeout=10,
    )  # fmt: skip
    result = agent.start().wait(15)
    assert result.final_statuses == [200], result.describe()
    assert carrier.wait(10).ok, carrier.result().describe()
    gw.wait_for(lambda: len(gw.gw.store.recent_cdrs(5)) == 1, 5, "the CDR")
    cdr = gw.call(lambda: gw.gw.store.recent_cdrs(5))[0]
    assert cdr.direction == "outbound" and cdr.caller == "1001" and cdr.callee == EXTERNAL
    assert cdr.trunk == "carrier" and cdr.answer_ts is not None


def test_register_with_wrong_password_is_refused_then_the_source_banned(
    gw: GatewayThread, sipp_factory: Callable[..., peers.Sipp]
) -> None:
    # fail_limit is 3 in the test site: three wrong passwords, then the source is banned and
    # dropped silently (the fourth attempt times out instead of getting an answer).
    port = peers.free_port("127.0.0.1", "udp")
    for _ in range(3):
        reg = sipp_factory(
            "register.xml", gw.sip, local_port=port, service="1001", auth=("1001", "nope"),
            extra_args=["-auth_uri", gw.sip], keys={"expect_status": "403"}, timeout=5,
        )  # fmt: skip
        result = reg.start().wait(8)
        assert result.final_statuses == [403], result.describe()
    assert gw.call(lambda: gw.gw.edge.counters.bans) == 1
    assert "ccgw_bans_total 1" in gw.metrics()
    # Banned: even the right password gets no answer now.
    reg = sipp_factory(
        "register.xml", gw.sip, local_port=port, service="1001", auth=("1001", AGENTS["1001"]),
        extra_args=["-auth_uri", gw.sip], keys={"expect_status": "any"}, timeout=3,
    )  # fmt: skip
    result = reg.start().wait(6)
    assert result.final_statuses == [], result.describe()
    assert gw.call(lambda: gw.gw.registrar.bindings_count()) == 0


def _garbage() -> list[bytes]:
    out = [p.read_bytes() for p in sorted(RFC4475.glob("*.dat"))]
    out += [
        b"\x00\xff" * 40,
        b"INVITE",
        b"INVITE sip:x SIP/2.0\r\n",
        b"SIP/2.0 200\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\n"
        + b"X: "
        + b"a" * 70000,
        b"\r\n\r\n",
        bytes(range(256)),
    ]
    valid = (
        b"OPTIONS sip:ccgw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKabc\r\n"
        b"To: <sip:ccgw@127.0.0.1>\r\nFrom: <sip:x@127.0.0.1>;tag=1\r\nCall-ID: g1\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    out += [valid[:n] for n in range(0, len(valid), 7)]
    return out


def test_malformed_datagrams_leave_a_call_in_progress_unharmed(
    gw: GatewayThread,
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
) -> None:
    phone = baresip_factory("1001", registrar=gw.sip, password=AGENTS["1001"])
    phone.start()
    phone.wait_registered(10)
    carrier = sipp_factory(
        "carrier_uac.xml", gw.sip, local_host=CARRIER, local_port=carrier_port, service="+861000",
        keys={"talk_ms": "4000"}, timeout=20,
    )  # fmt: skip
    carrier.start()
    gw.wait_for(lambda: gw.gw.b2bua.counters.answered == 1, 10, "the call to be answered")
    host, port = gw.sip.split(":")
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.05)
        for data in _garbage():
            try:
                s.sendto(data[:65507], (host, int(port)))
                sent += 1
            except OSError:
                pass
        time.sleep(0.5)
        answers = []
        while True:
            try:
                answers.append(s.recv(65535))
            except TimeoutError:
                break
    assert sent > 40
    # Every answer is a well-formed response (the RFC 4475 set has valid messages too, which
    # get their 200/404/...), most of them 400 naming the cause; nothing crashed.
    assert all(a.startswith(b"SIP/2.0 ") for a in answers), [
        a[:300] for a in answers if not a.startswith(b"SIP/2.0 ")
    ]
    bad = [a for a in answers if a.startswith(b"SIP/2.0 400")]
    assert len(bad) >= 10, answers
    assert sum(b"Warning: 399" in a for a in bad) >= 10  # the parse error, named
    result = carrier.wait(20)
    assert result.ok, result.describe()
    ep = gw.call(lambda: gw.gw.endpoint.counters)
    assert ep.tu_errors == 0
    assert ep.bad_requests + ep.dropped >= sent // 2
    gw.wait_for(lambda: len(gw.gw.store.recent_cdrs(5)) == 1, 5, "the CDR")
    cdr = gw.call(lambda: gw.gw.store.recent_cdrs(5))[0]
    assert cdr.answer_ts is not None and cdr.hangup_side == "caller"
    assert "ccgw_sip_errors_total" in gw.metrics()


def test_outbound_call_answers_the_carriers_challenge(
    gw: GatewayThread, sipp_factory: Callable[..., peers.Sipp], carrier_port: int
) -> None:
    carrier = sipp_factory(
        "carrier_uas_auth.xml", local_host=CARRIER, local_port=carrier_port, timeout=15,
        keys={"trunk_user": "gw", "trunk_pass": "trunk-secret"},
    )  # fmt: skip
    carrier.start()
    agent = sipp_factory(
        "invite_auth.xml", gw.sip, service=EXTERNAL, auth=("1001", AGENTS["1001"]),
        extra_args=["-auth_uri", f"{EXTERNAL}@{gw.sip}"], keys={"caller": "1001"}, timeout=10,
    )  # fmt: skip
    result = agent.start().wait(15)
    assert result.final_statuses == [200], result.describe()
    assert carrier.wait(10).ok, carrier.result().describe()
    assert any("AUTH_VALID true" in line for line in carrier.result().log_lines)


@pytest.mark.parametrize(("password", "status"), [("trunk-secret", 200), ("wrong", 403)])
def test_trunk_with_inbound_auth_needs_the_carriers_digest(
    tmp_path: Path,
    sipp_factory: Callable[..., peers.Sipp],
    baresip_factory: Callable[..., peers.Baresip],
    carrier_port: int,
    password: str,
    status: int,
) -> None:
    cfg = site_config((CARRIER, carrier_port), tmp_path / "site.db", inbound_auth=True)
    with GatewayThread(cfg) as gw:
        phone = baresip_factory("1001", registrar=gw.sip, password=AGENTS["1001"])
        phone.start()
        phone.wait_registered(10)
        carrier = sipp_factory(
            "invite_auth.xml", gw.sip, local_host=CARRIER, local_port=carrier_port,
            service="+861000", auth=("gw", password),
            extra_args=["-auth_uri", f"+861000@{gw.sip}"], timeout=10,
        )  # fmt: skip
        result = carrier.start().wait(15)
        assert result.final_statuses == [status], result.describe()
