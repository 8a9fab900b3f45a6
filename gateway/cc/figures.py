"""Live per-queue figures, defined the way contact centres define them. Pure accumulator.

Feed a :class:`QueueFigures` what happens (``record_*`` methods, each with the time ``now`` in
seconds, non-decreasing) and read :meth:`QueueFigures.snapshot`. Every figure is computed over
two windows: the **day** (since the last :meth:`QueueFigures.roll_day`, which the application
calls at local midnight) and a **rolling** window (the last ``rolling_s`` seconds, default 15
minutes). A call is counted in the window in which it *left the queue* (answered, abandoned or
sent elsewhere); a handled call in the window in which its wrap-up ended; agent time is split
exactly at the window edges.

Definitions (``T`` = ``service_level_s``, default 20 s; ``T_short`` = ``short_abandon_s``,
default 5 s; *wait* = time from the call's arrival, as given to :meth:`~QueueFigures.record_joined`,
to answer or abandon):

- **Offered** — calls that entered the queue and left it: answered + abandoned + sent elsewhere
  (timed out to voicemail, overflowed, took a callback, made to leave). Short abandons are not
  offered.
- **Short abandon** — a caller who hung up after waiting less than ``T_short``: a wrong number
  or a change of mind, not a service failure. Counted apart, excluded from offered and abandoned.
- **Answered** — calls an agent answered. **Answered within T** — those with wait ≤ T.
- **Abandoned** — callers who hung up while waiting, after ``T_short`` or more.
  **Abandoned after T** — those with wait > T.
- **Service level** — answered within T / (answered + abandoned after T). Abandons within T are
  left out of the denominator (the caller gave up before the target could be met), and so are
  calls sent elsewhere. This is the common "80/20" variant; ``None`` with no such calls.
- **Average speed of answer (ASA)** — total wait of answered calls / answered.
- **Average handle time (AHT)** — (talk time + wrap-up time) / handled calls.
- **Occupancy** — agent time handling calls (ON_CALL + WRAP_UP) / agent time logged in and
  not paused (AVAILABLE + RINGING + ON_CALL + WRAP_UP). Ringing counts as not handling.
- **Answer rate** — answered / offered. **Abandon rate** — abandoned / offered.
- **Waiting now**, **longest current wait** — live calls in the queue now and the longest
  current wait among them (from their arrival).
- **Agents by state** — agents of the queue per state, as last fed by
  :meth:`~QueueFigures.record_agent_state`.

Ratios are ``None`` when their denominator is zero.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.cc.agents import AgentState


class Exit(enum.StrEnum):
    """How a call left the queue other than being answered or abandoned."""

    TIMED_OUT = "timed_out"
    """Reached the maximum wait (then voicemail or another fallback)."""
    OVERFLOWED = "overflowed"
    VOICEMAIL = "voicemail"
    CALLBACK = "callback"
    LEFT = "left"
    """Made to leave (leave rule), or any other exit."""


class UnknownCall(KeyError):
    """The call was not recorded as joined (or has already left)."""


@dataclass(frozen=True, slots=True)
class FiguresConfig:
    """Thresholds and the rolling window."""

    service_level_s: float = 20.0
    """T of the service level, seconds. Default 20 (as in 80/20)."""
    short_abandon_s: float = 5.0
    """T_short: abandons before this many seconds are short abandons. Default 5; 0 disables."""
    rolling_s: float = 900.0
    """Length of the rolling window, seconds. Default 900 (15 minutes)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.service_level_s) and self.service_level_s >= 0):
            raise ValueError(f"service_level_s must be >= 0, not {self.service_level_s!r}")
        if not (math.isfinite(self.short_abandon_s) and self.short_abandon_s >= 0):
            raise ValueError(f"short_abandon_s must be >= 0, not {self.short_abandon_s!r}")
        if not (math.isfinite(self.rolling_s) and self.rolling_s > 0):
            raise ValueError(f"rolling_s must be > 0, not {self.rolling_s!r}")


@dataclass(slots=True)
class _Tally:
    answered: int = 0
    answered_within: int = 0
    abandoned: int = 0
    abandoned_after: int = 0
    short_abandoned: int = 0
    exits: int = 0
    wait_answered_s: float = 0.0
    handled: int = 0
    talk_s: float = 0.0
    wrap_s: float = 0.0
    agent_s: dict[AgentState, float] = field(default_factory=lambda: dict.fromkeys(AgentState, 0.0))

    def add(self, other: _Tally) -> None:
        self.answered += other.answered
        self.answered_within += other.answered_within
        self.abandoned += other.abandoned
        self.abandoned_after += other.abandoned_after
        self.short_abandoned += other.short_abandoned
        self.exits += other.exits
        self.wait_answered_s += other.wait_answered_s
        self.handled += other.handled
        self.talk_s += other.talk_s
        self.wrap_s += other.wrap_s
        for state, seconds in other.agent_s.items():
            self.agent_s[state] += seconds


def _ratio(num: float, den: float) -> float | None:
    return None if den <= 0 else num / den


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """The figures over one window ``[start, end]``."""

    start: float
    end: float
    offered: int
    answered: int
    answered_within_sl: int
    abandoned: int
    abandoned_after_sl: int
    short_abandoned: int
    sent_elsewhere: int
    """Left by time-out, overflow, voicemail, callback or leave rule."""
    handled: int
    talk_s: float
    wrap_up_s: float
    service_level: float | None
    """Answered within T / (answered + abandoned after T)."""
    asa_s: float | None
    aht_s: float | None
    occupancy: float | None
    answer_rate: float | None
    abandon_rate: float | None
    agent_seconds: Mapping[AgentState, float]
    """Agent-seconds spent in each state within the window."""

    @classmethod
    def _of(cls, tally: _Tally, start: float, end: float) -> WindowFigures:
        offered = tally.answered + tally.abandoned + tally.exits
        handling = tally.agent_s[AgentState.ON_CALL] + tally.agent_s[AgentState.WRAP_UP]
        staffed = handling + tally.agent_s[AgentState.AVAILABLE] + tally.agent_s[AgentState.RINGING]
        return cls(
            start=start,
            end=end,
            offered=offered,
            answered=tally.answered,
            answered_within_sl=tally.answered_within,
            abandoned=tally.abandoned,
            abandoned_after_sl=tally.abandoned_after,
            short_abandoned=tally.short_abandoned,
            sent_elsewhere=tally.exits,
            handled=tally.handled,
            talk_s=tally.talk_s,
            wrap_up_s=tally.wrap_s,
            service_level=_ratio(tally.answered_within, tally.answered + tally.abandoned_after),
            asa_s=_ratio(tally.wait_answered_s, tally.answered),
            aht_s=_ratio(tally.talk_s + tally.wrap_s, tally.handled),
            occupancy=_ratio(handling, staffed),
            answer_rate=_ratio(tally.answered, offered),
            abandon_rate=_ratio(tally.abandoned, offered),
            agent_seconds=MappingProxyType(dict(tally.agent_s)),
        )


@dataclass(frozen=True, slots=True)
class FiguresSnapshot:
    """Everything the REST API and ``/metrics`` show for one queue at ``now``."""

    queue: str
    now: float
    day: WindowFigures
    rolling: WindowFigures
    waiting: int
    longest_wait_s: float
    agents: Mapping[AgentState, int]
    """Agents of the queue per state (every state present)."""


class QueueFigures:
    """The live figures of one queue."""

    def __init__(self, queue: str, config: FiguresConfig | None = None, now: float = 0.0) -> None:
        self.queue = queue
        self.config = config or FiguresConfig()
        self.day_start = now
        self._day = _Tally()
        self._events: deque[tuple[float, _Tally]] = deque()
        self._intervals: deque[tuple[float, float, AgentState]] = deque()
        self._waiting: dict[str, float] = {}
        self._agents: dict[str, tuple[AgentState, float]] = {}

    # -- feeding ----------------------------------------------------------------------------

    def roll_day(self, now: float) -> None:
        """Start a new day at ``now`` (call at local midnight): the day figures restart."""
        self.day_start = now
        self._day = _Tally()

    def record_joined(self, call_id: str, now: float, arrived_at: float | None = None) -> None:
        """A live call joined the queue; its wait counts from ``arrived_at`` (default ``now``;
        pass the original arrival to count an overflowed call's earlier wait)."""
        self._waiting[call_id] = now if arrived_at is None else arrived_at

    def record_answered(self, call_id: str, now: float) -> float:
        """An agent answered ``call_id``; returns its wait."""
        wait = self._leave(call_id, now)
        t = _Tally(answered=1, wait_answered_s=wait)
        if wait <= self.config.service_level_s:
            t.answered_within = 1
        self._event(now, t)
        return wait

    def record_abandoned(self, call_id: str, now: float) -> float:
        """The caller hung up while waiting; returns its wait."""
        wait = self._leave(call_id, now)
        if wait < self.config.short_abandon_s:
            self._event(now, _Tally(short_abandoned=1))
        else:
            t = _Tally(abandoned=1)
            if wait > self.config.service_level_s:
                t.abandoned_after = 1
            self._event(now, t)
        return wait

    def record_exit(self, call_id: str, now: float, how: Exit) -> float:
        """The call left the queue without being answered or abandoned; returns its wait."""
        del how  # every exit counts the same; the reason is for the interaction record
        wait = self._leave(call_id, now)
        self._event(now, _Tally(exits=1))
        return wait

    def record_handled(self, talk_s: float, wrap_up_s: float, now: float) -> None:
        """An answered call of this queue is completely handled (wrap-up ended at ``now``)."""
        if talk_s < 0 or wrap_up_s < 0:
            raise ValueError("talk_s and wrap_up_s must be >= 0")
        self._event(now, _Tally(handled=1, talk_s=talk_s, wrap_s=wrap_up_s))

    def record_agent_state(self, extension: str, state: AgentState, now: float) -> None:
        """An agent of this queue is now in ``state`` (LOGGED_OUT: out of the queue)."""
        previous = self._agents.pop(extension, None)
        if previous is not None:
            old, since = previous
            self._close(old, since, now)
        if state is not AgentState.LOGGED_OUT:
            self._agents[extension] = (state, now)

    # -- reading ----------------------------------------------------------------------------

    def waiting(self) -> int:
        """Live calls waiting now."""
        return len(self._waiting)

    def longest_wait(self, now: float) -> float:
        """The longest current wait (0.0 when nobody waits)."""
        return max((max(0.0, now - t) for t in self._waiting.values()), default=0.0)

    def agents_by_state(self) -> dict[AgentState, int]:
        """Agents of the queue per state (every state present; LOGGED_OUT is always 0)."""
        out = dict.fromkeys(AgentState, 0)
        for state, _ in self._agents.values():
            out[state] += 1
        return out

    def snapshot(self, now: float) -> FiguresSnapshot:
        """Every figure at ``now``."""
        self._prune(now)
        day = _Tally()
        day.add(self._day)
        self._open_time(day, self.day_start, now)
        start = now - self.config.rolling_s
        rolling = _Tally()
        for t, tally in self._events:
            if t > start:
                rolling.add(tally)
        for a, b, state in self._intervals:
            overlap = min(b, now) - max(a, start)
            if overlap > 0:
                rolling.agent_s[state] += overlap
        self._open_time(rolling, start, now)
        return FiguresSnapshot(
            queue=self.queue,
            now=now,
            day=WindowFigures._of(day, self.day_start, now),
            rolling=WindowFigures._of(rolling, start, now),
            waiting=self.waiting(),
            longest_wait_s=self.longest_wait(now),
            agents=MappingProxyType(self.agents_by_state()),
        )

    # -- inside -------------------------------------------------------------------------------

    def _leave(self, call_id: str, now: float) -> float:
        try:
            arrived = self._waiting.pop(call_id)
        except KeyError:
            raise UnknownCall(call_id) from None
        return max(0.0, now - arrived)

    def _event(self, now: float, tally: _Tally) -> None:
        self._day.add(tally)
        self._events.append((now, tally))
        self._prune(now)

    def _close(self, state: AgentState, since: float, now: float) -> None:
        if now <= since:
            return
        day_part = now - max(since, self.day_start)
        if day_part > 0:
            self._day.agent_s[state] += day_part
        self._intervals.append((since, now, state))
        self._prune(now)

    def _open_time(self, tally: _Tally, start: float, now: float) -> None:
        for state, since in self._agents.values():
            overlap = now - max(since, start)
            if overlap > 0:
                tally.agent_s[state] += overlap

    def _prune(self, now: float) -> None:
        horizon = now - self.config.rolling_s
        while self._events and self._events[0][0] <= horizon:
            self._events.popleft()
        while self._intervals and self._intervals[0][1] <= horizon:
            self._intervals.popleft()
