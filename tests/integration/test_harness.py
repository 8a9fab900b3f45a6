"""The integration harness proves itself: SIPp and baresip talking to each other on loopback.

No gateway is involved; if these fail, gateway integration tests built on the harness cannot
be trusted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

try:
    from . import audio, peers
except ImportError:
    import audio  # type: ignore[no-redef]
    import peers  # type: ignore[no-redef]

pytestmark = pytest.mark.integration

SippFactory = Callable[..., peers.Sipp]
BaresipFactory = Callable[..., peers.Baresip]
RtpFactory = Callable[..., peers.RtpPeer]


def _uas(sipp_factory: SippFactory, scenario: str, **kw: object) -> peers.Sipp:
    kw.setdefault("timeout", 15)
    return sipp_factory(scenario, **kw).start()


def test_free_port_ranges() -> None:
    p = peers.free_port(kind="both", span=2)
    assert peers.free_port(kind="both", span=2) not in (p, p + 1)
    m = peers.free_port(even=True, span=2, step=2)
    assert m % 2 == 0


def test_builtin_uac_to_uas(sipp_factory: SippFactory) -> None:
    uas = _uas(sipp_factory, "uas")
    res = sipp_factory("uac", remote=uas.address, timeout=10, extra_args=["-d", "100"]).run()
    assert res.ok and res.successful == 1, res.describe()
    ures = uas.wait(10)
    assert ures.ok, ures.describe()


def test_carrier_uac_streams_tone_to_agent_uas(
    sipp_factory: SippFactory, rtp_peer_factory: RtpFactory
) -> None:
    # the agent answers with a Python RTP endpoint's port in its SDP: what the carrier streams
    # (rtp_stream, 1000 Hz PCMU) must arrive there
    media = rtp_peer_factory()
    uas = _uas(sipp_factory, "agent_uas.xml", keys={"sdp_port": str(media.port)})
    uac = sipp_factory(
        "carrier_uac.xml", remote=uas.address, service="4001", keys={"talk_ms": "1200"}
    )
    res = uac.run(timeout=15)
    assert res.ok and res.successful == 1, res.describe()
    assert uas.wait(10).ok, uas.describe()
    assert media.count(0) >= 30, f"only {media.count()} RTP packets\n{res.describe()}"
    freq = media.dominant_frequency(0)
    assert abs(freq - 1000) < 20, freq
    assert "INVITE sip:4001@" in res.messages()


def test_carrier_uac_rtp_echo(sipp_factory: SippFactory, rtp_peer_factory: RtpFactory) -> None:
    # SIPp -rtp_echo on the agent, and a Python endpoint as the carrier's media: the tone it
    # sends comes back
    media = rtp_peer_factory()
    uas = _uas(sipp_factory, "agent_uas.xml", rtp_echo=True)
    uac = sipp_factory(
        "carrier_uac.xml",
        remote=uas.address,
        keys={"talk_ms": "1500", "sdp_port": str(media.port), "audio": "off"},
    )
    uac.start()
    media.send_tone(("127.0.0.1", uas.media_port), 700, 1.2)
    res = uac.wait(15)
    assert res.ok, res.describe()
    assert media.count(0) >= 30
    assert abs(media.dominant_frequency(0) - 700) < 15


def test_cancel_against_noanswer(sipp_factory: SippFactory) -> None:
    uas = _uas(sipp_factory, "agent_uas_noanswer.xml")
    res = sipp_factory("carrier_uac_cancel.xml", remote=uas.address, timeout=10).run()
    assert res.ok, res.describe()
    ures = uas.wait(10)
    assert ures.ok, ures.describe()
    msgs = res.messages()
    assert "CANCEL sip:" in msgs and "487 Request Terminated" in msgs


def test_expect_error_reads_final_status(sipp_factory: SippFactory) -> None:
    uas = _uas(sipp_factory, "agent_uas_busy.xml")
    res = sipp_factory(
        "carrier_uac_expect_error.xml", remote=uas.address, keys={"expect_status": "486"}
    ).run(timeout=10)
    assert res.ok, res.describe()
    assert res.final_statuses == [486]
    assert uas.wait(10).ok, uas.describe()


def test_expect_error_mismatch_fails(sipp_factory: SippFactory) -> None:
    uas = _uas(sipp_factory, "agent_uas_busy.xml")
    res = sipp_factory(
        "carrier_uac_expect_error.xml", remote=uas.address, keys={"expect_status": "503"}
    ).run(timeout=10)
    assert res.returncode == 1 and res.failed == 1, res.describe()
    assert res.final_statuses == [486]
    uas.wait(10)


def test_wait_bye_against_agent_hangup(sipp_factory: SippFactory) -> None:
    uas = _uas(sipp_factory, "agent_uas_hangup.xml", rtp_echo=True, keys={"talk_ms": "500"})
    res = sipp_factory("carrier_uac_wait_bye.xml", remote=uas.address, timeout=10).run()
    assert res.ok, res.describe()
    assert uas.wait(10).ok, uas.describe()


def test_hold_resume_against_agent_uas(sipp_factory: SippFactory) -> None:
    uas = _uas(sipp_factory, "agent_uas.xml", rtp_echo=True)
    res = sipp_factory(
        "carrier_uac_hold.xml", remote=uas.address, keys={"hold_ms": "300", "talk_ms": "300"}
    ).run(timeout=15)
    assert res.ok, res.describe()
    assert res.logged("HOLD_ANSWER") == ["recvonly"]
    assert uas.wait(10).ok, uas.describe()


def test_dtmf_events_and_info(sipp_factory: SippFactory, rtp_peer_factory: RtpFactory) -> None:
    media = rtp_peer_factory()
    uas = _uas(sipp_factory, "agent_uas.xml", keys={"sdp_port": str(media.port)}, timeout=20)
    res = sipp_factory(
        "carrier_uac_dtmf.xml",
        remote=uas.address,
        dtmf_digits="12#",
        keys={"dtmf_ms": "1600", "talk_ms": "200", "info_digit": "7"},
    ).run(timeout=20)
    assert res.ok, res.describe()
    assert media.dtmf_digits(101) == "12#", media.rtp()[:5]
    assert "Signal=7" in res.messages()
    ures = uas.wait(10)
    assert ures.ok, ures.describe()
    assert ures.logged("INFO_DTMF") == ["7"]


def test_carrier_uas_logs_dialled_number(sipp_factory: SippFactory) -> None:
    uas = _uas(sipp_factory, "carrier_uas.xml", rtp_echo=True)
    res = sipp_factory(
        "carrier_uac.xml", remote=uas.address, service="8613912345678", keys={"talk_ms": "300"}
    ).run(timeout=10)
    assert res.ok, res.describe()
    ures = uas.wait(10)
    assert ures.ok, ures.describe()
    assert ures.logged("DIALLED") == ["8613912345678"]


def test_sipp_stop_ends_a_hung_run(sipp_factory: SippFactory) -> None:
    # nobody answers: the INVITE is retransmitted; stop() must end it at once with stats
    port = peers.free_port()
    uac = sipp_factory("carrier_uac.xml", remote=f"127.0.0.1:{port}", timeout=30)
    uac.start()
    res = uac.wait(1.0)
    assert res.killed and not uac.running()
    assert not res.ok


def test_two_baresip_phones_hear_each_other(baresip_factory: BaresipFactory) -> None:
    a = baresip_factory("1001", tone_hz=440).start()
    b = baresip_factory("1002", tone_hz=1000).start()
    assert a.dial(b.uri)["ok"]
    a.wait_event("CALL_ESTABLISHED", timeout=5)
    b.wait_event("CALL_ESTABLISHED", timeout=5)
    time.sleep(2.0)
    a.hangup()
    b.wait_event("CALL_CLOSED", timeout=5)
    a.stop()
    b.stop()
    a_dec, b_dec = a.recordings("dec"), b.recordings("dec")
    assert a_dec and b_dec, (a.describe(), b.describe())
    fa = audio.dominant_frequency(a_dec[-1])
    fb = audio.dominant_frequency(b_dec[-1])
    assert abs(fa - 1000) < 50, (fa, a_dec)
    assert abs(fb - 440) < 22, (fb, b_dec)
    assert audio.duration_s(a_dec[-1]) > 1.0


def test_baresip_dials_sipp_agent(
    baresip_factory: BaresipFactory, sipp_factory: SippFactory
) -> None:
    uas = _uas(sipp_factory, "agent_uas.xml", rtp_echo=True, service="2001")
    phone = baresip_factory("1001", tone_hz=600).start()
    phone.dial(f"sip:2001@{uas.address}")
    phone.wait_event("CALL_ESTABLISHED", timeout=5)
    time.sleep(1.5)
    phone.hangup()
    res = uas.wait(10)
    assert res.ok, res.describe()
    phone.stop()
    dec = phone.recordings("dec")
    assert dec, phone.describe()
    # SIPp echoed the phone's own tone back
    assert abs(audio.dominant_frequency(dec[-1]) - 600) < 30


@pytest.mark.parametrize(
    ("password", "expect", "valid"), [("secret", 200, "true"), ("wrong", 403, "false")]
)
def test_register_against_sipp_registrar(
    sipp_factory: SippFactory, password: str, expect: int, valid: str
) -> None:
    reg = _uas(sipp_factory, "registrar_uas.xml", keys={"reg_user": "1001", "reg_pass": "secret"})
    res = sipp_factory(
        "register.xml",
        remote=reg.address,
        service="1001",
        auth=("1001", password),
        keys={"expect_status": str(expect)},
    ).run(timeout=10)
    assert res.ok, res.describe()
    assert res.final_statuses == [expect]
    rres = reg.wait(10)
    assert rres.logged("AUTH_VALID") == [valid], rres.describe()


def test_baresip_registers(baresip_factory: BaresipFactory, sipp_factory: SippFactory) -> None:
    reg = _uas(sipp_factory, "registrar_uas.xml", keys={"reg_user": "1001", "reg_pass": "pw1"})
    phone = baresip_factory("1001", registrar=reg.address, password="pw1").start()
    phone.wait_registered(timeout=10)
    assert reg.wait(5).logged("AUTH_VALID") == ["true"]


def test_baresip_manual_answer(baresip_factory: BaresipFactory) -> None:
    a = baresip_factory("1001").start()
    b = baresip_factory("1002", answermode="manual").start()
    a.dial(b.uri)
    b.wait_event("CALL_INCOMING", timeout=5)
    time.sleep(0.3)
    assert not [e for e in b.events if e.get("type") == "CALL_ESTABLISHED"]
    assert b.accept()["ok"]
    a.wait_event("CALL_ESTABLISHED", timeout=5)
    b.hangup()
    a.wait_event("CALL_CLOSED", timeout=5)
