"""The SDP steps of a B2BUA that anchors media in its relay (RFC 3264 offer/answer on two legs)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.sip import sdp as _sdp
from gateway.sip.sdp import Attribute, SessionDescription

RELAY_CODECS = ("PCMU", "PCMA")
_STATIC = {"PCMU": 0, "PCMA": 8}

_PARSED: dict[bytes, SessionDescription] = {}
_PARSED_MAX = 4096


def _parse(body: bytes) -> SessionDescription:
    """Parse once per distinct body: a call's offer and answer are read several times.

    The result is shared: callers must not change it (``rewrite_for_relay`` and
    ``build_answer`` build new descriptions)."""
    sdp = _PARSED.get(body)
    if sdp is None:
        sdp = SessionDescription.parse(body)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[body] = sdp
    return sdp


@dataclass(frozen=True, slots=True)
class Offer:
    """What the relay needs from one side's SDP."""

    host: str
    port: int
    codec_pt: int
    dtmf_pt: int | None
    hold: bool


def parse_offer(body: bytes) -> Offer:
    """Where a side wants its audio and in which codec (its first G.711 one); 488/400 on bad SDP."""
    sdp = _parse(body)
    codec = _sdp.negotiate(sdp, RELAY_CODECS)
    audio = sdp.audio
    assert audio is not None
    host = sdp.connection_address(audio) or "0.0.0.0"
    return Offer(
        host, audio.port, codec.payload_type, _sdp.telephone_event(audio), _sdp.is_hold(sdp)
    )


def relay_offer(body: bytes, host: str, port: int, session_id: int, version: int) -> bytes:
    """Leg a's offer as we pass it to leg b: media through the relay, only G.711 and DTMF, and
    both G.711 laws offered so that a callee of either law can answer (we transcode)."""
    sdp = _sdp.rewrite_for_relay(_parse(body), host, port, session_id=session_id, version=version)
    audio = sdp.audio
    if audio is not None:
        names = {c.encoding_name.upper() for c in audio.codecs()}
        for name in RELAY_CODECS:
            if name not in names:
                pt = _STATIC[name]
                dtmf = [f for f in audio.formats if not f.isdigit() or int(f) >= 96]
                media = [f for f in audio.formats if f not in dtmf]
                audio.formats = [*media, str(pt), *dtmf]
                audio.attributes.insert(0, Attribute("rtpmap", f"{pt} {name}/8000"))
    return bytes(sdp)


def relay_answer_passthrough(
    body: bytes, host: str, port: int, session_id: int, version: int
) -> bytes:
    """An answer passed on as it is, but for the address (re-INVITE answers)."""
    return bytes(
        _sdp.rewrite_for_relay(_parse(body), host, port, session_id=session_id, version=version)
    )


def relay_answer(
    a_offer: bytes, b_answer: bytes, host: str, port: int, session_id: int, version: int
) -> tuple[bytes, int, int | None]:
    """Our answer to leg a, given leg b's answer: (SDP, leg a's codec, leg a's DTMF payload type).

    Leg a gets leg b's codec when it offered it (no transcoding), else its own first G.711 codec.
    """
    offer = _parse(a_offer)
    answer = _parse(b_answer)
    b_codec = _sdp.negotiate(answer, RELAY_CODECS)
    a_audio = offer.audio
    assert a_audio is not None
    pt = None
    for c in a_audio.codecs():
        if c.encoding_name.upper() == b_codec.encoding_name.upper() and c.clock_rate == 8000:
            pt = c.payload_type
            break
    if pt is None:
        pt = _sdp.negotiate(offer, RELAY_CODECS).payload_type
    dtmf = _sdp.telephone_event(a_audio)
    b_audio = answer.audio
    direction = answer.direction_of(b_audio)
    sdp = _sdp.build_answer(offer, host, port, pt, dtmf, session_id, version, direction)
    return bytes(sdp), pt, dtmf


def local_answer(
    a_offer: bytes, host: str, port: int, session_id: int, version: int
) -> tuple[bytes, int, int | None]:
    """Our answer when the gateway itself answers leg a (IVR, queue): its first G.711 codec and
    its telephone-event, media at the relay. Returns (SDP, codec, DTMF payload type)."""
    offer = _parse(a_offer)
    codec = _sdp.negotiate(offer, RELAY_CODECS)
    dtmf = _sdp.telephone_event(offer.audio)
    sdp = _sdp.build_answer(offer, host, port, codec.payload_type, dtmf, session_id, version)
    return bytes(sdp), codec.payload_type, dtmf


def make_offer(host: str, port: int, session_id: int = 0, version: int = 0) -> bytes:
    """Our own offer (a call the gateway starts): PCMU, PCMA and telephone-event at the relay."""
    return (
        f"v=0\r\no=ccgw {session_id} {version} IN IP4 {host}\r\ns=ccgw\r\nc=IN IP4 {host}\r\n"
        f"t=0 0\r\nm=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
        "a=ptime:20\r\na=sendrecv\r\n"
    ).encode()
