"""RFC 4733 telephone-event payloads and the once-per-key-press detector."""

from __future__ import annotations

import pytest

from gateway.media.dtmf import (
    DtmfDetector,
    DtmfDigit,
    DtmfError,
    TelephoneEvent,
    digit_to_event,
    event_to_digit,
)


def test_payload_round_trip() -> None:
    # RFC 4733 §2.3: event 5, E=1, volume 10, duration 800
    raw = b"\x05\x8a\x03\x20"
    ev = TelephoneEvent.parse(raw)
    assert ev == TelephoneEvent(5, end=True, volume=10, duration=800)
    assert ev.digit == "5"
    assert bytes(ev) == raw
    assert TelephoneEvent.parse(b"\x00\x00" + raw, offset=2) == ev


def test_payload_errors() -> None:
    with pytest.raises(DtmfError):
        TelephoneEvent.parse(b"\x05\x8a\x03")
    with pytest.raises(DtmfError):
        bytes(TelephoneEvent(5, volume=64))
    with pytest.raises(DtmfError):
        bytes(TelephoneEvent(5, duration=70000))


def test_reserved_bit_ignored_on_parse() -> None:
    assert TelephoneEvent.parse(b"\x0b\x4a\x00\xa0") == TelephoneEvent(11, False, 10, 160)


@pytest.mark.parametrize(
    ("event", "digit"), [(0, "0"), (9, "9"), (10, "*"), (11, "#"), (12, "A"), (15, "D"), (16, "!")]
)
def test_digit_mapping(event: int, digit: str) -> None:
    assert event_to_digit(event) == digit
    assert digit_to_event(digit) == event


def test_unknown_digits() -> None:
    assert event_to_digit(99) == "?"
    with pytest.raises(DtmfError):
        digit_to_event("x")
    assert digit_to_event("a") == 12


def press(
    det: DtmfDetector,
    ts: int,
    event: int,
    steps: int,
    *,
    ends: int = 3,
    start: bool = True,
    now: float = 0.0,
) -> list[DtmfDigit]:
    """Feed one key press as a sender would (RFC 4733 §2.5): 160-unit updates, 3 end packets."""
    out = []
    for i in range(1, steps + 1):
        if i == 1 and not start:
            continue
        d = det.feed(ts, event, False, 160 * i, i == 1, now + i * 0.02)
        if d:
            out.append(d)
    for _ in range(ends):
        d = det.feed(ts, event, True, 160 * (steps + 1), False, now + (steps + 1) * 0.02)
        if d:
            out.append(d)
    return out


def test_one_digit_reported_once_despite_end_retransmissions() -> None:
    det = DtmfDetector()
    assert press(det, 1000, 5, 9) == [DtmfDigit("5", 200, 1000)]


def test_start_lost_still_reported() -> None:
    det = DtmfDetector()
    assert press(det, 1000, 11, 4, start=False) == [DtmfDigit("#", 100, 1000)]


def test_only_end_packets() -> None:
    det = DtmfDetector()
    assert press(det, 5, 1, 0) == [DtmfDigit("1", 20, 5)]


def test_same_digit_twice_is_two_events() -> None:
    det = DtmfDetector()
    assert press(det, 1000, 7, 5) + press(det, 3000, 7, 5) == [
        DtmfDigit("7", 120, 1000),
        DtmfDigit("7", 120, 3000),
    ]


def test_lost_end_reported_when_next_event_starts() -> None:
    det = DtmfDetector()
    assert press(det, 1000, 1, 5, ends=0) == []
    got = press(det, 3000, 2, 5)
    assert got == [DtmfDigit("1", 100, 1000), DtmfDigit("2", 120, 3000)]


def test_lost_end_reported_on_expiry_once() -> None:
    det = DtmfDetector(end_timeout=0.5)
    assert press(det, 1000, 3, 5, ends=0, now=10.0) == []
    assert det.expire(10.3) is None
    assert det.expire(10.7) == DtmfDigit("3", 100, 1000)
    assert det.expire(20.0) is None
    # a late end packet of the expired event is not a new digit
    assert det.feed(1000, 3, True, 960, False, 20.1) is None


def test_late_packets_of_older_events_ignored() -> None:
    det = DtmfDetector()
    press(det, 5000, 4, 3)
    assert det.feed(4000, 9, True, 480, False, 1.0) is None
    assert det.feed(4000, 9, False, 160, True, 1.0) is None


def test_timestamp_wrap() -> None:
    det = DtmfDetector()
    assert press(det, 0xFFFFFF00, 6, 3) == [DtmfDigit("6", 80, 0xFFFFFF00)]
    assert press(det, 0x00000100, 8, 3) == [DtmfDigit("8", 80, 0x100)]


def test_long_event_segments_are_one_digit() -> None:
    # RFC 4733 §2.5.1.3: a long event continues in a new segment with a new timestamp
    det = DtmfDetector()
    assert det.feed(1000, 0, False, 0xFFFF, False, 0.0) is None
    assert det.feed(1000 + 0xFFFF, 0, False, 800, False, 0.1) is None
    got = det.feed(1000 + 0xFFFF, 0, True, 1600, False, 0.2)
    assert got == DtmfDigit("0", (0xFFFF + 1600) * 1000 // 8000, 1000)


def test_clock_rate_scales_duration() -> None:
    det = DtmfDetector(clock_rate=16000)
    assert det.feed(1, 5, True, 1600, True, 0.0) == DtmfDigit("5", 100, 1)
