"""RTP port allocation: even ports for RTP, the odd port above for RTCP (RFC 3550 §11)."""

from __future__ import annotations

from collections import deque

from gateway.sip.errors import SipError

__all__ = ["PortAllocator", "PortsExhausted"]


class PortsExhausted(SipError):
    """No RTP port pair is free; a call that needs one is answered 503 (RFC 3261 §21.5.4)."""

    status = 503
    reason = "Service Unavailable"


class PortAllocator:
    """Hands out even ports in ``[first, last]`` whose odd neighbour is also in range.

    Ports are reused least-recently-released first, so a late packet of a finished call is
    unlikely to reach the next call on the same port. A port is never out twice.
    """

    __slots__ = ("_free", "_in_use", "first", "last")

    def __init__(self, first: int, last: int) -> None:
        if not 0 < first <= last <= 65535:
            raise ValueError(f"bad RTP port range {first}-{last}")
        start = first + (first & 1)
        if start + 1 > last:
            raise ValueError(f"RTP port range {first}-{last} holds no even/odd pair")
        self.first = first
        self.last = last
        self._free: deque[int] = deque(range(start, last, 2))
        self._in_use: set[int] = set()

    def allocate(self) -> int:
        """The next free even port; :class:`PortsExhausted` when none is left."""
        if not self._free:
            raise PortsExhausted(
                f"all {len(self._in_use)} RTP port pairs in {self.first}-{self.last} are in use"
            )
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a port back; ValueError if it is not out (a double release is a bug)."""
        try:
            self._in_use.remove(port)
        except KeyError:
            raise ValueError(f"RTP port {port} is not allocated") from None
        self._free.append(port)

    @property
    def available(self) -> int:
        """Port pairs left."""
        return len(self._free)

    @property
    def in_use(self) -> int:
        """Port pairs handed out."""
        return len(self._in_use)

    def __contains__(self, port: object) -> bool:
        return port in self._in_use
