"""The mesh site registry: who is alive, how loaded each site's queues are, and HQ's policy.

Keys in etcd (values are JSON, UTF-8)::

    /ccgw/sites/<site>          SiteRecord   under the site's lease (TTL ``ttl``, default 3 s)
    /ccgw/load/<site>/<queue>   QueueLoad    under the same lease, refreshed every ``load_interval``
    /ccgw/config/<name>         JSON object  written by HQ (:func:`publish_policy`), no lease

A site that dies stops refreshing its lease; etcd deletes its keys when the TTL passes and every
other gateway's watch sees the deletes (etcd ``api/v3rpc`` Lease/Watch semantics). A clean
:meth:`SiteRegistry.stop` revokes the lease so the site vanishes at once.

Layers: :class:`MeshState` and :class:`PolicyBook` are pure (snapshots and watch events in,
views and policy outcomes out; no I/O, no clock); :class:`SiteRegistry` is the asyncio adapter
that keeps a lease alive, publishes load, watches ``/ccgw/`` and survives etcd outages.

Outage rules (what routing can rely on):

- :meth:`SiteRegistry.view` never blocks and always answers. While etcd is unreachable the last
  view is kept, with ``connected=False`` and ``lost_at`` set; remote sites are *not* dropped
  (they are probably still alive: losing etcd is more often our own link than theirs), so
  routing must look at :meth:`MeshView.stale_s` and treat old views with suspicion (the handoff
  reservation is the authoritative check).
- One warning is logged per outage; retries back off exponentially up to ``backoff_max``.
- On reconnect the site registers again with a fresh lease (the old one is revoked), re-reads
  ``/ccgw/`` at revision R (a full catch-up: lease expiries and policy changes made while away
  show up as differences) and resumes watching from R + 1, so no change is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from .etcd import EtcdClient, EtcdUnavailable, LeaseNotFound, WatchEvent

__all__ = [
    "CONFIG_PREFIX",
    "LOAD_PREFIX",
    "ROOT_PREFIX",
    "SITES_PREFIX",
    "MeshState",
    "MeshView",
    "PolicyBook",
    "PolicyOutcome",
    "QueueLoad",
    "SiteRecord",
    "SiteRegistry",
    "config_key",
    "load_key",
    "parse_key",
    "publish_policy",
    "site_key",
]

log = logging.getLogger(__name__)

ROOT_PREFIX: Final = "/ccgw/"
SITES_PREFIX: Final = "/ccgw/sites/"
LOAD_PREFIX: Final = "/ccgw/load/"
CONFIG_PREFIX: Final = "/ccgw/config/"

_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
"""One path segment of a key (a site, queue or policy name): no '/', no leading punctuation."""


def _check_segment(what: str, name: str) -> str:
    if not isinstance(name, str) or not _SEGMENT_RE.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not a key segment ([A-Za-z0-9][A-Za-z0-9_.-]*)")
    return name


def site_key(site: str) -> str:
    """``/ccgw/sites/<site>``."""
    return SITES_PREFIX + _check_segment("site", site)


def load_key(site: str, queue: str) -> str:
    """``/ccgw/load/<site>/<queue>``."""
    return f"{LOAD_PREFIX}{_check_segment('site', site)}/{_check_segment('queue', queue)}"


def config_key(name: str) -> str:
    """``/ccgw/config/<name>``."""
    return CONFIG_PREFIX + _check_segment("policy name", name)


KeyKind = Literal["site", "load", "config"]


def parse_key(key: str) -> tuple[KeyKind, tuple[str, ...]] | None:
    """``"/ccgw/load/sh/sales"`` → ``("load", ("sh", "sales"))``; ``None`` for other keys."""
    for kind, prefix, parts in (
        ("site", SITES_PREFIX, 1),
        ("load", LOAD_PREFIX, 2),
        ("config", CONFIG_PREFIX, 1),
    ):
        if key.startswith(prefix):
            segs = tuple(key[len(prefix) :].split("/"))
            if len(segs) == parts and all(_SEGMENT_RE.fullmatch(s) for s in segs):
                return kind, segs  # type: ignore[return-value]
            return None
    return None


# --------------------------------------------------------------------------------------------
# records


def _loads_obj(data: str | bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: not a JSON object")
    return obj


def _str(obj: Mapping[str, Any], key: str, what: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str):
        raise ValueError(f"{what}: {key!r} must be a string")
    return v


def _num(obj: Mapping[str, Any], key: str, what: str) -> float:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{what}: {key!r} must be a finite number")
    return float(v)


def _int(obj: Mapping[str, Any], key: str, what: str) -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{what}: {key!r} must be a non-negative integer")
    return v


def _counts(obj: Mapping[str, Any], key: str, what: str) -> Mapping[str, int]:
    v = obj.get(key, {})
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0
        for k, n in v.items()
    ):
        raise ValueError(f"{what}: {key!r} must map skill names to non-negative integers")
    return MappingProxyType(dict(v))


@dataclass(frozen=True, slots=True)
class SiteRecord:
    """What a site publishes about itself under ``/ccgw/sites/<site>``."""

    site: str
    """The site's name (``[site] name`` in its config); a key segment."""
    region: str
    """Free text, e.g. ``"cn-east"``."""
    sip: str
    """``host:port`` of its SIP trunk listener for inter-site calls."""
    handoff: str
    """``host:port`` of its gRPC handoff server."""
    http: str
    """``host:port`` (or base URL) of its web/REST server."""
    skills: tuple[str, ...] = ()
    """Skills its agents offer."""
    started: float = 0.0
    """Wall-clock time (Unix seconds) the gateway process started; tells restarts apart."""

    def __post_init__(self) -> None:
        _check_segment("site", self.site)
        object.__setattr__(self, "skills", tuple(self.skills))

    def to_json(self) -> str:
        """Compact JSON with sorted keys."""
        d = dataclasses.asdict(self)
        d["skills"] = list(self.skills)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> SiteRecord:
        """Parse :meth:`to_json` output; :class:`ValueError` naming the field if malformed.
        Unknown fields are ignored (newer sites may add some)."""
        what = "site record"
        obj = _loads_obj(data, what)
        skills = obj.get("skills", [])
        if not isinstance(skills, list) or not all(isinstance(s, str) for s in skills):
            raise ValueError(f"{what}: 'skills' must be a list of strings")
        return cls(
            site=_str(obj, "site", what),
            region=_str(obj, "region", what),
            sip=_str(obj, "sip", what),
            handoff=_str(obj, "handoff", what),
            http=_str(obj, "http", what),
            skills=tuple(skills),
            started=_num(obj, "started", what),
        )


@dataclass(frozen=True, slots=True)
class QueueLoad:
    """Live figures of one queue of one site, under ``/ccgw/load/<site>/<queue>``."""

    site: str
    queue: str
    waiting: int
    """Calls waiting in the queue now."""
    available: int
    """Agents of the queue available (idle, logged in) now."""
    available_by_skill: Mapping[str, int] = field(default_factory=dict)
    """Available agents per skill."""
    logged_in_by_skill: Mapping[str, int] = field(default_factory=dict)
    """Logged-in agents (any state) per skill."""
    ewt_s: float = 0.0
    """Estimated wait for a call joining now, seconds."""
    service_level: float | None = None
    """Share of calls answered within the queue's target (0..1); ``None`` before any call."""
    oldest_wait_s: float = 0.0
    """How long the oldest waiting call has waited, seconds."""
    ts: float = 0.0
    """Wall-clock time (Unix seconds) the figures were taken."""

    def __post_init__(self) -> None:
        _check_segment("site", self.site)
        _check_segment("queue", self.queue)
        if self.waiting < 0 or self.available < 0:
            raise ValueError("waiting and available must be >= 0")
        if self.service_level is not None and not 0.0 <= self.service_level <= 1.0:
            raise ValueError(f"service_level {self.service_level} is not in 0..1")
        object.__setattr__(
            self, "available_by_skill", MappingProxyType(dict(self.available_by_skill))
        )
        object.__setattr__(
            self, "logged_in_by_skill", MappingProxyType(dict(self.logged_in_by_skill))
        )

    def figures(self) -> tuple[object, ...]:
        """Everything but ``ts``: what decides whether a new publish is needed."""
        return (
            self.site,
            self.queue,
            self.waiting,
            self.available,
            tuple(sorted(self.available_by_skill.items())),
            tuple(sorted(self.logged_in_by_skill.items())),
            self.ewt_s,
            self.service_level,
            self.oldest_wait_s,
        )

    def to_json(self) -> str:
        """Compact JSON with sorted keys."""
        d = {
            "site": self.site,
            "queue": self.queue,
            "waiting": self.waiting,
            "available": self.available,
            "available_by_skill": dict(self.available_by_skill),
            "logged_in_by_skill": dict(self.logged_in_by_skill),
            "ewt_s": self.ewt_s,
            "service_level": self.service_level,
            "oldest_wait_s": self.oldest_wait_s,
            "ts": self.ts,
        }
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes) -> QueueLoad:
        """Parse :meth:`to_json` output; :class:`ValueError` naming the field if malformed."""
        what = "queue load"
        obj = _loads_obj(data, what)
        sl = obj.get("service_level")
        service_level = None if sl is None else _num(obj, "service_level", what)
        return cls(
            site=_str(obj, "site", what),
            queue=_str(obj, "queue", what),
            waiting=_int(obj, "waiting", what),
            available=_int(obj, "available", what),
            available_by_skill=_counts(obj, "available_by_skill", what),
            logged_in_by_skill=_counts(obj, "logged_in_by_skill", what),
            ewt_s=_num(obj, "ewt_s", what),
            service_level=service_level,
            oldest_wait_s=_num(obj, "oldest_wait_s", what),
            ts=_num(obj, "ts", what),
        )


# --------------------------------------------------------------------------------------------
# the view (pure)


@dataclass(frozen=True, slots=True)
class MeshView:
    """A snapshot of the *other* sites, as this gateway last saw them in etcd.

    The local site is excluded from ``sites`` and ``loads`` (its own figures are fresher in
    the local contact centre; ``me`` names it). Loads of sites that are not registered (dead,
    lease expired) are dropped.
    """

    me: str
    sites: Mapping[str, SiteRecord]
    """Remote sites alive (lease held), by name."""
    loads: Mapping[tuple[str, str], QueueLoad]
    """Live load by ``(site, queue)``, remote alive sites only."""
    revision: int
    """etcd store revision the view reflects (0: never synced)."""
    connected: bool
    """True while the registry holds a live session with etcd."""
    lost_at: float | None = None
    """Wall-clock time the etcd session was lost (``None`` while connected or never synced)."""

    def stale_s(self, now: float) -> float:
        """Seconds this view may be out of date: 0 while connected, ``now - lost_at`` after an
        outage, ``inf`` if it was never synced."""
        if self.connected:
            return 0.0
        if self.lost_at is None:
            return math.inf
        return max(0.0, now - self.lost_at)

    def alive(self, site: str) -> bool:
        """``site`` is a registered remote site (its lease was held when last seen)."""
        return site in self.sites

    def loads_for(self, queue: str) -> list[QueueLoad]:
        """Load of ``queue`` at every alive remote site that publishes it, sorted by site."""
        return sorted((ld for (_, q), ld in self.loads.items() if q == queue), key=lambda x: x.site)

    def loads_of(self, site: str) -> list[QueueLoad]:
        """Every queue's load at ``site``, sorted by queue."""
        return sorted((ld for (s, _), ld in self.loads.items() if s == site), key=lambda x: x.queue)

    def sites_with_skill(self, skill: str) -> list[SiteRecord]:
        """Alive remote sites whose record lists ``skill``, sorted by name."""
        return [r for _, r in sorted(self.sites.items()) if skill in r.skills]


@dataclass(frozen=True, slots=True)
class StateChange:
    """What one snapshot or event changed: whether the view did, and raw config updates
    (``None``: the key was deleted)."""

    view_changed: bool = False
    config: tuple[tuple[str, bytes | None], ...] = ()


class MeshState:
    """The ``/ccgw/`` key space as last seen, built from a snapshot plus watch events. Pure."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.revision = 0
        self._sites: dict[str, SiteRecord] = {}
        self._loads: dict[tuple[str, str], QueueLoad] = {}
        self._config: dict[str, bytes] = {}
        self._bad: set[str] = set()

    @property
    def config_raw(self) -> Mapping[str, bytes]:
        """Raw values under ``/ccgw/config/`` by name."""
        return MappingProxyType(self._config)

    def reset(self, items: Iterable[tuple[str, bytes]], revision: int) -> StateChange:
        """Replace everything with a full read of ``/ccgw/`` taken at ``revision``."""
        old_view = (dict(self._sites), dict(self._loads))
        old_config = dict(self._config)
        self._sites.clear()
        self._loads.clear()
        self._config.clear()
        for key, value in items:
            self._put(key, value)
        self.revision = revision
        config: list[tuple[str, bytes | None]] = [
            (n, v) for n, v in sorted(self._config.items()) if old_config.get(n) != v
        ]
        config += [(n, None) for n in sorted(old_config) if n not in self._config]
        return StateChange((self._sites, self._loads) != old_view, tuple(config))

    def apply(self, event: WatchEvent) -> StateChange:
        """Apply one watch event; events older than the current revision are ignored.

        Several events may share one revision (a transaction, or every key of an expired
        lease: etcd deletes them in one revision), so an equal revision is applied.
        """
        if event.revision < self.revision:
            return StateChange()
        self.revision = max(self.revision, event.revision)
        parsed = parse_key(event.key)
        if parsed is None:
            return StateChange()
        kind, segs = parsed
        if event.kind == "put":
            return self._put(event.key, event.value)
        self._bad.discard(event.key)
        if kind == "site":
            return StateChange(self._sites.pop(segs[0], None) is not None)
        if kind == "load":
            return StateChange(self._loads.pop((segs[0], segs[1]), None) is not None)
        if self._config.pop(segs[0], None) is not None:
            return StateChange(False, ((segs[0], None),))
        return StateChange()

    def _put(self, key: str, value: bytes) -> StateChange:
        parsed = parse_key(key)
        if parsed is None:
            return StateChange()
        kind, segs = parsed
        if kind == "config":
            if self._config.get(segs[0]) == value:
                return StateChange()
            self._config[segs[0]] = value
            return StateChange(False, ((segs[0], value),))
        try:
            if kind == "site":
                rec = SiteRecord.from_json(value)
                if rec.site != segs[0]:
                    raise ValueError(f"record names site {rec.site!r}")
                self._bad.discard(key)
                changed = self._sites.get(rec.site) != rec
                self._sites[rec.site] = rec
                return StateChange(changed)
            load = QueueLoad.from_json(value)
            if (load.site, load.queue) != segs:
                raise ValueError(f"record names {load.site}/{load.queue}")
        except ValueError as exc:
            if key not in self._bad:  # once per key until it turns good again
                self._bad.add(key)
                log.warning("ignoring malformed %s: %s", key, exc)
            # a bad value replaces the previous one: drop what we had for the key
            if kind == "site":
                return StateChange(self._sites.pop(segs[0], None) is not None)
            return StateChange(self._loads.pop((segs[0], segs[1]), None) is not None)
        self._bad.discard(key)
        self._loads[segs[0], segs[1]] = load
        return StateChange(True)

    def view(self, connected: bool, lost_at: float | None) -> MeshView:
        """The remote part of the state as a frozen :class:`MeshView`."""
        sites = {s: r for s, r in self._sites.items() if s != self.me}
        loads = {k: v for k, v in self._loads.items() if k[0] in sites}
        return MeshView(
            me=self.me,
            sites=MappingProxyType(sites),
            loads=MappingProxyType(loads),
            revision=self.revision,
            connected=connected,
            lost_at=None if connected else lost_at,
        )

    def has_site(self, site: str) -> bool:
        """``site`` (local one included) is registered."""
        return site in self._sites


# --------------------------------------------------------------------------------------------
# policies (pure)


PolicyValidator = Callable[[str, dict[str, Any]], object]


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    """What offering one raw policy value did."""

    kind: Literal["applied", "rejected", "removed", "unchanged"]
    name: str
    value: object = None
    """The validated policy (``applied``), else ``None``."""
    reason: str = ""
    """Why it was rejected."""


class PolicyBook:
    """Last good validated policy per name. Pure.

    A value that is not a JSON object or that ``validator`` refuses (any exception; its text is
    the reason) is rejected and the last good one is kept. Without a validator the parsed dict
    itself is the policy. A deleted key removes the policy (the site falls back to its own
    defaults). The same raw bytes are evaluated once.
    """

    def __init__(self, validator: PolicyValidator | None = None) -> None:
        self._validator = validator
        self._good: dict[str, object] = {}
        self._seen: dict[str, bytes] = {}
        self.rejected = 0

    def policies(self) -> dict[str, object]:
        """A copy of the last good policy per name."""
        return dict(self._good)

    def offer(self, name: str, raw: bytes | None) -> PolicyOutcome:
        """Evaluate a new raw value for ``name`` (``None``: the key was deleted)."""
        if raw is None:
            self._seen.pop(name, None)
            if self._good.pop(name, None) is not None:
                return PolicyOutcome("removed", name)
            return PolicyOutcome("unchanged", name)
        if self._seen.get(name) == raw:
            return PolicyOutcome("unchanged", name, self._good.get(name))
        self._seen[name] = raw
        try:
            doc = _loads_obj(raw, f"policy {name!r}")
            value: object = doc if self._validator is None else self._validator(name, doc)
        except Exception as exc:
            self.rejected += 1
            return PolicyOutcome("rejected", name, None, f"{type(exc).__name__}: {exc}")
        self._good[name] = value
        return PolicyOutcome("applied", name, value)


async def publish_policy(
    client: EtcdClient,
    name: str,
    doc: dict[str, Any],
    *,
    validator: PolicyValidator | None = None,
) -> None:
    """HQ: write ``doc`` as policy ``name`` under ``/ccgw/config/<name>`` (sorted-key JSON).

    With ``validator`` the document is checked first (its exception propagates, nothing is
    written). Sites validate again on receipt and keep their last good policy if they refuse.
    """
    key = config_key(name)
    if not isinstance(doc, dict):
        raise TypeError("a policy document is a dict")
    if validator is not None:
        validator(name, doc)
    await client.put(key, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


# --------------------------------------------------------------------------------------------
# the asyncio adapter


class SiteRegistry:
    """Keeps this site registered in etcd, publishes its live load, watches the other sites.

    ``connect`` opens a fresh :class:`EtcdClient` (called again after each failure);
    ``load_source`` returns this site's queue figures (called every ``load_interval`` s; the
    ``site`` field is forced to ``me.site``). Figures that did not change are republished at
    least every ``load_heartbeat`` s (default ``10 * load_interval``) rather than every tick,
    to keep etcd's history small; liveness is the lease, not ``QueueLoad.ts``.

    ``on_view`` is called (coalesced, at most once per event-loop pass) after the view changes;
    ``on_policy(name, value)`` after a policy is applied (``value`` is what ``policy_validator``
    returned) or removed (``value`` is ``None``). Callback exceptions are logged, not raised.

    The lease is kept alive every ``ttl / 3`` s. Counters: ``reconnects`` (sessions
    re-established after a loss), ``policy_rejected``, ``lease_renewals`` (fresh leases taken
    because the old one expired while etcd stayed reachable).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[EtcdClient]],
        me: SiteRecord,
        *,
        ttl: float = 3.0,
        load_interval: float = 1.0,
        load_source: Callable[[], Iterable[QueueLoad]],
        on_view: Callable[[MeshView], None] | None = None,
        policy_validator: PolicyValidator | None = None,
        on_policy: Callable[[str, object], None] | None = None,
        backoff_max: float = 5.0,
        backoff_initial: float = 0.1,
        load_heartbeat: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl <= 0 or load_interval <= 0 or backoff_max <= 0 or backoff_initial <= 0:
            raise ValueError("ttl, load_interval and back-off times must be positive")
        self._connect = connect
        self.me = me
        self.ttl = ttl
        self.load_interval = load_interval
        self.load_heartbeat = 10 * load_interval if load_heartbeat is None else load_heartbeat
        self.backoff_max = backoff_max
        self.backoff_initial = min(backoff_initial, backoff_max)
        self._load_source = load_source
        self._on_view = on_view
        self._on_policy = on_policy
        self._clock = clock
        self._state = MeshState(me.site)
        self._book = PolicyBook(policy_validator)
        self._view: MeshView | None = None
        self._connected = False
        self._lost_at: float | None = None
        self._warned = False
        self._ever_connected = False
        self._lease: int | None = None
        self._client: EtcdClient | None = None
        self._published: dict[str, tuple[tuple[object, ...], float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()
        self._changed = asyncio.Event()
        self._notify_pending = False
        self._revoke_on_stop = True
        self._lease_lock = asyncio.Lock()
        self._load_source_failed = False
        self._session_live = False
        self.reconnects = 0
        self.lease_renewals = 0

    # ---- public state

    @property
    def connected(self) -> bool:
        """True while a session with etcd is live."""
        return self._connected

    @property
    def policy_rejected(self) -> int:
        """Policy values refused by the validator (or not JSON objects) so far."""
        return self._book.rejected

    @property
    def lease(self) -> int | None:
        """The current lease id (``None`` before the first registration)."""
        return self._lease

    @property
    def stale_s(self) -> float:
        """:meth:`MeshView.stale_s` of the current view, now."""
        return self.view().stale_s(self._clock())

    def view(self) -> MeshView:
        """The current snapshot of the other sites (see :class:`MeshView`); never blocks."""
        if self._view is None:
            self._view = self._state.view(self._connected, self._lost_at)
        return self._view

    def policies(self) -> dict[str, object]:
        """Last good validated policy per name."""
        return self._book.policies()

    async def wait_until(self, predicate: Callable[[MeshView], bool], timeout: float) -> MeshView:
        """The first view (current or later) for which ``predicate`` holds; :class:`TimeoutError`
        after ``timeout`` s."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                view = self.view()
                if predicate(view):
                    return view
                await changed.wait()

    # ---- lifecycle

    async def start(self, timeout: float = 5.0) -> None:
        """Start the background session; returns after the first attempt to reach etcd
        (success or failure, at most ``timeout`` s). The site serves either way."""
        if self._task is not None:
            raise RuntimeError("registry already started")
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"mesh-registry-{self.me.site}"
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._first_attempt.wait()

    async def stop(self, *, revoke: bool = True) -> None:
        """Stop. ``revoke`` (default) revokes the lease so the site leaves the mesh at once;
        ``revoke=False`` just drops the connection (the site vanishes when its TTL passes, as
        after a crash)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._revoke_on_stop = revoke
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # ---- internals

    def _mark_changed(self) -> None:
        self._view = None
        self._changed.set()
        self._changed = asyncio.Event()
        if self._on_view is not None and not self._notify_pending:
            self._notify_pending = True
            asyncio.get_running_loop().call_soon(self._notify_view)

    def _notify_view(self) -> None:
        self._notify_pending = False
        if self._on_view is None:
            return
        try:
            self._on_view(self.view())
        except Exception:
            log.exception("on_view callback failed")

    def _apply(self, change: StateChange) -> None:
        for name, raw in change.config:
            out = self._book.offer(name, raw)
            if out.kind == "rejected":
                log.warning("policy %r rejected, keeping the last good one: %s", name, out.reason)
            elif out.kind in ("applied", "removed"):
                log.info("policy %r %s", name, out.kind)
                if self._on_policy is not None:
                    try:
                        self._on_policy(name, out.value)
                    except Exception:
                        log.exception("on_policy callback failed for %r", name)
        if change.view_changed:
            self._mark_changed()

    def _lost(self, exc: BaseException) -> None:
        was = self._connected
        self._connected = False
        if was:
            self._lost_at = self._clock()
            self._mark_changed()
        if not self._warned:
            self._warned = True
            log.warning(
                "etcd unreachable (%s); site %s keeps serving its own callers with the last "
                "mesh view, retrying with back-off up to %.1fs",
                exc,
                self.me.site,
                self.backoff_max,
            )
        else:
            log.debug("etcd still unreachable: %s", exc)

    async def _run(self) -> None:
        delay = self.backoff_initial
        try:
            while True:
                client: EtcdClient | None = None
                self._session_live = False
                try:
                    client = await self._connect()
                    self._client = client
                    await self._session(client)
                except (EtcdUnavailable, LeaseNotFound, TimeoutError) as exc:
                    self._lost(exc)
                except Exception as exc:  # a bug or a surprise from the client: same recovery
                    log.debug("mesh session failed", exc_info=True)
                    self._lost(exc)
                # not in `finally`: on cancellation _shutdown still needs the client
                self._client = None
                if client is not None:
                    await self._close(client)
                self._first_attempt.set()
                if self._session_live:
                    delay = self.backoff_initial
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
        except asyncio.CancelledError:
            await self._shutdown()
            raise

    async def _shutdown(self) -> None:
        client = self._client
        self._client = None
        if client is not None:
            if self._revoke_on_stop and self._lease is not None and self._connected:
                try:
                    async with asyncio.timeout(1.5):
                        await client.revoke_lease(self._lease)
                except Exception as exc:
                    log.warning("could not revoke lease at stop (%s); it expires by itself", exc)
            await self._close(client)
        self._connected = False
        self._lease = None

    @staticmethod
    async def _close(client: EtcdClient) -> None:
        try:
            async with asyncio.timeout(2.0):
                await client.close()
        except Exception:
            log.debug("closing etcd client failed", exc_info=True)

    async def _register(self, client: EtcdClient) -> int:
        """Fresh lease; the site record and current load under it."""
        lease = await client.grant_lease(self.ttl)
        await client.put(site_key(self.me.site), self.me.to_json().encode(), lease=lease)
        self._published.clear()
        await self._publish_loads(client, lease)
        return lease

    async def _session(self, client: EtcdClient) -> None:
        old_lease = self._lease
        lease = await self._register(client)
        items, revision = await client.get_prefix(ROOT_PREFIX)
        self._lease = lease
        if old_lease is not None and old_lease != lease:
            # the keys we re-put moved to the new lease; this drops whatever is left on the
            # old one (etcd restores leases with a full TTL after a restart)
            with contextlib.suppress(EtcdUnavailable, LeaseNotFound):
                await client.revoke_lease(old_lease)
        change = self._state.reset(items, revision)
        if not self._connected:
            if self._ever_connected:
                self.reconnects += 1
                log.info(
                    "etcd reachable again; site %s re-registered, caught up to revision %d",
                    self.me.site,
                    revision,
                )
            else:
                log.info("site %s registered in etcd (revision %d)", self.me.site, revision)
        self._connected = True
        self._ever_connected = True
        self._session_live = True
        self._warned = False
        self._lost_at = None
        self._first_attempt.set()
        self._apply(change)
        self._mark_changed()
        tasks = [
            asyncio.create_task(self._keepalive_loop(client)),
            asyncio.create_task(self._load_loop(client)),
            asyncio.create_task(self._watch_loop(client, revision + 1)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                exc = t.exception()
                if exc is not None:
                    raise exc
            raise EtcdUnavailable("mesh session ended")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _renew(self, client: EtcdClient, expired: int) -> int:
        """The lease ``expired`` is gone while etcd answers (we stalled longer than the TTL):
        register again under a fresh lease."""
        async with self._lease_lock:
            if self._lease != expired:
                assert self._lease is not None
                return self._lease
            log.warning("lease of site %s expired; registering again", self.me.site)
            self._lease = await self._register(client)
            self.lease_renewals += 1
            return self._lease

    async def _keepalive_loop(self, client: EtcdClient) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            lease = self._lease
            assert lease is not None
            try:
                await client.refresh_lease(lease)
            except LeaseNotFound:
                await self._renew(client, lease)

    async def _load_loop(self, client: EtcdClient) -> None:
        while True:
            await asyncio.sleep(self.load_interval)
            lease = self._lease
            assert lease is not None
            try:
                await self._publish_loads(client, lease)
            except LeaseNotFound:
                await self._renew(client, lease)

    def _collect_loads(self) -> list[QueueLoad] | None:
        try:
            loads = [
                ld if ld.site == self.me.site else dataclasses.replace(ld, site=self.me.site)
                for ld in self._load_source()
            ]
        except Exception:
            if not self._load_source_failed:
                log.exception("load_source failed; not publishing load this round")
            self._load_source_failed = True
            return None
        self._load_source_failed = False
        return loads

    async def _publish_loads(self, client: EtcdClient, lease: int) -> None:
        loads = self._collect_loads()
        if loads is None:
            return
        now = self._clock()
        current: set[str] = set()
        for ld in loads:
            current.add(ld.queue)
            figures = ld.figures()
            prev = self._published.get(ld.queue)
            if prev is not None and prev[0] == figures and now - prev[1] < self.load_heartbeat:
                continue
            await client.put(load_key(self.me.site, ld.queue), ld.to_json().encode(), lease=lease)
            self._published[ld.queue] = (figures, now)
        for queue in sorted(set(self._published) - current):
            await client.delete(load_key(self.me.site, queue))
            del self._published[queue]

    async def _watch_loop(self, client: EtcdClient, start_revision: int) -> None:
        async for event in client.watch_prefix(ROOT_PREFIX, start_revision):
            self._apply(self._state.apply(event))
        raise EtcdUnavailable("watch ended")
