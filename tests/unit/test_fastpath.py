"""The native RTP forwarding engine (gateway/media/_fastpath.c) over real loopback sockets."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.media import fastpath
from gateway.media.dtmf import TelephoneEvent
from gateway.media.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW
from gateway.media.relay import MediaRelay
from gateway.media.rtp import RtpExtension, RtpPacket
from gateway.media.stats import ReceiveStats

pytestmark = pytest.mark.skipif(not fastpath.AVAILABLE, reason="native fast path not built")

HOST = "127.0.0.1"


def udp(timeout: float = 2.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    s.settimeout(timeout)
    return s


def port_of(s: socket.socket) -> int:
    return int(s.getsockname()[1])


def rtp(
    pt: int, seq: int, payload: bytes, *, ts: int | None = None, ssrc: int = 0x1234, m: bool = False
) -> bytes:
    stamp = seq * 160 if ts is None else ts
    return bytes(RtpPacket(pt, seq & 0xFFFF, stamp & 0xFFFFFFFF, ssrc, payload, marker=m))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Pair:
    """An engine pair with two phones: ``pa`` talks to leg a's port, ``pb`` to leg b's."""

    def __init__(self, engine: fastpath.Engine, codec_a: int = 0, codec_b: int = 0) -> None:
        self.engine = engine
        ra, rb = udp(), udp()
        self.port_a, self.port_b = port_of(ra), port_of(rb)
        self.id = engine.add_pair(ra, rb)
        assert ra.fileno() == -1 and rb.fileno() == -1  # detached: the engine owns them
        self.pa, self.pb = udp(), udp()
        self.set(0, self.pa, codec_a)
        self.set(1, self.pb, codec_b)

    def set(
        self,
        leg: int,
        phone: socket.socket,
        codec: int,
        dtmf: int | None = None,
        reset: bool = True,
    ) -> None:
        self.engine.configure(self.id, leg, (HOST, port_of(phone)), codec, dtmf, reset_latch=reset)

    def snap(self, leg: int) -> fastpath.LegSnapshot:
        return self.engine.snapshot(self.id, leg)

    def close(self) -> None:
        self.pa.close()
        self.pb.close()


@pytest.fixture
def engine() -> Iterator[fastpath.Engine]:
    e = fastpath.Engine()
    try:
        yield e
    finally:
        e.close()


def until(condition: object, timeout: float = 3.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def no_packet(s: socket.socket, wait: float = 0.15) -> bool:
    s.settimeout(wait)
    try:
        s.recv(2048)
    except TimeoutError:
        return True
    finally:
        s.settimeout(2.0)
    return False


# ------------------------------------------------------------------------------ forwarding


def test_forwards_both_ways_with_exact_counters(engine: fastpath.Engine) -> None:
    p = Pair(engine)
    assert engine.running and engine.pairs == 1
    n, size = 500, 12 + 160
    got_a: list[tuple[bytes, tuple[str, int]]] = []
    got_b: list[tuple[bytes, tuple[str, int]]] = []
    for i in range(n):
        p.pa.sendto(rtp(0, i, bytes([i & 0xFF]) * 160), (HOST, p.port_a))
        p.pb.sendto(rtp(0, 1000 + i, b"\x7f" * 160, ssrc=9), (HOST, p.port_b))
        if i % 50 == 49:  # read as we go, so the phones' own receive buffers never overflow
            got_b += [p.pb.recvfrom(2048) for _ in range(50)]
            got_a += [p.pa.recvfrom(2048) for _ in range(50)]
    assert [d for d, _ in got_b] == [rtp(0, i, bytes([i & 0xFF]) * 160) for i in range(n)]
    assert all(src == (HOST, p.port_b) for _, src in got_b)  # sent from the other leg's socket
    assert all(src == (HOST, p.port_a) for _, src in got_a)
    a, b = p.snap(0), p.snap(1)
    for s in (a, b):
        assert (s.packets_in, s.bytes_in, s.packets_out, s.bytes_out) == (n, n * size, n, n * size)
        assert (s.dropped, s.foreign, s.send_errors) == (0, 0, 0)
        assert (s.rs_received, s.rs_probation) == (n - 1, 0)  # RFC 3550 A.1 probation
    assert a.latched == (HOST, port_of(p.pa)) and a.remote == a.latched
    assert b.ssrc == 9 and a.ssrc == 0x1234
    assert 0 < time.monotonic() - a.last_rx < 5  # CLOCK_MONOTONIC, like time.monotonic()
    p.close()


def test_last_rx_of_all_pairs_and_queue_delay(engine: fastpath.Engine) -> None:
    p, q = Pair(engine), Pair(engine)
    assert sorted(engine.last_rx_all()) == sorted([(p.id, 0.0, 0.0), (q.id, 0.0, 0.0)])
    before = time.monotonic()
    q.pb.sendto(rtp(0, 1, b"x"), (HOST, q.port_b))
    q.pa.recv(2048)
    rows = {pair: (a, b) for pair, a, b in engine.last_rx_all()}
    assert rows[p.id] == (0.0, 0.0)
    assert rows[q.id][0] == 0.0 and before - 0.01 <= rows[q.id][1] <= time.monotonic()
    packets, over_1ms, over_5ms, longest = engine.queue_delay()  # from kernel timestamps
    assert packets == 1 and over_5ms <= over_1ms <= 1 and 0 <= longest < 1
    p.close()
    q.close()


def test_short_and_non_v2_packets_dropped(engine: fastpath.Engine) -> None:
    p = Pair(engine)
    p.pa.sendto(b"\x80\x00\x00", (HOST, p.port_a))
    p.pa.sendto(b"\x40" + bytes(20), (HOST, p.port_a))  # version 1
    until(lambda: p.snap(0).dropped == 2)
    assert p.snap(0).packets_in == 0 and p.snap(0).latched is None  # dropped before latching
    assert no_packet(p.pb)
    p.close()


def test_latching_and_foreign_drop(engine: fastpath.Engine) -> None:
    p = Pair(engine)
    nat, intruder = udp(), udp()
    # nothing received from a yet: b's media goes to a's SDP address
    p.pb.sendto(rtp(0, 1, b"x"), (HOST, p.port_b))
    assert p.pa.recv(2048) == rtp(0, 1, b"x")
    # a really sends from elsewhere (NAT): latched
    nat.sendto(rtp(0, 1, b"from-a"), (HOST, p.port_a))
    assert p.pb.recv(2048) == rtp(0, 1, b"from-a")
    assert p.snap(0).latched == (HOST, port_of(nat))
    p.pb.sendto(rtp(0, 2, b"y"), (HOST, p.port_b))
    assert nat.recv(2048) == rtp(0, 2, b"y")
    # a third party is dropped and does not re-latch
    intruder.sendto(rtp(0, 9, b"evil"), (HOST, p.port_a))
    assert no_packet(p.pb)
    assert p.snap(0).foreign == 1 and p.snap(0).packets_in == 1
    # the SDP address always wins
    p.pa.sendto(rtp(0, 3, b"sdp"), (HOST, p.port_a))
    assert p.pb.recv(2048) == rtp(0, 3, b"sdp")
    assert p.snap(0).latched == (HOST, port_of(p.pa))
    # a re-INVITE keeping the address keeps the latch; reset_latch forgets it
    p.set(0, p.pa, 0, reset=False)
    assert p.snap(0).latched is not None
    p.set(0, p.pa, 0, reset=True)
    assert p.snap(0).latched is None and p.snap(0).remote == (HOST, port_of(p.pa))
    # hold (no SDP address): b's packets have nowhere to go
    engine.configure(p.id, 0, None, 0, None, reset_latch=True)
    p.pb.sendto(rtp(0, 3, b"h"), (HOST, p.port_b))
    until(lambda: p.snap(1).dropped == 1)
    assert p.snap(0).remote is None
    for s in (nat, intruder):
        s.close()
    p.close()


def test_send_error_counted_on_the_sending_leg(engine: fastpath.Engine) -> None:
    p = Pair(engine)
    engine.configure(p.id, 1, ("::1", 4000), 0, None, reset_latch=True)  # v6 peer, v4 socket
    p.pa.sendto(rtp(0, 1, b"x"), (HOST, p.port_a))
    until(lambda: p.snap(1).send_errors == 1)
    assert p.snap(1).packets_out == 0 and p.snap(0).packets_in == 1
    p.close()


# ------------------------------------------------------------------------------ transcoding

ALL_CODES = bytes(range(256))


def test_pcmu_pcma_byte_exact_against_g711_tables(engine: fastpath.Engine) -> None:
    p = Pair(engine, codec_a=0, codec_b=8)
    p.pa.sendto(rtp(0, 7, ALL_CODES, m=True), (HOST, p.port_a))
    got = RtpPacket.parse(p.pb.recv(2048))
    assert (got.payload_type, got.marker, got.sequence_number, got.ssrc) == (8, True, 7, 0x1234)
    assert got.payload == ALL_CODES.translate(ULAW_TO_ALAW)
    p.pb.sendto(rtp(8, 9, ALL_CODES), (HOST, p.port_b))
    back = RtpPacket.parse(p.pa.recv(2048))
    assert (back.payload_type, back.marker) == (0, False)
    assert back.payload == ALL_CODES.translate(ALAW_TO_ULAW)
    # CSRCs, a header extension and padding are kept, only the audio is transcoded
    odd = RtpPacket(
        0, 10, 1600, 0x1234, ALL_CODES, csrc=[5, 6], extension=RtpExtension(0xBEDE, bytes(8)),
        padding=4,
    )  # fmt: skip
    p.pa.sendto(bytes(odd), (HOST, p.port_a))
    got = RtpPacket.parse(p.pb.recv(2048))
    assert got.payload == ALL_CODES.translate(ULAW_TO_ALAW)
    assert (got.csrc, got.extension, got.padding) == ([5, 6], odd.extension, 4)
    # a broken padding count cannot be transcoded: dropped
    bad = bytearray(bytes(RtpPacket(0, 11, 1760, 0x1234, b"\x00" * 4, padding=4)))
    bad[-1] = 200
    p.pa.sendto(bytes(bad), (HOST, p.port_a))
    until(lambda: p.snap(0).dropped == 1)
    # same codec again: bytes pass untouched; other payload types pass through
    p.set(1, p.pb, 0, reset=False)
    p.pa.sendto(rtp(0, 12, ALL_CODES), (HOST, p.port_a))
    assert p.pb.recv(2048) == rtp(0, 12, ALL_CODES)
    p.pa.sendto(rtp(13, 13, b"\x40"), (HOST, p.port_a))  # comfort noise
    assert p.pb.recv(2048) == rtp(13, 13, b"\x40")
    p.close()


# ------------------------------------------------------------------------------ DTMF


def dtmf_packets(pt: int, seq0: int, ts: int, event: int, steps: int) -> list[bytes]:
    out = []
    for i in range(steps):
        ev = bytes(TelephoneEvent(event, False, 10, 160 * (i + 1)))
        out.append(rtp(pt, seq0 + i, ev, ts=ts, m=i == 0))
    for k in range(3):  # RFC 4733 §2.5.1.4: three end packets
        ev = bytes(TelephoneEvent(event, True, 10, 160 * (steps + 1)))
        out.append(rtp(pt, seq0 + steps + k, ev, ts=ts))
    return out


def test_dtmf_records_and_pt_rewrite(engine: fastpath.Engine) -> None:
    p = Pair(engine)
    p.set(0, p.pa, 0, dtmf=101)
    p.set(1, p.pb, 0, dtmf=96)
    packets = dtmf_packets(101, 50, 8000, 7, 2)
    for d in packets:
        p.pa.sendto(d, (HOST, p.port_a))
    for d in packets:
        got = p.pb.recv(2048)
        assert got[1] == (d[1] & 0x80) | 96 and got[2:] == d[2:]
    records = engine.events()
    assert [
        (r.pair, r.leg, r.timestamp, r.event, r.end, r.duration, r.marker) for r in records
    ] == [
        (p.id, 0, 8000, 7, False, 160, True),
        (p.id, 0, 8000, 7, False, 320, False),
        (p.id, 0, 8000, 7, True, 480, False),
        (p.id, 0, 8000, 7, True, 480, False),
        (p.id, 0, 8000, 7, True, 480, False),
    ]
    assert engine.events() == []
    # no telephone-event on a's side: b's events are recorded but not relayed
    p.set(0, p.pa, 0, dtmf=None, reset=False)
    for d in dtmf_packets(96, 1, 800, 11, 1):
        p.pb.sendto(d, (HOST, p.port_b))
    until(lambda: p.snap(1).dropped == 4)
    assert no_packet(p.pa)
    assert [r.event for r in engine.events()] == [11] * 4
    p.close()


def test_dtmf_through_relay_reported_once() -> None:
    async def main() -> None:
        relay = MediaRelay(HOST, free_range(), engine="native")
        assert relay.engine == "native"
        loop = asyncio.get_running_loop()
        pa, pb = udp(), udp()
        pa.setblocking(False)
        pb.setblocking(False)
        try:
            session = await relay.open_session("dtmf")
            digits: list[tuple[str, str, int]] = []
            session.on_dtmf = lambda leg, digit, ms: digits.append((leg, digit, ms))
            session.set_remote("a", HOST, port_of(pa), codec_pt=0, dtmf_pt=101)
            session.set_remote("b", HOST, port_of(pb), codec_pt=8, dtmf_pt=101)
            packets = dtmf_packets(101, 100, 8000, 5, 4)
            for d in packets:
                await loop.sock_sendto(pa, d, (HOST, session.leg("a").local_port))
            for d in packets:
                assert await asyncio.wait_for(loop.sock_recv(pb, 2048), 2) == d
            await asyncio.sleep(0.05)
            assert digits == [("a", "5", 100)]
            assert session.stats("a")["dtmf_events"] == 1
            assert session.stats("a")["packets_in"] == len(packets)
        finally:
            pa.close()
            pb.close()
            await relay.close()

    asyncio.run(main())


# ------------------------------------------------------------------------------ statistics


def test_loss_wrap_and_ssrc_change(engine: fastpath.Engine) -> None:
    p = Pair(engine)
    seqs = [65530 + i for i in range(10)]  # wraps at 65536
    seqs = [s for s in seqs if s not in (65533, 65537)]  # two lost
    for s in seqs:
        p.pa.sendto(rtp(0, s, b"\xff" * 160), (HOST, p.port_a))
        p.pb.recv(2048)
    a = p.snap(0)
    assert a.rs_cycles == 65536 and a.rs_max_seq == (65539 & 0xFFFF)
    expected = a.rs_cycles + a.rs_max_seq - a.rs_base_seq + 1
    assert (expected, a.rs_received, expected - a.rs_received) == (9, 7, 2)
    # a new SSRC starts the statistics over (probation again)
    p.pa.sendto(rtp(0, 5, b"\xff" * 160, ssrc=77), (HOST, p.port_a))
    p.pb.recv(2048)
    a = p.snap(0)
    assert (a.ssrc, a.rs_probation, a.rs_received, a.rs_cycles) == (77, 1, 0, 0)
    assert a.packets_in == len(seqs) + 1
    p.close()


def test_jitter_close_to_python_receive_stats(engine: fastpath.Engine) -> None:
    p = Pair(engine)
    reference = ReceiveStats()
    rng = random.Random(7)
    t0 = time.monotonic()
    for i in range(150):
        skew = rng.choice((-400, 0, 400))  # timestamps off by ±50 ms: a jitter far above noise
        ts = 1000 + i * 160 + skew
        data = rtp(0, i, b"\xff" * 160, ts=ts)
        p.pa.sendto(data, (HOST, p.port_a))
        p.pb.recv(2048)
        reference.update(i, ts, time.monotonic() * 8000, len(data))
        time.sleep(0.001)
    a = p.snap(0)
    assert time.monotonic() - t0 < 10
    assert a.rs_received == reference.received and a.rs_max_seq == reference.max_seq
    assert reference.jitter > 100
    assert a.rs_jitter == pytest.approx(reference.jitter, rel=0.1)


op = st.tuples(
    st.sampled_from((0, 1, 1, 1, 1, 2)),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.floats(0, 1e9, allow_nan=False),
    st.integers(12, 1500),
)


def near(seq: int) -> st.SearchStrategy[int]:
    return st.integers(-5, 40).map(lambda d: (seq + d) & 0xFFFF)


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=60), st.integers(0, 0xFFFF), st.lists(st.integers(-3, 4000)))
def test_native_statistics_match_python_exactly(
    ops: list[tuple[int, int, int, float, int]], start: int, steps: list[int]
) -> None:
    # random operations, then a mostly-sequential stream with gaps, repeats and big jumps
    seq = start
    for k, step in enumerate(steps):
        seq = (seq + (step if step < 3500 else 1)) & 0xFFFF
        ops.append((1, seq, seq * 160 + (k % 3) * 7, 1000.0 + k * 160.5, 172))
    python = ReceiveStats()
    for kind, s, ts, arrival, n in ops:
        if kind == 0:
            python.count(s, n)
        elif kind == 1:
            python.update(s, ts, arrival, n)
        else:
            python.reset_source(None)
    native = fastpath.stats_replay(ops)
    assert native[:8] == (
        python.packets,
        python.bytes,
        python.base_seq,
        python.max_seq,
        python.bad_seq,
        python.cycles,
        python.received,
        python.probation,
    )
    assert native[8] == python.jitter  # the same double arithmetic, bit for bit


# ------------------------------------------------------------------------------ lifecycle


def free_range(size: int = 1000) -> tuple[int, int]:
    base = random.randrange(30000, 60000 - size) & ~1
    return base, base + size - 1


def test_close_while_traffic_flows_no_crash_no_fd_leak() -> None:
    before = open_fds()
    engine = fastpath.Engine()
    pairs = [Pair(engine) for _ in range(20)]
    stop = threading.Event()

    def blast(p: Pair) -> None:
        i = 0
        while not stop.is_set():
            for sock, port in ((p.pa, p.port_a), (p.pb, p.port_b)):
                try:
                    sock.sendto(rtp(0, i, b"\xff" * 160), (HOST, port))
                except OSError:
                    pass
            i += 1

    threads = [threading.Thread(target=blast, args=(p,)) for p in pairs[:4]]
    for t in threads:
        t.start()
    try:
        time.sleep(0.1)
        assert pairs[0].snap(0).packets_in > 0
        for p in pairs[::2]:  # half of them closed under load, one by one
            a, b = engine.remove(p.id)
            assert a.packets_in >= 0 and b.packets_out >= 0
            with pytest.raises(KeyError):
                engine.snapshot(p.id, 0)
            time.sleep(0.005)
        time.sleep(0.05)
        engine.close()  # the rest with the worker still busy
        engine.close()
        with pytest.raises(ValueError):
            engine.snapshot(pairs[1].id, 0)
    finally:
        stop.set()
        for t in threads:
            t.join()
        for p in pairs:
            p.close()
    assert open_fds() == before


def test_200_sessions_opened_and_closed_repeatedly() -> None:
    async def main() -> None:
        relay = MediaRelay(HOST, free_range(), engine="native")
        pa, pb = udp(), udp()
        try:
            baseline: int | None = None
            for _ in range(3):
                sessions = [await relay.open_session(f"c{i}") for i in range(200)]
                engine = relay._fast
                assert engine is not None and engine.pairs == 200
                for s in sessions[:5]:
                    s.set_remote("a", HOST, port_of(pa), 0)
                    s.set_remote("b", HOST, port_of(pb), 8)
                    pa.sendto(rtp(0, 1, b"\xff" * 160), (HOST, s.leg("a").local_port))
                    got = await asyncio.get_running_loop().run_in_executor(None, pb.recv, 2048)
                    assert got[12:] == b"\xd5" * 160
                for s in sessions:
                    s.close()
                assert engine.pairs == 0 and relay.active_sessions == 0
                fds = open_fds()
                baseline = fds if baseline is None else baseline
                assert fds == baseline
            totals = relay.totals
            assert totals["sessions_opened"] == totals["sessions_closed"] == 600
            assert totals["packets_in"] == totals["packets_relayed"] == 15
        finally:
            pa.close()
            pb.close()
            await relay.close()
        assert relay.ports.in_use == 0

    before = open_fds()
    asyncio.run(main())
    assert open_fds() == before


def test_without_the_extension_the_relay_forwards_in_python() -> None:
    code = (
        "import sys; sys.modules['gateway.media._fastpath'] = None\n"  # as if it was not built
        "from gateway.media import fastpath\n"
        "from gateway.media.relay import MediaRelay\n"
        "assert not fastpath.AVAILABLE\n"
        "assert MediaRelay().engine == 'python'\n"
        "try:\n"
        "    MediaRelay(engine='native')\n"
        "except ValueError:\n"
        "    print('fallback ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "fallback ok", out.stderr


def test_engine_choice() -> None:
    with pytest.raises(ValueError, match="engine"):
        MediaRelay(HOST, free_range(), engine="kernel")
    assert MediaRelay(HOST, free_range(), engine="python").engine == "python"
    assert MediaRelay(HOST, free_range()).engine == "native"  # auto, where it is built
