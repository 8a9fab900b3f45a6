"""Scanner and toll-fraud guard: per-source rate limits and bans (after Kamailio's pike and
fail2ban), pure.

The transport asks :meth:`Guard.allow` for every request before parsing more than it must:
ALLOW goes on, THROTTLE gets a 503 with Retry-After (or is dropped), BANNED is dropped without an
answer. Authentication and routing report failures with :meth:`Guard.auth_failed`; enough of
them in a window bans the source. Every table is bounded, so a flood from spoofed addresses
cannot grow memory without limit.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field


class Verdict(enum.Enum):
    """What to do with one request from a source."""

    ALLOW = "allow"
    THROTTLE = "throttle"
    """Too many requests in the window: answer 503 with Retry-After, or drop."""
    BANNED = "banned"
    """The source is banned: drop silently."""


class _Bucket:
    """A token bucket: ``tokens`` left at time ``stamp``."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


@dataclass(slots=True)
class Guard:
    """Rate limits and bans per source IP.

    ``rate_limit`` requests per ``rate_window`` seconds (a token bucket of ``rate_limit`` tokens
    refilled at ``rate_limit / rate_window`` per second: a burst of ``rate_limit`` passes, the
    next one is throttled). ``fail_limit`` failures (failed authentication, unknown user, a call
    we refuse) within ``fail_window`` seconds ban the source for ``ban_time`` seconds.
    ``allow_list`` holds addresses (``"192.0.2.10"``) or networks (``"192.0.2.0/24"``) that are
    never throttled nor banned: the carrier's. ``max_sources`` bounds each per-source table and
    ``max_bans`` the ban list; the least recently seen / oldest entries go first.
    """

    rate_window: float = 2.0
    rate_limit: int = 30
    fail_window: float = 60.0
    fail_limit: int = 5
    ban_time: float = 300.0
    allow_list: Iterable[str] = ()
    max_sources: int = 50_000
    max_bans: int = 100_000
    throttled_total: int = field(default=0, init=False)
    banned_total: int = field(default=0, init=False)
    dropped_total: int = field(default=0, init=False)
    _allowed_ips: frozenset[str] = field(default=frozenset(), init=False, repr=False)
    _allowed_nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default=(), init=False, repr=False
    )
    _rate: float = field(default=0.0, init=False, repr=False)
    _buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict, init=False, repr=False)
    _failures: OrderedDict[str, deque[float]] = field(
        default_factory=OrderedDict, init=False, repr=False
    )
    _bans: OrderedDict[str, float] = field(default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.rate_window <= 0 or self.rate_limit < 1:
            raise ValueError("rate_window must be > 0 and rate_limit >= 1")
        if self.fail_window <= 0 or self.fail_limit < 1 or self.ban_time <= 0:
            raise ValueError("fail_window and ban_time must be > 0 and fail_limit >= 1")
        if self.max_sources < 1 or self.max_bans < 1:
            raise ValueError("max_sources and max_bans must be >= 1")
        ips: set[str] = set()
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in self.allow_list:
            if "/" in entry:
                nets.append(ipaddress.ip_network(entry, strict=False))
            else:
                ips.add(str(ipaddress.ip_address(entry)))
        self.allow_list = tuple(self.allow_list)
        self._allowed_ips = frozenset(ips)
        self._allowed_nets = tuple(nets)
        self._rate = self.rate_limit / self.rate_window

    # ---- queries

    def is_allow_listed(self, ip: str) -> bool:
        """True when ``ip`` is on the allow-list."""
        if ip in self._allowed_ips:
            return True
        if not self._allowed_nets:
            return False
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return False
        return any(addr in net for net in self._allowed_nets)

    def is_banned(self, ip: str, now: float) -> bool:
        """True while ``ip`` is banned."""
        until = self._bans.get(ip)
        return until is not None and until > now

    def bans(self, now: float | None = None) -> dict[str, float]:
        """Banned sources and when each ban ends (only those still running, given ``now``)."""
        if now is None:
            return dict(self._bans)
        return {ip: until for ip, until in self._bans.items() if until > now}

    @property
    def tracked_sources(self) -> int:
        """Entries held in the rate and failure tables together (bounded)."""
        return len(self._buckets) + len(self._failures)

    # ---- per request

    def allow(self, source_ip: str, now: float) -> Verdict:
        """The verdict for one request from ``source_ip``. O(1) amortised."""
        if self._allowed_ips and source_ip in self._allowed_ips:
            return Verdict.ALLOW
        if self._allowed_nets and self.is_allow_listed(source_ip):
            return Verdict.ALLOW
        bans = self._bans
        if bans:
            until = bans.get(source_ip)
            if until is not None:
                if until > now:
                    self.dropped_total += 1
                    return Verdict.BANNED
                del bans[source_ip]
        buckets = self._buckets
        b = buckets.get(source_ip)
        if b is None:
            self._evict_idle(now)
            b = _Bucket(float(self.rate_limit), now)
            buckets[source_ip] = b
            if len(buckets) > self.max_sources:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(source_ip)
            elapsed = now - b.stamp
            if elapsed > 0:
                b.tokens = min(float(self.rate_limit), b.tokens + elapsed * self._rate)
                b.stamp = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return Verdict.ALLOW
        self.throttled_total += 1
        return Verdict.THROTTLE

    def retry_after(self, source_ip: str, now: float) -> int:
        """Whole seconds until ``source_ip`` may send again, for a 503's Retry-After (≥ 1)."""
        until = self._bans.get(source_ip)
        if until is not None and until > now:
            return max(1, int(until - now + 0.999))
        b = self._buckets.get(source_ip)
        if b is None or b.tokens >= 1.0:
            return 1
        return max(1, int((1.0 - b.tokens) / self._rate + 0.999))

    # ---- failures and bans

    def auth_failed(self, source_ip: str, now: float) -> bool:
        """Record a failure from ``source_ip``; True exactly when it starts a new ban."""
        if self.is_allow_listed(source_ip) or self.is_banned(source_ip, now):
            return False
        failures = self._failures
        times = failures.get(source_ip)
        if times is None:
            self._evict_stale_failures(now)
            times = deque(maxlen=self.fail_limit)
            failures[source_ip] = times
            if len(failures) > self.max_sources:
                failures.popitem(last=False)
        else:
            failures.move_to_end(source_ip)
        times.append(now)
        horizon = now - self.fail_window
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) < self.fail_limit:
            return False
        del failures[source_ip]
        self._ban(source_ip, now)
        return True

    def auth_ok(self, source_ip: str) -> None:
        """A success from ``source_ip``: forget its failures."""
        self._failures.pop(source_ip, None)

    def ban(self, source_ip: str, now: float, duration: float | None = None) -> bool:
        """Ban ``source_ip`` now (an operator's or a rule's decision); False if allow-listed."""
        if self.is_allow_listed(source_ip):
            return False
        self._failures.pop(source_ip, None)
        self._ban(source_ip, now, duration)
        return True

    def unban(self, source_ip: str) -> bool:
        """Lift a ban; True when there was one."""
        return self._bans.pop(source_ip, None) is not None

    def _ban(self, ip: str, now: float, duration: float | None = None) -> None:
        bans = self._bans
        bans.pop(ip, None)  # re-insert at the end: the order is the order of expiry
        bans[ip] = now + (self.ban_time if duration is None else duration)
        self.banned_total += 1
        while bans:
            first_ip, until = next(iter(bans.items()))
            if until > now and len(bans) <= self.max_bans:
                break
            del bans[first_ip]

    # ---- bounded memory

    def _evict_idle(self, now: float) -> None:
        # A bucket untouched for a full window is full again: it says nothing, drop it.
        buckets = self._buckets
        horizon = now - self.rate_window
        for _ in range(2):  # amortised O(1): at most two per new source
            if not buckets:
                return
            ip, b = next(iter(buckets.items()))
            if b.stamp > horizon:
                return
            del buckets[ip]

    def _evict_stale_failures(self, now: float) -> None:
        failures = self._failures
        horizon = now - self.fail_window
        for _ in range(2):
            if not failures:
                return
            ip, times = next(iter(failures.items()))
            if times and times[-1] > horizon:
                return
            del failures[ip]


__all__ = ["Guard", "Verdict"]
