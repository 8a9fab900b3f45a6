"""A queue's waiting line: who waits, in which order, and who has waited too long.

Pure state object; every time-dependent method takes ``now`` (seconds).

**Order.** Entries are served by *effective priority*, highest first, then by earlier original
arrival, then by the order they joined. The effective priority grows with the wait so that
priority callers never starve the others (aging)::

    effective_priority = priority + floor((now - arrived_at) / aging_s)      (aging_s > 0)

Consequence (tested with Hypothesis): an entry ``E`` of priority ``p`` that arrived at ``t0`` is
served before every entry of priority ≤ ``P`` that arrives after ``t0 + (P - p + 1) * aging_s``.
So the dequeues ahead of ``E`` are at most the entries already waiting when it arrived plus the
arrivals in that window — a bound that does not depend on how long the stream of VIPs lasts.
Among entries of equal priority, order is always first come, first served.

**Times.** ``arrived_at`` is the caller's *original* arrival (an overflowed call keeps it), and
drives the order, aging and :meth:`WaitingLine.longest_wait`. ``joined_at`` is when the entry
joined *this* queue and drives ``max_wait_s`` (:meth:`WaitingLine.timed_out`).

**Virtual entries** (``virtual=True``) are callback requests holding a place without a live call:
they count for positions and are dispatched like live calls (the agent is offered the callback
first), but never time out and are left out of :meth:`WaitingLine.longest_wait`.

**Offers.** While an entry rings one or more agents (``offered_to`` non-empty) the ACD skips it;
:meth:`WaitingLine.offer_failed` puts it back in play and remembers the agent in ``tried`` so the
next offer prefers someone else.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType


class JoinRule(enum.StrEnum):
    """When a caller may join the queue."""

    ALWAYS = "always"
    IF_LOGGED_IN = "if_logged_in"
    """Only if at least one agent is logged into the queue (any state)."""
    IF_AVAILABLE = "if_available"
    """Only if at least one agent of the queue is AVAILABLE."""


class LeaveRule(enum.StrEnum):
    """When waiting callers are sent out of the queue (to its fallback)."""

    NEVER = "never"
    IF_NONE_LOGGED_IN = "if_none_logged_in"
    IF_NONE_AVAILABLE = "if_none_available"


class QueueError(Exception):
    """A waiting-line operation that cannot be done; ``status`` is the HTTP status."""

    status: int = 409


class NotQueued(QueueError):
    """No entry has this call id."""

    status = 404


class AlreadyQueued(QueueError):
    """An entry with this call id is already waiting."""


class QueueFull(QueueError):
    """The queue holds ``max_len`` entries."""

    status = 503


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """One queue's waiting rules."""

    name: str
    aging_s: float | None = 60.0
    """Seconds of waiting worth one priority step; ``None`` disables aging (strict priority,
    which can starve). Default 60."""
    max_wait_s: float | None = None
    """Longest time in this queue before :meth:`WaitingLine.timed_out` reports the call (then
    the configured fallback); ``None``: no limit. Default None."""
    join_rule: JoinRule = JoinRule.ALWAYS
    leave_rule: LeaveRule = LeaveRule.NEVER
    max_len: int | None = None
    """Most entries (live and virtual); ``None``: no limit."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("queue name must not be empty")
        if self.aging_s is not None and not (math.isfinite(self.aging_s) and self.aging_s > 0):
            raise ValueError(f"aging_s must be > 0 or None, not {self.aging_s!r}")
        if self.max_wait_s is not None and not self.max_wait_s > 0:
            raise ValueError(f"max_wait_s must be > 0 or None, not {self.max_wait_s!r}")
        if self.max_len is not None and self.max_len < 1:
            raise ValueError(f"max_len must be >= 1 or None, not {self.max_len!r}")


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A call (or a callback's place) waiting in a queue. Immutable; the line replaces it."""

    call_id: str
    arrived_at: float
    """Original arrival, seconds; an overflowed call keeps the time it first arrived."""
    priority: int = 0
    """0 normal; higher is more important (VIP)."""
    required_skills: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Skill → minimum level (1..10) the answering agent must have."""
    sticky_agent: str | None = None
    """A named agent: while ``now < sticky_until`` only they may be offered the call."""
    sticky_until: float = 0.0
    customer_id: str | None = None
    virtual: bool = False
    """A callback request holding a place without a live call."""
    language: str | None = None
    """Informational (prompts, screen-pop). Route by language with a required skill."""
    joined_at: float | None = None
    """When it joined this queue; set by :meth:`WaitingLine.join` when left ``None``."""
    offered_to: frozenset[str] = frozenset()
    """Agents ringing for this entry now."""
    tried: frozenset[str] = frozenset()
    """Agents who were offered this entry and did not take it."""

    def __post_init__(self) -> None:
        if not self.call_id:
            raise ValueError("call_id must not be empty")
        if not math.isfinite(self.arrived_at):
            raise ValueError(f"arrived_at must be finite, not {self.arrived_at!r}")
        for skill, level in self.required_skills.items():
            if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 10:
                raise ValueError(f"required skill {skill!r}: level must be 1..10, not {level!r}")
        if not isinstance(self.required_skills, MappingProxyType):
            object.__setattr__(
                self, "required_skills", MappingProxyType(dict(self.required_skills))
            )

    def is_sticky(self, now: float) -> bool:
        """Whether only the named agent may take it at ``now``."""
        return self.sticky_agent is not None and now < self.sticky_until

    def wait(self, now: float) -> float:
        """Seconds since the original arrival (never negative)."""
        return max(0.0, now - self.arrived_at)


def effective_priority(entry: QueueEntry, now: float, aging_s: float | None) -> int:
    """``priority + floor(wait / aging_s)`` (just ``priority`` without aging)."""
    if aging_s is None:
        return entry.priority
    return entry.priority + int(entry.wait(now) // aging_s)


def may_join(rule: JoinRule, logged_in: int, available: int) -> bool:
    """Whether a caller may join under ``rule`` given the queue's agent counts."""
    if rule is JoinRule.IF_LOGGED_IN:
        return logged_in > 0
    if rule is JoinRule.IF_AVAILABLE:
        return available > 0
    return True


def must_leave(rule: LeaveRule, logged_in: int, available: int) -> bool:
    """Whether waiting callers must leave under ``rule`` given the queue's agent counts."""
    if rule is LeaveRule.IF_NONE_LOGGED_IN:
        return logged_in == 0
    if rule is LeaveRule.IF_NONE_AVAILABLE:
        return available == 0
    return False


class WaitingLine:
    """The entries waiting in one queue."""

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        self._entries: dict[str, QueueEntry] = {}
        self._seq: dict[str, int] = {}
        self._next_seq = 0

    @property
    def name(self) -> str:
        """The queue's name."""
        return self.config.name

    # -- joining and leaving ------------------------------------------------------------------

    def may_join(self, logged_in: int, available: int) -> bool:
        """This queue's :class:`JoinRule` (and ``max_len``) applied to the agent counts."""
        if self.config.max_len is not None and len(self._entries) >= self.config.max_len:
            return False
        return may_join(self.config.join_rule, logged_in, available)

    def must_leave(self, logged_in: int, available: int) -> list[QueueEntry]:
        """Live entries that must leave under this queue's :class:`LeaveRule` (not removed)."""
        if not must_leave(self.config.leave_rule, logged_in, available):
            return []
        return [e for e in self._entries.values() if not e.virtual]

    def join(self, entry: QueueEntry, now: float) -> int:
        """Add ``entry`` (``joined_at`` defaults to ``now``); return its position."""
        if entry.call_id in self._entries:
            raise AlreadyQueued(f"call {entry.call_id} is already in queue {self.name}")
        if self.config.max_len is not None and len(self._entries) >= self.config.max_len:
            raise QueueFull(f"queue {self.name} is full ({self.config.max_len})")
        if entry.joined_at is None:
            entry = replace(entry, joined_at=now)
        self._entries[entry.call_id] = entry
        self._seq[entry.call_id] = self._next_seq
        self._next_seq += 1
        return self.position(entry.call_id, now)

    def remove(self, call_id: str) -> QueueEntry:
        """Take an entry out (answered, abandoned, timed out, overflowed)."""
        entry = self.get(call_id)
        del self._entries[call_id]
        del self._seq[call_id]
        return entry

    def pop_next(self, now: float) -> QueueEntry | None:
        """Remove and return the head of the line, or ``None`` when empty."""
        head = self.head(now)
        return None if head is None else self.remove(head.call_id)

    # -- offers -------------------------------------------------------------------------------

    def mark_offered(self, call_id: str, agents: Iterable[str]) -> QueueEntry:
        """Record that ``agents`` now ring for ``call_id``."""
        entry = self.get(call_id)
        return self._put(replace(entry, offered_to=entry.offered_to | frozenset(agents)))

    def offer_failed(self, call_id: str, agent: str, now: float) -> QueueEntry:
        """``agent`` did not take the offer (no answer, reject, leg failed): it stops ringing
        for this entry and goes into ``tried``. A named agent who fails ends the stickiness."""
        entry = self.get(call_id)
        sticky_until = entry.sticky_until
        if entry.sticky_agent == agent and entry.is_sticky(now):
            sticky_until = now
        return self._put(
            replace(
                entry,
                offered_to=entry.offered_to - {agent},
                tried=entry.tried | {agent},
                sticky_until=sticky_until,
            )
        )

    def offer_withdrawn(self, call_id: str, agent: str) -> QueueEntry:
        """``agent`` stops ringing for ``call_id`` through no fault of theirs (not ``tried``)."""
        entry = self.get(call_id)
        return self._put(replace(entry, offered_to=entry.offered_to - {agent}))

    def update(self, entry: QueueEntry) -> QueueEntry:
        """Replace a waiting entry (same ``call_id``), e.g. to raise its priority."""
        old = self.get(entry.call_id)
        if entry.joined_at is None:
            entry = replace(entry, joined_at=old.joined_at)
        return self._put(entry)

    # -- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._entries

    def get(self, call_id: str) -> QueueEntry:
        """The entry for ``call_id``; :class:`NotQueued` if absent."""
        try:
            return self._entries[call_id]
        except KeyError:
            raise NotQueued(f"call {call_id} is not in queue {self.name}") from None

    def entries(self) -> list[QueueEntry]:
        """Entries in the order they joined."""
        return list(self._entries.values())

    def live_count(self) -> int:
        """Entries with a live call (not virtual)."""
        return sum(1 for e in self._entries.values() if not e.virtual)

    def effective_priority(self, entry: QueueEntry, now: float) -> int:
        """The entry's priority at ``now`` under this queue's aging."""
        return effective_priority(entry, now, self.config.aging_s)

    def sort_key(self, entry: QueueEntry, now: float) -> tuple[int, float, int]:
        """Smaller is served first: (−effective priority, original arrival, join order)."""
        return (-self.effective_priority(entry, now), entry.arrived_at, self._seq[entry.call_id])

    def ordered(self, now: float) -> list[QueueEntry]:
        """Entries in service order at ``now``."""
        return sorted(self._entries.values(), key=lambda e: self.sort_key(e, now))

    def head(self, now: float) -> QueueEntry | None:
        """The entry served next, or ``None``."""
        if not self._entries:
            return None
        return min(self._entries.values(), key=lambda e: self.sort_key(e, now))

    def position(self, call_id: str, now: float) -> int:
        """1-based place in line at ``now``, as the caller hears it (virtual entries count)."""
        entry = self.get(call_id)
        key = self.sort_key(entry, now)
        return 1 + sum(1 for e in self._entries.values() if self.sort_key(e, now) < key)

    def positions(self, now: float) -> dict[str, int]:
        """Every entry's 1-based place at ``now`` (one sort, for periodic announcements)."""
        return {e.call_id: i for i, e in enumerate(self.ordered(now), start=1)}

    def longest_wait(self, now: float) -> float:
        """The longest current wait of a live caller since original arrival (0.0 if none)."""
        return max((e.wait(now) for e in self._entries.values() if not e.virtual), default=0.0)

    def timed_out(self, now: float) -> list[QueueEntry]:
        """Live entries that have been in this queue ``max_wait_s`` or longer and are not ringing
        an agent (a ringing entry is reported once its offer fails), oldest first."""
        limit = self.config.max_wait_s
        if limit is None:
            return []
        out = [
            e
            for e in self._entries.values()
            if not e.virtual
            and not e.offered_to
            and e.joined_at is not None
            and now - e.joined_at >= limit
        ]
        return sorted(out, key=lambda e: (e.joined_at or 0.0, self._seq[e.call_id]))

    def next_timeout(self) -> float | None:
        """When the next live entry reaches ``max_wait_s`` (for the caller's timer)."""
        limit = self.config.max_wait_s
        if limit is None:
            return None
        return min(
            (
                e.joined_at + limit
                for e in self._entries.values()
                if not e.virtual and e.joined_at is not None
            ),
            default=None,
        )

    def _put(self, entry: QueueEntry) -> QueueEntry:
        self._entries[entry.call_id] = entry
        return entry
