"""SDP parse/serialise (RFC 4566) and the offer/answer helpers (RFC 3264)."""

from __future__ import annotations

import pytest

from gateway.sip.errors import SipError
from gateway.sip.sdp import (
    Attribute,
    Codec,
    MalformedSdp,
    NotAcceptableHere,
    SessionDescription,
    answer_direction,
    build_answer,
    is_hold,
    negotiate,
    rewrite_for_relay,
    telephone_event,
)


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


CARRIER_OFFER = sdp(
    "v=0",
    "o=carrier 1234567 890 IN IP4 203.0.113.5",
    "s=Talk",
    "c=IN IP4 203.0.113.5",
    "t=0 0",
    "m=audio 30000 RTP/AVP 18 0 8 101",
    "a=rtpmap:18 G729/8000",
    "a=fmtp:18 annexb=no",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=sendrecv",
)

# Everything RFC 4566 §5 allows, in its order, plus an unknown line type and attributes.
FULL = sdp(
    "v=0",
    "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5",
    "s=SDP Seminar",
    "i=A Seminar on the session description protocol",
    "u=http://www.example.com/seminars/sdp.pdf",
    "e=j.doe@example.com (Jane Doe)",
    "p=+1 617 555-6011",
    "c=IN IP4 224.2.17.12/127",
    "b=AS:256",
    "t=2873397496 2873404696",
    "r=7d 1h 0 25h",
    "z=2882844526 -1h 2898848070 0",
    "k=prompt",
    "y=unknown-line-kept",
    "a=recvonly",
    "a=x-vendor:thing with spaces",
    "m=audio 49170 RTP/AVP 0",
    "i=voice",
    "c=IN IP4 198.51.100.7",
    "b=TIAS:64000",
    "k=prompt",
    "a=x-first",
    "a=rtpmap:0 PCMU/8000",
    "a=x-last:1",
    "m=video 51372/2 RTP/AVP 99",
    "a=rtpmap:99 h263-1998/90000",
    "m=application 9 udp/bfcp *",
)


@pytest.mark.parametrize("raw", [CARRIER_OFFER, FULL])
def test_round_trip(raw: bytes) -> None:
    parsed = SessionDescription.parse(raw)
    assert bytes(parsed) == raw
    assert SessionDescription.parse(raw.decode()) == parsed


def test_fields() -> None:
    s = SessionDescription.parse(FULL)
    assert s.origin.username == "jdoe" and s.origin.session_version == 2890842807
    assert s.connection is not None and s.connection.host == "224.2.17.12"
    assert s.timing[0].start == 2873397496 and s.timing[0].repeats == ["7d 1h 0 25h"]
    assert s.extra == [("y", "unknown-line-kept")]
    assert s.attribute("x-vendor") == "thing with spaces"
    audio, video, app = s.media
    assert audio is s.audio
    assert (video.port, video.port_count, video.proto, video.formats) == (
        51372,
        2,
        "RTP/AVP",
        ["99"],
    )
    assert app.formats == ["*"] and app.payload_types == []
    assert [a.name for a in audio.attributes] == ["x-first", "rtpmap", "x-last"]
    assert s.connection_address(audio) == "198.51.100.7"  # media c= overrides session c=
    assert s.connection_address(video) == "224.2.17.12"
    assert s.direction_of(audio) == "recvonly"  # from the session level
    assert s.effective_direction == "recvonly"


def test_lf_only_and_blank_lines_are_tolerated() -> None:
    text = CARRIER_OFFER.decode().replace("\r\n", "\n") + "\n"
    parsed = SessionDescription.parse(text)
    assert bytes(parsed) == CARRIER_OFFER


def test_codecs() -> None:
    s = SessionDescription.parse(CARRIER_OFFER)
    assert s.codecs() == [
        Codec(18, "G729", 8000),
        Codec(0, "PCMU", 8000),
        Codec(8, "PCMA", 8000),
        Codec(101, "telephone-event", 8000),
    ]
    audio = s.audio
    assert audio is not None
    assert audio.ptime == 20
    assert audio.fmtp == {18: "annexb=no", 101: "0-16"}
    assert audio.direction == "sendrecv"
    assert telephone_event(audio) == 101
    # static payload types need no rtpmap (RFC 3551 Table 4); unknown dynamic ones are skipped
    bare = SessionDescription.parse(
        sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "c=IN IP4 1.2.3.4", "t=0 0",
            "m=audio 5000 RTP/AVP 8 0 96 13")
    )  # fmt: skip
    assert [c.encoding_name for c in bare.codecs()] == ["PCMA", "PCMU", "CN"]
    assert telephone_event(bare.audio) is None


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "v=0"),
        (sdp("o=- 1 1 IN IP4 1.2.3.4", "s=-"), "v=0"),
        (sdp("v=0", "s=-"), "o="),
        (sdp("v=0"), "no o="),
        (sdp("v=0", "o=- 1 x IN IP4 1.2.3.4"), "origin"),
        (sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "c=IN IP9 1.2.3.4"), "connection"),
        (sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "c=IN IP4 1.2.3.4", "m=audio x RTP/AVP 0"), "port"),
        (sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "c=IN IP4 1.2.3.4", "m=audio 1 RTP/AVP"), "media"),
        (
            sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "c=IN IP4 1.2.3.4", "m=audio 1 RTP/AVP 0 200"),
            "payload type",
        ),
        (sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "m=audio 4000 RTP/AVP 0"), "no c="),
        (sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "garbage"), "line 3"),
        (sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "a=bad name"), "attribute"),
        (sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "t=now"), "timing"),
        (
            sdp(
                "v=0", "o=- 1 1 IN IP4 1.2.3.4", "c=IN IP4 1.2.3.4", "m=audio 1 RTP/AVP 0", "t=0 0"
            ),
            "inside",
        ),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=\xff\r\n", "UTF-8"),
    ],
)
def test_malformed(raw: bytes, fragment: str) -> None:
    with pytest.raises(MalformedSdp) as info:
        SessionDescription.parse(raw)
    assert isinstance(info.value, SipError)
    assert info.value.status == 400
    assert fragment in info.value.detail


def test_rejected_stream_needs_no_connection() -> None:
    s = SessionDescription.parse(sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "t=0 0",
                                     "m=audio 0 RTP/AVP 0"))  # fmt: skip
    assert s.audio is not None and s.audio.port == 0


# ------------------------------------------------------------------------- offer/answer


def test_rewrite_for_relay() -> None:
    offer = SessionDescription.parse(CARRIER_OFFER)
    out = rewrite_for_relay(offer, "192.0.2.10", 20000)
    assert offer == SessionDescription.parse(CARRIER_OFFER)  # the original is untouched
    assert out.origin.session_version == 891
    assert out.origin.address == "192.0.2.10"
    assert out.connection_address(out.audio) == "192.0.2.10"
    audio = out.audio
    assert audio is not None
    assert audio.port == 20000
    assert audio.formats == ["0", "8", "101"]
    assert audio.fmtp == {101: "0-16"}  # G.729's fmtp went with it
    assert [str(a) for a in audio.attributes] == [
        "rtpmap:0 PCMU/8000",
        "rtpmap:8 PCMA/8000",
        "rtpmap:101 telephone-event/8000",
        "fmtp:101 0-16",
        "ptime:20",
        "sendrecv",
    ]
    again = SessionDescription.parse(bytes(out))
    assert again == out


def test_rewrite_disables_other_streams_and_drops_transport_attributes() -> None:
    offer = SessionDescription.parse(
        sdp(
            "v=0",
            "o=- 5 7 IN IP4 10.0.0.1",
            "s=-",
            "c=IN IP4 10.0.0.1",
            "t=0 0",
            "a=ice-ufrag:abcd",
            "m=audio 4000 RTP/SAVP 0 96",
            "c=IN IP4 10.0.0.2",
            "a=rtpmap:96 telephone-event/48000",
            "a=rtcp:4005",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:xyz",
            "a=candidate:1 1 UDP 1 10.0.0.2 4000 typ host",
            "m=video 4002 RTP/AVP 99",
            "a=rtpmap:99 H264/90000",
        )
    )
    out = rewrite_for_relay(offer, "2001:db8::1", 20002, session_id=42, version=3)
    assert str(out.origin) == "- 42 3 IN IP6 2001:db8::1"
    assert out.connection is not None and out.connection.addrtype == "IP6"
    assert out.attributes == []
    audio, video = out.media
    assert audio.proto == "RTP/AVP" and audio.formats == ["0"]  # telephone-event/48000 dropped
    assert audio.connection is None and audio.attributes == []
    assert video.port == 0 and video.formats == ["99"]


def test_rewrite_keeps_hold() -> None:
    held = SessionDescription.parse(CARRIER_OFFER.replace(b"a=sendrecv", b"a=sendonly"))
    out = rewrite_for_relay(held, "192.0.2.10", 20000)
    assert out.audio is not None and out.audio.direction == "sendonly"
    assert is_hold(out)
    old_style = SessionDescription.parse(
        CARRIER_OFFER.replace(b"c=IN IP4 203.0.113.5", b"c=IN IP4 0.0.0.0")
    )
    out = rewrite_for_relay(old_style, "192.0.2.10", 20000)
    assert out.connection_address() == "192.0.2.10"
    assert out.audio is not None and out.audio.direction == "sendonly"
    session_level = SessionDescription.parse(
        CARRIER_OFFER.replace(b"a=sendrecv\r\n", b"").replace(b"t=0 0", b"t=0 0\r\na=inactive")
    )
    out = rewrite_for_relay(session_level, "192.0.2.10", 20000)
    assert out.direction is None
    assert out.audio is not None and out.audio.direction == "inactive"


def test_rewrite_without_allowed_codec_is_488() -> None:
    offer = SessionDescription.parse(
        sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "c=IN IP4 1.2.3.4", "t=0 0",
            "m=audio 5000 RTP/AVP 18 101", "a=rtpmap:101 telephone-event/8000")
    )  # fmt: skip
    with pytest.raises(NotAcceptableHere) as info:
        rewrite_for_relay(offer, "192.0.2.10", 20000)
    assert info.value.status == 488
    assert "G729" in info.value.detail


def test_negotiate() -> None:
    offer = SessionDescription.parse(CARRIER_OFFER)
    assert negotiate(offer) == Codec(0, "PCMU", 8000)
    assert negotiate(offer, ("PCMA",)) == Codec(8, "PCMA", 8000)
    assert negotiate(offer, ("pcma", "pcmu")) == Codec(0, "PCMU", 8000)  # offerer's order
    with pytest.raises(NotAcceptableHere, match="no common codec"):
        negotiate(offer, ("opus",))
    no_audio = SessionDescription.parse(
        sdp("v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "c=IN IP4 1.2.3.4", "t=0 0",
            "m=video 5000 RTP/AVP 99")
    )  # fmt: skip
    with pytest.raises(NotAcceptableHere, match="no active audio"):
        negotiate(no_audio)


def test_build_answer() -> None:
    offer = SessionDescription.parse(
        CARRIER_OFFER + b"m=video 30002 RTP/AVP 99\r\na=rtpmap:99 H264/90000\r\n"
    )
    answer = build_answer(offer, "192.0.2.10", 20000, 0, 101, 777, 1)
    assert bytes(answer) == sdp(
        "v=0",
        "o=- 777 1 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 20000 RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
        "m=video 0 RTP/AVP 99",
    )
    assert SessionDescription.parse(bytes(answer)) == answer


def test_build_answer_without_dtmf_and_errors() -> None:
    offer = SessionDescription.parse(CARRIER_OFFER)
    answer = build_answer(offer, "192.0.2.10", 20000, 8, None, "9", 2)
    assert answer.audio is not None and answer.audio.formats == ["8"]
    # a telephone-event type that was not offered is left out
    answer = build_answer(offer, "192.0.2.10", 20000, 8, 96, "9", 2)
    assert answer.audio is not None and answer.audio.formats == ["8"]
    with pytest.raises(NotAcceptableHere, match="payload type 9"):
        build_answer(offer, "192.0.2.10", 20000, 9, None, "9", 2)
    disabled = SessionDescription.parse(CARRIER_OFFER.replace(b"m=audio 30000", b"m=audio 0"))
    with pytest.raises(NotAcceptableHere):
        build_answer(disabled, "192.0.2.10", 20000, 0, None, "9", 2)
    srtp = SessionDescription.parse(CARRIER_OFFER.replace(b"RTP/AVP", b"RTP/SAVP"))
    with pytest.raises(NotAcceptableHere, match="SAVP"):
        build_answer(srtp, "192.0.2.10", 20000, 0, None, "9", 2)


@pytest.mark.parametrize(
    ("offered", "wanted", "answered"),
    [
        ("sendrecv", "sendrecv", "sendrecv"),
        ("sendonly", "sendrecv", "recvonly"),
        ("recvonly", "sendrecv", "sendonly"),
        ("inactive", "sendrecv", "inactive"),
        ("sendrecv", "sendonly", "sendonly"),
        ("sendrecv", "inactive", "inactive"),
        ("sendonly", "sendonly", "inactive"),
        ("recvonly", "recvonly", "inactive"),
    ],
)
def test_answer_direction(offered: str, wanted: str, answered: str) -> None:
    assert answer_direction(offered, wanted) == answered
    offer = SessionDescription.parse(CARRIER_OFFER.replace(b"a=sendrecv", f"a={offered}".encode()))
    answer = build_answer(offer, "192.0.2.10", 20000, 0, 101, 1, 1, wanted)
    assert answer.audio is not None and answer.audio.direction == answered


def test_old_style_hold_answer_is_recvonly() -> None:
    offer = SessionDescription.parse(
        CARRIER_OFFER.replace(b"c=IN IP4 203.0.113.5", b"c=IN IP4 0.0.0.0")
    )
    answer = build_answer(offer, "192.0.2.10", 20000, 0, None, 1, 1)
    assert answer.audio is not None and answer.audio.direction == "recvonly"


@pytest.mark.parametrize(
    ("change", "held"),
    [
        ((b"", b""), False),
        ((b"a=sendrecv", b"a=sendonly"), True),
        ((b"a=sendrecv", b"a=inactive"), True),
        ((b"a=sendrecv", b"a=recvonly"), False),
        ((b"c=IN IP4 203.0.113.5", b"c=IN IP4 0.0.0.0"), True),
        ((b"m=audio 30000", b"m=audio 0"), False),
    ],
)
def test_is_hold(change: tuple[bytes, bytes], held: bool) -> None:
    raw = CARRIER_OFFER.replace(*change) if change[0] else CARRIER_OFFER
    assert is_hold(SessionDescription.parse(raw)) is held


def test_set_direction_and_attribute_helpers() -> None:
    s = SessionDescription.parse(CARRIER_OFFER)
    audio = s.audio
    assert audio is not None
    audio.set_direction("inactive")
    assert audio.attribute_values("inactive") == [""]
    assert audio.attribute("sendrecv") is None
    assert audio.attributes[-1] == Attribute("inactive")
    audio.set_direction(None)
    assert audio.direction is None and s.direction_of(audio) == "sendrecv"
    with pytest.raises(ValueError):
        audio.set_direction("sideways")
