"""The multi-site parts of a site's TOML: ``[mesh]``, ``[hq]`` and a queue's ``overflow`` table.

Kept apart from :mod:`gateway.config` (which reads everything else) and loaded by it; the rules
are the same: frozen dataclasses, every default documented, an error names the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from gateway.config import HostPort, parse_host_port

if TYPE_CHECKING:
    from gateway.config import _Table

__all__ = [
    "EXPORT_KINDS",
    "HqConfig",
    "MeshConfig",
    "OverflowConfig",
    "parse_hq",
    "parse_mesh",
    "parse_overflow",
]

EXPORT_KINDS: Final = ("cdr", "interaction", "voicemail", "callback", "customer")
"""Record kinds a site can send to HQ."""

CUSTOMER_EXPORT_DEFAULT: Final = (
    "phones",
    "customer_id",
    "region",
    "name",
    "tier",
    "named_agent",
    "notes",
    "vip",
)
_SITE_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")
_DB_RE: Final = re.compile(r"(sqlite:.+|postgres(ql)?://.+)")


@dataclass(frozen=True, slots=True)
class OverflowConfig:
    """``[[queues]] overflow = {...}``: when a waiting caller moves to another site, and where.

    Any one condition that is set and met sends the caller; none set means never.
    """

    max_ewt: float | None = None
    """Overflow when this queue's estimated wait exceeds this many seconds; default unset."""
    max_waiting: int | None = None
    """Overflow when more than this many callers wait here; default unset."""
    max_wait: float | None = None
    """Overflow a caller who has waited longer than this many seconds; default unset."""
    when_no_skill: bool = False
    """Overflow when no logged-in agent has the skills the call needs; default false."""
    when_closed: bool = False
    """Overflow when the schedule named by ``hours`` says the site is closed; default false."""
    hours: str | None = None
    """A ``[schedules]`` name: the site's opening hours for ``when_closed``; required with it."""
    targets: tuple[str, ...] = ("*",)
    """Site names in preference order, or ``"*"`` for any live site with the queue; default
    ``["*"]``. Only sites with a ``[[trunks]]`` entry whose ``site`` is that name can be reached."""
    target_queue: str | None = None
    """The queue at the target site; default the same name as this queue."""
    max_hops: int = 1
    """A call that already crossed this many sites never moves again; default 1."""
    min_gain: float = 0.0
    """Move only when the target's expected wait is this many seconds shorter; default 0."""

    @property
    def enabled(self) -> bool:
        """Whether any condition is set."""
        return (
            self.max_ewt is not None
            or self.max_waiting is not None
            or self.max_wait is not None
            or self.when_no_skill
            or self.when_closed
        )


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """``[mesh]``: how this site joins the others (etcd registry, HQ sync, call handoff).

    Without ``etcd`` and ``hq`` the site runs alone (every other key is then unused).
    """

    etcd: tuple[str, ...] = ()
    """etcd v3 client endpoints, ``host:port``; default none (no registry, no overflow)."""
    lease_ttl: float = 3.0
    """Seconds the site's registry lease lives without a keep-alive; default 3 (a dead site
    leaves routing within this time)."""
    load_interval: float = 1.0
    """Seconds between live-load publications; default 1."""
    handoff_listen: HostPort | None = None
    """``ip:port`` of this site's gRPC handoff server (other sites reserve capacity here; port 0
    = a free one, published in etcd); default none (the site accepts no overflow)."""
    hq: HostPort | None = None
    """``ip:port`` of the HQ service; default none (no sync, no look-up)."""
    pki: str | None = None
    """Folder with ``ca.pem`` and ``<site>.pem`` / ``<site>-key.pem`` (``ccgw certs`` makes
    them): gRPC to HQ and between sites then uses mutual TLS. Relative to the config file;
    default none (plain gRPC, loopback tests only)."""
    lookup_budget: float = 0.05
    """Seconds a call may wait for HQ's customer look-up; default 0.05."""
    reserve_timeout: float = 0.3
    """Seconds to wait for a target site's handoff reservation; default 0.3."""
    reservation_ttl: float = 10.0
    """Seconds a reservation granted to another site is held for its INVITE; default 10."""
    path_cost: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """Site name → cost of the path to it (breaks ties between equally good targets); default 1
    for every site."""
    sync_batch: int = 500
    """Outbox entries per batch sent to HQ; default 500."""
    export: tuple[str, ...] = EXPORT_KINDS
    """Record kinds sent to HQ; default all of ``cdr``, ``interaction``, ``voicemail``,
    ``callback``, ``customer``. Others stay at the site."""
    customer_fields: tuple[str, ...] = CUSTOMER_EXPORT_DEFAULT
    """Customer-record fields sent to HQ; default all. ``customer_id`` is always sent."""
    etcd_tls: bool = False
    """true: talk to etcd over TLS with this site's certificate from ``pki`` (etcd's
    ``--client-cert-auth``), trusting only the mesh CA (etcd's certificate comes from it too:
    ``ccgw certs --site etcd:<ip>``); default false (plain gRPC: a private network only)."""
    etcd_username: str | None = None
    """An etcd user (etcd ``--auth`` with roles), with ``etcd_password``; default none."""
    etcd_password: str | None = field(default=None, repr=False)
    """Its password; env ``CCGW_ETCD_PASSWORD`` wins."""

    @property
    def enabled(self) -> bool:
        """Whether the site takes part in a mesh at all."""
        return bool(self.etcd) or self.hq is not None


@dataclass(frozen=True, slots=True)
class HqConfig:
    """``[hq]``: the HQ service (``ccgw hq``), present only in HQ's file."""

    listen: HostPort
    """Required ``ip:port`` of the gRPC service."""
    database: str
    """Required: ``sqlite:<path>`` (relative to the config file) or ``postgresql://...``."""
    pki: str | None = None
    """As ``mesh.pki``: mutual TLS with every site; default none (plain gRPC)."""
    name: str = "hq"
    """Certificate name of the service; default ``hq``."""
    http: HostPort | None = None
    """``ip:port`` of the service's ``/healthz``, ``/metrics`` and REST API (customers,
    published policy; port 0 = a free one); default none (no HTTP). Not ``[http]``: that is HQ's
    site gateway, whose ``api_token`` / ``api_read_token`` guard this API too."""


def _opt_float(t: _Table, name: str) -> float | None:
    raw: float | None = t.value(name, float, None)
    if raw is not None and not 0 < raw < float("inf"):
        raise t.error(name, f"{raw:g} must be a number of seconds greater than 0")
    return raw


def _host_port(t: _Table, name: str, *, any_port: bool = False) -> HostPort | None:
    raw: str | None = t.string(name, None)
    if raw is None:
        return None
    if any_port and raw.endswith(":0"):  # a free port chosen at start
        return HostPort(parse_host_port(raw[:-2] + ":1").host, 0)
    try:
        return parse_host_port(raw)
    except ValueError as exc:
        raise t.error(name, f"{raw!r} is not ip:port ({exc})") from None


def _folder(t: _Table, name: str, base_dir: Path) -> str | None:
    raw: str | None = t.string(name, None)
    if raw is None:
        return None
    if not raw:
        raise t.error(name, "must not be empty")
    path = Path(raw).expanduser()
    return str((path if path.is_absolute() else base_dir / path).resolve())


def parse_overflow(t: _Table) -> OverflowConfig:
    """A queue's ``overflow`` table."""

    def target(text: str) -> str:
        if text != "*" and not _SITE_RE.fullmatch(text):
            raise ValueError("not a site name or '*'")
        return text

    max_waiting_raw: int | None = t.value("max_waiting", int, None)
    if max_waiting_raw is not None and max_waiting_raw < 0:
        raise t.error("max_waiting", f"{max_waiting_raw} must not be negative")
    target_queue = t.string("target_queue", None, pattern=_NAME_RE, what="a queue name")
    cfg = OverflowConfig(
        max_ewt=_opt_float(t, "max_ewt"),
        max_waiting=max_waiting_raw,
        max_wait=_opt_float(t, "max_wait"),
        when_no_skill=t.value("when_no_skill", bool, False),
        when_closed=t.value("when_closed", bool, False),
        hours=t.string("hours", None, pattern=_NAME_RE, what="a schedule name"),
        targets=t.items("targets", target, ("*",), what="a site name"),
        target_queue=target_queue,
        max_hops=t.integer("max_hops", 1, 0, 8),
        min_gain=t.number("min_gain", 0.0, 0.0),
    )
    if not cfg.targets:
        raise t.error("targets", "must not be empty (leave it out for any site)")
    if cfg.when_closed and cfg.hours is None:
        raise t.error("hours", "is required with when_closed: the schedule of opening hours")
    t.done()
    return cfg


ETCD_PASSWORD_ENV: Final = "CCGW_ETCD_PASSWORD"


def parse_mesh(t: _Table, base_dir: Path, env: Mapping[str, str] | None = None) -> MeshConfig:
    """The ``[mesh]`` table."""

    def endpoint(text: str) -> str:
        return str(parse_host_port(text))

    def kind(text: str) -> str:
        if text not in EXPORT_KINDS:
            raise ValueError(f"not one of {', '.join(EXPORT_KINDS)}")
        return text

    def customer_field(text: str) -> str:
        if text not in CUSTOMER_EXPORT_DEFAULT:
            raise ValueError(f"not one of {', '.join(CUSTOMER_EXPORT_DEFAULT)}")
        return text

    costs_t = t.table("path_cost")
    costs: dict[str, float] = {}
    for site in costs_t.names():
        if not _SITE_RE.fullmatch(site):
            raise costs_t.error(site, "is not a site name")
        costs[site] = costs_t.number(site, 1.0, 0.0)
    costs_t.done()
    fields = t.items("customer_fields", customer_field, CUSTOMER_EXPORT_DEFAULT)
    if "customer_id" not in fields:
        fields = ("customer_id", *fields)
    pki = _folder(t, "pki", base_dir)
    etcd_tls = t.value("etcd_tls", bool, False)
    if etcd_tls and pki is None:
        raise t.error("etcd_tls", "needs pki (this site's certificate and the mesh CA)")
    username = t.string("etcd_username", None)
    password = t.string("etcd_password", None)
    password = (env or {}).get(ETCD_PASSWORD_ENV) or password
    if (username is None) != (password is None) or username == "" or password == "":
        raise t.error("etcd_username", "etcd_username and etcd_password go together, non-empty")
    cfg = MeshConfig(
        etcd=t.items("etcd", endpoint, (), what="host:port"),
        lease_ttl=t.number("lease_ttl", 3.0, 1.0, 60.0),
        load_interval=t.number("load_interval", 1.0, 0.1, 60.0),
        handoff_listen=_host_port(t, "handoff_listen", any_port=True),
        hq=_host_port(t, "hq"),
        pki=pki,
        lookup_budget=t.number("lookup_budget", 0.05, 0.001, 5.0),
        reserve_timeout=t.number("reserve_timeout", 0.3, 0.01, 10.0),
        reservation_ttl=t.number("reservation_ttl", 10.0, 1.0, 600.0),
        path_cost=MappingProxyType(costs),
        sync_batch=t.integer("sync_batch", 500, 1, 10_000),
        export=t.items("export", kind, EXPORT_KINDS, what="a record kind"),
        customer_fields=fields,
        etcd_tls=etcd_tls,
        etcd_username=username,
        etcd_password=password,
    )
    t.done()
    return cfg


def etcd_access(mesh: MeshConfig, name: str) -> Any:
    """The :class:`gateway.mesh.etcd.EtcdAccess` for ``mesh`` as the site (or HQ) ``name``."""
    from gateway.mesh.etcd import EtcdAccess

    credentials = None
    if mesh.etcd_tls and mesh.pki is not None:
        from gateway.mesh.tls import channel_credentials

        credentials = channel_credentials(Path(mesh.pki), name)
    return EtcdAccess(credentials, mesh.etcd_username, mesh.etcd_password)


def parse_hq(t: _Table, base_dir: Path) -> HqConfig:
    """The ``[hq]`` table."""
    listen = _host_port(t, "listen", any_port=True)
    if listen is None:
        raise t.error("listen", "is required: the gRPC service's ip:port")
    database: str = t.string("database", None)
    if database is None:
        raise t.error("database", "is required: sqlite:<path> or postgresql://...")
    if not _DB_RE.fullmatch(database):
        raise t.error("database", f"{database!r} is neither sqlite:<path> nor postgresql://...")
    if database.startswith("sqlite:") and not database.startswith("sqlite:///"):
        raw = database.removeprefix("sqlite:")
        path = Path(raw).expanduser()
        database = "sqlite:///" + str((path if path.is_absolute() else base_dir / path).resolve())
        database = database.replace("sqlite:////", "sqlite:///")
    cfg = HqConfig(
        listen=listen,
        database=database,
        pki=_folder(t, "pki", base_dir),
        name=t.string("name", "hq", pattern=_SITE_RE, what="a certificate name"),
        http=_host_port(t, "http", any_port=True),
    )
    t.done()
    return cfg


POLICIES: Final = ("overflow", "service", "prompts")
"""Policy names HQ may publish under ``/ccgw/config/`` (``docs/mesh.md``)."""

SERVICE_RULES: Final = (
    "ring_timeout",
    "wrapup",
    "announce_every",
    "announce_position",
    "vip_priority",
    "sticky_s",
    "service_level_s",
    "short_abandon_s",
)
"""Queue keys the ``service`` policy may set (the same service rules at every site)."""


def parse_service_rules(t: _Table) -> dict[str, object]:
    """One queue's table of the ``service`` policy: a subset of :data:`SERVICE_RULES`, each
    checked as in ``[[queues]]``."""
    out: dict[str, object] = {}
    checks: dict[str, Callable[[], object]] = {
        "ring_timeout": lambda: t.positive("ring_timeout", 15.0),
        "wrapup": lambda: t.number("wrapup", 10.0, 0.0),
        "announce_every": lambda: t.number("announce_every", 30.0, 10.0),
        "announce_position": lambda: t.value("announce_position", bool, True),
        "vip_priority": lambda: t.integer("vip_priority", 10, 0, 1000),
        "sticky_s": lambda: t.number("sticky_s", 30.0, 0.0),
        "service_level_s": lambda: t.positive("service_level_s", 20.0),
        "short_abandon_s": lambda: t.number("short_abandon_s", 5.0, 0.0),
    }
    for key in SERVICE_RULES:
        if t.has(key):
            out[key] = checks[key]()
    t.done()
    return out


def parse_policy(name: str, doc: dict[str, object]) -> dict[str, object]:
    """Validate a policy HQ publishes for every site (``/ccgw/config/<name>``).

    ``overflow``: queue name → an ``overflow`` table as in a site's ``[[queues]]`` (an
    :class:`OverflowConfig`); it replaces that queue's own overflow rules at every site that has
    the queue. ``service``: queue name → some of :data:`SERVICE_RULES` (ring timeout, wrap-up,
    announcements, VIP priority, sticky time, service-level and short-abandon thresholds) that
    override the site's own. ``prompts``: ``{"language": "en" | "cmn"}``, the prompt set calls
    start in (an IVR may still switch). ``ValueError`` (a
    :class:`~gateway.config.ConfigError` naming the key) when anything is wrong.
    """
    from gateway.config import ConfigError, _Table

    source = f"/ccgw/config/{name}"
    if name not in POLICIES:
        raise ConfigError(source, "", f"unknown policy (known: {', '.join(POLICIES)})")
    if name == "prompts":  # {"language": "cmn"}: the prompt set every site speaks by default
        from gateway.config import CC_LANGUAGES, _choice

        t = _Table(doc, "", source)
        language = _choice(t, "language", "en", CC_LANGUAGES)
        t.done()
        return {"language": language}
    out: dict[str, object] = {}
    for queue, table in doc.items():
        if not _NAME_RE.fullmatch(queue):
            raise ConfigError(source, queue, "is not a queue name ([a-z0-9_-]+)")
        t = _Table(table, queue, source)
        out[queue] = parse_overflow(t) if name == "overflow" else parse_service_rules(t)
    return out
