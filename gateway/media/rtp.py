"""RTP packets (RFC 3550 §5.1) and a minimal look at RTCP (RFC 3550 §6.4).

:class:`RtpPacket` is the typed, round-tripping form for tests, players and recorders. The relay's
hot path uses :func:`peek_header`, :func:`is_rtcp` and :func:`payload_offset`, which read the header
in place with :mod:`struct` and build no objects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "RTP_HEADER_SIZE",
    "ReceptionReport",
    "RtcpReport",
    "RtpError",
    "RtpExtension",
    "RtpPacket",
    "is_rtcp",
    "parse_rtcp_reports",
    "payload_bounds",
    "payload_offset",
    "peek_header",
]

RTP_HEADER_SIZE = 12
RTP_VERSION = 2

# RFC 3550 §5.1: V(2) P(1) X(1) CC(4) | M(1) PT(7) | sequence number(16) | timestamp(32) | SSRC(32)
_HEADER = struct.Struct("!BBHII")
_HEADER_PT_SEQ_TS_SSRC = struct.Struct("!xBHII")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
# RFC 3550 §5.3.1: defined-by-profile(16) | length in 32-bit words(16)
_EXT_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP (or RTCP) packet."""


@dataclass(slots=True)
class RtpExtension:
    """RFC 3550 §5.3.1 header extension: a profile-defined 16-bit id and 32-bit-aligned data."""

    profile: int
    data: bytes = b""


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1).

    ``padding`` is the number of padding octets (0 for none, else 1-255 including the count
    octet); the padding is written as zeros followed by the count, so a packet round-trips exactly
    when its padding octets were zero, which RFC 3550 §5.1 suggests but does not require.
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: list[int] = field(default_factory=list)
    extension: RtpExtension | None = None
    padding: int = 0
    version: int = RTP_VERSION

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP packet; :class:`RtpError` if it is truncated or not version 2."""
        if len(data) < RTP_HEADER_SIZE:
            raise RtpError(f"RTP packet too short ({len(data)} octets)")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        version = b0 >> 6
        if version != RTP_VERSION:
            raise RtpError(f"RTP version {version}, expected 2")
        start, end = payload_bounds(data)
        cc = b0 & 0x0F
        csrc = [_U32.unpack_from(data, 12 + 4 * i)[0] for i in range(cc)]
        extension = None
        if b0 & 0x10:
            pos = 12 + 4 * cc
            profile, words = _EXT_HEADER.unpack_from(data, pos)
            extension = RtpExtension(profile, bytes(data[pos + 4 : pos + 4 + 4 * words]))
        return cls(
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[start:end]),
            marker=bool(b1 & 0x80),
            csrc=csrc,
            extension=extension,
            padding=len(data) - end,
            version=version,
        )

    def __bytes__(self) -> bytes:
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} out of range")
        if len(self.csrc) > 15:
            raise RtpError("at most 15 CSRC identifiers")
        if not 0 <= self.padding <= 255:
            raise RtpError(f"padding {self.padding} out of range")
        b0 = (self.version << 6) | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [
            _HEADER.pack(
                b0, b1, self.sequence_number & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc
            )
        ]
        parts.extend(_U32.pack(c) for c in self.csrc)
        if self.extension is not None:
            data = self.extension.data
            if len(data) % 4:
                raise RtpError("RTP header extension data must be a multiple of 4 octets")
            parts.append(_EXT_HEADER.pack(self.extension.profile, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def peek_header(data: bytes) -> tuple[int, int, int, int]:
    """``(payload_type, sequence_number, timestamp, ssrc)`` read in place.

    The caller has checked ``len(data) >= 12``; the marker bit is masked off.
    """
    b1, seq, ts, ssrc = _HEADER_PT_SEQ_TS_SSRC.unpack_from(data)
    return b1 & 0x7F, seq, ts, ssrc


def is_rtcp(data: bytes) -> bool:
    """True when the datagram looks like RTCP: RFC 5761 §4, packet types 192-223 in octet 1."""
    return len(data) >= 8 and (data[0] & 0xC0) == 0x80 and 192 <= data[1] <= 223


def payload_offset(data: bytes) -> int:
    """Offset of the payload: after the fixed header, the CSRC list and any extension.

    RFC 3550 §5.1/§5.3.1. Raises :class:`RtpError` when the header runs past the datagram.
    """
    b0 = data[0]
    if b0 == 0x80:  # the common case: V=2, no padding, no extension, no CSRC
        return RTP_HEADER_SIZE
    offset = RTP_HEADER_SIZE + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if len(data) < offset + 4:
            raise RtpError("truncated RTP header extension")
        offset += 4 + 4 * _U16.unpack_from(data, offset + 2)[0]
    if offset > len(data):
        raise RtpError("RTP header longer than the packet")
    return offset


def payload_bounds(data: bytes) -> tuple[int, int]:
    """``(start, end)`` of the payload, without padding (RFC 3550 §5.1, P bit)."""
    start = payload_offset(data)
    end = len(data)
    if data[0] & 0x20:
        pad = data[-1]
        if pad == 0 or end - pad < start:
            raise RtpError("bad RTP padding count")
        end -= pad
    return start, end


# ----------------------------------------------------------------------------- RTCP (minimal)

# RFC 3550 §6.4.1 SR: sender SSRC, NTP timestamp (64), RTP timestamp, packet count, octet count.
_SR_SENDER = struct.Struct("!IQIII")
# RFC 3550 §6.4.1 report block: SSRC, fraction lost(8) + cumulative lost(24), ext. highest seq,
# interarrival jitter, LSR, DLSR.
_REPORT_BLOCK = struct.Struct("!IIIIII")
_RTCP_HEADER = struct.Struct("!BBH")
RTCP_SR = 200
RTCP_RR = 201


@dataclass(slots=True, frozen=True)
class ReceptionReport:
    """One report block of an SR or RR (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int  # fixed point, lost/expected * 256 since the previous report
    cumulative_lost: int  # signed 24-bit
    highest_sequence: int  # extended highest sequence number received
    jitter: int  # interarrival jitter, timestamp units
    last_sr: int  # middle 32 bits of the NTP timestamp of the last SR received
    delay_since_last_sr: int  # units of 1/65536 s


@dataclass(slots=True, frozen=True)
class RtcpReport:
    """A sender report (``packet_type`` 200) or receiver report (201), RFC 3550 §6.4."""

    packet_type: int
    ssrc: int
    reports: tuple[ReceptionReport, ...]
    ntp_timestamp: int | None = None  # SR only: 64-bit NTP format
    rtp_timestamp: int | None = None
    packet_count: int | None = None
    octet_count: int | None = None


def parse_rtcp_reports(data: bytes) -> list[RtcpReport]:
    """The SR and RR packets of a compound RTCP packet (RFC 3550 §6.1); others are skipped.

    Raises :class:`RtpError` when a length field runs past the datagram.
    """
    out: list[RtcpReport] = []
    pos = 0
    while pos + 4 <= len(data):
        b0, pt, words = _RTCP_HEADER.unpack_from(data, pos)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError(f"RTCP version {b0 >> 6}, expected 2")
        end = pos + 4 * (words + 1)
        if end > len(data):
            raise RtpError("RTCP length runs past the datagram")
        count = b0 & 0x1F
        if pt in (RTCP_SR, RTCP_RR):
            body = pos + 4
            ssrc = _U32.unpack_from(data, body)[0]
            sender: tuple[int, int, int, int] | None = None
            blocks_at = body + 4
            if pt == RTCP_SR:
                _, ntp, rtp_ts, pkts, octets = _SR_SENDER.unpack_from(data, body)
                sender = (ntp, rtp_ts, pkts, octets)
                blocks_at = body + _SR_SENDER.size
            if blocks_at + count * _REPORT_BLOCK.size > end:
                raise RtpError("RTCP report count runs past the packet")
            reports = []
            for i in range(count):
                r_ssrc, lost, hseq, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(
                    data, blocks_at + i * _REPORT_BLOCK.size
                )
                cumulative = lost & 0xFFFFFF
                if cumulative & 0x800000:
                    cumulative -= 0x1000000
                reports.append(
                    ReceptionReport(r_ssrc, lost >> 24, cumulative, hseq, jitter, lsr, dlsr)
                )
            if sender is None:
                out.append(RtcpReport(pt, ssrc, tuple(reports)))
            else:
                out.append(RtcpReport(pt, ssrc, tuple(reports), *sender))
        pos = end
    return out
