"""The RTP relay over real loopback UDP sockets, and the port allocator under it."""

from __future__ import annotations

import asyncio
import gc
import random
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from gateway.media import fastpath
from gateway.media.dtmf import TelephoneEvent
from gateway.media.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW
from gateway.media.ports import PortAllocator, PortsExhausted
from gateway.media.relay import MediaRelay, RelaySession
from gateway.media.rtp import RtpPacket

HOST = "127.0.0.1"

# ------------------------------------------------------------------------------ ports


def test_ports_are_even_pairs_in_range() -> None:
    ports = PortAllocator(20001, 20010)
    got = [ports.allocate() for _ in range(4)]
    assert got == [20002, 20004, 20006, 20008]  # 20010 has no odd neighbour in range
    assert all(p % 2 == 0 and p + 1 <= 20010 for p in got)
    with pytest.raises(PortsExhausted) as info:
        ports.allocate()
    assert info.value.status == 503
    assert ports.available == 0 and ports.in_use == 4


def test_ports_never_out_twice_and_reused_last() -> None:
    ports = PortAllocator(30000, 30007)
    a, b = ports.allocate(), ports.allocate()
    ports.release(a)
    assert a not in ports and b in ports
    with pytest.raises(ValueError):
        ports.release(a)
    with pytest.raises(ValueError):
        ports.release(12345)
    rest = [ports.allocate() for _ in range(3)]
    assert rest == [30004, 30006, a]  # least recently released comes last
    assert len(set(rest) | {b}) == 4


def test_port_range_validation() -> None:
    with pytest.raises(ValueError):
        PortAllocator(10, 5)
    with pytest.raises(ValueError):
        PortAllocator(1001, 1001)
    with pytest.raises(ValueError):
        PortAllocator(0, 10)


# ------------------------------------------------------------------------------ relay

# Every relay test runs with both forwarding engines: asyncio protocols and the native worker.
ENGINES = [
    "python",
    pytest.param(
        "native", marks=pytest.mark.skipif(not fastpath.AVAILABLE, reason="fast path not built")
    ),
]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def free_range(size: int = 200) -> tuple[int, int]:
    base = random.randrange(40000, 60000 - size) & ~1
    return base, base + size - 1


class Peer(asyncio.DatagramProtocol):
    """A fake phone: a UDP socket on loopback that records what it receives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (HOST, port))

    async def recv(self, timeout: float = 2.0) -> bytes:
        data, _ = await asyncio.wait_for(self.received.get(), timeout)
        return data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def peer(port: int = 0) -> Peer:
    loop = asyncio.get_running_loop()
    _, p = await loop.create_datagram_endpoint(Peer, local_addr=(HOST, port))
    return p


async def even_peer_pair() -> tuple[Peer, Peer]:
    """An RTP peer on an even port with its RTCP peer on the odd port above."""
    for _ in range(50):
        port = random.randrange(40000, 60000) & ~1
        try:
            rtp = await peer(port)
        except OSError:
            continue
        try:
            return rtp, await peer(port + 1)
        except OSError:
            rtp.close()
    raise RuntimeError("no free even/odd port pair")


def run(test: Callable[[MediaRelay], Awaitable[None]], **kwargs: Any) -> None:
    async def main() -> None:
        relay = MediaRelay(HOST, free_range(), **kwargs)
        try:
            await test(relay)
        finally:
            await relay.close()

    asyncio.run(main())


def rtp(pt: int, seq: int, payload: bytes, *, ts: int | None = None, marker: bool = False) -> bytes:
    stamp = seq * 160 if ts is None else ts
    return bytes(RtpPacket(pt, seq, stamp, 0x1234, payload, marker=marker))


async def no_packet(p: Peer, wait: float = 0.2) -> bool:
    await asyncio.sleep(wait)
    return p.received.empty()


def test_open_session_binds_even_rtp_and_rtcp(engine: str) -> None:
    async def body(relay: MediaRelay) -> None:
        session = await relay.open_session("call-1")
        a, b = session.leg("a").local_port, session.leg("b").local_port
        assert a % 2 == 0 and b % 2 == 0 and a != b
        for port in (a, a + 1, b, b + 1):  # all four are bound
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with pytest.raises(OSError):
                s.bind((HOST, port))
            s.close()
        assert relay.active_sessions == 1
        assert relay.session("call-1") is session
        with pytest.raises(ValueError):
            await relay.open_session("call-1")
        with pytest.raises(ValueError):
            session.leg("c")

    run(body, engine=engine)


def test_a_closed_session_leaves_no_cyclic_garbage(engine: str) -> None:
    """Reference counting frees a finished call's relay objects: a busy gateway then needs no
    full garbage collection (a long stall) to get their memory back."""

    async def body(relay: MediaRelay) -> None:
        gc.collect()
        gc.disable()
        try:
            for i in range(20):
                session = await relay.open_session(f"call-{i}")
                session.on_stall = lambda _s, keep=session: None  # as call control sets it
                session.set_remote("a", HOST, 9, codec_pt=0)
                session.close()
                del session
            assert gc.collect() == 0
        finally:
            gc.enable()

    run(body, engine=engine)


def test_pcmu_to_pcma_and_back(engine: str) -> None:
    async def body(relay: MediaRelay) -> None:
        session = await relay.open_session("call-x")
        pa, pb = await peer(), await peer()
        session.set_remote("a", HOST, pa.port, codec_pt=0)
        session.set_remote("b", HOST, pb.port, codec_pt=8)
        ulaw = bytes(range(160))
        pa.send(rtp(0, 7, ulaw, marker=True), session.leg("a").local_port)
        got = RtpPacket.parse(await pb.recv())
        assert got.payload_type == 8
        assert got.marker is True
        assert (got.sequence_number, got.timestamp, got.ssrc) == (7, 7 * 160, 0x1234)
        assert got.payload == ulaw.translate(ULAW_TO_ALAW)
        # and back: PCMA from b becomes PCMU towards a
        pb.send(rtp(8, 9, got.payload), session.leg("b").local_port)
        back = RtpPacket.parse(await pa.recv())
        assert back.payload_type == 0 and back.marker is False
        assert len(back.payload) == 160
        # a packet with CSRCs and padding is transcoded around them
        odd = RtpPacket(0, 8, 1280, 0x1234, b"\xff" * 4, csrc=[5], padding=4)
        pa.send(bytes(odd), session.leg("a").local_port)
        got = RtpPacket.parse(await pb.recv())
        assert (got.payload_type, got.payload, got.csrc, got.padding) == (8, b"\xd5" * 4, [5], 4)
        pa.close()
        pb.close()

    run(body, engine=engine)


def test_same_codec_passes_bytes_through(engine: str) -> None:
    async def body(relay: MediaRelay) -> None:
        session = await relay.open_session("same")
        pa, pb = await peer(), await peer()
        session.set_remote("a", HOST, pa.port, codec_pt=8)
        session.set_remote("b", HOST, pb.port, codec_pt=8)
        packet = rtp(8, 1, b"\x01\x02\x03")
        pa.send(packet, session.leg("a").local_port)
        assert await pb.recv() == packet
        cn = rtp(13, 2, b"\x40")  # comfort noise passes untouched
        pa.send(cn, session.leg("a").local_port)
        assert await pb.recv() == cn
        with pytest.raises(ValueError, match="transcode"):
            session.set_remote("b", HOST, pb.port, codec_pt=18)
        with pytest.raises(ValueError, match="IP address"):
            session.set_remote("b", "phone.example.com", pb.port, codec_pt=8)
        pa.close()
        pb.close()

    run(body, engine=engine)


def test_latching_follows_the_real_source(engine: str) -> None:
    async def body(relay: MediaRelay) -> None:
        session = await relay.open_session("nat")
        sdp_addr, nat, pb, intruder = await peer(), await peer(), await peer(), await peer()
        session.set_remote("a", HOST, sdp_addr.port, codec_pt=0)  # what a's SDP says
        session.set_remote("b", HOST, pb.port, codec_pt=0)
        a_port, b_port = session.leg("a").local_port, session.leg("b").local_port
        # before a has sent anything, b's media goes to the SDP address
        pb.send(rtp(0, 1, b"x"), b_port)
        assert await sdp_addr.recv() == rtp(0, 1, b"x")
        # a's packets really come from elsewhere (NAT): that address is latched
        nat.send(rtp(0, 1, b"from-a"), a_port)
        assert await pb.recv() == rtp(0, 1, b"from-a")
        assert session.leg("a").latched
        pb.send(rtp(0, 2, b"y"), b_port)
        assert await nat.recv() == rtp(0, 2, b"y")
        assert await no_packet(sdp_addr, 0.05)
        # someone else sending to a's port is dropped, not relayed, and does not re-latch
        intruder.send(rtp(0, 9, b"evil"), a_port)
        assert await no_packet(pb)
        assert session.stats("a")["foreign"] == 1
        pb.send(rtp(0, 3, b"z"), b_port)
        assert await nat.recv() == rtp(0, 3, b"z")
        # the SDP address itself may always take over
        sdp_addr.send(rtp(0, 2, b"sdp"), a_port)
        assert await pb.recv() == rtp(0, 2, b"sdp")
        pb.send(rtp(0, 4, b"w"), b_port)
        assert await sdp_addr.recv() == rtp(0, 4, b"w")
        for p in (sdp_addr, nat, pb, intruder):
            p.close()

    run(body, engine=engine)


def test_reinvite_same_address_keeps_latch_new_address_resets(engine: str) -> None:
    async def body(relay: MediaRelay) -> None:
        session = await relay.open_session("reinvite")
        sdp_addr, nat, pb, moved = await peer(), await peer(), await peer(), await peer()
        session.set_remote("a", HOST, sdp_addr.port, codec_pt=0)
        session.set_remote("b", HOST, pb.port, codec_pt=0)
        a_port, b_port = session.leg("a").local_port, session.leg("b").local_port
        nat.send(rtp(0, 1, b"a"), a_port)
        await pb.recv()
        # session refresh re-INVITE with the same SDP: still sending to the NAT address
        session.set_remote("a", HOST, sdp_addr.port, codec_pt=8)
        assert session.leg("a").latched
        pb.send(rtp(0, 1, b"\xff"), b_port)
        got = RtpPacket.parse(await nat.recv())
        assert got.payload_type == 8 and got.payload == b"\xd5"  # codec change applied
        # re-INVITE moving a elsewhere: latch reset, media goes to the new SDP address
        session.set_remote("a", HOST, moved.port, codec_pt=0)
        assert not session.leg("a").latched
        pb.send(rtp(0, 2, b"m"), b_port)
        assert await moved.recv() == rtp(0, 2, b"m")
        # hold the old way (c=0.0.0.0): nothing is sent to a
        session.set_remote("a", "0.0.0.0", moved.port, codec_pt=0)
        pb.send(rtp(0, 3, b"h"), b_port)
        assert await no_packet(moved)
        assert session.stats("b")["dropped"] == 1
        for p in (sdp_addr, nat, pb, moved):
            p.close()

    run(body, engine=engine)


def dtmf_packets(pt: int, seq0: int, ts: int, event: int, steps: int) -> list[bytes]:
    out = []
    seq = seq0
    for i in range(1, steps + 1):
        payload = bytes(TelephoneEvent(event, False, 10, 160 * i))
        out.append(rtp(pt, seq, payload, ts=ts, marker=i == 1))
        seq += 1
    for _ in range(3):  # RFC 4733 §2.5.1.4: the end packet is sent three times
        payload = bytes(TelephoneEvent(event, True, 10, 160 * (steps + 1)))
        out.append(rtp(pt, seq, payload, ts=ts))
        seq += 1
    return out


def test_dtmf_reported_once_and_pt_rewritten(engine: str) -> None:
    async def body(relay: MediaRelay) -> None:
        session = await relay.open_session("dtmf")
        digits: list[tuple[str, str, int]] = []
        session.on_dtmf = lambda leg, digit, ms: digits.append((leg, digit, ms))
        pa, pb = await peer(), await peer()
        session.set_remote("a", HOST, pa.port, codec_pt=0, dtmf_pt=101)
        session.set_remote("b", HOST, pb.port, codec_pt=8, dtmf_pt=96)
        packets = dtmf_packets(101, 100, 8000, 5, 4)
        for p in packets:
            pa.send(p, session.leg("a").local_port)
        for p in packets:
            got = await pb.recv()
            assert got[1] & 0x7F == 96
            assert got[1] & 0x80 == p[1] & 0x80
            assert got[2:] == p[2:]  # payload and header untouched apart from the PT
        assert digits == [("a", "5", 100)]
        # a second press of the same key is a new event
        for p in dtmf_packets(101, 200, 16000, 5, 2):
            pa.send(p, session.leg("a").local_port)
        for _ in range(5):
            await pb.recv()
        assert digits == [("a", "5", 100), ("a", "5", 60)]
        assert session.stats("a")["dtmf_events"] == 2
        assert relay.totals["dtmf_events"] == 2
        # b's peer has no telephone-event: events from b are reported but not relayed to a
        session.set_remote("a", HOST, pa.port, codec_pt=0, dtmf_pt=None)
        for p in dtmf_packets(96, 1, 800, 11, 2):
            pb.send(p, session.leg("b").local_port)
        assert await no_packet(pa)
        assert digits[-1] == ("b", "#", 60)
        pa.close()
        pb.close()

    run(body, engine=engine)


def test_dtmf_without_end_reported_by_housekeeping(engine: str) -> None:
    async def body(relay: MediaRelay) -> None:
        session = await relay.open_session("dtmf-lost-end")
        digits: list[tuple[str, str, int]] = []
        session.on_dtmf = lambda leg, digit, ms: digits.append((leg, digit, ms))
        pa, pb = await peer(), await peer()
        session.set_remote("a", HOST, pa.port, codec_pt=0, dtmf_pt=101)
        session.set_remote("b", HOST, pb.port, codec_pt=0, dtmf_pt=101)
        for p in dtmf_packets(101, 1, 800, 9, 3)[:3]:  # no end packets at all
            pa.send(p, session.leg("a").local_port)
        await until(lambda: bool(digits))
        assert digits == [("a", "9", 60)]
        pa.close()
        pb.close()

    run(body, engine=engine, check_interval=0.05)


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_stall_callback(engine: str) -> None:
    async def body(relay: MediaRelay) -> None:
        session = await relay.open_session("stall")
        stalls: list[RelaySession] = []
        session.on_stall = stalls.append
        pa, pb = await peer(), await peer()
        session.set_remote("a", HOST, pa.port, codec_pt=0)
        session.set_remote("b", HOST, pb.port, codec_pt=0)
        for i in range(6):  # media flowing: no stall
            pa.send(rtp(0, i, b"x"), session.leg("a").local_port)
            await asyncio.sleep(0.05)
        assert stalls == []
        await until(lambda: len(stalls) == 1)
        await asyncio.sleep(0.3)
        assert stalls == [session]  # once, not at every check
        pa.send(rtp(0, 10, b"x"), session.leg("a").local_port)  # media back: re-armed
        await until(lambda: not session._stalled)
        await until(lambda: len(stalls) == 2)
        assert stalls == [session, session]
        session.stall_timeout = None  # e.g. on hold
        pa.send(rtp(0, 11, b"x"), session.leg("a").local_port)
        await asyncio.sleep(0.6)
        assert len(stalls) == 2
        assert relay.totals["stalls"] == 2
        pa.close()
        pb.close()

    run(body, engine=engine, stall_timeout=0.3, check_interval=0.05)


def test_rtcp_is_relayed_between_rtcp_ports(engine: str) -> None:
    async def body(relay: MediaRelay) -> None:
        session = await relay.open_session("rtcp")
        a_rtp, a_rtcp = await even_peer_pair()
        b_rtp, b_rtcp = await even_peer_pair()
        session.set_remote("a", HOST, a_rtp.port, codec_pt=0)
        session.set_remote("b", HOST, b_rtp.port, codec_pt=8)
        rr = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)
        a_rtcp.send(rr, session.leg("a").local_port + 1)
        assert await b_rtcp.recv() == rr  # to b's RTP port + 1, untouched
        b_rtcp.send(rr, session.leg("b").local_port + 1)
        assert await a_rtcp.recv() == rr
        assert session.stats("a")["rtcp_in"] == 1 and session.stats("b")["rtcp_out"] == 1
        # RFC 3605 a=rtcp port
        other = await peer()
        session.set_remote("b", HOST, b_rtp.port, codec_pt=8, rtcp_port=other.port)
        a_rtcp.send(rr, session.leg("a").local_port + 1)
        assert await other.recv() == rr
        for p in (a_rtp, a_rtcp, b_rtp, b_rtcp, other):
            p.close()

    run(body, engine=engine)


def test_close_returns_ports_and_is_idempotent(engine: str) -> None:
    async def body(relay: MediaRelay) -> None:
        before = relay.ports.available
        session = await relay.open_session("bye")
        ports = [session.leg("a").local_port, session.leg("b").local_port]
        assert relay.ports.available == before - 2
        session.close()
        session.close()
        assert session.closed
        assert relay.active_sessions == 0 and relay.session("bye") is None
        assert relay.ports.available == before
        assert all(p not in relay.ports for p in ports)
        with pytest.raises(ValueError):
            session.set_remote("a", HOST, 4000, 0)
        await asyncio.sleep(0.05)
        for port in ports:  # the sockets are really gone
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((HOST, port))
            s.close()
        totals = relay.totals
        assert totals["sessions_opened"] == 1 and totals["sessions_closed"] == 1

    run(body, engine=engine, pool_size=0)


def test_pooled_sockets_are_reused_drained_and_relatched(engine: str) -> None:
    async def body(relay: MediaRelay) -> None:
        a_rtp, _a_rtcp = await even_peer_pair()
        b_rtp, _b_rtcp = await even_peer_pair()
        first = await relay.open_session("one")
        ports = {first.leg("a").local_port, first.leg("b").local_port}
        first.set_remote("a", HOST, a_rtp.port, codec_pt=0)
        first.set_remote("b", HOST, b_rtp.port, codec_pt=0)
        a_rtp.send(rtp(0, 1, b"\xff" * 160), first.leg("a").local_port)
        assert await b_rtp.recv() == rtp(0, 1, b"\xff" * 160)
        first.close()
        assert relay.pooled == 2 and relay.ports.in_use == 2  # kept bound, ports still taken
        stale = rtp(0, 2, b"\x01" * 160)
        for port in ports:  # the old peer keeps sending between the calls
            a_rtp.send(stale, port)
            a_rtp.send(stale, port + 1)
        await asyncio.sleep(0.05)
        second = await relay.open_session("two")
        assert {second.leg("a").local_port, second.leg("b").local_port} == ports
        assert relay.pooled == 0 and not second.leg("a").latched
        assert second.leg("a").packets_in == 0
        other, _other_rtcp = await even_peer_pair()
        second.set_remote("a", HOST, other.port, codec_pt=0)
        second.set_remote("b", HOST, b_rtp.port, codec_pt=0)
        assert await no_packet(b_rtp, 0.1)  # nothing of the first call leaks into the second
        other.send(rtp(0, 7, b"\x02" * 160), second.leg("a").local_port)
        assert await b_rtp.recv() == rtp(0, 7, b"\x02" * 160)
        assert second.stats("a")["packets_in"] == 1 and second.leg("a").latched
        second.close()
        await relay.close()
        assert relay.pooled == 0 and relay.ports.in_use == 0
        await asyncio.sleep(0.05)
        for port in ports:  # closing the relay closes the pooled sockets
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((HOST, port))
            s.close()
        for p in (a_rtp, b_rtp, other):
            p.close()

    run(body, engine=engine)


def test_pool_is_bounded(engine: str) -> None:
    async def body(relay: MediaRelay) -> None:
        sessions = [await relay.open_session(f"c{i}") for i in range(3)]
        for s in sessions:
            s.close()
        assert relay.pooled == 2 and relay.ports.in_use == 2  # the rest closed and freed
        again = [await relay.open_session(f"d{i}") for i in range(2)]
        assert relay.pooled == 0 and relay.ports.in_use == 4
        for s in again:
            s.close()

    run(body, engine=engine, pool_size=2)
    with pytest.raises(ValueError):
        MediaRelay(HOST, free_range(), pool_size=-1)


def test_exhausted_range_is_503_and_leaks_nothing(engine: str) -> None:
    async def main() -> None:
        base = free_range(4)[0]
        relay = MediaRelay(HOST, (base, base + 3), engine=engine)  # two pairs: one session
        try:
            await relay.open_session("one")
            with pytest.raises(PortsExhausted) as info:
                await relay.open_session("two")
            assert info.value.status == 503
            assert relay.ports.in_use == 2 and relay.active_sessions == 1
        finally:
            await relay.close()
        assert relay.ports.in_use == 0

    asyncio.run(main())


def test_bind_skips_ports_taken_by_others(engine: str) -> None:
    async def main() -> None:
        base = free_range(8)[0]
        squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        squatter.bind((HOST, base + 1))  # the RTCP port of the first pair
        relay = MediaRelay(HOST, (base, base + 7), engine=engine)
        try:
            session = await relay.open_session("skip")
            assert base not in (session.leg("a").local_port, session.leg("b").local_port)
            assert relay.ports.in_use == 2
        finally:
            await relay.close()
            squatter.close()

    asyncio.run(main())


async def pump(src: Peer, dst: Peer, port: int, pt: int, count: int, seq0: int) -> list[bytes]:
    got: list[bytes] = []
    sent = 0
    while sent < count:
        for _ in range(min(50, count - sent)):
            src.send(rtp(pt, (seq0 + sent) & 0xFFFF, b"\xff" * 160), port)
            sent += 1
        while len(got) < sent:
            got.append(await dst.recv())
    return got


def test_thousand_packets_each_way_counters_exact(engine: str) -> None:
    async def body(relay: MediaRelay) -> None:
        session = await relay.open_session("bulk")
        pa, pb = await peer(), await peer()
        session.set_remote("a", HOST, pa.port, codec_pt=0, dtmf_pt=101)
        session.set_remote("b", HOST, pb.port, codec_pt=8, dtmf_pt=101)
        a_port, b_port = session.leg("a").local_port, session.leg("b").local_port
        to_b, to_a = await asyncio.gather(
            pump(pa, pb, a_port, 0, 1000, 65000), pump(pb, pa, b_port, 8, 1000, 1)
        )
        assert len(to_b) == len(to_a) == 1000
        assert all(p[1] == 8 and p[12:] == b"\xd5" * 160 for p in to_b)
        assert all(p[1] == 0 and p[12:] == ALAW_TO_ULAW[0xFF:] * 160 for p in to_a)
        size = 12 + 160
        a, b = session.stats("a"), session.stats("b")
        for s in (a, b):
            assert s["packets_in"] == s["packets_out"] == 1000
            assert s["bytes_in"] == s["bytes_out"] == 1000 * size
            assert s["dropped"] == s["foreign"] == 0
            assert s["received"] == s["expected"] == 999  # RFC 3550 A.1 probation
            assert s["lost"] == 0
            assert s["latched"] is True
        assert a["extended_max_seq"] == 65536 + (65000 + 999 - 65536)  # wrapped
        totals = relay.totals
        assert totals["packets_relayed"] == 2000
        assert totals["bytes_relayed"] == 2000 * size
        pa.close()
        pb.close()

    run(body, engine=engine)


def test_runs_on_uvloop(engine: str) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        relay = MediaRelay(HOST, free_range(), engine=engine)
        try:
            session = await relay.open_session("uv")
            pa, pb = await peer(), await peer()
            session.set_remote("a", HOST, pa.port, codec_pt=8)
            session.set_remote("b", HOST, pb.port, codec_pt=0)
            got = await pump(pa, pb, session.leg("a").local_port, 8, 200, 0)
            assert all(p[1] == 0 and p[12:] == ALAW_TO_ULAW[0xFF:] * 160 for p in got)
            assert session.stats("b")["packets_out"] == 200
            pa.close()
            pb.close()
        finally:
            await relay.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
