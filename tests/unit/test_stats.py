"""RFC 3550 A.1/A.3/A.8 receive statistics."""

from __future__ import annotations

import itertools
import random

import pytest

from gateway.media.stats import ReceiveStats

SAMPLES = 160  # 20 ms of 8 kHz audio


def feed(stats: ReceiveStats, seqs: list[int], *, jitter: list[float] | None = None) -> None:
    for i, seq in enumerate(seqs):
        delay = 0.0 if jitter is None else jitter[i]
        stats.update(seq & 0xFFFF, (seq * SAMPLES) & 0xFFFFFFFF, seq * SAMPLES + delay, 172)


def test_in_order_stream_after_probation() -> None:
    s = ReceiveStats()
    feed(s, list(range(100, 200)))
    assert s.packets == 100
    assert s.bytes == 100 * 172
    # RFC 3550 A.1: the first packet is probation, the source is valid from the second
    assert s.received == 99
    assert s.expected == 99
    assert s.lost == 0
    assert s.extended_max_seq == 199
    assert s.jitter == 0.0


def test_no_probation() -> None:
    s = ReceiveStats(min_sequential=0)
    feed(s, list(range(10)))
    assert (s.received, s.expected, s.lost) == (10, 10, 0)


def test_nothing_expected_before_valid() -> None:
    s = ReceiveStats()
    assert (s.expected, s.lost, s.last_packet_time) == (0, 0, None)
    feed(s, [5])
    assert (s.received, s.expected) == (0, 0)


def test_loss_is_counted() -> None:
    s = ReceiveStats()
    seqs = [i for i in range(1000) if i % 10 != 5]
    feed(s, seqs)
    assert s.expected == 999
    assert s.received == len(seqs) - 1
    assert s.lost == 100


def test_sequence_wrap_extends() -> None:
    s = ReceiveStats()
    feed(s, list(range(65530, 65550)))
    assert s.cycles == 65536
    assert s.extended_max_seq == 65549
    assert s.expected == 19 and s.lost == 0


def test_duplicates_and_reordering() -> None:
    s = ReceiveStats()
    feed(s, [1, 2, 3, 5, 4, 6, 6, 7])
    assert s.max_seq == 7
    assert s.expected == 6
    assert s.received == 7  # the duplicate counts, so loss goes negative (A.3)
    assert s.lost == -1


def test_large_jump_needs_two_sequential_packets() -> None:
    s = ReceiveStats()
    feed(s, list(range(1, 11)))
    assert not s.count(20000, 172)  # one wild packet is ignored
    assert s.max_seq == 10
    assert s.count(20001, 172)  # its successor confirms a restart of the sender
    assert s.base_seq == 20001 and s.received == 1 and s.expected == 1


def test_reset_source_keeps_totals() -> None:
    s = ReceiveStats()
    feed(s, list(range(10)))
    s.reset_source(500)
    assert s.packets == 10 and s.received == 0
    s.count(500, 10)
    s.count(501, 10)
    assert s.received == 1 and s.base_seq == 501


def reference_jitter(transits: list[float]) -> float:
    j = 0.0
    for prev, cur in itertools.pairwise(transits):
        j += (abs(cur - prev) - j) / 16
    return j


def test_jitter_matches_rfc_formula() -> None:
    rng = random.Random(7)
    delays = [rng.uniform(0, 400) for _ in range(500)]
    s = ReceiveStats(min_sequential=0)
    feed(s, list(range(500)), jitter=delays)
    assert s.jitter == pytest.approx(reference_jitter(delays))
    assert s.jitter_ms == pytest.approx(s.jitter / 8)


def test_constant_alternating_delay_converges() -> None:
    s = ReceiveStats(min_sequential=0)
    feed(s, list(range(2000)), jitter=[0.0 if i % 2 else 80.0 for i in range(2000)])
    assert s.jitter == pytest.approx(80.0, rel=1e-6)
    assert s.jitter_ms == pytest.approx(10.0, rel=1e-6)


def test_count_does_not_touch_jitter_or_arrival() -> None:
    s = ReceiveStats(min_sequential=0)
    feed(s, [0, 1], jitter=[0.0, 40.0])
    before = s.jitter
    s.count(2, 16)
    assert s.jitter == before
    assert s.last_arrival == 1 * SAMPLES + 40.0
    assert s.received == 3


def test_last_packet_time_in_seconds() -> None:
    s = ReceiveStats()
    s.update(1, 0, 12.5 * 8000, 100)
    assert s.last_packet_time == pytest.approx(12.5)


def test_timestamp_wrap_is_not_jitter() -> None:
    s = ReceiveStats(min_sequential=0)
    s.update(1, 0xFFFFFF60, 1000.0, 10)
    s.update(2, 0x00000000, 1160.0, 10)
    assert s.jitter == 0.0
    s.update(3, 0x000000A0, 1336.0, 10)  # 16 units late across the wrap
    assert s.jitter == pytest.approx(1.0)
