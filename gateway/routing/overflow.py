"""Overflow between sites: *whether* a waiting call should leave, and *where to*. Pure functions.

:func:`overflow_reason` looks at one queue of this site (a :class:`LocalState` snapshot) and one
call (:class:`CallInfo`) and names the first condition of the queue's :class:`OverflowPolicy` that
holds, or ``None`` (stay). :func:`choose_targets` ranks the other sites' queues
(:class:`RemoteQueue`, read from the live load in etcd, ``/ccgw/load/<site>/<queue>``) best first.
:func:`decide` does both. Nothing here reads a clock or a socket: the age of each load figure
comes in the snapshot.

**Conditions** (checked in this order; the first that holds is the reason):

``closed``    ``when_closed`` and the site is outside its opening hours (nobody will answer);
``no_skill``  ``when_no_skill`` and no agent holding every skill the call needs is logged into
              the queue (the call can never be answered here);
``ewt``       the queue's estimated wait for a new call is above ``max_ewt_s``;
``waiting``   more than ``max_waiting`` calls wait in the queue;
``waited``    this caller has waited longer than ``max_wait_s`` (since the original arrival).

**Expected wait.** A remote queue's *expected wait* for the call is 0 s when it reports an agent
available now in every skill the call needs, else its published estimated wait (``ewt_s``)
provided somebody there holds the skills; a queue with nobody holding them cannot serve the call
and is never a target. Skill figures are counts per skill *name*: the levels a call asks for are
enforced by the receiving site's ACD, and "an agent available in every skill" is judged skill by
skill (two agents with one skill each count as available), which errs on the side of trying.
This site's expected wait for the call is ``ewt_s``, or infinite when the site is closed or
nobody here holds the skills.

**Eligible targets**, all of: the call has made fewer than ``max_hops`` hops; the remote is
alive; its load figure is at most ``max_age_s`` old; the site is not this site nor one the call
has already visited (no loops); it is named in ``targets`` (or ``targets`` has ``"*"``); the
queue is ``target_queue`` (default: the same name); it can serve the call; and its expected wait
is lower than ours by more than zero and by at least ``min_gain_s``.

**Order**: by (expected wait, path cost, position in ``targets``, site name): the lowest expected
wait wins, the inter-site path cost breaks ties, then the policy's order of preference (every
site matched by ``"*"`` shares the position of the ``"*"``), then the name, so the result is a
total order that does not depend on the order of the input. A site reported twice keeps its
freshest figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "ANY_SITE",
    "REASONS",
    "CallInfo",
    "LocalState",
    "Overflow",
    "OverflowPolicy",
    "RemoteQueue",
    "choose_targets",
    "decide",
    "expected_wait",
    "local_wait",
    "overflow_reason",
]

ANY_SITE = "*"
"""In :attr:`OverflowPolicy.targets`: any live site whose queue can serve the call."""

REASONS = ("closed", "no_skill", "ewt", "waiting", "waited")
"""Every reason :func:`overflow_reason` can return, in the order they are checked."""


def _frozen_counts(name: str, counts: Mapping[str, int]) -> Mapping[str, int]:
    for skill, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{name}[{skill!r}] must be an int >= 0, not {n!r}")
    return MappingProxyType(dict(counts))


def _check_nonneg(name: str, value: float | None, *, allow_inf: bool = False) -> None:
    if value is None:
        return
    if math.isnan(value) or value < 0 or (math.isinf(value) and not allow_inf):
        raise ValueError(
            f"{name} must be a {'' if allow_inf else 'finite '}number >= 0, not {value!r}"
        )


@dataclass(frozen=True, slots=True)
class OverflowPolicy:
    """When calls of one queue leave this site, and for which sites. ``None`` disables a
    threshold; a policy with every condition off never overflows."""

    queue: str
    """The local queue this policy watches."""
    max_ewt_s: float | None = None
    """Overflow when the queue's estimated wait (seconds) is above this."""
    max_waiting: int | None = None
    """Overflow when more than this many calls wait in the queue."""
    max_wait_s: float | None = None
    """Overflow a caller who has waited longer than this (seconds, since original arrival)."""
    when_no_skill: bool = False
    """Overflow when no agent with the skills the call needs is logged into the queue."""
    when_closed: bool = False
    """Overflow when the site is outside its opening hours."""
    targets: tuple[str, ...] = ()
    """Site names in order of preference; ``"*"`` matches any site not named before it."""
    target_queue: str | None = None
    """The queue at the target site; ``None`` = the same name as :attr:`queue`."""
    max_hops: int = 1
    """A call that has already made this many site-to-site hops does not overflow again."""
    min_gain_s: float = 0.0
    """Only overflow to a site whose expected wait is at least this much lower (seconds)."""

    def __post_init__(self) -> None:
        if not self.queue:
            raise ValueError("queue must not be empty")
        _check_nonneg("max_ewt_s", self.max_ewt_s)
        _check_nonneg("max_wait_s", self.max_wait_s)
        _check_nonneg("min_gain_s", self.min_gain_s)
        if self.max_waiting is not None and self.max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0 or None, not {self.max_waiting!r}")
        if self.max_hops < 0:
            raise ValueError(f"max_hops must be >= 0, not {self.max_hops!r}")
        if isinstance(self.targets, str):
            raise ValueError("targets must be a tuple of site names, not a string")
        object.__setattr__(self, "targets", tuple(self.targets))
        if any(not t for t in self.targets):
            raise ValueError("targets must not contain an empty site name")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets has a duplicate: {self.targets!r}")
        if self.target_queue == "":
            raise ValueError("target_queue must not be empty (None = same queue)")

    @property
    def remote_queue(self) -> str:
        """The queue name to look for at the target sites."""
        return self.target_queue if self.target_queue is not None else self.queue

    def preference(self, site: str) -> int | None:
        """The position of ``site`` in :attr:`targets` (``"*"``'s for unnamed sites), or
        ``None`` when the policy does not allow it."""
        try:
            return self.targets.index(site)
        except ValueError:
            pass
        try:
            return self.targets.index(ANY_SITE)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class LocalState:
    """One queue of this site, now."""

    queue: str
    waiting: int
    """Calls waiting in the queue."""
    ewt_s: float
    """Estimated wait of a new call, seconds (``inf`` allowed: no estimate / nobody serving)."""
    logged_in_by_skill: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Skill name → agents logged into the queue holding it (any state but logged out)."""
    open: bool = True
    """Within the site's opening hours."""
    site: str = field(default="", kw_only=True)
    """This site's name: never a target of its own overflow."""
    logged_in: int | None = field(default=None, kw_only=True)
    """Agents logged into the queue, any skills. ``None`` = at least one when any count in
    :attr:`logged_in_by_skill` is above 0. Decides ``no_skill`` for a call needing no skill."""

    def __post_init__(self) -> None:
        if self.waiting < 0:
            raise ValueError(f"waiting must be >= 0, not {self.waiting!r}")
        _check_nonneg("ewt_s", self.ewt_s, allow_inf=True)
        if self.logged_in is not None and self.logged_in < 0:
            raise ValueError(f"logged_in must be >= 0 or None, not {self.logged_in!r}")
        object.__setattr__(
            self,
            "logged_in_by_skill",
            _frozen_counts("logged_in_by_skill", self.logged_in_by_skill),
        )

    def staffed_for(self, skills: frozenset[str]) -> bool:
        """Whether an agent holding every skill in ``skills`` is logged in (skill by skill)."""
        if skills:
            return all(self.logged_in_by_skill.get(s, 0) > 0 for s in skills)
        if self.logged_in is not None:
            return self.logged_in > 0
        return any(n > 0 for n in self.logged_in_by_skill.values())


@dataclass(frozen=True, slots=True)
class CallInfo:
    """The call that might overflow."""

    waited_s: float = 0.0
    """Seconds since the call's original arrival (at the first site). A negative figure (the
    first site's clock ahead of ours) counts as 0."""
    required_skills: Mapping[str, int] | tuple[str, ...] = ()
    """Skill → minimum level, or just skill names."""
    hops: int = 0
    """Site-to-site hops the call has already made (0 at the site it first reached)."""
    visited: frozenset[str] = frozenset()
    """Sites the call has been at or was refused by: never chosen again."""

    def __post_init__(self) -> None:
        if math.isnan(self.waited_s):
            raise ValueError("waited_s must be a number, not nan")
        if self.waited_s < 0:
            object.__setattr__(self, "waited_s", 0.0)
        if self.hops < 0:
            raise ValueError(f"hops must be >= 0, not {self.hops!r}")
        if isinstance(self.required_skills, str):
            raise ValueError("required_skills must be a mapping or a tuple of names")
        if not isinstance(self.required_skills, tuple):
            object.__setattr__(
                self, "required_skills", MappingProxyType(dict(self.required_skills))
            )
        object.__setattr__(self, "visited", frozenset(self.visited))

    @property
    def skill_names(self) -> frozenset[str]:
        """The names of the skills the call needs."""
        return frozenset(self.required_skills)


@dataclass(frozen=True, slots=True)
class RemoteQueue:
    """Another site's queue, as its last load report says (``/ccgw/load/<site>/<queue>``)."""

    site: str
    queue: str
    waiting: int
    """Calls waiting there."""
    available: int
    """Agents available (idle, logged into the queue) now."""
    available_by_skill: Mapping[str, int]
    """Skill name → available agents holding it."""
    ewt_s: float
    """Its estimated wait for a new call, seconds (``inf``: nobody serving)."""
    service_level: float
    """Share of calls answered within the target time, 0..1 (informational here)."""
    path_cost: float
    """Cost of the inter-site path from this site (any unit, lower is better; ties only)."""
    alive: bool
    """The site's registry lease is live (``/ccgw/sites/<site>`` exists)."""
    age_s: float
    """How old the load figure is, seconds."""
    logged_in_by_skill: Mapping[str, int] | None = field(default=None, kw_only=True)
    """Skill name → agents logged in holding it; ``None`` = not reported (then only a site with
    an agent available now in the call's skills can serve a call that needs skills)."""

    def __post_init__(self) -> None:
        if not self.site or not self.queue:
            raise ValueError("site and queue must not be empty")
        if self.waiting < 0 or self.available < 0:
            raise ValueError(f"{self.site}/{self.queue}: waiting and available must be >= 0")
        _check_nonneg("ewt_s", self.ewt_s, allow_inf=True)
        _check_nonneg("path_cost", self.path_cost)
        if math.isnan(self.age_s) or math.isnan(self.service_level):
            raise ValueError(f"{self.site}/{self.queue}: age_s and service_level must be numbers")
        object.__setattr__(
            self,
            "available_by_skill",
            _frozen_counts("available_by_skill", self.available_by_skill),
        )
        if self.logged_in_by_skill is not None:
            object.__setattr__(
                self,
                "logged_in_by_skill",
                _frozen_counts("logged_in_by_skill", self.logged_in_by_skill),
            )


@dataclass(frozen=True, slots=True)
class Overflow:
    """The decision to move a call: why, and the targets to try in order (best first)."""

    reason: str
    targets: tuple[RemoteQueue, ...]


def overflow_reason(policy: OverflowPolicy, local: LocalState, call: CallInfo) -> str | None:
    """The first condition of ``policy`` that holds for ``call`` (one of :data:`REASONS`), or
    ``None`` when the call stays. Hop limits and targets are :func:`choose_targets`'s concern."""
    if policy.queue != local.queue:
        raise ValueError(f"policy for {policy.queue!r} applied to queue {local.queue!r}")
    if policy.when_closed and not local.open:
        return "closed"
    if policy.when_no_skill and not local.staffed_for(call.skill_names):
        return "no_skill"
    if policy.max_ewt_s is not None and local.ewt_s > policy.max_ewt_s:
        return "ewt"
    if policy.max_waiting is not None and local.waiting > policy.max_waiting:
        return "waiting"
    if policy.max_wait_s is not None and call.waited_s > policy.max_wait_s:
        return "waited"
    return None


def local_wait(local: LocalState, call: CallInfo) -> float:
    """This site's expected wait for ``call``, seconds: ``inf`` when closed or unstaffed."""
    if not local.open or not local.staffed_for(call.skill_names):
        return math.inf
    return local.ewt_s


def expected_wait(remote: RemoteQueue, skills: frozenset[str]) -> float | None:
    """A remote queue's expected wait for a call needing ``skills`` (seconds), or ``None`` when
    nobody there holds them (it cannot serve the call)."""
    if remote.available > 0 and all(remote.available_by_skill.get(s, 0) > 0 for s in skills):
        return 0.0
    if skills:
        if remote.logged_in_by_skill is None:
            return None
        if not all(remote.logged_in_by_skill.get(s, 0) > 0 for s in skills):
            return None
    if math.isinf(remote.ewt_s):
        return None
    return remote.ewt_s


def _freshness(remote: RemoteQueue) -> tuple[object, ...]:
    # A total order over every field: which of two reports of one site is kept never depends
    # on the order of the input.
    return (
        remote.age_s,
        remote.ewt_s,
        remote.waiting,
        -remote.available,
        remote.path_cost,
        sorted(remote.available_by_skill.items()),
        remote.logged_in_by_skill is None,
        sorted((remote.logged_in_by_skill or {}).items()),
        -remote.service_level,
    )


def choose_targets(
    policy: OverflowPolicy,
    local: LocalState,
    call: CallInfo,
    remotes: Iterable[RemoteQueue],
    *,
    max_age_s: float = 3.0,
) -> list[RemoteQueue]:
    """The queues ``call`` may overflow to, best first (see the module docstring for the
    rules). Empty when there is none; it does not check :func:`overflow_reason`."""
    if policy.queue != local.queue:
        raise ValueError(f"policy for {policy.queue!r} applied to queue {local.queue!r}")
    if call.hops >= policy.max_hops:
        return []
    skills = call.skill_names
    ours = local_wait(local, call)
    excluded = call.visited | {local.site}
    best: dict[str, tuple[tuple[float, float, int, str], tuple[object, ...], RemoteQueue]] = {}
    for remote in remotes:
        if not remote.alive or not remote.age_s <= max_age_s:
            continue
        if remote.site in excluded or remote.queue != policy.remote_queue:
            continue
        pref = policy.preference(remote.site)
        if pref is None:
            continue
        wait = expected_wait(remote, skills)
        if wait is None or not wait < ours or ours - wait < policy.min_gain_s:
            continue
        key = (wait, remote.path_cost, pref, remote.site)
        fresh = _freshness(remote)
        held = best.get(remote.site)
        if held is None or fresh < held[1]:
            best[remote.site] = (key, fresh, remote)
    return [remote for _, _, remote in sorted(best.values(), key=lambda kept: kept[0])]


def decide(
    policy: OverflowPolicy,
    local: LocalState,
    call: CallInfo,
    remotes: Iterable[RemoteQueue],
    *,
    max_age_s: float = 3.0,
) -> Overflow | None:
    """:func:`overflow_reason` then :func:`choose_targets`: ``None`` when the call stays (no
    condition holds, or no site can do better)."""
    reason = overflow_reason(policy, local, call)
    if reason is None:
        return None
    targets = choose_targets(policy, local, call, remotes, max_age_s=max_age_s)
    if not targets:
        return None
    return Overflow(reason, tuple(targets))
