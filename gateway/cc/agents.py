"""Agent states: a table-driven state machine and the table of a site's agents.

Pure code: no I/O, no clock. Every method that changes state takes ``now`` (seconds, any monotonic
origin). The B2BUA feeds inputs as things happen on the agents' legs and reads back a
:class:`Transition` that says what changed; the ACD reads :meth:`AgentTable.snapshot`.

The machine (``TRANSITIONS``, STYLE.md §7 — an unknown ``(state, input)`` pair raises
:class:`InvalidTransition`, never a silent no-op)::

    LOGGED_OUT --LOGIN--> AVAILABLE --OFFER--> RINGING --ANSWER--> ON_CALL --HANGUP--> WRAP_UP
    WRAP_UP --WRAPUP_DONE--> AVAILABLE;   AVAILABLE/RINGING/WRAP_UP/PAUSED --PAUSE--> PAUSED
    PAUSED --UNPAUSE--> AVAILABLE;        RINGING --NO_ANSWER/WITHDRAW/HANGUP--> AVAILABLE
    LEG_FAILED: RINGING/ON_CALL/AVAILABLE --> AVAILABLE; WRAP_UP, PAUSED, LOGGED_OUT unchanged

Rules layered on the table (each is another table transition, fed automatically):

- **Auto-pause on no answer.** ``NO_ANSWER`` from RINGING (ring timeout or reject) and
  ``LEG_FAILED`` from RINGING (the phone could not be reached) count as an unanswered offer. After
  ``max_no_answer`` in a row the agent is fed ``PAUSE`` with reason ``"no-answer"``. The count
  resets on ``ANSWER``, ``UNPAUSE`` and ``LOGIN``. ``WITHDRAW`` (another agent won a ring-all, the
  queue took the offer back) and ``HANGUP`` while ringing (the caller gave up) do not count.
- **Leg failure is always survivable.** ``LEG_FAILED`` (phone died, logged in elsewhere, the leg
  failed) is accepted in every state and never leaves an agent RINGING or ON_CALL. With
  ``pause_on_leg_failure`` the agent is then paused with reason ``"leg-failed"``.
- **Wrap-up.** ``HANGUP`` from ON_CALL starts after-call work until ``now + wrapup_s``;
  :meth:`AgentTable.due_wrapups` lists whose wrap-up has ended so the caller feeds
  ``WRAPUP_DONE``. A zero wrap-up time feeds ``WRAPUP_DONE`` at once.
- **Pause during a call.** ``PAUSE`` while ON_CALL is remembered (state unchanged) and applied
  when wrap-up ends; ``UNPAUSE`` while ON_CALL or WRAP_UP cancels it.
- **Idle time.** ``idle_since`` (what *longest idle* compares) is set when the agent becomes
  AVAILABLE from LOGGED_OUT, WRAP_UP or PAUSED, or after a leg failure cut a call. An offer that
  comes back unanswered or withdrawn leaves it unchanged, so losing a ring-all costs nothing.
- **Fewest calls.** ``calls_answered`` counts ``ANSWER`` inputs since the agent was added or
  :meth:`AgentTable.reset_counters` (the application calls it at midnight).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final


class AgentState(enum.StrEnum):
    """Where an agent is; the values are what the REST API shows."""

    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


class AgentInput(enum.StrEnum):
    """What can happen to an agent."""

    LOGIN = "login"
    LOGOUT = "logout"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    OFFER = "offer"
    """A call is offered: the agent's phone starts ringing."""
    ANSWER = "answer"
    NO_ANSWER = "no_answer"
    """Ring timeout, or the agent rejected the call."""
    WITHDRAW = "withdraw"
    """The offer was taken back (another agent won a ring-all); not the agent's fault."""
    LEG_FAILED = "leg_failed"
    """The agent's phone or leg failed (unreachable, died, logged in elsewhere)."""
    HANGUP = "hangup"
    """The call ended (while ringing: the caller gave up; not the agent's fault)."""
    WRAPUP_DONE = "wrapup_done"


_S = AgentState
_I = AgentInput

TRANSITIONS: Final[Mapping[tuple[AgentState, AgentInput], AgentState]] = MappingProxyType(
    {
        (_S.LOGGED_OUT, _I.LOGIN): _S.AVAILABLE,
        (_S.LOGGED_OUT, _I.LEG_FAILED): _S.LOGGED_OUT,
        (_S.AVAILABLE, _I.LOGOUT): _S.LOGGED_OUT,
        (_S.AVAILABLE, _I.PAUSE): _S.PAUSED,
        (_S.AVAILABLE, _I.OFFER): _S.RINGING,
        (_S.AVAILABLE, _I.LEG_FAILED): _S.AVAILABLE,
        (_S.RINGING, _I.ANSWER): _S.ON_CALL,
        (_S.RINGING, _I.NO_ANSWER): _S.AVAILABLE,
        (_S.RINGING, _I.WITHDRAW): _S.AVAILABLE,
        (_S.RINGING, _I.HANGUP): _S.AVAILABLE,
        (_S.RINGING, _I.LEG_FAILED): _S.AVAILABLE,
        (_S.RINGING, _I.PAUSE): _S.PAUSED,
        (_S.RINGING, _I.LOGOUT): _S.LOGGED_OUT,
        (_S.ON_CALL, _I.HANGUP): _S.WRAP_UP,
        (_S.ON_CALL, _I.LEG_FAILED): _S.AVAILABLE,
        (_S.ON_CALL, _I.PAUSE): _S.ON_CALL,
        (_S.ON_CALL, _I.UNPAUSE): _S.ON_CALL,
        (_S.WRAP_UP, _I.WRAPUP_DONE): _S.AVAILABLE,
        (_S.WRAP_UP, _I.PAUSE): _S.PAUSED,
        (_S.WRAP_UP, _I.UNPAUSE): _S.WRAP_UP,
        (_S.WRAP_UP, _I.LOGOUT): _S.LOGGED_OUT,
        (_S.WRAP_UP, _I.LEG_FAILED): _S.WRAP_UP,
        (_S.PAUSED, _I.UNPAUSE): _S.AVAILABLE,
        (_S.PAUSED, _I.PAUSE): _S.PAUSED,
        (_S.PAUSED, _I.LOGOUT): _S.LOGGED_OUT,
        (_S.PAUSED, _I.LEG_FAILED): _S.PAUSED,
    }
)
"""``(state, input) → next state``. A pair not in the table is an error."""

LOGGED_IN_STATES: Final = frozenset(s for s in AgentState if s is not AgentState.LOGGED_OUT)
"""Every state but LOGGED_OUT."""
BUSY_STATES: Final = frozenset({AgentState.RINGING, AgentState.ON_CALL, AgentState.WRAP_UP})
"""States in which an agent is handling (or being offered) a call."""

_CALL_INPUTS: Final = frozenset({_I.ANSWER, _I.NO_ANSWER, _I.WITHDRAW, _I.HANGUP, _I.LEG_FAILED})
"""Inputs whose ``call_id`` must match the agent's current call."""

NO_ANSWER_REASON: Final = "no-answer"
LEG_FAILED_REASON: Final = "leg-failed"


class AgentError(Exception):
    """An agent operation that cannot be done; ``status`` is the HTTP status it maps to."""

    status: int = 409


class UnknownAgent(AgentError):
    """No agent has this extension."""

    status = 404


class DuplicateAgent(AgentError):
    """An agent with this extension already exists."""


class InvalidTransition(AgentError):
    """``(state, input)`` is not in :data:`TRANSITIONS`."""

    def __init__(self, extension: str, state: AgentState, event: AgentInput) -> None:
        super().__init__(f"agent {extension}: cannot {event.value} while {state.value}")
        self.extension = extension
        self.state = state
        self.input = event


class WrongCall(AgentError):
    """An input names a call the agent is not ringing for or talking on (a stale event)."""

    def __init__(self, extension: str, expected: str | None, got: str) -> None:
        super().__init__(f"agent {extension}: event for call {got!r}, agent has {expected!r}")
        self.extension = extension
        self.expected = expected
        self.got = got


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Site-wide agent rules."""

    wrapup_s: float = 10.0
    """After-call work after each call, seconds; 0 disables wrap-up. Default 10."""
    ring_timeout_s: float = 15.0
    """How long an offer rings before :meth:`AgentTable.expired_offers` reports it. Default 15."""
    max_no_answer: int = 3
    """Unanswered offers in a row before the agent is auto-paused; 0 never pauses. Default 3."""
    pause_on_leg_failure: bool = False
    """Pause the agent (reason ``"leg-failed"``) when their leg fails. Default False: back to
    AVAILABLE, and repeated failures while ringing lead to the no-answer auto-pause."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.wrapup_s) and self.wrapup_s >= 0):
            raise ValueError(f"wrapup_s must be >= 0, not {self.wrapup_s!r}")
        if not (math.isfinite(self.ring_timeout_s) and self.ring_timeout_s > 0):
            raise ValueError(f"ring_timeout_s must be > 0, not {self.ring_timeout_s!r}")
        if self.max_no_answer < 0:
            raise ValueError(f"max_no_answer must be >= 0, not {self.max_no_answer!r}")


@dataclass(frozen=True, slots=True)
class AgentView:
    """A read-only snapshot of one agent (for the ACD and the REST API)."""

    extension: str
    name: str
    skills: Mapping[str, int]
    """Skill → level, 1 (lowest) to 10."""
    state: AgentState
    state_since: float
    idle_since: float
    """When the agent last became available (see the module docstring); compares longest-idle."""
    calls_answered: int
    consecutive_no_answers: int
    pause_reason: str | None
    """Why PAUSED; while ON_CALL, a pause requested for after the call."""
    call_id: str | None
    """The call offered (RINGING) or taken (ON_CALL, WRAP_UP); else None."""
    queues: frozenset[str]
    """Queues the agent is logged into (empty when logged out)."""
    member_of: frozenset[str]
    """Queues the agent joins by default at login."""
    wrapup_until: float | None
    ring_until: float | None


@dataclass(frozen=True, slots=True)
class Transition:
    """What one :meth:`AgentTable.apply` did."""

    extension: str
    before: AgentState
    after: AgentState
    inputs: tuple[AgentInput, ...]
    """Inputs applied, the one fed first then any fed automatically (PAUSE, WRAPUP_DONE)."""
    call_id: str | None = None
    """The call the input concerned (offered, answered, ended, failed), if any."""
    dropped_call: str | None = None
    """A call whose offer this transition abandoned (PAUSE/LOGOUT while ringing): cancel its leg
    and give the call back to its queue."""
    auto_paused: str | None = None
    """Reason, when the agent was paused automatically (``"no-answer"``, ``"leg-failed"``)."""

    @property
    def changed(self) -> bool:
        """Whether the state changed."""
        return self.before is not self.after


@dataclass(slots=True)
class _Agent:
    extension: str
    name: str
    skills: dict[str, int]
    member_of: frozenset[str]
    state: AgentState = AgentState.LOGGED_OUT
    state_since: float = 0.0
    idle_since: float = 0.0
    calls_answered: int = 0
    consecutive_no_answers: int = 0
    pause_reason: str | None = None
    call_id: str | None = None
    queues: frozenset[str] = field(default_factory=frozenset)
    wrapup_until: float | None = None
    ring_until: float | None = None

    def view(self) -> AgentView:
        return AgentView(
            extension=self.extension,
            name=self.name,
            skills=MappingProxyType(dict(self.skills)),
            state=self.state,
            state_since=self.state_since,
            idle_since=self.idle_since,
            calls_answered=self.calls_answered,
            consecutive_no_answers=self.consecutive_no_answers,
            pause_reason=self.pause_reason,
            call_id=self.call_id,
            queues=self.queues,
            member_of=self.member_of,
            wrapup_until=self.wrapup_until,
            ring_until=self.ring_until,
        )


def check_skills(skills: Mapping[str, int]) -> dict[str, int]:
    """Validate ``{skill: level}`` (non-empty names, integer levels 1..10); return a copy."""
    out: dict[str, int] = {}
    for name, level in skills.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"skill name must be a non-empty string, not {name!r}")
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 10:
            raise ValueError(f"skill {name!r}: level must be an integer 1..10, not {level!r}")
        out[name] = level
    return out


class AgentTable:
    """Every agent of a site with their state; the only place agent state changes.

    One offer per agent at a time follows from the table: OFFER is accepted only in AVAILABLE.
    """

    def __init__(self, config: AgentConfig | None = None) -> None:
        self.config = config or AgentConfig()
        self._agents: dict[str, _Agent] = {}

    # -- membership -------------------------------------------------------------------------

    def add(
        self,
        extension: str,
        *,
        name: str = "",
        skills: Mapping[str, int] | None = None,
        member_of: Iterable[str] = (),
        now: float = 0.0,
    ) -> AgentView:
        """Add a logged-out agent. ``member_of``: queues joined by default at login."""
        if extension in self._agents:
            raise DuplicateAgent(f"agent {extension} already exists")
        agent = _Agent(
            extension=extension,
            name=name,
            skills=check_skills(skills or {}),
            member_of=frozenset(member_of),
            state_since=now,
            idle_since=now,
        )
        self._agents[extension] = agent
        return agent.view()

    def remove(self, extension: str) -> AgentView:
        """Remove an agent who is logged out, available or paused (not while handling a call)."""
        agent = self._get(extension)
        if agent.state in BUSY_STATES:
            raise AgentError(f"agent {extension} is {agent.state.value}; cannot remove")
        del self._agents[extension]
        return agent.view()

    def set_skills(self, extension: str, skills: Mapping[str, int]) -> AgentView:
        """Replace an agent's skills (takes effect at the next dispatch)."""
        agent = self._get(extension)
        agent.skills = check_skills(skills)
        return agent.view()

    def set_queues(self, extension: str, queues: Iterable[str]) -> AgentView:
        """Change the queues a logged-in agent takes calls from."""
        agent = self._get(extension)
        if agent.state is AgentState.LOGGED_OUT:
            raise InvalidTransition(extension, agent.state, AgentInput.LOGIN)
        agent.queues = frozenset(queues)
        return agent.view()

    def reset_counters(self) -> None:
        """Zero every agent's ``calls_answered`` (e.g. at midnight)."""
        for agent in self._agents.values():
            agent.calls_answered = 0

    # -- reading ----------------------------------------------------------------------------

    def __contains__(self, extension: object) -> bool:
        return extension in self._agents

    def __len__(self) -> int:
        return len(self._agents)

    def get(self, extension: str) -> AgentView:
        """One agent's snapshot; :class:`UnknownAgent` if there is none."""
        return self._get(extension).view()

    def state(self, extension: str) -> AgentState:
        """One agent's state."""
        return self._get(extension).state

    def snapshot(self) -> list[AgentView]:
        """Every agent, sorted by extension."""
        return [self._agents[ext].view() for ext in sorted(self._agents)]

    def counts(self, queue: str | None = None) -> dict[AgentState, int]:
        """Agents per state (every state present). With ``queue``: agents logged into it; the
        LOGGED_OUT count is then the logged-out agents whose ``member_of`` has the queue."""
        out = dict.fromkeys(AgentState, 0)
        for agent in self._agents.values():
            if queue is not None:
                home = agent.member_of if agent.state is AgentState.LOGGED_OUT else agent.queues
                if queue not in home:
                    continue
            out[agent.state] += 1
        return out

    def due_wrapups(self, now: float) -> list[str]:
        """Extensions in WRAP_UP whose wrap-up deadline is ≤ ``now`` (feed each WRAPUP_DONE)."""
        return sorted(
            a.extension
            for a in self._agents.values()
            if a.state is AgentState.WRAP_UP
            and a.wrapup_until is not None
            and a.wrapup_until <= now
        )

    def expired_offers(self, now: float) -> list[tuple[str, str]]:
        """``(extension, call_id)`` of offers ringing past ``ring_timeout_s`` (feed NO_ANSWER)."""
        return sorted(
            (a.extension, a.call_id)
            for a in self._agents.values()
            if a.state is AgentState.RINGING
            and a.call_id is not None
            and a.ring_until is not None
            and a.ring_until <= now
        )

    def next_deadline(self) -> float | None:
        """The earliest wrap-up end or ring timeout, for the caller's single timer."""
        times = [
            t
            for a in self._agents.values()
            for t in (
                a.wrapup_until if a.state is AgentState.WRAP_UP else None,
                a.ring_until if a.state is AgentState.RINGING else None,
            )
            if t is not None
        ]
        return min(times, default=None)

    # -- the machine ------------------------------------------------------------------------

    def apply(
        self,
        extension: str,
        event: AgentInput,
        now: float,
        *,
        call_id: str | None = None,
        reason: str | None = None,
        queues: Iterable[str] | None = None,
        wrapup_s: float | None = None,
        ring_timeout_s: float | None = None,
    ) -> Transition:
        """Feed one input. ``call_id`` is required for OFFER and checked (when given) against
        the agent's call for ANSWER, NO_ANSWER, WITHDRAW, HANGUP and LEG_FAILED
        (:class:`WrongCall`); ``reason`` goes with PAUSE; ``queues`` with LOGIN (default: the
        agent's ``member_of``); ``wrapup_s`` overrides the configured wrap-up for a HANGUP;
        ``ring_timeout_s`` the ring timeout for an OFFER."""
        agent = self._get(extension)
        before = agent.state
        nxt = TRANSITIONS.get((before, event))
        if nxt is None:
            raise InvalidTransition(extension, before, event)
        if event is AgentInput.OFFER and not call_id:
            raise ValueError("OFFER needs a call_id")
        if (
            call_id is not None
            and event in _CALL_INPUTS
            and before in BUSY_STATES
            and call_id != agent.call_id
        ):
            raise WrongCall(extension, agent.call_id, call_id)
        inputs = [event]
        concerned = call_id if call_id is not None else agent.call_id
        dropped: str | None = None
        auto: str | None = None
        wrap_now = False

        # Side effects of the input, then the state change.
        if event is AgentInput.LOGIN:
            agent.queues = frozenset(agent.member_of if queues is None else queues)
            agent.consecutive_no_answers = 0
            agent.idle_since = now
        elif event is AgentInput.LOGOUT:
            if before is AgentState.RINGING:
                dropped = agent.call_id
            agent.queues = frozenset()
            agent.call_id = None
        elif event is AgentInput.PAUSE:
            if before is AgentState.RINGING:
                dropped = agent.call_id
            if before is not AgentState.ON_CALL:
                agent.call_id = None
            agent.pause_reason = reason or "paused"
        elif event is AgentInput.UNPAUSE:
            agent.pause_reason = None
            if before is AgentState.PAUSED:
                agent.consecutive_no_answers = 0
                agent.idle_since = now
        elif event is AgentInput.OFFER:
            agent.call_id = call_id
            timeout = self.config.ring_timeout_s if ring_timeout_s is None else ring_timeout_s
            agent.ring_until = now + timeout
        elif event is AgentInput.ANSWER:
            agent.calls_answered += 1
            agent.consecutive_no_answers = 0
        elif event in (AgentInput.NO_ANSWER, AgentInput.WITHDRAW):
            if event is AgentInput.NO_ANSWER:
                agent.consecutive_no_answers += 1
            agent.call_id = None
        elif event is AgentInput.HANGUP:
            if before is AgentState.RINGING:
                agent.call_id = None
            else:  # ON_CALL → WRAP_UP; the call id stays with the agent during wrap-up
                wrap = self.config.wrapup_s if wrapup_s is None else max(0.0, wrapup_s)
                agent.wrapup_until = now + wrap
                wrap_now = wrap <= 0
        elif event is AgentInput.LEG_FAILED:
            if before is AgentState.RINGING:
                agent.consecutive_no_answers += 1
            if before in (AgentState.RINGING, AgentState.ON_CALL):
                agent.call_id = None
            if before is AgentState.ON_CALL:
                agent.idle_since = now
        elif event is AgentInput.WRAPUP_DONE:
            agent.call_id = None
            agent.idle_since = now
        # A pause asked for while ON_CALL, applied once the agent would be AVAILABLE again.
        pending = agent.pause_reason if before in (AgentState.ON_CALL, AgentState.WRAP_UP) else None

        self._enter(agent, nxt, now)

        # Automatic follow-ups, each itself a table transition.
        if wrap_now:
            inputs.append(self._feed(agent, AgentInput.WRAPUP_DONE, now))
        if pending is not None and agent.state is AgentState.AVAILABLE:
            inputs.append(self._feed(agent, AgentInput.PAUSE, now, reason=pending))
        if (
            event in (AgentInput.NO_ANSWER, AgentInput.LEG_FAILED)
            and before is AgentState.RINGING
            and self.config.max_no_answer > 0
            and agent.consecutive_no_answers >= self.config.max_no_answer
            and agent.state is AgentState.AVAILABLE
        ):
            inputs.append(self._feed(agent, AgentInput.PAUSE, now, reason=NO_ANSWER_REASON))
            auto = NO_ANSWER_REASON
        if (
            event is AgentInput.LEG_FAILED
            and self.config.pause_on_leg_failure
            and agent.state in (AgentState.AVAILABLE, AgentState.WRAP_UP)
        ):
            inputs.append(self._feed(agent, AgentInput.PAUSE, now, reason=LEG_FAILED_REASON))
            auto = LEG_FAILED_REASON
        return Transition(
            extension=extension,
            before=before,
            after=agent.state,
            inputs=tuple(inputs),
            call_id=concerned,
            dropped_call=dropped,
            auto_paused=auto,
        )

    def _feed(
        self, agent: _Agent, event: AgentInput, now: float, *, reason: str | None = None
    ) -> AgentInput:
        nxt = TRANSITIONS.get((agent.state, event))
        if nxt is None:  # pragma: no cover - the follow-ups above only feed pairs in the table
            raise InvalidTransition(agent.extension, agent.state, event)
        if event is AgentInput.PAUSE:
            agent.pause_reason = reason
            agent.call_id = None
        elif event is AgentInput.WRAPUP_DONE:
            agent.call_id = None
            agent.idle_since = now
        self._enter(agent, nxt, now)
        return event

    @staticmethod
    def _enter(agent: _Agent, state: AgentState, now: float) -> None:
        if state is not agent.state:
            agent.state = state
            agent.state_since = now
        if state is not AgentState.RINGING:
            agent.ring_until = None
        if state is not AgentState.WRAP_UP:
            agent.wrapup_until = None
        if state in (AgentState.AVAILABLE, AgentState.RINGING, AgentState.LOGGED_OUT):
            agent.pause_reason = None

    def _get(self, extension: str) -> _Agent:
        try:
            return self._agents[extension]
        except KeyError:
            raise UnknownAgent(f"no agent {extension}") from None

    # -- convenience wrappers -----------------------------------------------------------------

    def login(self, extension: str, now: float, queues: Iterable[str] | None = None) -> Transition:
        """LOGIN into ``queues`` (default: the agent's ``member_of``)."""
        return self.apply(extension, AgentInput.LOGIN, now, queues=queues)

    def logout(self, extension: str, now: float) -> Transition:
        """LOGOUT."""
        return self.apply(extension, AgentInput.LOGOUT, now)

    def pause(self, extension: str, now: float, reason: str = "paused") -> Transition:
        """PAUSE with a reason (while ON_CALL: pause once the call and wrap-up end)."""
        return self.apply(extension, AgentInput.PAUSE, now, reason=reason)

    def unpause(self, extension: str, now: float) -> Transition:
        """UNPAUSE (while ON_CALL/WRAP_UP: cancel a pending pause)."""
        return self.apply(extension, AgentInput.UNPAUSE, now)

    def offer(
        self, extension: str, call_id: str, now: float, ring_timeout_s: float | None = None
    ) -> Transition:
        """OFFER ``call_id``: the agent's phone rings."""
        return self.apply(
            extension, AgentInput.OFFER, now, call_id=call_id, ring_timeout_s=ring_timeout_s
        )

    def answer(self, extension: str, call_id: str, now: float) -> Transition:
        """ANSWER the offered call."""
        return self.apply(extension, AgentInput.ANSWER, now, call_id=call_id)

    def no_answer(self, extension: str, call_id: str, now: float) -> Transition:
        """NO_ANSWER: ring timeout or reject (counts towards the auto-pause)."""
        return self.apply(extension, AgentInput.NO_ANSWER, now, call_id=call_id)

    def withdraw(self, extension: str, call_id: str, now: float) -> Transition:
        """WITHDRAW the offer (another agent answered a ring-all)."""
        return self.apply(extension, AgentInput.WITHDRAW, now, call_id=call_id)

    def hangup(
        self, extension: str, call_id: str, now: float, wrapup_s: float | None = None
    ) -> Transition:
        """HANGUP: the call ended (from ON_CALL: wrap-up starts)."""
        return self.apply(extension, AgentInput.HANGUP, now, call_id=call_id, wrapup_s=wrapup_s)

    def leg_failed(self, extension: str, now: float, call_id: str | None = None) -> Transition:
        """LEG_FAILED: the agent's phone or leg failed."""
        return self.apply(extension, AgentInput.LEG_FAILED, now, call_id=call_id)

    def wrapup_done(self, extension: str, now: float) -> Transition:
        """WRAPUP_DONE: after-call work is over."""
        return self.apply(extension, AgentInput.WRAPUP_DONE, now)
