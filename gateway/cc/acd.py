"""Automatic call distribution: which agent(s) get the next offer. Pure functions.

:func:`dispatch` (one queue) and :func:`dispatch_all` (every queue of a site, sharing agents)
match waiting entries to agents and return :class:`Offer` s; they change nothing. The caller
applies each offer (``AgentTable.offer`` per agent, ``WaitingLine.mark_offered``) and keeps the
round-robin memory with :meth:`StrategyState.after`.

**Eligibility** of an agent for an entry of queue ``q``, all of:

1. the agent is AVAILABLE and logged into ``q`` (``q in agent.queues``);
2. for every required skill, the agent's level is ≥ the required minimum;
3. not already given an offer in this dispatch (one offer per agent at a time);
4. if the entry is sticky (``sticky_agent`` set and ``now < sticky_until``): the agent *is* the
   named agent. If the named agent is not eligible, the entry waits (no offer) until
   ``sticky_until``, then it is routed normally.

**Choice among eligible agents** (every strategy but ringall picks one):

- Agents in the entry's ``tried`` set (offered this call before and did not take it) are used
  only when no untried agent is eligible.
- With ``QueuePolicy.best_skill_first`` only the agents with the highest *skill score* stay in
  the running. The skill score of an agent for an entry is the sum of the agent's levels in the
  entry's required skills (0 when the entry requires none).
- Then the strategy orders what remains:

  ``ringall``      every eligible agent at once (``tried`` and skill tiers are ignored);
  ``linear``       the first in the queue's *member order*, always from the top;
  ``rrmemory``     the first in member order *after* the agent last offered a call of this
                   queue (cyclic); from the top when there is no memory or it left the order;
  ``longest_idle`` smallest ``idle_since``; ties: higher skill score, then extension;
  ``fewest_calls`` smallest ``calls_answered``; ties: higher skill score, then smallest
                   ``idle_since``, then extension;
  ``random``       ``rng.choice`` over the candidates sorted by extension (seeded rng →
                   reproducible).

  *Member order* is ``QueuePolicy.members`` followed by the other agents logged into the queue,
  sorted by extension.

**Entries** are taken in queue order (:meth:`WaitingLine.ordered`); entries already ringing an
agent are skipped. An entry with no eligible agent is passed over, so a head-of-line call waiting
for a busy specialist never blocks a later call that another agent can take (skills-based
routing). :func:`dispatch_all` interleaves the queues' entries by (−effective priority,
original arrival).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gateway.cc.agents import AgentState, AgentView
from gateway.cc.queue import QueueEntry, WaitingLine


class Strategy(enum.StrEnum):
    """How a queue chooses among eligible agents (names as in Asterisk's app_queue)."""

    RINGALL = "ringall"
    LINEAR = "linear"
    RRMEMORY = "rrmemory"
    LONGEST_IDLE = "longest_idle"
    FEWEST_CALLS = "fewest_calls"
    RANDOM = "random"


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """How one queue hands out calls."""

    name: str
    strategy: Strategy = Strategy.LONGEST_IDLE
    members: tuple[str, ...] = ()
    """Configured member order (linear, rrmemory); logged-in non-members follow by extension."""
    best_skill_first: bool = False
    """Offer only to the agents with the highest skill score for the entry (see module doc)."""

    def __post_init__(self) -> None:
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"queue {self.name}: members repeat")


@dataclass(frozen=True, slots=True)
class StrategyState:
    """What a strategy remembers between dispatches (round robin's last agent)."""

    last_offered: str | None = None

    def after(self, offers: Iterable[Offer], queue: str | None = None) -> StrategyState:
        """The state once ``offers`` (of ``queue``, when given) have been made."""
        last = self.last_offered
        for offer in offers:
            if (queue is None or offer.queue == queue) and offer.agents:
                last = offer.agents[-1]
        return StrategyState(last)


@dataclass(frozen=True, slots=True)
class Offer:
    """Ring ``agents`` for ``call_id`` (one agent, or every eligible one for ringall)."""

    call_id: str
    queue: str
    agents: tuple[str, ...]
    virtual: bool = False
    """A callback: ring the agent first, then dial the customer."""
    sticky: bool = False
    """Offered to the entry's named agent."""


def skill_score(agent: AgentView, entry: QueueEntry) -> int:
    """Sum of the agent's levels in the entry's required skills (0 when none are required)."""
    return sum(agent.skills.get(skill, 0) for skill in entry.required_skills)


def has_skills(agent: AgentView, required: Mapping[str, int]) -> bool:
    """Whether the agent has every required skill at (at least) the required level."""
    return all(agent.skills.get(skill, 0) >= level for skill, level in required.items())


def eligible(
    entry: QueueEntry,
    queue: str,
    agents: Iterable[AgentView],
    now: float,
    exclude: frozenset[str] = frozenset(),
) -> list[AgentView]:
    """Agents that may be offered ``entry`` of ``queue`` at ``now`` (see module doc), in the
    order given."""
    sticky = entry.sticky_agent if entry.is_sticky(now) else None
    return [
        a
        for a in agents
        if a.state is AgentState.AVAILABLE
        and queue in a.queues
        and a.extension not in exclude
        and (sticky is None or a.extension == sticky)
        and has_skills(a, entry.required_skills)
    ]


def member_order(policy: QueuePolicy, agents: Iterable[AgentView]) -> list[str]:
    """The queue's member order: configured members, then other logged-in agents by extension."""
    listed = set(policy.members)
    extra = sorted(
        a.extension for a in agents if policy.name in a.queues and a.extension not in listed
    )
    return [*policy.members, *extra]


def choose(
    policy: QueuePolicy,
    entry: QueueEntry,
    candidates: Sequence[AgentView],
    order: Sequence[str],
    state: StrategyState,
    rng: random.Random | None = None,
) -> list[AgentView]:
    """The agents to ring for ``entry`` among eligible ``candidates`` (all for ringall, else at
    most one). ``order`` is the queue's member order."""
    if not candidates:
        return []
    rank = {ext: i for i, ext in enumerate(order)}
    last = len(order)  # not in the order (cannot happen for agents logged into the queue)
    if policy.strategy is Strategy.RINGALL:
        return sorted(candidates, key=lambda a: rank.get(a.extension, last))
    pool = [a for a in candidates if a.extension not in entry.tried] or list(candidates)
    if policy.best_skill_first:
        best = max(skill_score(a, entry) for a in pool)
        pool = [a for a in pool if skill_score(a, entry) == best]
    strategy = policy.strategy
    if strategy is Strategy.LINEAR:
        return [min(pool, key=lambda a: rank.get(a.extension, last))]
    if strategy is Strategy.RRMEMORY:
        start = 0 if state.last_offered is None else rank.get(state.last_offered, -1) + 1
        return [min(pool, key=lambda a: (rank.get(a.extension, last) - start) % max(last, 1))]
    if strategy is Strategy.LONGEST_IDLE:
        return [min(pool, key=lambda a: (a.idle_since, -skill_score(a, entry), a.extension))]
    if strategy is Strategy.FEWEST_CALLS:
        return [
            min(
                pool,
                key=lambda a: (
                    a.calls_answered,
                    -skill_score(a, entry),
                    a.idle_since,
                    a.extension,
                ),
            )
        ]
    if strategy is Strategy.RANDOM:
        if rng is None:
            raise ValueError(f"queue {policy.name}: the random strategy needs an rng")
        return [rng.choice(sorted(pool, key=lambda a: a.extension))]
    raise AssertionError(strategy)  # pragma: no cover


def dispatch(
    line: WaitingLine,
    policy: QueuePolicy,
    agents: Sequence[AgentView],
    state: StrategyState,
    now: float,
    rng: random.Random | None = None,
    exclude: frozenset[str] = frozenset(),
) -> list[Offer]:
    """Offers for one queue at ``now``: entries in queue order, at most one offer per agent,
    none to ``exclude``. Pure: apply the offers, then ``state = state.after(offers)``."""
    if policy.name != line.name:
        raise ValueError(f"policy {policy.name!r} is not for queue {line.name!r}")
    return dispatch_all([(line, policy, state)], agents, now, rng, exclude)


def dispatch_all(
    queues: Sequence[tuple[WaitingLine, QueuePolicy, StrategyState]],
    agents: Sequence[AgentView],
    now: float,
    rng: random.Random | None = None,
    exclude: frozenset[str] = frozenset(),
) -> list[Offer]:
    """Offers for several queues sharing agents: all their waiting entries are taken in the
    order (−effective priority, original arrival, queue index, queue order), so an agent
    logged into two queues gets the call that matters most. Pure; update each queue's
    ``StrategyState`` with ``state.after(offers, queue)``."""
    work: list[tuple[tuple[int, float, int, int], QueueEntry, int]] = []
    for qi, (line, policy, _) in enumerate(queues):
        if policy.name != line.name:
            raise ValueError(f"policy {policy.name!r} is not for queue {line.name!r}")
        if policy.strategy is Strategy.RANDOM and rng is None:
            raise ValueError(f"queue {policy.name}: the random strategy needs an rng")
        for pos, entry in enumerate(line.ordered(now)):
            if entry.offered_to:
                continue
            key = (-line.effective_priority(entry, now), entry.arrived_at, qi, pos)
            work.append((key, entry, qi))
    work.sort(key=lambda item: item[0])

    free = [a for a in agents if a.state is AgentState.AVAILABLE and a.extension not in exclude]
    orders = [member_order(policy, agents) for _, policy, _ in queues]
    states = [state for _, _, state in queues]
    offers: list[Offer] = []
    for _, entry, qi in work:
        if not free:
            break
        policy = queues[qi][1]
        candidates = eligible(entry, policy.name, free, now)
        chosen = choose(policy, entry, candidates, orders[qi], states[qi], rng)
        if not chosen:
            continue
        offer = Offer(
            call_id=entry.call_id,
            queue=policy.name,
            agents=tuple(a.extension for a in chosen),
            virtual=entry.virtual,
            sticky=entry.is_sticky(now),
        )
        offers.append(offer)
        taken = set(offer.agents)
        free = [a for a in free if a.extension not in taken]
        states[qi] = states[qi].after([offer])
    return offers


def queue_staffing(queue: str, agents: Iterable[AgentView]) -> tuple[int, int]:
    """``(logged_in, available)`` agents of ``queue``: the counts join and leave rules use."""
    logged_in = available = 0
    for a in agents:
        if queue in a.queues and a.state is not AgentState.LOGGED_OUT:
            logged_in += 1
            if a.state is AgentState.AVAILABLE:
                available += 1
    return logged_in, available
