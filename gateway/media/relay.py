"""RTP/RTCP relay for the B2BUA: two legs per call, latching, PCMU⇄PCMA, RFC 4733 DTMF.

The asyncio adapter of the media layer: one :class:`MediaRelay` per site owns the RTP port range;
each call gets a :class:`RelaySession` with legs ``"a"`` and ``"b"``, each bound to an even RTP
port and the RTCP port above it. Packets received on one leg go out of the other leg's socket to
that leg's peer. The per-packet path (``_RtpProtocol.datagram_received``) reads the header with
:mod:`struct`, updates counters with plain arithmetic, builds nothing but the outgoing bytes when
it must transcode or rewrite the payload type, and never logs.

With ``engine="native"`` (the default ``"auto"`` picks it where :mod:`gateway.media.fastpath` is
built) the RTP sockets belong to a native worker thread that does the same per-packet work without
the GIL; this module then keeps the control plane: configuration, RTCP, DTMF detection (fed from
the worker's telephone-event records), stall detection and the counters, read from the worker.

The socket pairs of finished calls go to a bounded pool and serve the next calls (drained of what
the old peer sent; a new session latches afresh), so a call set-up binds nothing in steady state.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import socket
import struct
import termios
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.media import fastpath
from gateway.media.dtmf import DtmfDetector, DtmfDigit
from gateway.media.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW
from gateway.media.ports import PortAllocator, PortsExhausted
from gateway.media.rtp import RtpError, payload_bounds, payload_offset
from gateway.media.stats import ReceiveStats

__all__ = ["ENGINES", "LEGS", "MediaRelay", "RelayLeg", "RelaySession"]

logger = logging.getLogger(__name__)

LEGS = ("a", "b")
ENGINES = ("auto", "native", "python")
PCMU = 0
PCMA = 8
# RFC 3551 §4.5.14/§4.5.15: both G.711 laws at 8000 Hz, so timestamps pass through unchanged.
_TRANSCODE = {(PCMU, PCMA): ULAW_TO_ALAW, (PCMA, PCMU): ALAW_TO_ULAW}
# RFC 3550 §5.1: octet 1 (M|PT), sequence number, timestamp, SSRC.
_PEEK = struct.Struct("!xBHII").unpack_from
# One-octet M|PT values, so a rewrite never formats an int per packet.
_OCTETS = tuple(bytes((i,)) for i in range(256))
_monotonic = time.monotonic

Address = tuple[Any, ...]
# A leg's RTP end while a session opens: an asyncio transport, or a socket for the native engine.
_RtpEnd = asyncio.DatagramTransport | socket.socket
DtmfCallback = Callable[[str, str, int], None]
StallCallback = Callable[["RelaySession"], None]


class RelayLeg:
    """One side of a relayed call: our socket pair, the peer, counters and statistics."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "clock_rate",
        "codec_pt",
        "detector",
        "dropped",
        "dtmf_events",
        "dtmf_pt",
        "foreign",
        "last_rx",
        "latched_addr",
        "local_port",
        "name",
        "other",
        "out_dtmf_pt",
        "out_media_octets",
        "packets_in",
        "packets_out",
        "ports",
        "refresh",
        "remote",
        "rtcp_in",
        "rtcp_latched_addr",
        "rtcp_out",
        "rtcp_remote",
        "rtcp_sdp_remote",
        "rtcp_transport",
        "rtp_transport",
        "sdp_remote",
        "send_errors",
        "ssrc",
        "stats",
        "xcode",
    )

    def __init__(self, name: str, local_port: int) -> None:
        self.name = name
        self.local_port = local_port
        self.other: RelayLeg = self
        self.rtp_transport: asyncio.DatagramTransport | None = None
        self.rtcp_transport: asyncio.DatagramTransport | None = None
        # Where the peer said it receives (SDP), where it really sends from (latched), and
        # where we send: the latched address once known, else the SDP one (RFC 4961 symmetry).
        self.sdp_remote: Address | None = None
        self.latched_addr: Address | None = None
        self.remote: Address | None = None
        self.rtcp_sdp_remote: Address | None = None
        self.rtcp_latched_addr: Address | None = None
        self.rtcp_remote: Address | None = None
        self.codec_pt: int | None = None
        self.dtmf_pt: int | None = None
        self.clock_rate = 8000
        # Forwarding plan for packets received on this leg (set by RelaySession._plan).
        self.xcode: bytes | None = None
        self.out_media_octets: tuple[bytes, bytes] = (b"", b"")
        self.out_dtmf_pt = -1
        self.stats = ReceiveStats()
        self.detector = DtmfDetector()
        self.ssrc = -1
        self.last_rx = 0.0
        self.packets_in = 0
        self.bytes_in = 0
        self.packets_out = 0
        self.bytes_out = 0
        self.dropped = 0
        self.foreign = 0
        self.rtcp_in = 0
        self.rtcp_out = 0
        self.dtmf_events = 0
        self.send_errors = 0
        # Native engine: reads the worker's counters into these attributes.
        self.refresh: Callable[[], None] | None = None
        self.ports: _BoundPair | None = None  # the sockets, back to the relay's pool at close

    @property
    def latched(self) -> bool:
        """True once a packet from the peer fixed the address we send to."""
        if self.refresh is not None:
            self.refresh()
        return self.latched_addr is not None

    def _apply(self, snap: fastpath.LegSnapshot) -> None:
        # The native worker's view of this leg (engine="native").
        self.packets_in = snap.packets_in
        self.bytes_in = snap.bytes_in
        self.packets_out = snap.packets_out
        self.bytes_out = snap.bytes_out
        self.dropped = snap.dropped
        self.foreign = snap.foreign
        self.send_errors = snap.send_errors
        self.last_rx = snap.last_rx
        self.latched_addr = snap.latched
        self.remote = snap.remote
        self.ssrc = snap.ssrc
        s = self.stats
        s.packets = snap.rs_packets
        s.bytes = snap.rs_bytes
        s.base_seq = snap.rs_base_seq
        s.max_seq = snap.rs_max_seq
        s.bad_seq = snap.rs_bad_seq
        s.cycles = snap.rs_cycles
        s.received = snap.rs_received
        s.probation = snap.rs_probation
        s.jitter = snap.rs_jitter
        s.last_arrival = snap.rs_last_arrival


class _RtpProtocol(asyncio.DatagramProtocol):
    __slots__ = ("leg", "session")

    def __init__(self, session: RelaySession, leg: RelayLeg) -> None:
        self.session = session
        self.leg = leg

    def datagram_received(self, data: bytes, addr: Address) -> None:
        leg = self.leg
        n = len(data)
        if n < 12 or data[0] & 0xC0 != 0x80:  # RFC 3550 §5.1: V=2 and a full fixed header
            leg.dropped += 1
            return
        if addr != leg.latched_addr and not self.session._latch(leg, addr):
            leg.foreign += 1
            return
        now = _monotonic()
        leg.last_rx = now
        leg.packets_in += 1
        leg.bytes_in += n
        b1, seq, ts, ssrc = _PEEK(data)
        if ssrc != leg.ssrc:
            leg.ssrc = ssrc
            leg.stats.reset_source(None)
        pt = b1 & 0x7F
        if pt == leg.codec_pt:
            leg.stats.update(seq, ts, now * leg.clock_rate, n)
            table = leg.xcode
            if table is None:
                out = data
            elif data[0] == 0x80:  # no CSRC, extension or padding: payload starts at 12
                out = b"".join(
                    (
                        data[:1],
                        leg.out_media_octets[b1 >> 7],
                        data[2:12],
                        data[12:].translate(table),
                    )
                )
            else:
                out = _transcode_slow(data, table, leg.out_media_octets[b1 >> 7])
                if not out:
                    leg.dropped += 1
                    return
        elif pt == leg.dtmf_pt:
            leg.stats.count(seq, n)  # event timestamps are the event start: no jitter sample
            self.session._dtmf_packet(leg, data, b1, ts, now)
            out_pt = leg.out_dtmf_pt
            if out_pt < 0:
                leg.dropped += 1
                return
            out = data if out_pt == pt else data[:1] + _OCTETS[(b1 & 0x80) | out_pt] + data[2:]
        else:
            leg.stats.count(seq, n)
            out = data  # comfort noise and the like pass through untouched
        other = leg.other
        dest = other.remote
        transport = other.rtp_transport
        if dest is None or transport is None:
            leg.dropped += 1
            return
        transport.sendto(out, dest)
        other.packets_out += 1
        other.bytes_out += len(out)

    def error_received(self, exc: Exception) -> None:
        self.leg.send_errors += 1  # e.g. ICMP port unreachable from a peer that went away


class _RtcpProtocol(asyncio.DatagramProtocol):
    __slots__ = ("leg", "session")

    def __init__(self, session: RelaySession, leg: RelayLeg) -> None:
        self.session = session
        self.leg = leg

    def datagram_received(self, data: bytes, addr: Address) -> None:
        # RTCP is relayed end to end untouched (RFC 3550 §6): SSRCs and sequence numbers pass
        # through the relay unchanged, so the reports stay meaningful.
        leg = self.leg
        if len(data) < 8 or data[0] & 0xC0 != 0x80:
            leg.dropped += 1
            return
        if addr != leg.rtcp_latched_addr:
            if leg.rtcp_latched_addr is not None and addr != leg.rtcp_sdp_remote:
                leg.foreign += 1
                return
            leg.rtcp_latched_addr = addr
            leg.rtcp_remote = addr
        leg.rtcp_in += 1
        other = leg.other
        dest = other.rtcp_remote
        transport = other.rtcp_transport
        if dest is None or transport is None:
            leg.dropped += 1
            return
        transport.sendto(data, dest)
        other.rtcp_out += 1

    def error_received(self, exc: Exception) -> None:
        self.leg.send_errors += 1


def _transcode_slow(data: bytes, table: bytes, octet1: bytes) -> bytes:
    # RFC 3550 §5.1/§5.3.1: skip CSRCs and the header extension; padding is not audio.
    try:
        start, end = payload_bounds(data)
    except (RtpError, IndexError, struct.error):
        return b""
    return b"".join((data[:1], octet1, data[2:start], data[start:end].translate(table), data[end:]))


def _address(host: str, port: int) -> Address | None:
    # c=0.0.0.0 (RFC 3264 §8.4 hold) or port 0 (stream disabled): nowhere to send.
    if port == 0 or host in ("0.0.0.0", "::"):
        return None
    return (host, port)


class _Discard(asyncio.DatagramProtocol):
    """The protocol of a pooled transport: what arrives between two calls is dropped."""

    __slots__ = ()


_DISCARD = _Discard()
_DRAIN_MAX = 4096


class _BoundPair:
    """One leg's bound sockets, reused across calls: RTP on an even port, RTCP on the one above.

    ``rtp`` is None with the native engine (the worker gets a duplicate of ``rtp_sock``); the
    socket objects stay referenced with the python engine too, to drain them without a wrapper
    (a transport created with ``sock=`` closes that same object)."""

    __slots__ = ("port", "rtcp", "rtcp_sock", "rtp", "rtp_sock")

    _nread = bytearray(4)  # FIONREAD's answer (one buffer: the loop thread only)

    def __init__(
        self,
        port: int,
        rtp: asyncio.DatagramTransport | None,
        rtp_sock: socket.socket,
        rtcp: asyncio.DatagramTransport,
        rtcp_sock: socket.socket,
    ) -> None:
        self.port = port
        self.rtp = rtp
        self.rtp_sock = rtp_sock
        self.rtcp = rtcp
        self.rtcp_sock = rtcp_sock

    def usable(self) -> bool:
        if self.rtcp.is_closing() or (self.rtp is not None and self.rtp.is_closing()):
            return False
        return self.rtp_sock.fileno() >= 0 and self.rtcp_sock.fileno() >= 0

    def attach(self, session: RelaySession, leg: RelayLeg) -> None:
        if self.rtp is not None:
            self.rtp.set_protocol(_RtpProtocol(session, leg))
        self.rtcp.set_protocol(_RtcpProtocol(session, leg))

    def detach(self) -> None:
        if self.rtp is not None:
            self.rtp.set_protocol(_DISCARD)
        self.rtcp.set_protocol(_DISCARD)

    def drain(self) -> None:
        # Read and drop what is queued, so nothing the last call's peer sent reaches the next
        # call: the native RTP socket is read by nobody while pooled, and a transport's queue
        # may hold what arrived since the loop last polled it.
        # FIONREAD first: an empty queue (the usual case) costs one ioctl, not a raised error.
        buf = self._nread
        for sock in (self.rtp_sock, self.rtcp_sock):
            try:
                fd = sock.fileno()
                for _ in range(_DRAIN_MAX):
                    fcntl.ioctl(fd, termios.FIONREAD, buf)
                    if not any(buf):
                        break
                    sock.recv(1)  # a datagram is consumed whole whatever the buffer size
            except OSError:  # BlockingIOError: the queue is empty
                pass

    def close(self) -> None:
        if self.rtp is not None:
            self.rtp.close()
        else:
            self.rtp_sock.close()
        self.rtcp.close()


_NO_LEG = RelayLeg("-", 0)
"""What a closed session's legs point at instead of each other."""


class RelaySession:
    """The relay of one call: legs ``"a"`` and ``"b"``.

    Set each leg's peer from its SDP with :meth:`set_remote` (again after a re-INVITE); assign
    :attr:`on_dtmf` ``(leg, digit, duration_ms)`` and :attr:`on_stall` ``(session)`` to hear
    about key presses and dead media. :attr:`stall_timeout` (seconds, None to disable, e.g.
    while the call is on hold with a=inactive) defaults to the relay's.
    """

    def __init__(
        self, relay: MediaRelay, call_id: str, ports: tuple[int, int], stall_timeout: float | None
    ) -> None:
        self.relay = relay
        self.call_id = call_id
        self._legs = {"a": RelayLeg("a", ports[0]), "b": RelayLeg("b", ports[1])}
        a, b = self._legs["a"], self._legs["b"]
        a.other, b.other = b, a
        self.on_dtmf: DtmfCallback | None = None
        self.on_stall: StallCallback | None = None
        self.stall_timeout = stall_timeout
        self.opened_at = _monotonic()
        self._activity_mark = self.opened_at
        self._stalled = False
        self.closed = False
        self._pair: int | None = None  # the native engine's pair id

    def _attach(self, pair: int) -> None:
        self._pair = pair
        for leg in self._legs.values():
            leg.refresh = self._sync

    def _sync(self) -> None:
        """Native engine: read both legs' counters and addresses from the worker."""
        engine = self.relay._fast
        if self._pair is None or engine is None:
            return
        for i, leg in enumerate(self._legs.values()):
            leg._apply(engine.snapshot(self._pair, i))

    def leg(self, name: str) -> RelayLeg:
        """Leg ``"a"`` or ``"b"``."""
        try:
            return self._legs[name]
        except KeyError:
            raise ValueError(f"no relay leg {name!r}; legs are 'a' and 'b'") from None

    def set_remote(
        self,
        leg: str,
        host: str,
        port: int,
        codec_pt: int,
        dtmf_pt: int | None = None,
        *,
        rtcp_port: int | None = None,
    ) -> None:
        """The peer of ``leg`` from its SDP: address, codec and RFC 4733 payload types.

        ``host`` is an IP literal (c=), ``port`` the m= port; ``rtcp_port`` an RFC 3605 a=rtcp
        port, default ``port + 1``. c=0.0.0.0 or port 0 stop sending to that leg. Calling it
        again (re-INVITE) keeps the latched address when the SDP address did not change.
        ValueError for a bad address or a codec pair we cannot transcode.
        """
        if self.closed:
            raise ValueError("relay session is closed")
        target = self.leg(leg)
        try:
            host = ipaddress.ip_address(host).compressed
        except ValueError:
            raise ValueError(f"relay peer must be an IP address, not {host!r}") from None
        if not 0 <= port <= 65535 or not 0 <= codec_pt <= 127:
            raise ValueError(f"bad relay peer port {port} or payload type {codec_pt}")
        if dtmf_pt is not None and (not 0 <= dtmf_pt <= 127 or dtmf_pt == codec_pt):
            raise ValueError(f"bad telephone-event payload type {dtmf_pt}")
        other = target.other
        theirs = other.codec_pt
        if theirs is not None and theirs != codec_pt and (codec_pt, theirs) not in _TRANSCODE:
            raise ValueError(f"cannot transcode payload type {codec_pt} ⇄ {theirs}")
        sdp_remote = _address(host, port)
        rtcp_remote = _address(host, rtcp_port if rtcp_port is not None else port + 1)
        if port == 0:
            rtcp_remote = None
        reset_latch = sdp_remote != target.sdp_remote
        if reset_latch:
            target.sdp_remote = sdp_remote
            target.latched_addr = None
            target.remote = sdp_remote
        if rtcp_remote != target.rtcp_sdp_remote:
            target.rtcp_sdp_remote = rtcp_remote
            target.rtcp_latched_addr = None
            target.rtcp_remote = rtcp_remote
        target.codec_pt = codec_pt
        target.dtmf_pt = dtmf_pt
        self._plan()
        engine = self.relay._fast
        if self._pair is not None and engine is not None:
            engine.configure(
                self._pair,
                LEGS.index(leg),
                sdp_remote,
                codec_pt,
                dtmf_pt,
                reset_latch=reset_latch,
            )
        self._activity_mark = _monotonic()
        self._stalled = False

    def _plan(self) -> None:
        for src in self._legs.values():
            dst = src.other
            src.xcode = None
            if src.codec_pt is not None and dst.codec_pt is not None:
                src.xcode = _TRANSCODE.get((src.codec_pt, dst.codec_pt))
            out_pt = dst.codec_pt if dst.codec_pt is not None else (src.codec_pt or 0)
            src.out_media_octets = (_OCTETS[out_pt], _OCTETS[0x80 | out_pt])
            src.out_dtmf_pt = dst.dtmf_pt if dst.dtmf_pt is not None else -1

    def _latch(self, leg: RelayLeg, addr: Address) -> bool:
        # RFC 4961 symmetric RTP: the first packet from the peer fixes where we send, even
        # behind NAT. Later packets from elsewhere are dropped unless they come from the SDP
        # address, which always wins (an injected packet cannot hijack the stream for long).
        if leg.latched_addr is None or addr == leg.sdp_remote:
            leg.latched_addr = addr
            leg.remote = addr
            return True
        return False

    def _dtmf_packet(self, leg: RelayLeg, data: bytes, b1: int, ts: int, now: float) -> None:
        try:
            off = payload_offset(data)
        except (RtpError, IndexError, struct.error):
            return
        if len(data) < off + 4:
            return
        # RFC 4733 §2.3: event | E R volume | duration
        digit = leg.detector.feed(
            ts,
            data[off],
            bool(data[off + 1] & 0x80),
            (data[off + 2] << 8) | data[off + 3],
            bool(b1 & 0x80),
            now,
        )
        if digit is not None:
            self._report_dtmf(leg, digit)

    def _report_dtmf(self, leg: RelayLeg, digit: DtmfDigit) -> None:
        leg.dtmf_events += 1
        callback = self.on_dtmf
        if callback is not None:
            try:
                callback(leg.name, digit.digit, digit.duration_ms)
            except Exception:
                logger.exception("%s: on_dtmf callback failed", self.call_id)

    def _check(self, now: float) -> None:
        """Once a second or so: late DTMF ends and stall detection."""
        for leg in self._legs.values():
            digit = leg.detector.expire(now)
            if digit is not None:
                self._report_dtmf(leg, digit)
        timeout = self.stall_timeout
        if timeout is None:
            return
        last = max(self._activity_mark, self._legs["a"].last_rx, self._legs["b"].last_rx)
        if now - last < timeout:
            self._stalled = False
        elif not self._stalled:
            self._stalled = True
            self.relay._stalls += 1
            callback = self.on_stall
            if callback is not None:
                try:
                    callback(self)
                except Exception:
                    logger.exception("%s: on_stall callback failed", self.call_id)

    def stats(self, leg: str) -> dict[str, Any]:
        """Counters and RFC 3550 receive statistics of one leg (``*_in``: from its peer,
        ``*_out``: sent to its peer; ``jitter_ms`` and ``lost`` of what its peer sends)."""
        g = self.leg(leg)
        self._sync()
        s = g.stats
        return {
            "local_port": g.local_port,
            "remote": None if g.remote is None else f"{g.remote[0]}:{g.remote[1]}",
            "latched": g.latched,
            "codec_pt": g.codec_pt,
            "dtmf_pt": g.dtmf_pt,
            "packets_in": g.packets_in,
            "bytes_in": g.bytes_in,
            "packets_out": g.packets_out,
            "bytes_out": g.bytes_out,
            "dropped": g.dropped,
            "foreign": g.foreign,
            "rtcp_in": g.rtcp_in,
            "rtcp_out": g.rtcp_out,
            "dtmf_events": g.dtmf_events,
            "send_errors": g.send_errors,
            "received": s.received,
            "expected": s.expected,
            "lost": s.lost,
            "jitter_ms": round(s.jitter_ms, 3),
            "extended_max_seq": s.extended_max_seq,
            "idle_s": None if not g.last_rx else round(_monotonic() - g.last_rx, 3),
        }

    def close(self) -> None:
        """Give the four sockets back to the relay (its pool keeps them for the next call, or
        closes them and frees the ports); idempotent."""
        if self.closed:
            return
        self.closed = True
        engine, pair = self.relay._fast, self._pair
        if pair is not None:
            self._pair = None
            self.relay._native_sessions.pop(pair, None)
            if engine is not None:
                for leg, snap in zip(self._legs.values(), engine.remove(pair), strict=True):
                    leg._apply(snap)
            for leg in self._legs.values():
                leg.refresh = None
        # Break the reference cycles (leg a <-> leg b, the callbacks that hold the call which
        # holds this session), so reference counting frees a finished call at once: the full
        # garbage collection that would otherwise find it stalls a busy loop.
        for leg in self._legs.values():
            leg.other = _NO_LEG
        self.on_dtmf = self.on_stall = None
        self.relay._forget(self)

    def __repr__(self) -> str:
        a, b = self._legs["a"], self._legs["b"]
        return f"<RelaySession {self.call_id} a={a.local_port} b={b.local_port}>"


class MediaRelay:
    """The site's RTP relay: the port range, the sessions and a ~1 s housekeeping timer.

    ``stall_timeout`` (seconds) is the default silence after which ``on_stall`` fires;
    ``check_interval`` (seconds, default 1.0) how often that and late DTMF ends are checked;
    ``socket_buffer`` (bytes) sets SO_RCVBUF/SO_SNDBUF when given. ``engine`` picks who
    forwards RTP: ``"python"`` (this module's asyncio protocols), ``"native"`` (the
    :mod:`gateway.media.fastpath` worker thread; ValueError where it is not built) or ``"auto"``
    (native when available); :attr:`engine` tells which one runs. ``coalesce_us`` (native only,
    0-5000 µs, default 100) bounds the pause the worker takes after a busy round so that one
    wake-up serves many packets (see :class:`gateway.media.fastpath.Engine`). ``pool_size``
    (default 128, 0 to disable) is how many RTP/RTCP socket pairs of finished calls stay bound
    for the next calls instead of being closed (their ports stay taken meanwhile).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port_range: tuple[int, int] = (20000, 29999),
        stall_timeout: float | None = 30.0,
        *,
        check_interval: float = 1.0,
        socket_buffer: int | None = None,
        bind_attempts: int = 64,
        engine: str = "auto",
        coalesce_us: int = 100,
        pool_size: int = 128,
        advertise: str | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"relay engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        if engine == "native" and not fastpath.AVAILABLE:
            raise ValueError("the native RTP fast path is not built on this machine")
        self.engine = "native" if engine != "python" and fastpath.AVAILABLE else "python"
        if not 0 <= coalesce_us <= 5000:
            raise ValueError(f"coalesce_us must be 0-5000, not {coalesce_us}")
        self.coalesce_us = coalesce_us
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, not {pool_size}")
        self.pool_size = pool_size
        self._pool: deque[_BoundPair] = deque()
        self._bind_to: tuple[int, str] | None = None  # (family, address literal)
        self.host = host
        self.sdp_host = advertise or host  # what SDP offers peers (the public address behind NAT)
        self.ports = PortAllocator(*port_range)
        self.stall_timeout = stall_timeout
        self.check_interval = check_interval
        self.socket_buffer = socket_buffer
        self.bind_attempts = bind_attempts
        self._sessions: dict[str, RelaySession] = {}
        self._closed_counts = dict.fromkeys(_COUNTED, 0)
        self._opened = 0
        self._closed = 0
        self._stalls = 0
        self._timer: asyncio.Task[None] | None = None
        self._fast: fastpath.Engine | None = None  # created with the first native session
        self._fast_loop: asyncio.AbstractEventLoop | None = None
        self._native_sessions: dict[int, RelaySession] = {}

    @property
    def active_sessions(self) -> int:
        """Sessions open now."""
        return len(self._sessions)

    def session(self, call_id: str) -> RelaySession | None:
        """The open session of a call, if any."""
        return self._sessions.get(call_id)

    @property
    def totals(self) -> dict[str, int]:
        """Counters over all sessions, open and closed."""
        out = dict(self._closed_counts)
        for session in self._sessions.values():
            session._sync()
            for leg in session._legs.values():
                for key, attr in _COUNTED.items():
                    out[key] += getattr(leg, attr)
        out["sessions_active"] = len(self._sessions)
        out["sessions_opened"] = self._opened
        out["sessions_closed"] = self._closed
        out["stalls"] = self._stalls
        out["ports_available"] = self.ports.available
        return out

    async def open_session(self, call_id: str) -> RelaySession:
        """Two RTP/RTCP socket pairs for a call, from the pool or newly bound;
        :class:`PortsExhausted` (503) when the range is used up or no free pair can be bound.
        ValueError if the call has one already."""
        if call_id in self._sessions:
            raise ValueError(f"relay session for {call_id} is already open")
        loop = asyncio.get_running_loop()
        native = self.engine == "native"
        taken: list[_BoundPair] = []
        session = RelaySession(self, call_id, (0, 0), self.stall_timeout)
        try:
            for name in LEGS:
                leg = session.leg(name)
                bound = await self._acquire(loop)
                taken.append(bound)
                leg.ports = bound
                leg.local_port = bound.port
                leg.rtp_transport = bound.rtp
                leg.rtcp_transport = bound.rtcp
            if native:
                engine = self._native_engine(loop)
                sock_a, sock_b = taken[0].rtp_sock, taken[1].rtp_sock
                # The worker owns (and closes at remove) duplicates of the descriptors, so the
                # sockets themselves stay bound for the pool.
                pair = engine.add_pair(sock_a.dup(), sock_b.dup())
                session._attach(pair)
                self._native_sessions[pair] = session
        except BaseException:
            for bound in taken:
                bound.close()
                self.ports.release(bound.port)
            for leg in session._legs.values():
                leg.ports = leg.rtp_transport = leg.rtcp_transport = None
            raise
        for bound, leg in zip(taken, session._legs.values(), strict=True):
            bound.attach(session, leg)
        self._sessions[call_id] = session
        self._opened += 1
        if self._timer is None or self._timer.done():
            self._timer = loop.create_task(self._housekeeping())
        return session

    @property
    def pooled(self) -> int:
        """Idle RTP/RTCP socket pairs kept bound for the next calls."""
        return len(self._pool)

    async def _acquire(self, loop: asyncio.AbstractEventLoop) -> _BoundPair:
        # Binding four sockets per call costs more than the rest of the set-up's media work:
        # reuse the pairs of finished calls, oldest first, drained of what their last peer sent.
        pool = self._pool
        while pool:
            bound = pool.popleft()
            if bound.usable():
                bound.drain()
                return bound
            bound.close()
            self.ports.release(bound.port)
        return await self._bind_pair(loop)

    def _release(self, bound: _BoundPair) -> None:
        bound.detach()
        if len(self._pool) < self.pool_size and bound.usable():
            self._pool.append(bound)
        else:
            bound.close()
            self.ports.release(bound.port)

    async def _resolve(self, loop: asyncio.AbstractEventLoop) -> tuple[int, str]:
        # The relay's address family and literal, looked up once (a hostname goes through DNS).
        if self._bind_to is None:
            try:
                ip = ipaddress.ip_address(self.host)
            except ValueError:
                infos = await loop.getaddrinfo(self.host, 0, type=socket.SOCK_DGRAM)
                family, _t, _p, _c, sockaddr = infos[0]
                self._bind_to = (int(family), str(sockaddr[0]))
            else:
                family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
                self._bind_to = (int(family), ip.compressed)
        return self._bind_to

    def _socket(self, family: int, host: str, port: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((host, port))
            if self.socket_buffer:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.socket_buffer)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_buffer)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _bind_pair(self, loop: asyncio.AbstractEventLoop) -> _BoundPair:
        # RTP on an even port, RTCP on the one above (RFC 3550 §11). With the native engine the
        # RTP socket stays a plain socket for the worker; RTCP is always an asyncio transport.
        family, host = await self._resolve(loop)
        native = self.engine == "native"
        last_error: OSError | None = None
        for _ in range(self.bind_attempts):
            port = self.ports.allocate()
            rtp_sock: socket.socket | None = None
            rtcp_sock: socket.socket | None = None
            rtp: asyncio.DatagramTransport | None = None
            try:
                rtp_sock = self._socket(family, host, port)
                rtcp_sock = self._socket(family, host, port + 1)
                if not native:
                    rtp, _p = await loop.create_datagram_endpoint(_Discard, sock=rtp_sock)
                rtcp, _q = await loop.create_datagram_endpoint(_Discard, sock=rtcp_sock)
            except BaseException as e:
                if rtp is not None:
                    rtp.close()
                elif rtp_sock is not None:
                    rtp_sock.close()
                if rtcp_sock is not None:
                    rtcp_sock.close()
                self.ports.release(port)
                if not isinstance(e, OSError):
                    raise
                last_error = e  # taken by another process: try the next pair
                continue
            return _BoundPair(port, rtp, rtp_sock, rtcp, rtcp_sock)
        raise PortsExhausted(f"could not bind an RTP port pair on {self.host}: {last_error}")

    def _native_engine(self, loop: asyncio.AbstractEventLoop) -> fastpath.Engine:
        engine = self._fast
        if engine is None:
            engine = self._fast = fastpath.Engine(coalesce_us=self.coalesce_us)
            self._fast_loop = loop
            loop.add_reader(engine.notify_fd, self._native_events)
        return engine

    def _native_events(self) -> None:
        # RFC 4733 packets the worker forwarded (or dropped): DTMF detection stays in Python.
        engine = self._fast
        if engine is None:
            return
        for rec in engine.events():
            session = self._native_sessions.get(rec.pair)
            if session is None or session.closed:
                continue
            leg = session._legs[LEGS[rec.leg]]
            digit = leg.detector.feed(
                rec.timestamp, rec.event, rec.end, rec.duration, rec.marker, rec.now
            )
            if digit is not None:
                session._report_dtmf(leg, digit)

    def _forget(self, session: RelaySession) -> None:
        if self._sessions.get(session.call_id) is not session:
            return
        del self._sessions[session.call_id]
        self._closed += 1
        for leg in session._legs.values():
            for key, attr in _COUNTED.items():
                self._closed_counts[key] += getattr(leg, attr)
            bound, leg.ports = leg.ports, None
            leg.rtp_transport = leg.rtcp_transport = None
            if bound is not None:
                self._release(bound)

    async def _housekeeping(self) -> None:
        while self._sessions:
            await asyncio.sleep(self.check_interval)
            now = _monotonic()
            engine = self._fast
            if engine is not None:  # native: when each leg last heard its peer, in one call
                for pair, a, b in engine.last_rx_all():
                    native = self._native_sessions.get(pair)
                    if native is not None:
                        native._legs["a"].last_rx = a
                        native._legs["b"].last_rx = b
            for session in list(self._sessions.values()):
                if not session.closed:
                    session._check(now)

    async def close(self) -> None:
        """Close every session and stop the housekeeping timer."""
        for session in list(self._sessions.values()):
            session.close()
        while self._pool:
            bound = self._pool.popleft()
            bound.close()
            self.ports.release(bound.port)
        timer, self._timer = self._timer, None
        if timer is not None and not timer.done():
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        engine, self._fast = self._fast, None
        if engine is not None:
            loop, self._fast_loop = self._fast_loop, None
            if loop is not None and not loop.is_closed():
                loop.remove_reader(engine.notify_fd)
            engine.close()  # stops and joins the worker thread
            self._native_sessions.clear()
        await asyncio.sleep(0)  # let the transports finish closing


# totals key -> RelayLeg counter
_COUNTED = {
    "packets_in": "packets_in",
    "bytes_in": "bytes_in",
    "packets_relayed": "packets_out",
    "bytes_relayed": "bytes_out",
    "packets_dropped": "dropped",
    "packets_foreign": "foreign",
    "rtcp_relayed": "rtcp_out",
    "dtmf_events": "dtmf_events",
}
