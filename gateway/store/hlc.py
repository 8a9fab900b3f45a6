"""Hybrid logical clocks: timestamps that order events across sites.

Kulkarni, Demirbas et al., "Logical Physical Clocks and Consistent Snapshots in Globally
Distributed Databases" (2014), Algorithm 5. An :class:`Hlc` is ``(wall_ms, counter, node)``:
``wall_ms`` stays close to physical time, ``counter`` orders events within one millisecond, and
``node`` (the site that stamped it) breaks the remaining ties, so two stamps from different nodes
are never equal. The order is total; ``str()`` is fixed-width, so text order equals stamp order
(stamps can be compared as strings in SQL).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["ClockDriftError", "Hlc", "HlcClock"]

WALL_DIGITS: Final = 15
"""Width of ``wall_ms`` in :meth:`Hlc.__str__` (Unix ms; 15 digits last until year 33658)."""
COUNTER_DIGITS: Final = 6
"""Width of ``counter`` in :meth:`Hlc.__str__`."""
_MAX_WALL: Final = 10**WALL_DIGITS - 1
_MAX_COUNTER: Final = 10**COUNTER_DIGITS - 1
_TEXT_RE: Final = re.compile(rf"(\d{{{WALL_DIGITS}}})-(\d{{{COUNTER_DIGITS}}})-(.+)", re.DOTALL)


class ClockDriftError(ValueError):
    """A remote stamp is further ahead of our physical clock than ``max_drift_ms`` allows."""


@dataclass(frozen=True, order=True, slots=True)
class Hlc:
    """One hybrid-logical-clock stamp; ordered by ``(wall_ms, counter, node)``."""

    wall_ms: int
    """Milliseconds since the Unix epoch (the largest physical time seen)."""
    counter: int
    """Logical counter within ``wall_ms`` (0 when physical time moved on)."""
    node: str
    """Who stamped it (a site name); non-empty."""

    def __post_init__(self) -> None:
        if not 0 <= self.wall_ms <= _MAX_WALL:
            raise ValueError(f"wall_ms {self.wall_ms} is outside 0..{_MAX_WALL}")
        if not 0 <= self.counter <= _MAX_COUNTER:
            raise ValueError(f"counter {self.counter} is outside 0..{_MAX_COUNTER}")
        if not self.node:
            raise ValueError("node is empty")

    def __str__(self) -> str:
        return f"{self.wall_ms:0{WALL_DIGITS}d}-{self.counter:0{COUNTER_DIGITS}d}-{self.node}"

    @classmethod
    def parse(cls, text: str) -> Hlc:
        """The stamp ``str(stamp)`` came from; ``ValueError`` for anything else."""
        m = _TEXT_RE.fullmatch(text)
        if m is None:
            raise ValueError(f"not an HLC stamp: {text!r}")
        return cls(int(m.group(1)), int(m.group(2)), m.group(3))


class HlcClock:
    """One node's hybrid logical clock. ``now_ms`` reads physical time (Unix ms); pass a fake
    in tests. Not thread-safe: use it from one thread (or under the caller's lock)."""

    def __init__(
        self,
        node: str,
        now_ms: Callable[[], int],
        *,
        max_drift_ms: int | None = None,
    ) -> None:
        """``max_drift_ms``: refuse (:class:`ClockDriftError`) remote stamps further than this
        ahead of our physical clock, so one site with a wrong clock cannot drag every other
        clock into the future; ``None`` accepts any stamp."""
        if not node:
            raise ValueError("node is empty")
        self.node = node
        self._now_ms = now_ms
        self._max_drift_ms = max_drift_ms
        self._wall = 0
        self._counter = 0

    @property
    def last(self) -> Hlc:
        """The latest stamp issued or observed (``wall_ms`` 0 before the first event)."""
        return Hlc(self._wall, self._counter, self.node)

    def tick(self) -> Hlc:
        """A stamp for a local (or send) event, greater than every stamp issued or observed."""
        # Algorithm 5, "send or local event": l' = l; l = max(l', pt); c = l == l' ? c+1 : 0
        pt = int(self._now_ms())
        if pt > self._wall:
            self._wall, self._counter = pt, 0
        else:
            self._bump()
        return Hlc(self._wall, self._counter, self.node)

    def observe(self, remote: Hlc) -> Hlc:
        """Merge a received stamp; return a local stamp greater than both ``remote`` and every
        stamp this clock issued before."""
        pt = int(self._now_ms())
        if self._max_drift_ms is not None and remote.wall_ms - pt > self._max_drift_ms:
            raise ClockDriftError(
                f"stamp from {remote.node} is {remote.wall_ms - pt} ms ahead of this clock "
                f"(limit {self._max_drift_ms} ms)"
            )
        # Algorithm 5, "receive event of message m".
        old = self._wall
        wall = max(old, remote.wall_ms, pt)
        if wall == old and wall == remote.wall_ms:
            counter = max(self._counter, remote.counter) + 1
        elif wall == old:
            counter = self._counter + 1
        elif wall == remote.wall_ms:
            counter = remote.counter + 1
        else:
            counter = 0
        self._wall, self._counter = wall, counter
        if counter > _MAX_COUNTER:
            self._counter = _MAX_COUNTER
            self._bump()
        return Hlc(self._wall, self._counter, self.node)

    def _bump(self) -> None:
        # A counter that would overflow its fixed width borrows the next millisecond instead;
        # order is kept, and the wall part runs at most 1 ms per 10**6 events ahead of time.
        if self._counter >= _MAX_COUNTER:
            if self._wall >= _MAX_WALL:  # only a bogus stamp from far in the future gets here
                raise ClockDriftError("the clock reached its largest stamp (a bogus remote one?)")
            self._wall += 1
            self._counter = 0
        else:
            self._counter += 1
