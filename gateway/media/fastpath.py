"""The native RTP forwarding engine (``_fastpath.c``) behind a typed Python face.

One :class:`Engine` per :class:`gateway.media.relay.MediaRelay`: a worker thread, started with the
first pair, that waits with epoll on the RTP sockets of every pair and forwards each packet to the
other leg's peer (recvmmsg/sendmmsg, no GIL). Per leg it keeps relay.py's latching, PCMU⇄PCMA
transcoding, RFC 4733 payload-type rewrite, counters and RFC 3550 receive statistics; it copies
each telephone-event packet into a ring that :meth:`Engine.events` drains when :attr:`notify_fd`
is readable (``loop.add_reader``), so DTMF detection stays in Python.

:data:`AVAILABLE` is False where the extension was not built (no compiler at install time) or
cannot work (not Linux); the relay then forwards in Python.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import sys
from collections.abc import Iterable
from typing import Any, NamedTuple

from gateway.media.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW

__all__ = ["AVAILABLE", "DtmfRecord", "Engine", "LegSnapshot", "stats_replay"]

_native: Any = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(ImportError):
        _native = importlib.import_module("gateway.media._fastpath")

AVAILABLE: bool = bool(_native is not None and _native.AVAILABLE)
"""True when the native engine can be used here."""

Address = tuple[str, int]


class LegSnapshot(NamedTuple):
    """One leg's state as the worker sees it (``*_in``: from this leg's peer; ``*_out``: sent to
    it). ``last_rx`` is CLOCK_MONOTONIC seconds (:func:`time.monotonic`), 0.0 before any packet;
    the ``rs_*`` fields mirror :class:`gateway.media.stats.ReceiveStats`."""

    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    dropped: int
    foreign: int
    send_errors: int
    last_rx: float
    latched: Address | None
    remote: Address | None
    ssrc: int
    rs_packets: int
    rs_bytes: int
    rs_base_seq: int
    rs_max_seq: int
    rs_bad_seq: int
    rs_cycles: int
    rs_received: int
    rs_probation: int
    rs_jitter: float
    rs_last_arrival: float | None


class DtmfRecord(NamedTuple):
    """An RFC 4733 packet seen by the worker: the arguments of ``DtmfDetector.feed``."""

    pair: int
    leg: int  # 0: "a", 1: "b"
    timestamp: int
    event: int
    end: bool
    duration: int
    marker: bool
    now: float  # CLOCK_MONOTONIC seconds


class Engine:
    """The forwarding worker and the pairs of sockets it owns.

    ``batch`` (1-64, default 32) is how many datagrams one recvmmsg reads. ``coalesce_us``
    (0-5000, default 100) is how long the worker pauses after a round that found packets, so the
    next round serves many sockets per wake-up: it bounds the latency it adds under load (an idle
    relay forwards a packet at once), and arrival times for the statistics come from the kernel
    (SO_TIMESTAMPNS), so they do not include it. RuntimeError when :data:`AVAILABLE` is False.
    """

    def __init__(self, *, batch: int = 32, coalesce_us: int = 100) -> None:
        if not AVAILABLE:
            raise RuntimeError("the native RTP fast path is not available (extension not built)")
        self._engine: Any = _native.Engine(ULAW_TO_ALAW, ALAW_TO_ULAW, batch, coalesce_us)

    @property
    def notify_fd(self) -> int:
        """An eventfd, readable when :meth:`events` has records; -1 once closed."""
        return int(self._engine.notify_fd)

    @property
    def pairs(self) -> int:
        """Pairs open."""
        return int(self._engine.pairs)

    @property
    def running(self) -> bool:
        """The worker thread has been started (it starts with the first pair)."""
        return bool(self._engine.running)

    @property
    def dtmf_overflow(self) -> int:
        """Telephone-event records lost because Python did not drain the ring in time."""
        return int(self._engine.dtmf_overflow)

    def queue_delay(self) -> tuple[int, int, int, float]:
        """How long datagrams waited in the sockets before the worker read them, from kernel
        timestamps: ``(packets, waited >= 1 ms, waited >= 5 ms, longest wait in seconds)``."""
        n, n1, n5, longest = self._engine.queue_delay()
        return int(n), int(n1), int(n5), float(longest)

    def add_pair(self, a: socket.socket, b: socket.socket) -> int:
        """Hand the bound RTP sockets of legs a and b to the worker; the pair's id.

        The engine owns both sockets from then on (they are detached from ``a`` and ``b``) and
        closes them in :meth:`remove` or :meth:`close`, also when this call fails.
        """
        fa, fb = a.detach(), b.detach()
        try:
            return int(self._engine.add_pair(fa, fb))
        except BaseException:
            os.close(fa)
            os.close(fb)
            raise

    def configure(
        self,
        pair: int,
        leg: int,
        sdp: Address | None,
        codec_pt: int | None,
        dtmf_pt: int | None,
        *,
        reset_latch: bool,
    ) -> None:
        """Set a leg's peer from its SDP (None: nowhere to send), codec and telephone-event
        payload types; ``reset_latch`` forgets the latched address. Both legs' forwarding plans
        are recomputed at once, safely while packets flow."""
        host, port = sdp if sdp is not None else (None, 0)
        self._engine.configure(
            pair,
            leg,
            host,
            port,
            -1 if codec_pt is None else codec_pt,
            -1 if dtmf_pt is None else dtmf_pt,
            reset_latch,
        )

    def snapshot(self, pair: int, leg: int) -> LegSnapshot:
        """Counters, addresses and statistics of one leg."""
        return LegSnapshot(*self._engine.snapshot(pair, leg))

    def last_rx(self, pair: int) -> tuple[float, float]:
        """When each leg last received a packet (monotonic seconds, 0.0: never)."""
        a, b = self._engine.last_rx(pair)
        return float(a), float(b)

    def last_rx_all(self) -> list[tuple[int, float, float]]:
        """``(pair, last_rx a, last_rx b)`` of every pair, in one call."""
        return [(int(p), float(a), float(b)) for p, a, b in self._engine.last_rx_all()]

    def remove(self, pair: int) -> tuple[LegSnapshot, LegSnapshot]:
        """Close the pair's sockets and return its final snapshots; KeyError if unknown."""
        a, b = self._engine.remove(pair)
        return LegSnapshot(*a), LegSnapshot(*b)

    def events(self) -> list[DtmfRecord]:
        """Telephone-event records since the last call, in arrival order."""
        return [DtmfRecord(*r) for r in self._engine.events()]

    def close(self) -> None:
        """Stop the worker and close every socket still owned; idempotent."""
        self._engine.close()


def stats_replay(ops: Iterable[tuple[int, int, int, float, int]]) -> tuple[Any, ...]:
    """The native RFC 3550 statistics over ``(kind, seq, ts, arrival, nbytes)`` operations
    (kind 0: ``count``, 1: ``update``, 2: ``reset_source``), for comparing with
    :class:`gateway.media.stats.ReceiveStats`: ``(packets, bytes, base_seq, max_seq, bad_seq,
    cycles, received, probation, jitter)``."""
    if not AVAILABLE:
        raise RuntimeError("the native RTP fast path is not available")
    return tuple(_native.stats_replay(list(ops)))
