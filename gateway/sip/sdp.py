"""SDP (RFC 4566) with the offer/answer rules of RFC 3264 that a media-relaying B2BUA needs.

:class:`SessionDescription` parses and writes a session description; lines in the order RFC 4566
§5 prescribes round-trip byte for byte (with CRLF line ends), attributes keep their order, and
lines of unknown type are kept (written before the attributes of their level).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.sip.errors import SipError

__all__ = [
    "DIRECTIONS",
    "Attribute",
    "Codec",
    "Connection",
    "MalformedSdp",
    "MediaDescription",
    "NotAcceptableHere",
    "Origin",
    "SdpError",
    "SessionDescription",
    "Timing",
    "answer_direction",
    "build_answer",
    "is_hold",
    "negotiate",
    "rewrite_for_relay",
    "telephone_event",
]


class SdpError(SipError):
    """An SDP we cannot accept: RFC 3261 §21.4.26 488 Not Acceptable Here."""

    status = 488
    reason = "Not Acceptable Here"


class NotAcceptableHere(SdpError):
    """Well-formed SDP with nothing we can use (no common codec, no usable audio stream)."""


class MalformedSdp(SdpError):
    """SDP that does not parse: answered 400 Bad Request (RFC 3261 §21.4.1)."""

    status = 400
    reason = "Bad Request"


# RFC 4566 §6: a=sendrecv / a=sendonly / a=recvonly / a=inactive (session or media level).
SENDRECV = "sendrecv"
SENDONLY = "sendonly"
RECVONLY = "recvonly"
INACTIVE = "inactive"
DIRECTIONS = (SENDRECV, SENDONLY, RECVONLY, INACTIVE)

# RFC 4566 §5: <type>=<value>, type a single case-significant letter, no whitespace around "=".
_LINE_TYPES = frozenset("abcdefghijklmnopqrstuvwxyz")
# RFC 4566 §9: att-field = token
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
# RFC 4566 §6: a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]
_RTPMAP_RE = re.compile(r"(\d{1,3})\s+([^/\s]+)/(\d+)(?:/(\S+))?\s*")
_FMTP_RE = re.compile(r"(\d{1,3})\s+(.*)", re.DOTALL)
_PORT_RE = re.compile(r"(\d{1,5})(?:/(\d+))?")

# RFC 3551 §6 Table 4: static audio payload types (encoding name, clock rate).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    5: ("DVI4", 8000),
    6: ("DVI4", 16000),
    7: ("LPC", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    10: ("L16", 44100),
    11: ("L16", 44100),
    12: ("QCELP", 8000),
    13: ("CN", 8000),
    14: ("MPA", 90000),
    15: ("G728", 8000),
    16: ("DVI4", 11025),
    17: ("DVI4", 22050),
    18: ("G729", 8000),
}

TELEPHONE_EVENT = "telephone-event"
# Attributes that describe the sender's own transport; a relay that replaces the transport drops
# them: RFC 3605 rtcp, RFC 8839 ICE, RFC 4568 crypto, RFC 8122 fingerprint/setup, RFC 5761 mux.
_TRANSPORT_ATTRIBUTES = frozenset(
    {
        "rtcp",
        "rtcp-mux",
        "candidate",
        "remote-candidates",
        "end-of-candidates",
        "ice-ufrag",
        "ice-pwd",
        "ice-options",
        "ice-lite",
        "ice-mismatch",
        "crypto",
        "fingerprint",
        "setup",
        "group",
        "mid",
    }
)


class Codec(NamedTuple):
    """A payload format of an RTP media description."""

    payload_type: int
    encoding_name: str
    clock_rate: int


@dataclass(slots=True)
class Origin:
    """RFC 4566 §5.2 ``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>``."""

    username: str
    session_id: str
    session_version: int
    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, text: str) -> Origin:
        """Parse the value of an o= line."""
        parts = text.split(" ")
        if len(parts) != 6 or not all(parts) or not parts[2].isdigit():
            raise MalformedSdp(f"bad SDP origin o={text}")
        return cls(parts[0], parts[1], int(parts[2]), parts[3], parts[4], parts[5])

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(slots=True)
class Connection:
    """RFC 4566 §5.7 ``c=<nettype> <addrtype> <connection-address>``."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    @classmethod
    def parse(cls, text: str) -> Connection:
        """Parse the value of a c= line."""
        parts = text.split(" ")
        if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6") or not parts[2]:
            raise MalformedSdp(f"bad SDP connection c={text}")
        return cls(parts[2], parts[1], parts[0])

    @classmethod
    def for_host(cls, host: str) -> Connection:
        """An IN IP4 or IN IP6 connection for an address literal."""
        return cls(host, "IP6" if ":" in host else "IP4")

    @property
    def host(self) -> str:
        """The address without a multicast /ttl or /count suffix."""
        return self.address.split("/", 1)[0]

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True)
class Attribute:
    """RFC 4566 §5.13 ``a=<name>`` (property) or ``a=<name>:<value>``."""

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Attribute:
        """Parse the value of an a= line."""
        name, sep, value = text.partition(":")
        if not _TOKEN_RE.fullmatch(name):
            raise MalformedSdp(f"bad SDP attribute a={text}")
        return cls(name, value if sep else None)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(slots=True)
class Timing:
    """RFC 4566 §5.9 ``t=<start> <stop>`` with its §5.10 ``r=`` repeat lines (kept as text)."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Timing:
        """Parse the value of a t= line."""
        parts = text.split(" ")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise MalformedSdp(f"bad SDP timing t={text}")
        return cls(int(parts[0]), int(parts[1]))


class _AttributeMixin:
    __slots__ = ()
    attributes: list[Attribute]

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=name`` ("" for a property attribute), None when absent."""
        for a in self.attributes:
            if a.name == name:
                return "" if a.value is None else a.value
        return None

    def attribute_values(self, name: str) -> list[str]:
        """Values of every ``a=name``, in order."""
        return ["" if a.value is None else a.value for a in self.attributes if a.name == name]

    def remove_attributes(self, *names: str) -> None:
        """Drop every attribute with one of these names."""
        self.attributes[:] = [a for a in self.attributes if a.name not in names]

    @property
    def direction(self) -> str | None:
        """The direction attribute at this level (RFC 4566 §6), None when absent."""
        for a in self.attributes:
            if a.name in DIRECTIONS:
                return a.name
        return None

    def set_direction(self, direction: str | None) -> None:
        """Replace the direction attribute (None removes it); appended after other attributes."""
        if direction is not None and direction not in DIRECTIONS:
            raise ValueError(f"bad SDP direction {direction!r}")
        self.remove_attributes(*DIRECTIONS)
        if direction is not None:
            self.attributes.append(Attribute(direction))


@dataclass(slots=True)
class MediaDescription(_AttributeMixin):
    """RFC 4566 §5.14 media description: ``m=<media> <port>[/<n>] <proto> <fmt> ...`` and the
    i=, c=, b=, k= and a= lines below it."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    title: str | None = None
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse_m_line(cls, text: str) -> MediaDescription:
        """Parse the value of an m= line (the rest of the section is added by the caller)."""
        parts = text.split(" ")
        if len(parts) < 4 or not all(parts):
            raise MalformedSdp(f"bad SDP media line m={text}")
        media, port_text, proto, *formats = parts
        m = _PORT_RE.fullmatch(port_text)
        if m is None or int(m.group(1)) > 65535:
            raise MalformedSdp(f"bad port in SDP media line m={text}")
        if "RTP/" in proto and not all(f.isdigit() and int(f) <= 127 for f in formats):
            raise MalformedSdp(f"bad RTP payload type in SDP media line m={text}")
        count = int(m.group(2)) if m.group(2) else None
        return cls(media, int(m.group(1)), proto, formats, count)

    def m_line(self) -> str:
        """The value of the m= line."""
        port = self.port if self.port_count is None else f"{self.port}/{self.port_count}"
        return f"{self.media} {port} {self.proto} {' '.join(self.formats)}"

    def lines(self) -> list[str]:
        """The section as SDP lines (without line ends), in RFC 4566 §5 order."""
        out = [f"m={self.m_line()}"]
        if self.title is not None:
            out.append(f"i={self.title}")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={b}" for b in self.bandwidths)
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(f"{t}={v}" for t, v in self.extra)
        out.extend(f"a={a}" for a in self.attributes)
        return out

    @property
    def payload_types(self) -> list[int]:
        """The formats as RTP payload type numbers (empty for non-RTP media)."""
        if "RTP/" not in self.proto:
            return []
        return [int(f) for f in self.formats]

    @property
    def rtpmap(self) -> dict[int, tuple[str, int, str | None]]:
        """``a=rtpmap`` by payload type: (encoding name, clock rate, encoding parameters)."""
        out: dict[int, tuple[str, int, str | None]] = {}
        for value in self.attribute_values("rtpmap"):
            m = _RTPMAP_RE.fullmatch(value)
            if m is None:
                raise MalformedSdp(f"bad SDP a=rtpmap:{value}")
            out.setdefault(int(m.group(1)), (m.group(2), int(m.group(3)), m.group(4)))
        return out

    @property
    def fmtp(self) -> dict[int, str]:
        """``a=fmtp`` format parameters by payload type."""
        out: dict[int, str] = {}
        for value in self.attribute_values("fmtp"):
            m = _FMTP_RE.fullmatch(value)
            if m is not None:
                out.setdefault(int(m.group(1)), m.group(2))
        return out

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds (RFC 4566 §6), None when absent or not a number."""
        value = self.attribute("ptime")
        if value is None:
            return None
        try:
            return round(float(value))
        except ValueError:
            return None

    def codecs(self) -> list[Codec]:
        """The formats in offer order as (payload type, encoding name, clock rate).

        Dynamic types without an rtpmap are left out; static ones use RFC 3551 Table 4.
        """
        rtpmap = self.rtpmap
        out = []
        for pt in self.payload_types:
            if pt in rtpmap:
                name, rate, _ = rtpmap[pt]
                out.append(Codec(pt, name, rate))
            elif pt in STATIC_PAYLOAD_TYPES:
                name, rate = STATIC_PAYLOAD_TYPES[pt]
                out.append(Codec(pt, name, rate))
        return out


@dataclass(slots=True)
class SessionDescription(_AttributeMixin):
    """An RFC 4566 session description."""

    origin: Origin
    name: str | None = "-"
    version: int = 0
    info: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    timing: list[Timing] = field(default_factory=lambda: [Timing()])
    zone: str | None = None
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse an SDP body; :class:`MalformedSdp` (400) with the line at fault when broken."""
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise MalformedSdp(f"SDP is not UTF-8: {e}") from None
        else:
            text = data
        raw_lines = text.split("\n")
        if raw_lines and raw_lines[-1] in ("", "\r"):
            raw_lines.pop()
        lines: list[tuple[int, str, str]] = []
        for number, raw in enumerate(raw_lines, 1):
            line = raw[:-1] if raw.endswith("\r") else raw
            if not line:
                continue  # tolerate blank lines some stacks emit
            # <type>=<value> (RFC 4566 §5), checked without a regex: this runs per line
            kind = line[0]
            if line[1:2] != "=" or kind not in _LINE_TYPES:
                raise MalformedSdp(f"SDP line {number} is not <type>=<value>: {line!r}")
            lines.append((number, kind, line[2:]))
        if not lines or lines[0][1:] != ("v", "0"):
            raise MalformedSdp("SDP must start with v=0 (RFC 4566 §5.1)")
        sdp: SessionDescription | None = None
        media: MediaDescription | None = None
        for number, kind, value in lines[1:]:
            if sdp is None:
                if kind != "o":
                    raise MalformedSdp("SDP o= must follow v= (RFC 4566 §5)")
                sdp = cls(Origin.parse(value), name=None, timing=[])
                continue
            try:
                if kind == "m":
                    media = MediaDescription.parse_m_line(value)
                    sdp.media.append(media)
                elif media is not None:
                    _media_line(media, kind, value)
                else:
                    _session_line(sdp, kind, value)
            except SdpError as e:
                raise MalformedSdp(f"SDP line {number}: {e.detail}") from None
        if sdp is None:
            raise MalformedSdp("SDP has no o= line (RFC 4566 §5.2)")
        for section in sdp.media:
            if section.port != 0 and section.connection is None and sdp.connection is None:
                raise MalformedSdp(f"SDP m={section.media} has no c= line (RFC 4566 §5.7)")
        return sdp

    def __bytes__(self) -> bytes:
        return ("\r\n".join(self.lines()) + "\r\n").encode("utf-8")

    def __str__(self) -> str:
        return bytes(self).decode("utf-8")

    def lines(self) -> list[str]:
        """The description as SDP lines (without line ends), in RFC 4566 §5 order."""
        out = [f"v={self.version}", f"o={self.origin}"]
        if self.name is not None:
            out.append(f"s={self.name}")
        if self.info is not None:
            out.append(f"i={self.info}")
        if self.uri is not None:
            out.append(f"u={self.uri}")
        out.extend(f"e={e}" for e in self.emails)
        out.extend(f"p={p}" for p in self.phones)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={b}" for b in self.bandwidths)
        for t in self.timing:
            out.append(f"t={t.start} {t.stop}")
            out.extend(f"r={r}" for r in t.repeats)
        if self.zone is not None:
            out.append(f"z={self.zone}")
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(f"{t}={v}" for t, v in self.extra)
        out.extend(f"a={a}" for a in self.attributes)
        for m in self.media:
            out.extend(m.lines())
        return out

    def copy(self) -> SessionDescription:
        """A deep copy, to edit without touching this one."""
        # Field by field: copy.deepcopy walks every object through its memo and reduce
        # protocol, several times slower on this per-call path. Strings and ints are immutable.
        o = self.origin
        return SessionDescription(
            Origin(o.username, o.session_id, o.session_version, o.nettype, o.addrtype, o.address),
            self.name,
            self.version,
            self.info,
            self.uri,
            self.emails[:],
            self.phones[:],
            _copy_connection(self.connection),
            self.bandwidths[:],
            [Timing(t.start, t.stop, t.repeats[:]) for t in self.timing],
            self.zone,
            self.key,
            [Attribute(a.name, a.value) for a in self.attributes],
            [_copy_media(m) for m in self.media],
            self.extra[:],
        )

    @property
    def audio(self) -> MediaDescription | None:
        """The first m=audio, None when there is none."""
        for m in self.media:
            if m.media == "audio":
                return m
        return None

    def connection_address(self, media: MediaDescription | None = None) -> str | None:
        """The address media goes to: the media-level c= overrides the session-level one."""
        if media is not None and media.connection is not None:
            return media.connection.host
        return None if self.connection is None else self.connection.host

    def direction_of(self, media: MediaDescription | None) -> str:
        """Effective direction of a stream: media level, else session level, else sendrecv."""
        if media is not None:
            d = media.direction
            if d is not None:
                return d
        d = self.direction
        return SENDRECV if d is None else d

    @property
    def effective_direction(self) -> str:
        """Effective direction of the audio stream (or of the session when there is none)."""
        return self.direction_of(self.audio)

    def codecs(self) -> list[Codec]:
        """Codecs of the audio stream, in offer order (empty without audio)."""
        audio = self.audio
        return [] if audio is None else audio.codecs()


def _session_line(sdp: SessionDescription, kind: str, value: str) -> None:
    # RFC 4566 §5: session-level lines before the first m=.
    if kind == "s":
        sdp.name = value
    elif kind == "i":
        sdp.info = value
    elif kind == "u":
        sdp.uri = value
    elif kind == "e":
        sdp.emails.append(value)
    elif kind == "p":
        sdp.phones.append(value)
    elif kind == "c" and sdp.connection is None:
        sdp.connection = Connection.parse(value)
    elif kind == "b":
        sdp.bandwidths.append(value)
    elif kind == "t":
        sdp.timing.append(Timing.parse(value))
    elif kind == "r" and sdp.timing:
        sdp.timing[-1].repeats.append(value)
    elif kind == "z" and sdp.zone is None:
        sdp.zone = value
    elif kind == "k" and sdp.key is None:
        sdp.key = value
    elif kind == "a":
        sdp.attributes.append(Attribute.parse(value))
    elif kind == "v":
        raise MalformedSdp("second v= line")
    elif kind == "o":
        raise MalformedSdp("second o= line")
    else:
        sdp.extra.append((kind, value))  # RFC 4566 §5: unknown types are ignored, we keep them


def _copy_connection(c: Connection | None) -> Connection | None:
    return None if c is None else Connection(c.address, c.addrtype, c.nettype)


def _copy_media(m: MediaDescription) -> MediaDescription:
    return MediaDescription(
        m.media,
        m.port,
        m.proto,
        m.formats[:],
        m.port_count,
        m.title,
        _copy_connection(m.connection),
        m.bandwidths[:],
        m.key,
        [Attribute(a.name, a.value) for a in m.attributes],
        m.extra[:],
    )


def _media_line(media: MediaDescription, kind: str, value: str) -> None:
    if kind == "i" and media.title is None:
        media.title = value
    elif kind == "c" and media.connection is None:
        media.connection = Connection.parse(value)
    elif kind == "b":
        media.bandwidths.append(value)
    elif kind == "k" and media.key is None:
        media.key = value
    elif kind == "a":
        media.attributes.append(Attribute.parse(value))
    elif kind in "vost":
        raise MalformedSdp(f"session-level {kind}= line inside m={media.media}")
    else:
        media.extra.append((kind, value))


# --------------------------------------------------------------------------- offer / answer

_FLOW = {SENDRECV: (True, True), SENDONLY: (True, False), RECVONLY: (False, True)}
_FLOW_DIRECTION = {v: k for k, v in _FLOW.items()} | {(False, False): INACTIVE}


def answer_direction(offered: str, wanted: str = SENDRECV) -> str:
    """RFC 3264 §6.1: the answer's direction, the offer's mirrored and limited to ``wanted``.

    sendonly → recvonly, recvonly → sendonly, inactive → inactive, sendrecv → ``wanted``.
    """
    o_send, o_recv = _FLOW.get(offered, (False, False))
    w_send, w_recv = _FLOW.get(wanted, (False, False))
    return _FLOW_DIRECTION[(o_recv and w_send, o_send and w_recv)]


def _offered_direction(sdp: SessionDescription, media: MediaDescription) -> str:
    direction = sdp.direction_of(media)
    if sdp.connection_address(media) == "0.0.0.0":
        # RFC 3264 §8.4 / RFC 2543 hold: "do not send to me"; the offerer may still send.
        send, _ = _FLOW.get(direction, (False, False))
        direction = SENDONLY if send else INACTIVE
    return direction


def is_hold(sdp: SessionDescription) -> bool:
    """RFC 3264 §8.4: the audio stream is held (a=sendonly / a=inactive, or c=0.0.0.0)."""
    audio = sdp.audio
    if audio is None or audio.port == 0:
        return False
    return _offered_direction(sdp, audio) in (SENDONLY, INACTIVE)


def _is_dtmf(codec: Codec) -> bool:
    return codec.encoding_name.lower() == TELEPHONE_EVENT and codec.clock_rate == 8000


def telephone_event(media: MediaDescription | None) -> int | None:
    """Payload type of ``telephone-event/8000`` (RFC 4733 §7.1.1) in a media description."""
    if media is None:
        return None
    for codec in media.codecs():
        if _is_dtmf(codec):
            return codec.payload_type
    return None


def _usable_audio(sdp: SessionDescription) -> MediaDescription:
    audio = sdp.audio
    if audio is None or audio.port == 0:
        raise NotAcceptableHere("SDP offers no active audio stream")
    return audio


def negotiate(offer: SessionDescription, supported: tuple[str, ...] = ("PCMU", "PCMA")) -> Codec:
    """The first audio codec of the offer (the offerer's preference, RFC 3264 §5.1) that we
    support by encoding name at 8000 Hz; :class:`NotAcceptableHere` (488) when there is none."""
    audio = _usable_audio(offer)
    if audio.proto != "RTP/AVP":
        raise NotAcceptableHere(f"SDP audio transport {audio.proto} is not supported")
    wanted = {name.upper() for name in supported}
    for codec in audio.codecs():
        if codec.encoding_name.upper() in wanted and codec.clock_rate == 8000:
            return codec
    offered = ", ".join(f"{c.encoding_name}/{c.clock_rate}" for c in audio.codecs()) or "none"
    raise NotAcceptableHere(f"no common codec: offered {offered}, supported {', '.join(supported)}")


def rewrite_for_relay(
    sdp: SessionDescription,
    host: str,
    port: int,
    allowed: tuple[str, ...] = ("PCMU", "PCMA", TELEPHONE_EVENT),
    *,
    session_id: str | int | None = None,
    version: int | None = None,
) -> SessionDescription:
    """A copy of ``sdp`` whose audio goes through our relay at ``host:port``.

    The o= version is bumped (RFC 3264 §8: each new description increments it) or set to
    ``version``; the origin address becomes ``host``. The first active audio stream keeps only
    ``allowed`` codecs (with their rtpmap/fmtp; telephone-event only at 8000 Hz) and transport
    attributes of the original sender (rtcp, ICE, crypto) are dropped; it is offered as RTP/AVP.
    Other streams are disabled with port 0 (RFC 3264 §8.2). A c=0.0.0.0 hold is expressed as
    a direction attribute, since our address replaces it. :class:`NotAcceptableHere` (488) when
    no allowed audio codec is left.
    """
    audio = _usable_audio(sdp)
    new = sdp.copy()
    target = next(n for m, n in zip(sdp.media, new.media, strict=True) if m is audio)
    hold_direction = _offered_direction(sdp, audio)
    new.origin.session_version = (
        version if version is not None else (sdp.origin.session_version + 1)
    )
    if session_id is not None:
        new.origin.session_id = str(session_id)
    conn = Connection.for_host(host)
    new.origin.addrtype = conn.addrtype
    new.origin.address = host
    new.connection = conn
    new.remove_attributes(*_TRANSPORT_ATTRIBUTES)
    if new.direction is not None:
        # Session-level direction would apply to our answer-side streams too; move it down.
        new.set_direction(None)
    wanted = {name.lower() for name in allowed}
    for m in new.media:
        m.connection = None
        m.remove_attributes(*_TRANSPORT_ATTRIBUTES)
        if m is not target:
            m.port = 0
            m.port_count = None
            continue
        keep = [
            c.payload_type
            for c in m.codecs()
            if c.encoding_name.lower() in wanted
            and (c.encoding_name.lower() != TELEPHONE_EVENT or _is_dtmf(c))
        ]
        media_codecs = [c for c in m.codecs() if c.payload_type in keep and not _is_dtmf(c)]
        if not media_codecs:
            offered = ", ".join(c.encoding_name for c in m.codecs()) or "none"
            raise NotAcceptableHere(f"no relayable audio codec: offered {offered}")
        kept = {str(pt) for pt in keep}
        m.formats = [f for f in m.formats if f in kept]
        m.attributes = [a for a in m.attributes if not _names_dropped_format(a, kept)]
        m.port = port
        m.port_count = None
        m.proto = "RTP/AVP"
        if (m.direction or SENDRECV) != hold_direction:
            m.set_direction(hold_direction)
    return new


def _names_dropped_format(attribute: Attribute, kept: set[str]) -> bool:
    # a=rtpmap:<pt> ..., a=fmtp:<pt> ..., a=rtcp-fb:<pt> ... for a payload type we removed
    if attribute.name not in ("rtpmap", "fmtp", "rtcp-fb") or attribute.value is None:
        return False
    pt = attribute.value.split(" ", 1)[0]
    return pt != "*" and pt not in kept


def build_answer(
    offer: SessionDescription,
    host: str,
    port: int,
    codec_pt: int,
    dtmf_pt: int | None,
    session_id: str | int,
    version: int,
    direction: str = SENDRECV,
    *,
    username: str = "-",
) -> SessionDescription:
    """Our RFC 3264 §6 answer: one m= line per offered stream, in order.

    The first active RTP/AVP audio stream is accepted at ``host:port`` with ``codec_pt`` and, when
    offered, ``dtmf_pt`` (use the offer's dynamic number, RFC 3264 §6.1); its direction mirrors
    the offer's limited to ``direction``. Every other stream is rejected with port 0.
    :class:`NotAcceptableHere` (488) when ``codec_pt`` is not among the offered formats.
    """
    audio = _usable_audio(offer)
    if audio.proto != "RTP/AVP":
        raise NotAcceptableHere(f"SDP audio transport {audio.proto} is not supported")
    codecs = {c.payload_type: c for c in audio.codecs()}
    if codec_pt not in codecs:
        raise NotAcceptableHere(f"payload type {codec_pt} was not offered")
    conn = Connection.for_host(host)
    answer = SessionDescription(
        Origin(username, str(session_id), version, "IN", conn.addrtype, host),
        name="-",
        connection=conn,
    )
    offered_fmtp = audio.fmtp
    for m in offer.media:
        if m is not audio:
            answer.media.append(MediaDescription(m.media, 0, m.proto, list(m.formats)))
            continue
        chosen = codecs[codec_pt]
        formats = [str(codec_pt)]
        attributes = [
            Attribute("rtpmap", f"{codec_pt} {chosen.encoding_name}/{chosen.clock_rate}"),
        ]
        if dtmf_pt is not None and dtmf_pt in codecs and _is_dtmf(codecs[dtmf_pt]):
            formats.append(str(dtmf_pt))
            attributes.append(Attribute("rtpmap", f"{dtmf_pt} {TELEPHONE_EVENT}/8000"))
            # RFC 4733 §7.1.1: events 0-15 (DTMF) when the offer names none
            attributes.append(Attribute("fmtp", f"{dtmf_pt} {offered_fmtp.get(dtmf_pt, '0-16')}"))
        ptime = audio.ptime
        if ptime is not None:
            attributes.append(Attribute("ptime", str(ptime)))
        attributes.append(Attribute(answer_direction(_offered_direction(offer, m), direction)))
        answer.media.append(
            MediaDescription("audio", port, "RTP/AVP", formats, attributes=attributes)
        )
    return answer
