"""RTP packet round-trips (RFC 3550 §5.1) and the hot-path helpers."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.media.rtp import (
    RtpError,
    RtpExtension,
    RtpPacket,
    is_rtcp,
    parse_rtcp_reports,
    payload_bounds,
    payload_offset,
    peek_header,
)

# V=2, M=1, PT=0, seq=1, ts=160, SSRC=0xDEADBEEF, four payload octets
SIMPLE = bytes.fromhex("80 80 0001 000000a0 deadbeef") + b"\xff\xfe\x7f\x00"


def test_parse_known_packet() -> None:
    p = RtpPacket.parse(SIMPLE)
    assert p == RtpPacket(0, 1, 160, 0xDEADBEEF, b"\xff\xfe\x7f\x00", marker=True)
    assert bytes(p) == SIMPLE


def test_round_trip_with_csrc_extension_and_padding() -> None:
    p = RtpPacket(
        payload_type=101,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=1,
        payload=b"\x05\x8a\x03\x20",
        csrc=[7, 8],
        extension=RtpExtension(0xBEDE, b"\x10\xaa\x00\x00"),
        padding=4,
    )
    raw = bytes(p)
    assert raw[0] == 0x80 | 0x20 | 0x10 | 2
    assert raw[-1] == 4
    assert RtpPacket.parse(raw) == p
    assert payload_offset(raw) == 12 + 8 + 8
    assert payload_bounds(raw) == (28, len(raw) - 4)


@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    ext=st.one_of(st.none(), st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4))),
    padding=st.integers(0, 255),
)
def test_round_trip_property(  # type: ignore[no-untyped-def]
    pt, seq, ts, ssrc, payload, marker, csrc, ext, padding
) -> None:
    extension = None if ext is None else RtpExtension(1, ext)
    p = RtpPacket(pt, seq, ts, ssrc, payload, marker, csrc, extension, padding)
    raw = bytes(p)
    assert RtpPacket.parse(raw) == p
    assert bytes(RtpPacket.parse(raw)) == raw
    assert peek_header(raw) == (pt, seq, ts, ssrc)
    start, end = payload_bounds(raw)
    assert raw[start:end] == payload


def test_peek_header_masks_marker() -> None:
    assert peek_header(SIMPLE) == (0, 1, 160, 0xDEADBEEF)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00\x00", "too short"),
        (bytes.fromhex("40000001000000a0deadbeef"), "version 1"),
        (bytes.fromhex("a0000001000000a0deadbeef") + b"\x00", "padding"),
        (bytes.fromhex("a0000001000000a0deadbeef") + b"\x09", "padding"),
        (bytes.fromhex("90000001000000a0deadbeef") + b"\x00\x01", "extension"),
        (bytes.fromhex("90000001000000a0deadbeef") + b"\x00\x01\x00\x05", "longer"),
        (bytes.fromhex("82000001000000a0deadbeef") + b"\x00\x00\x00\x01", "longer"),
    ],
)
def test_malformed_packets(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        RtpPacket.parse(data)


def test_build_rejects_out_of_range() -> None:
    with pytest.raises(RtpError):
        bytes(RtpPacket(128, 0, 0, 0))
    with pytest.raises(RtpError):
        bytes(RtpPacket(0, 0, 0, 0, csrc=list(range(16))))
    with pytest.raises(RtpError):
        bytes(RtpPacket(0, 0, 0, 0, extension=RtpExtension(1, b"abc")))


def _rr(ssrc: int, blocks: list[tuple[int, int, int, int, int, int, int]]) -> bytes:
    body = struct.pack("!I", ssrc)
    for r_ssrc, fraction, lost, hseq, jitter, lsr, dlsr in blocks:
        body += struct.pack(
            "!IIIIII", r_ssrc, (fraction << 24) | (lost & 0xFFFFFF), hseq, jitter, lsr, dlsr
        )
    return struct.pack("!BBH", 0x80 | len(blocks), 201, len(body) // 4) + body


def _sr(ssrc: int) -> bytes:
    body = struct.pack("!IQIII", ssrc, 0x0102030405060708, 160, 10, 1600)
    return struct.pack("!BBH", 0x80, 200, len(body) // 4) + body


def test_is_rtcp() -> None:
    assert is_rtcp(_rr(1, []))
    assert is_rtcp(_sr(1))
    assert not is_rtcp(SIMPLE)
    assert not is_rtcp(bytes.fromhex("80e5000100000000"))  # PT 101 with marker, not RTCP
    assert not is_rtcp(b"\x80\xc9")


def test_parse_compound_rtcp() -> None:
    sdes = struct.pack("!BBHI", 0x81, 202, 2, 1) + b"\x01\x02ab\x00\x00\x00\x00"[:4]
    data = _sr(0x11) + _rr(0x11, [(0x22, 64, -3, 70000, 12, 0xAABBCCDD, 65536)]) + sdes
    reports = parse_rtcp_reports(data)
    assert [r.packet_type for r in reports] == [200, 201]
    sr, rr = reports
    assert sr.ssrc == 0x11 and sr.ntp_timestamp == 0x0102030405060708
    assert (sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (160, 10, 1600)
    (block,) = rr.reports
    assert block.ssrc == 0x22
    assert block.fraction_lost == 64
    assert block.cumulative_lost == -3
    assert block.highest_sequence == 70000
    assert block.jitter == 12
    assert block.last_sr == 0xAABBCCDD
    assert block.delay_since_last_sr == 65536


def test_rtcp_length_past_end() -> None:
    with pytest.raises(RtpError):
        parse_rtcp_reports(_rr(1, [(2, 0, 0, 0, 0, 0, 0)])[:-4])
