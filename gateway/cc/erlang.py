"""Erlang C queueing figures and the estimated wait announced to callers. Pure functions.

The Erlang C model (M/M/N): calls arrive at random (Poisson) and wait in one line for ``N``
identical agents whose handle times are exponential with mean ``AHT``; nobody abandons. The
traffic ``A`` (erlangs) is arrivals per second × AHT in seconds.

- Erlang B by the recursion ``B(0) = 1``, ``B(n) = A·B(n−1) / (n + A·B(n−1))`` — no factorials,
  no powers, stable for thousands of agents.
- ``P(W>0) = C(A, N) = N·B / (N − A·(1 − B))`` for ``N > A``; 1 when ``N ≤ A`` (the line grows
  without bound).
- Service level ``P(W ≤ t) = 1 − C·exp(−(N − A)·t / AHT)``.
- Average speed of answer ``ASA = C·AHT / (N − A)``.
- Occupancy ``A / N`` (capped at 1).

**Estimated wait** for a caller at position ``k`` (1-based) when ``available`` agents are free
and ``staffed`` agents take the queue's calls: 0 when ``k ≤ available``; otherwise the caller
needs ``k − available`` agents to finish a call, which in the M/M/N model happen at rate
``staffed / AHT``, so the wait is ``(k − available) · AHT / staffed``. :class:`WaitEstimator`
uses the *observed* service rate once the window holds ``min_samples`` handled calls (calls
handled per agent-second of handling, i.e. 1 / observed AHT), else the configured AHT.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal


def _check(traffic: float, agents: int) -> None:
    if not (math.isfinite(traffic) and traffic >= 0):
        raise ValueError(f"traffic must be a finite number of erlangs >= 0, not {traffic!r}")
    if agents < 0:
        raise ValueError(f"agents must be >= 0, not {agents!r}")


def traffic_erlangs(arrivals: float, period_s: float, aht_s: float) -> float:
    """Offered traffic ``A`` for ``arrivals`` calls per ``period_s`` seconds of ``aht_s`` each."""
    if period_s <= 0 or aht_s < 0 or arrivals < 0:
        raise ValueError("arrivals and aht_s must be >= 0 and period_s > 0")
    return arrivals * aht_s / period_s


def erlang_b(traffic: float, agents: int) -> float:
    """Erlang B blocking probability for ``traffic`` erlangs on ``agents`` servers."""
    _check(traffic, agents)
    b = 1.0
    for n in range(1, agents + 1):
        b = traffic * b / (n + traffic * b)
    return b


def erlang_c(traffic: float, agents: int) -> float:
    """Erlang C ``P(W>0)``: the probability that a caller waits at all (1 when ``N ≤ A``)."""
    _check(traffic, agents)
    if agents <= traffic:
        return 1.0
    b = erlang_b(traffic, agents)
    return agents * b / (agents - traffic * (1.0 - b))


def service_level(traffic: float, agents: int, aht_s: float, target_s: float) -> float:
    """``P(W ≤ target_s)``: the share of calls answered within ``target_s`` (0 when N ≤ A)."""
    if aht_s <= 0 or target_s < 0:
        raise ValueError("aht_s must be > 0 and target_s >= 0")
    if agents <= traffic:
        _check(traffic, agents)
        return 0.0
    c = erlang_c(traffic, agents)
    return max(0.0, 1.0 - c * math.exp(-(agents - traffic) * target_s / aht_s))


def average_speed_of_answer(traffic: float, agents: int, aht_s: float) -> float:
    """Mean wait over all calls (those answered at once count 0); ``inf`` when ``N ≤ A``."""
    if aht_s <= 0:
        raise ValueError("aht_s must be > 0")
    if agents <= traffic:
        _check(traffic, agents)
        return math.inf
    return erlang_c(traffic, agents) * aht_s / (agents - traffic)


def occupancy(traffic: float, agents: int) -> float:
    """Share of agents' time spent handling calls: ``A / N``, at most 1 (1 with no agents)."""
    _check(traffic, agents)
    if agents == 0:
        return 1.0
    return min(1.0, traffic / agents)


def agents_needed(
    traffic: float,
    aht_s: float,
    target_sl: float,
    target_s: float,
    max_occupancy: float | None = None,
    limit: int = 100_000,
) -> int:
    """The fewest agents giving ``service_level ≥ target_sl`` (e.g. 0.8 for 80/20 with
    ``target_s=20``) and, when given, ``occupancy ≤ max_occupancy``."""
    if not 0 <= target_sl < 1:
        raise ValueError(f"target_sl must be in [0, 1), not {target_sl!r}")
    if max_occupancy is not None and not 0 < max_occupancy <= 1:
        raise ValueError(f"max_occupancy must be in (0, 1], not {max_occupancy!r}")
    _check(traffic, 0)
    if traffic == 0:
        return 0
    n = math.floor(traffic) + 1
    while n <= limit:
        if service_level(traffic, n, aht_s, target_s) >= target_sl and (
            max_occupancy is None or occupancy(traffic, n) <= max_occupancy
        ):
            return n
        n += 1
    raise ValueError(f"more than {limit} agents needed")


def wait_at_position(position: int, staffed: int, aht_s: float, available: int = 0) -> float:
    """Expected wait (s) of the caller at 1-based ``position`` in the M/M/N model:
    ``(position − available) · aht_s / staffed``, 0 if an agent is free for them, ``inf``
    with nobody staffed."""
    if position < 1:
        raise ValueError(f"position is 1-based, not {position!r}")
    if aht_s < 0 or staffed < 0 or available < 0:
        raise ValueError("aht_s, staffed and available must be >= 0")
    if position <= available:
        return 0.0
    if staffed == 0:
        return math.inf
    return (position - available) * aht_s / staffed


@dataclass(frozen=True, slots=True)
class EstimatorConfig:
    """How a queue estimates waits."""

    aht_s: float = 180.0
    """Configured average handle time (talk + wrap-up), used until enough history. Default 180."""
    window_s: float = 1800.0
    """History window for the observed service rate, seconds. Default 1800 (30 min)."""
    min_samples: int = 20
    """Handled calls needed in the window before the observed rate is used. Default 20."""

    def __post_init__(self) -> None:
        if not self.aht_s > 0:
            raise ValueError(f"aht_s must be > 0, not {self.aht_s!r}")
        if not self.window_s > 0:
            raise ValueError(f"window_s must be > 0, not {self.window_s!r}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, not {self.min_samples!r}")


@dataclass(frozen=True, slots=True)
class WaitEstimate:
    """An estimated wait and where it came from."""

    seconds: float
    """Expected wait; ``inf`` when no agent is staffed."""
    source: Literal["observed", "erlang"]
    """``observed``: the queue's measured service rate; ``erlang``: the configured AHT."""
    aht_s: float
    """The handle time the estimate used."""


class WaitEstimator:
    """Observed service rate over a sliding window, and estimated waits from it."""

    def __init__(self, config: EstimatorConfig | None = None) -> None:
        self.config = config or EstimatorConfig()
        self._samples: deque[tuple[float, float]] = deque()

    def record_handled(self, now: float, handle_s: float) -> None:
        """A call of this queue finished (talk + wrap-up = ``handle_s`` seconds) at ``now``."""
        if not (math.isfinite(handle_s) and handle_s >= 0):
            raise ValueError(f"handle_s must be >= 0, not {handle_s!r}")
        self._samples.append((now, handle_s))
        self._prune(now)

    def samples(self, now: float) -> int:
        """Handled calls in the window ending at ``now``."""
        self._prune(now)
        return len(self._samples)

    def service_rate(self, now: float) -> float | None:
        """Calls handled per agent-second of handling in the window (1 / observed AHT), or
        ``None`` until ``min_samples`` calls are in the window."""
        self._prune(now)
        if len(self._samples) < self.config.min_samples:
            return None
        total = sum(h for _, h in self._samples)
        if total <= 0:
            return None
        return len(self._samples) / total

    def aht(self, now: float) -> tuple[float, Literal["observed", "erlang"]]:
        """The handle time to use at ``now`` and its source."""
        rate = self.service_rate(now)
        if rate is None:
            return self.config.aht_s, "erlang"
        return 1.0 / rate, "observed"

    def estimate(self, position: int, staffed: int, now: float, available: int = 0) -> WaitEstimate:
        """Estimated wait of the caller at ``position`` (see :func:`wait_at_position`)."""
        aht_s, source = self.aht(now)
        return WaitEstimate(wait_at_position(position, staffed, aht_s, available), source, aht_s)

    def _prune(self, now: float) -> None:
        horizon = now - self.config.window_s
        while self._samples and self._samples[0][0] <= horizon:
            self._samples.popleft()
