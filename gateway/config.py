"""Site configuration: ``sites/<site>.toml`` → frozen dataclasses, validated once at start.

Every field's default is documented beside it; ``docs/config.md`` is the reference. Any unknown key,
wrong type or bad value raises :class:`ConfigError`, whose message names the file and the dotted key
path (``trunks[0].peers[1]``) and says why.

This module imports nothing from the rest of ``gateway``: every layer may import it.

Run ``python -m gateway.config sites/shanghai.toml`` to check a file: it prints ``ok`` or the error
(and exits 1).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import secrets
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, TypeVar

if TYPE_CHECKING:
    from gateway.config_mesh import HqConfig, MeshConfig, OverflowConfig

__all__ = [
    "API_TOKEN_ENV",
    "AUTH_SECRET_ENV",
    "FEATURE_CODES",
    "JOIN_RULES",
    "LEAVE_RULES",
    "QUEUE_STRATEGIES",
    "AgentConfig",
    "CcConfig",
    "ConfigError",
    "Destination",
    "DialplanConfig",
    "GroupConfig",
    "HostPort",
    "HttpConfig",
    "MediaConfig",
    "QueueConfig",
    "SecurityConfig",
    "SipConfig",
    "SiteConfig",
    "SiteInfo",
    "StoreConfig",
    "TrunkConfig",
    "load_config",
    "parse_config",
    "parse_destination",
    "parse_host_port",
]

AUTH_SECRET_ENV: Final = "CCGW_AUTH_SECRET"
API_TOKEN_ENV: Final = "CCGW_API_TOKEN"
"""Environment variable that, when set, overrides ``[sip] auth_secret``."""

_T = TypeVar("_T")


class ConfigError(ValueError):
    """A configuration file is unusable; ``str(err)`` is ``"<file>: <key path>: <why>"``."""

    def __init__(self, source: str, key: str, why: str) -> None:
        self.source = source
        self.key = key
        self.why = why
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {why}")


# ---------------------------------------------------------------------------------------------
# Value types


class HostPort(NamedTuple):
    """An ``ip:port`` pair (``[v6]:port`` for IPv6); ``host`` is a normalised IP literal."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(text: str) -> HostPort:
    """Parse ``"1.2.3.4:5060"`` or ``"[::1]:5060"``; raise ``ValueError`` with the reason."""
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError("IPv6 peers are written [addr]:port")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError("missing :port")
        if ":" in host:
            raise ValueError("IPv6 peers are written [addr]:port")
    host = _ip_literal(host)
    if not port_text.isdigit():
        raise ValueError("port is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError("port out of range")
    return HostPort(host, port)


def _ip_literal(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address literal") from None


DestinationKind = Literal["agent", "group", "queue", "flow", "voicemail"]
_DESTINATION_KINDS: Final = ("agent", "group", "queue", "flow", "voicemail")


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a call goes: ``agent:<extension>``, ``group:<name>``, ``queue:<name>``,
    ``flow:<ivr flow>`` or ``voicemail:<box>``."""

    kind: DestinationKind
    target: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"


def parse_destination(text: str) -> Destination:
    """Parse ``"agent:1001"`` / ``"group:sales"`` / ``"queue:sales"`` / ``"flow:main"`` /
    ``"voicemail:general"``; raise ``ValueError`` with the reason.

    Only the form is checked here; whether the target exists is a whole-file cross-check.
    """
    kind, sep, target = text.partition(":")
    if not sep or not target:
        raise ValueError("destination is written kind:target, e.g. 'agent:1001' or 'queue:sales'")
    if kind == "agent":
        if not _EXTENSION_RE.fullmatch(target):
            raise ValueError(f"agent extension {target!r} is not 1-10 digits")
        return Destination("agent", target)
    if kind in ("group", "queue"):
        if not _NAME_RE.fullmatch(target):
            raise ValueError(f"{kind} name {target!r} is not [a-z0-9_-]+")
        return Destination("group" if kind == "group" else "queue", target)
    if kind == "flow":
        if not _FLOW_NAME_RE.fullmatch(target):
            raise ValueError(f"{target!r} is not a flow name ({_FLOW_NAME_WHAT})")
        return Destination("flow", target)
    if kind == "voicemail":
        if not _BOX_RE.fullmatch(target):
            raise ValueError(f"voicemail box {target!r} is not [a-z0-9_-]+")
        return Destination("voicemail", target)
    raise ValueError(f"unknown destination kind {kind!r} (one of {', '.join(_DESTINATION_KINDS)})")


# ---------------------------------------------------------------------------------------------
# Sections

_SITE_NAME_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")
_SKILL_RE: Final = re.compile(r"[a-z0-9_-]+")
_BOX_RE: Final = re.compile(r"[a-z0-9_-]+")
_FLOW_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")  # as gateway.cc.ivr accepts
_FLOW_NAME_WHAT: Final = "a letter or '_', then letters, digits, '_' or '-'"
_FEATURE_CODE_RE: Final = re.compile(r"\*[0-9]{1,4}")
_URL_RE: Final = re.compile(r"https?://[^\s/?#]+(?:[/?#]\S*)?")
_EXTENSION_RE: Final = re.compile(r"[0-9]{1,10}")
_NUMBER_RE: Final = re.compile(r"\+?[0-9]{2,20}")  # a dialled number as the carrier sends it
_PREFIX_RE: Final = re.compile(r"\+[0-9]{0,15}")  # E.164 prefix, "+" alone = everything
_DOMAIN_RE: Final = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
)
_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+(?:\[\d+\])?")
TRANSPORTS: Final = ("udp", "tcp", "tls")
CODECS: Final = ("PCMU", "PCMA")
QueueStrategy = Literal["ringall", "linear", "rrmemory", "longest_idle", "fewest_calls", "random"]
QUEUE_STRATEGIES: Final = (
    "ringall", "linear", "rrmemory", "longest_idle", "fewest_calls", "random",
)  # fmt: skip
"""The names of ``gateway.cc.acd.Strategy`` (Asterisk app_queue's)."""
JoinRule = Literal["always", "if_logged_in", "if_available"]
JOIN_RULES: Final = ("always", "if_logged_in", "if_available")
LeaveRule = Literal["never", "if_none_logged_in", "if_none_available"]
LEAVE_RULES: Final = ("never", "if_none_logged_in", "if_none_available")
CC_LANGUAGES: Final = ("en", "cmn")
FEATURE_CODES: Final = ("login_code", "logout_code", "pause_code", "unpause_code")
"""The ``[cc]`` keys that hold agent feature codes."""
_FALLBACK_KINDS: Final = ("voicemail", "queue", "agent")


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """``[site]``: who this gateway is."""

    name: str
    """Required. ``[a-z0-9-]+``; the site's identity in etcd, CDRs and the outbox."""
    region: str = ""
    """Free text, e.g. ``"cn-east"``; default empty."""
    description: str = ""
    """Free text; default empty."""


@dataclass(frozen=True, slots=True)
class SipConfig:
    """``[sip]``: the SIP edge. Timer values are seconds (RFC 3261 §17.1.1.1 and Table 4)."""

    listen: str = "127.0.0.1"
    """IP literal to bind; default ``127.0.0.1``."""
    port: int = 5060
    """Port for every transport; default 5060. 0 picks a free port (tests)."""
    transports: tuple[str, ...] = ("udp", "tcp")
    """Subset of ``udp``, ``tcp``, ``tls``; default ``udp`` and ``tcp``. ``tls`` is SIP over
    mutual TLS between sites (RFC 3261 §26.2): it needs ``mesh.pki`` (this site's certificate
    and the mesh CA), and every client must show a certificate from that CA."""
    advertise: str = ""
    """IP literal put in Via, Contact and the site's mesh record instead of ``listen``: the
    public address of a site behind NAT (the router forwards the SIP port to ``listen``);
    default ``listen``."""
    tls_port: int = 5061
    """Port of the TLS listener; default ``port`` + 1 (5061), or any free port when ``port``
    is 0."""
    domain: str = ""
    """SIP domain of the agents' AORs; default the site name."""
    realm: str = ""
    """Digest realm (RFC 3261 §22.1); default ``domain``."""
    user_agent: str = "ccgw/0.1"
    """User-Agent / Server header value; default ``ccgw/0.1``."""
    T1: float = 0.5
    """RFC 3261 T1, RTT estimate; default 0.5 s."""
    T2: float = 4.0
    """RFC 3261 T2, max non-INVITE retransmit interval; default 4.0 s."""
    T4: float = 5.0
    """RFC 3261 T4, max time a message stays in the network; default 5.0 s."""
    max_forwards: int = 70
    """Max-Forwards on requests we originate (RFC 3261 §8.1.1.6); default 70."""
    options_ping_interval: float = 30.0
    """OPTIONS keep-alive to registered phones, seconds; default 30; 0 disables."""
    nonce_lifetime: float = 300.0
    """Seconds a digest nonce stays valid; default 300."""
    auth_secret: str = field(default="", repr=False)
    """Key for stateless nonces. Env ``CCGW_AUTH_SECRET`` wins, then the file, else random per
    start (nonces then do not survive a restart)."""


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """``[media]``: the RTP relay."""

    host: str = ""
    """IP literal RTP binds to and advertises in SDP; default ``sip.listen``."""
    rtp_port_min: int = 20000
    """First RTP port (even, RFC 3550 §11); default 20000."""
    rtp_port_max: int = 29999
    """Last port of the range (RTCP may use it); default 29999."""
    stall_timeout: float = 30.0
    """Seconds without RTP from either side before the call is hung up; default 30; 0 disables."""
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    """Offered/accepted codecs in preference order; subset of PCMU, PCMA; default both."""
    advertise: str = ""
    """IP literal put in SDP (``c=``) instead of ``host``: the public address behind NAT (the
    router forwards the RTP range); default ``sip.advertise``, else ``host``."""


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """``[http]``: /healthz, /metrics and (later) the REST API."""

    listen: str = "127.0.0.1"
    """IP literal to bind; default ``127.0.0.1``."""
    port: int = 8080
    """TCP port; default 8080; 0 picks a free port."""
    api_token: str = field(default="", repr=False)
    """Bearer token every ``/api/`` request must carry (RFC 6750); env ``CCGW_API_TOKEN``
    wins. Default none: the API is open, which is allowed only on a loopback ``listen``."""
    api_read_token: str = field(default="", repr=False)
    """A second token good for reads (GET) only, e.g. for a wallboard; default none."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """``[store]``: the site's SQLite database."""

    path: str = ""
    """Database file. Default ``var/<site>.db``. A relative path is resolved against the directory
    of the config file (so it does not depend on the working directory); ``:memory:`` is kept as is.
    Holds the resolved path after loading."""


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """``[security]``: flood limits and bans (toll-fraud guard)."""

    rate_window: float = 2.0
    """Seconds of the request-rate window; default 2."""
    rate_limit: int = 50
    """Requests per ``rate_window`` per source IP before it is dropped; default 50."""
    fail_window: float = 60.0
    """Seconds over which authentication failures are counted; default 60."""
    fail_limit: int = 5
    """Failures per ``fail_window`` per source IP before a ban; default 5."""
    ban_time: float = 300.0
    """Seconds a banned source stays banned; default 300."""
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    """IPs or CIDR networks never rate-limited or banned; default none."""

    def is_trusted(self, ip: str) -> bool:
        """Whether ``ip`` falls in one of the ``trusted`` networks."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)


@dataclass(frozen=True, slots=True)
class TrunkConfig:
    """``[[trunks]]``: a carrier (or another site) we exchange calls with."""

    name: str
    """Required, unique, ``[a-z0-9_-]+``."""
    peers: tuple[HostPort, ...]
    """Required, non-empty ``ip:port`` list: traffic from these IPs is this trunk's inbound
    traffic; outbound calls go to the first."""
    transport: str = "udp"
    """Transport to the peers; one of ``sip.transports``; default ``udp``."""
    username: str | None = None
    """Credentials for answering the carrier's challenge (RFC 3261 §22.2); default none."""
    password: str | None = field(default=None, repr=False)
    """Required when ``username`` is set."""
    inbound_auth: bool = False
    """false (default): trust inbound calls by source address; true: challenge them, expecting
    ``username``/``password``."""
    dids: Mapping[str, Destination] = field(default_factory=lambda: MappingProxyType({}))
    """Dialled number → destination (``agent:1001``, ``group:sales``, ``queue:sales``,
    ``flow:main``, ``voicemail:general``); default empty."""
    default_destination: Destination | None = None
    """Destination of a dialled number not in ``dids``; default none (the call is rejected 404)."""
    cost: float = 0.0
    """Price per minute for least-cost routing, any currency unit; default 0."""
    prefixes: tuple[str, ...] = ("+",)
    """E.164 prefixes this trunk can reach; default ``["+"]`` (everything)."""
    site: str | None = None
    """Set on an inter-site trunk: the name of the site gateway at the far end (overflow calls
    and inter-site extension calls use it); default none (a carrier)."""
    extensions: tuple[str, ...] = ()
    """Extension prefixes that live at that site (``["3"]``: agents dialling 3xx reach HQ's
    agents through this trunk); only on an inter-site trunk; default none."""

    @property
    def outbound_peer(self) -> HostPort:
        """Where outbound calls on this trunk are sent (the first peer)."""
        return self.peers[0]

    def destination_for(self, dialled: str) -> Destination | None:
        """The destination for an inbound call to ``dialled``, or ``None``."""
        return self.dids.get(dialled, self.default_destination)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """``[[agents]]``: an agent and their phone's registration credentials."""

    extension: str
    """Required, unique, 1-10 digits; the user part of the agent's AOR and digest username."""
    password: str = field(repr=False)
    """Required, non-empty: digest password of the agent's phone."""
    name: str = ""
    """Display name; default empty."""
    max_contacts: int = 5
    """Most simultaneous registered contacts (phones) per agent; default 5."""
    skills: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Skill name (``[a-z0-9_-]+``) → level 1..10 (10 best), read-only; default none. Queues
    and IVR queue nodes require minimum levels of these."""


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """``[[groups]]``: agents that are rung together (ringall) or in order (hunt)."""

    name: str
    """Required, unique, ``[a-z0-9_-]+``."""
    members: tuple[str, ...]
    """Required, non-empty: agent extensions, each defined in ``[[agents]]``, no repeats."""
    number: str | None = None
    """Extension agents dial to reach the group; default none; must not clash with an agent."""
    strategy: Literal["ringall", "hunt"] = "ringall"
    """``ringall`` (default) or ``hunt`` (members in order)."""
    ring_timeout: float = 20.0
    """Seconds each attempt rings (hunt: per member); default 20."""


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """``[[queues]]``: a contact-centre queue (ACD): callers wait, agents are offered calls.

    Not :class:`gateway.cc.queue.QueueConfig` (the waiting line's own rules): the contact centre
    builds that, the ACD policy and the agent rules from this section.
    """

    name: str
    """Required, unique, ``[a-z0-9_-]+``; destinations and IVR queue nodes refer to it."""
    members: tuple[str, ...]
    """Required, non-empty: agent extensions, each defined in ``[[agents]]``, no repeats; the
    order is the ``linear`` / ``rrmemory`` order."""
    number: str | None = None
    """Extension agents dial to reach the queue; default none; must not clash with an agent's
    extension or a group's or another queue's number."""
    strategy: QueueStrategy = "longest_idle"
    """How an agent is chosen: ``ringall``, ``linear``, ``rrmemory``, ``longest_idle``,
    ``fewest_calls``, ``random``; default ``longest_idle``."""
    required_skills: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Skill → minimum level 1..10 every call in the queue needs; default none."""
    ring_timeout: float = 15.0
    """Seconds an offer rings an agent before it counts as unanswered; default 15."""
    wrapup: float = 10.0
    """After-call work, seconds, before the agent is offered the next call; default 10; 0 none."""
    max_no_answer: int = 3
    """Unanswered offers in a row before the agent is auto-paused; default 3; 0 never."""
    max_wait: float | None = None
    """Longest wait in the queue, seconds, before the caller goes to ``fallback``; default none
    (no limit)."""
    fallback: Destination | None = None
    """Where callers go when ``max_wait`` passes or ``leave_rule`` / ``join_rule`` turn them away:
    ``voicemail:<box>``, ``queue:<other>`` or ``agent:<ext>``; default none (voicemail in a box
    named after the queue)."""
    join_rule: JoinRule = "if_logged_in"
    """When a caller may join: ``always``, ``if_logged_in`` (default: some member logged in),
    ``if_available`` (some member available now)."""
    leave_rule: LeaveRule = "if_none_logged_in"
    """When waiting callers are sent to ``fallback``: ``never``, ``if_none_logged_in``
    (default), ``if_none_available``."""
    announce_position: bool = True
    """Tell waiting callers their position and expected wait; default true."""
    announce_every: float = 30.0
    """Seconds between announcements; default 30, at least 10."""
    music: str = "default"
    """Hold music: ``"default"`` (the packaged music) or a WAV file, relative to the config
    file's directory; holds the resolved path after loading."""
    service_level_s: float = 20.0
    """Service-level threshold: calls answered within it count as in service; default 20 s."""
    short_abandon_s: float = 5.0
    """Callers hanging up sooner are short abandons (not counted against the queue); default 5 s."""
    aht_s: float = 180.0
    """Average handle time the Erlang C wait estimate uses until there is history; default 180 s."""
    aging_s: float = 60.0
    """Seconds of waiting worth one priority step (aging, so nobody starves); default 60."""
    vip_priority: int = 10
    """Priority given to callers the customer record marks as VIP; default 10 (normal: 0)."""
    sticky_s: float = 30.0
    """Seconds a caller's named agent (last agent, account manager) is tried alone first;
    default 30; 0 disables."""
    best_skill_first: bool = False
    """Offer only to the eligible agents with the best skill score; default false."""
    overflow: OverflowConfig | None = None
    """``overflow = {...}``: when waiting callers move to another site
    (:class:`gateway.config_mesh.OverflowConfig`); default none (they never do)."""


@dataclass(frozen=True, slots=True)
class CcConfig:
    """``[cc]``: contact-centre settings shared by every queue and flow of the site."""

    language: Literal["en", "cmn"] = "en"
    """Language of prompts played outside an IVR flow (queue announcements, voicemail):
    ``en`` or ``cmn``; default ``en``."""
    prompts: str = ""
    """Folder of prompt WAVs (``<lang>/<id>.wav``), relative to the config file's directory;
    default empty: the packaged ``gateway/prompts``. Holds the resolved path after loading."""
    voicemail_dir: str = ""
    """Folder of voicemail recordings; default ``var/<site>-voicemail``, resolved like
    ``store.path``. Holds the resolved path after loading."""
    voicemail_max_s: float = 120.0
    """Longest voicemail message, seconds; default 120."""
    webhook: str | None = None
    """``http://`` or ``https://`` URL that contact-centre events are POSTed to; default none."""
    smtp: str | None = None
    """``host:port`` of an SMTP server: each voicemail is e-mailed (with its recording) to
    ``mail_to``; default none (no e-mail)."""
    mail_from: str = ""
    """Sender of those e-mails; default ``ccgw@<site>``."""
    mail_to: tuple[str, ...] = ()
    """Recipients of voicemail e-mails; required with ``smtp``."""
    login_code: str = "*45"
    """Feature code an agent dials to log in to their queues; default ``*45``."""
    logout_code: str = "*46"
    """Feature code to log out; default ``*46``."""
    pause_code: str = "*47"
    """Feature code to pause (no offers); default ``*47``."""
    unpause_code: str = "*48"
    """Feature code to unpause; default ``*48``."""

    @property
    def feature_codes(self) -> Mapping[str, str]:
        """Code → action (``login``, ``logout``, ``pause``, ``unpause``)."""
        return MappingProxyType(
            {
                self.login_code: "login",
                self.logout_code: "logout",
                self.pause_code: "pause",
                self.unpause_code: "unpause",
            }
        )


@dataclass(frozen=True, slots=True)
class DialplanConfig:
    """``[dialplan]``: what authenticated agents may dial out."""

    external_pattern: re.Pattern[str] = field(
        default_factory=lambda: re.compile(r"^\+?[0-9]{6,15}$")
    )
    """Regex (``re.search``) of numbers that go out to the trunk; default ``^\\+?[0-9]{6,15}$``."""
    outbound_trunk: str | None = None
    """Trunk name for external calls; default the first ``[[trunks]]``, none if no trunks."""
    no_answer_timeout: float = 30.0
    """Seconds an outbound or internal call rings before it is cancelled; default 30."""

    def is_external(self, number: str) -> bool:
        """Whether an agent dialling ``number`` goes out to the trunk."""
        return self.external_pattern.search(number) is not None


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """A whole site configuration, as loaded from ``sites/<site>.toml``."""

    site: SiteInfo
    sip: SipConfig
    media: MediaConfig
    http: HttpConfig
    store: StoreConfig
    security: SecurityConfig
    dialplan: DialplanConfig
    trunks: tuple[TrunkConfig, ...] = ()
    agents: tuple[AgentConfig, ...] = ()
    groups: tuple[GroupConfig, ...] = ()
    source: str = "<config>"
    """Where it was loaded from (for messages)."""
    queues: tuple[QueueConfig, ...] = ()
    """``[[queues]]``; default none."""
    cc: CcConfig = field(default_factory=CcConfig)
    """``[cc]``; every key has a default."""
    ivr: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """``[ivr]`` as written (read-only: tables are mappings, arrays tuples); only its shape is
    checked here. ``gateway.cc.ivr.FlowSet.parse`` validates it at start (``docs/ivr.md``)."""
    schedules: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """``[schedules]`` as written, name → table (read-only); validated at start by
    ``gateway.cc.schedule.parse_schedules`` (``docs/ivr.md``)."""
    mesh: MeshConfig | None = None
    """``[mesh]`` (:class:`gateway.config_mesh.MeshConfig`); default none: the site runs alone."""
    hq: HqConfig | None = None
    """``[hq]`` (:class:`gateway.config_mesh.HqConfig`): only in HQ's file, for ``ccgw hq``."""

    def mesh_trunk(self, site: str) -> TrunkConfig | None:
        """The inter-site trunk to ``site``, or ``None``."""
        return next((t for t in self.trunks if t.site == site), None)

    @property
    def name(self) -> str:
        """The site name."""
        return self.site.name

    def agent(self, extension: str) -> AgentConfig | None:
        """The agent with ``extension``, or ``None``."""
        return next((a for a in self.agents if a.extension == extension), None)

    def group(self, name: str) -> GroupConfig | None:
        """The group called ``name``, or ``None``."""
        return next((g for g in self.groups if g.name == name), None)

    def trunk(self, name: str) -> TrunkConfig | None:
        """The trunk called ``name``, or ``None``."""
        return next((t for t in self.trunks if t.name == name), None)

    def queue(self, name: str) -> QueueConfig | None:
        """The queue called ``name``, or ``None``."""
        return next((q for q in self.queues if q.name == name), None)

    @property
    def flow_names(self) -> frozenset[str]:
        """The IVR flow names (keys of ``[ivr.flows]``) that ``flow:<name>`` may refer to."""
        flows = self.ivr.get("flows", {})
        return frozenset(flows) if isinstance(flows, Mapping) else frozenset()


# ---------------------------------------------------------------------------------------------
# Reading tables with key paths


class _Table:
    """One TOML table being read: every ``take`` pops a key; ``done`` rejects what is left."""

    def __init__(self, data: object, path: str, source: str) -> None:
        self.path = path
        self.source = source
        if not isinstance(data, dict):
            raise self.error("", f"must be a table, not {_type_name(data)}")
        self._data: dict[str, Any] = dict(data)
        self._known: list[str] = []

    def key(self, name: str) -> str:
        return _join_key(self.path, name)

    def names(self) -> list[str]:
        return list(self._data)

    def raw(self, name: str) -> Any:
        return self._pop(name)

    def error(self, name: str, why: str) -> ConfigError:
        return ConfigError(self.source, self.key(name) if name else self.path, why)

    def has(self, name: str) -> bool:
        return name in self._data

    def _pop(self, name: str) -> Any:
        self._known.append(name)
        return self._data.pop(name, _MISSING)

    def done(self) -> None:
        for name in self._data:
            close = difflib.get_close_matches(name, self._known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(self._known) or "none"
            raise self.error(name, f"unknown key{hint}; known keys here: {known}")

    def value(self, name: str, kind: type, default: Any = None) -> Any:
        """The value of ``name`` checked against ``kind``; ``default`` if absent (``_MISSING``:
        required). Integers are accepted for floats; booleans are never numbers."""
        raw = self._pop(name)
        if raw is _MISSING:
            if default is _MISSING:
                raise self.error(name, "is required")
            return default
        if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if not isinstance(raw, kind) or (kind is not bool and isinstance(raw, bool)):
            raise self.error(name, f"must be {_kind_name(kind)}, not {_type_name(raw)} {raw!r}")
        return raw

    def string(
        self,
        name: str,
        default: Any = None,
        *,
        pattern: re.Pattern[str] | None = None,
        what: str = "",
    ) -> Any:
        raw = self.value(name, str, _ABSENT)
        if raw is _ABSENT:
            if default is _MISSING:
                raise self.error(name, "is required")
            return default
        if pattern is not None and not pattern.fullmatch(raw):
            raise self.error(name, f"{raw!r} is not {what or pattern.pattern}")
        return raw

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        raw: int = self.value(name, int, default)
        if not lo <= raw <= hi:
            raise self.error(name, f"{raw} is out of range [{lo}, {hi}]")
        return raw

    def number(self, name: str, default: float, lo: float, hi: float = float("inf")) -> float:
        raw: float = self.value(name, float, default)
        if not lo <= raw <= hi or raw != raw:
            upper = "" if hi == float("inf") else f", at most {hi:g}"
            raise self.error(name, f"{raw:g} is out of range (at least {lo:g}{upper})")
        return raw

    def positive(self, name: str, default: float) -> float:
        raw = self.number(name, default, 0.0)
        if raw == 0:
            raise self.error(name, "must be greater than 0")
        return raw

    def items(
        self, name: str, convert: Callable[[str], _T], default: tuple[_T, ...], what: str = ""
    ) -> tuple[_T, ...]:
        """A string list whose items ``convert`` parses (``ValueError`` → error at ``name[i]``)."""
        raw = self.value(name, list, _ABSENT)
        if raw is _ABSENT:
            return default
        out: list[_T] = []
        for i, item in enumerate(raw):
            if not isinstance(item, str):
                raise self.error(f"{name}[{i}]", f"must be a string, not {_type_name(item)}")
            try:
                out.append(convert(item))
            except ValueError as exc:
                why = f"{item!r} is not {what} ({exc})" if what else f"{item!r}: {exc}"
                raise self.error(f"{name}[{i}]", why) from None
            if out[-1] in out[:-1]:
                raise self.error(f"{name}[{i}]", f"{item!r} is listed twice")
        return tuple(out)

    def table(self, name: str) -> _Table:
        raw = self._pop(name)
        return _Table({} if raw is _MISSING else raw, self.key(name), self.source)

    def tables(self, name: str) -> Iterator[_Table]:
        raw = self._pop(name)
        if raw is _MISSING:
            return
        if not isinstance(raw, list):
            raise self.error(
                name, f"must be an array of tables ([[{name}]]), not {_type_name(raw)}"
            )
        for i, item in enumerate(raw):
            yield _Table(item, f"{self.key(name)}[{i}]", self.source)


def _join_key(path: str, name: str) -> str:
    """``path.name``, with ``name`` quoted as TOML requires (``dids."+8621..."``)."""
    if not _BARE_KEY_RE.fullmatch(name):
        name = f'"{name}"'
    return f"{path}.{name}" if path else name


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()  # a required key
_ABSENT: Final = object()  # internal: the key was not in the table


_KIND_NAMES: Final[dict[type, str]] = {
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    str: "a string",
    list: "an array",
    dict: "a table",
}


def _type_name(value: object) -> str:
    return _KIND_NAMES.get(type(value), type(value).__name__)


def _kind_name(kind: type) -> str:
    return "a number" if kind is float else _KIND_NAMES.get(kind, kind.__name__)


def _ip(table: _Table, name: str, default: str) -> str:
    raw: str = table.value(name, str, default)
    try:
        return _ip_literal(raw)
    except ValueError as exc:
        raise table.error(name, str(exc)) from None


def _choices(
    table: _Table, name: str, default: tuple[str, ...], allowed: tuple[str, ...]
) -> tuple[str, ...]:
    def check(item: str) -> str:
        if item not in allowed:
            raise ValueError(f"not one of {', '.join(allowed)}")
        return item

    values = table.items(name, check, default)
    if not values:
        raise table.error(name, "must not be empty")
    return values


# ---------------------------------------------------------------------------------------------
# Sections


def _site(t: _Table) -> SiteInfo:
    info = SiteInfo(
        name=t.string("name", _MISSING, pattern=_SITE_NAME_RE, what="a site name ([a-z0-9-]+)"),
        region=t.string("region", ""),
        description=t.string("description", ""),
    )
    t.done()
    return info


def _sip(t: _Table, site: str, env: Mapping[str, str]) -> SipConfig:
    listen = _ip(t, "listen", "127.0.0.1")
    port = t.integer("port", 5060, 0, 65535)
    transports = _choices(t, "transports", ("udp", "tcp"), TRANSPORTS)
    advertise = _ip(t, "advertise", "") if t.has("advertise") else ""
    tls_port = t.integer("tls_port", port + 1 if port else 0, 0, 65535)
    if tls_port and tls_port == port:
        raise t.error("tls_port", f"{tls_port} is also sip.port")
    domain = t.string("domain", site, pattern=_DOMAIN_RE, what="a domain name")
    realm = t.string("realm", domain)
    if not realm or '"' in realm or "\\" in realm:
        raise t.error("realm", "must be a non-empty string without quotes or backslashes")
    user_agent = t.string("user_agent", "ccgw/0.1")
    t1 = t.positive("T1", 0.5)
    t2 = t.positive("T2", 4.0)
    t4 = t.positive("T4", 5.0)
    if t2 < t1:
        raise t.error("T2", f"{t2:g} must not be less than T1 ({t1:g}) (RFC 3261 §17.1.2.2)")
    max_forwards = t.integer("max_forwards", 70, 1, 255)
    ping = t.number("options_ping_interval", 30.0, 0.0)
    nonce_lifetime = t.positive("nonce_lifetime", 300.0)
    secret = t.string("auth_secret", "")
    secret = env.get(AUTH_SECRET_ENV) or secret or secrets.token_hex(32)
    t.done()
    return SipConfig(
        listen=listen,
        port=port,
        transports=transports,
        advertise=advertise,
        tls_port=tls_port,
        domain=domain,
        realm=realm,
        user_agent=user_agent,
        T1=t1,
        T2=t2,
        T4=t4,
        max_forwards=max_forwards,
        options_ping_interval=ping,
        nonce_lifetime=nonce_lifetime,
        auth_secret=secret,
    )


def _media(t: _Table, sip_listen: str, sip_advertise: str = "") -> MediaConfig:
    host = _ip(t, "host", sip_listen)
    advertise = _ip(t, "advertise", "") if t.has("advertise") else sip_advertise
    lo = t.integer("rtp_port_min", 20000, 1024, 65534)
    hi = t.integer("rtp_port_max", 29999, 1025, 65535)
    if lo % 2:
        raise t.error("rtp_port_min", f"{lo} must be even (RFC 3550 §11: RTP on even ports)")
    if hi <= lo:
        raise t.error("rtp_port_max", f"{hi} must be greater than rtp_port_min ({lo})")
    stall = t.number("stall_timeout", 30.0, 0.0)
    codecs = _choices(t, "codecs", ("PCMU", "PCMA"), CODECS)
    t.done()
    return MediaConfig(host, lo, hi, stall, codecs, advertise)


def _http(t: _Table, env: Mapping[str, str]) -> HttpConfig:
    listen = _ip(t, "listen", "127.0.0.1")
    port = t.integer("port", 8080, 0, 65535)
    token = t.string("api_token", "")
    token = env.get(API_TOKEN_ENV) or token
    read_token = t.string("api_read_token", "")
    for key, value in (("api_token", token), ("api_read_token", read_token)):
        if value and (len(value) < 16 or not value.isprintable() or " " in value):
            raise t.error(key, "must be at least 16 printable characters without spaces")
    if read_token and not token:
        raise t.error("api_read_token", "needs api_token (the token that may also write)")
    if read_token and read_token == token:
        raise t.error("api_read_token", "must differ from api_token")
    if not token and not _loopback(listen):
        raise t.error(
            "api_token",
            f"is required when listen ({listen}) is not a loopback address: the REST API can "
            f"place calls and edit customers (or set {API_TOKEN_ENV})",
        )
    cfg = HttpConfig(listen=listen, port=port, api_token=token, api_read_token=read_token)
    t.done()
    return cfg


def _store(t: _Table, site: str, base_dir: Path) -> StoreConfig:
    raw = t.string("path", f"var/{site}.db")
    if not raw:
        raise t.error("path", "must not be empty")
    t.done()
    if raw == ":memory:":
        return StoreConfig(raw)
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return StoreConfig(str(path.resolve()))


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError("not an IP address or CIDR network") from None


def _security(t: _Table) -> SecurityConfig:
    cfg = SecurityConfig(
        rate_window=t.positive("rate_window", 2.0),
        rate_limit=t.integer("rate_limit", 50, 1, 1_000_000),
        fail_window=t.positive("fail_window", 60.0),
        fail_limit=t.integer("fail_limit", 5, 1, 1_000_000),
        ban_time=t.number("ban_time", 300.0, 0.0),
        trusted=t.items("trusted", _network, ()),
    )
    t.done()
    return cfg


def _destination(t: _Table, name: str, raw: object) -> Destination:
    if not isinstance(raw, str):
        raise t.error(name, f"must be a string like 'agent:1001', not {_type_name(raw)}")
    try:
        return parse_destination(raw)
    except ValueError as exc:
        raise t.error(name, f"{raw!r}: {exc}") from None


def _trunk(t: _Table, transports: tuple[str, ...]) -> TrunkConfig:
    name = t.string("name", _MISSING, pattern=_NAME_RE, what="a name ([a-z0-9_-]+)")
    peers = t.items("peers", parse_host_port, (), what="host:port")
    if not peers:
        raise t.error("peers", "is required: at least one 'ip:port'")
    transport = t.string("transport", "udp")
    if transport not in transports:
        raise t.error("transport", f"{transport!r} is not one of sip.transports {list(transports)}")
    username = t.string("username", None)
    password = t.string("password", None)
    if username is not None and not username:
        raise t.error("username", "must not be empty")
    if username is not None and not password:
        raise t.error("password", "is required (and non-empty) when username is set")
    if password is not None and username is None:
        raise t.error("username", "is required when password is set")
    inbound_auth = t.value("inbound_auth", bool, False)
    if inbound_auth and username is None:
        raise t.error("inbound_auth", "needs username/password to challenge the peer with")
    dids_table = t.table("dids")
    dids: dict[str, Destination] = {}
    for number in dids_table.names():
        if not _NUMBER_RE.fullmatch(number):
            raise dids_table.error(number, "is not a dialled number (digits, optional leading +)")
        dids[number] = _destination(dids_table, number, dids_table.raw(number))
    default_raw = t.value("default_destination", str, None)
    default = None if default_raw is None else _destination(t, "default_destination", default_raw)
    cost = t.number("cost", 0.0, 0.0)

    def prefix(text: str) -> str:
        if not _PREFIX_RE.fullmatch(text):
            raise ValueError("not an E.164 prefix ('+' then up to 15 digits)")
        return text

    prefixes = t.items("prefixes", prefix, ("+",))
    if not prefixes:
        raise t.error("prefixes", "must not be empty")
    site = t.string("site", None, pattern=_SITE_NAME_RE, what="a site name")

    def ext_prefix(text: str) -> str:
        if not text.isdigit() or len(text) > 10:
            raise ValueError("not an extension prefix (1-10 digits)")
        return text

    extensions = t.items("extensions", ext_prefix, ())
    if extensions and site is None:
        raise t.error("extensions", "only an inter-site trunk (with site = ...) has extensions")
    if transport == "tls" and site is None:
        raise t.error("transport", "'tls' is for inter-site trunks (set site = ...)")
    t.done()
    return TrunkConfig(
        name=name,
        peers=peers,
        transport=transport,
        username=username,
        password=password,
        inbound_auth=inbound_auth,
        dids=MappingProxyType(dids),
        default_destination=default,
        cost=cost,
        prefixes=prefixes,
        site=site,
        extensions=extensions,
    )


def _agent(t: _Table) -> AgentConfig:
    extension = t.string("extension", _MISSING, pattern=_EXTENSION_RE, what="1-10 digits")
    password = t.string("password", _MISSING)
    if not password:
        raise t.error("password", "must not be empty")
    cfg = AgentConfig(
        extension=extension,
        password=password,
        name=t.string("name", ""),
        max_contacts=t.integer("max_contacts", 5, 1, 100),
        skills=_skills(t, "skills"),
    )
    t.done()
    return cfg


def _group(t: _Table) -> GroupConfig:
    name = t.string("name", _MISSING, pattern=_NAME_RE, what="a name ([a-z0-9_-]+)")
    number = t.string("number", None, pattern=_EXTENSION_RE, what="1-10 digits")
    strategy = t.string("strategy", "ringall")
    if strategy not in ("ringall", "hunt"):
        raise t.error("strategy", f"{strategy!r} is not one of ringall, hunt")

    members = t.items("members", _member, ())
    if not members:
        raise t.error("members", "is required: at least one agent extension")
    ring_timeout = t.positive("ring_timeout", 20.0)
    t.done()
    return GroupConfig(name, members, number, strategy, ring_timeout)


def _member(text: str) -> str:
    if not _EXTENSION_RE.fullmatch(text):
        raise ValueError("not an agent extension (1-10 digits)")
    return text


def _skills(t: _Table, name: str) -> Mapping[str, int]:
    """A table skill name → level 1..10, read-only."""
    table = t.table(name)
    skills: dict[str, int] = {}
    for skill in table.names():
        if not _SKILL_RE.fullmatch(skill):
            raise table.error(skill, "is not a skill name ([a-z0-9_-]+)")
        skills[skill] = table.integer(skill, _MISSING, 1, 10)  # type: ignore[arg-type]
    table.done()
    return MappingProxyType(skills)


def _choice(t: _Table, name: str, default: str, allowed: tuple[str, ...]) -> Any:
    raw: str = t.string(name, default)
    if raw not in allowed:
        raise t.error(name, f"{raw!r} is not one of {', '.join(allowed)}")
    return raw


def _resolve(raw: str, base_dir: Path) -> Path:
    """``raw`` as an absolute path, a relative one taken from the config file's directory."""
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return path.resolve()


def _queue(t: _Table, base_dir: Path) -> QueueConfig:
    name = t.string("name", _MISSING, pattern=_NAME_RE, what="a name ([a-z0-9_-]+)")
    number = t.string("number", None, pattern=_EXTENSION_RE, what="1-10 digits")
    strategy = _choice(t, "strategy", "longest_idle", QUEUE_STRATEGIES)
    members = t.items("members", _member, ())
    if not members:
        raise t.error("members", "is required: at least one agent extension")
    required_skills = _skills(t, "required_skills")
    ring_timeout = t.positive("ring_timeout", 15.0)
    wrapup = t.number("wrapup", 10.0, 0.0)
    max_no_answer = t.integer("max_no_answer", 3, 0, 100)
    max_wait: float | None = t.value("max_wait", float, None)
    if max_wait is not None and not 0 < max_wait < float("inf"):
        raise t.error("max_wait", f"{max_wait:g} must be a number of seconds greater than 0")
    fallback_raw = t.value("fallback", str, None)
    fallback = None
    if fallback_raw is not None:
        fallback = _destination(t, "fallback", fallback_raw)
        if fallback.kind not in _FALLBACK_KINDS:
            raise t.error(
                "fallback", f"{fallback_raw!r}: a fallback is voicemail:, queue: or agent:"
            )
        if fallback == Destination("queue", name):
            raise t.error("fallback", f"{fallback_raw!r} is this queue itself")
    join_rule = _choice(t, "join_rule", "if_logged_in", JOIN_RULES)
    leave_rule = _choice(t, "leave_rule", "if_none_logged_in", LEAVE_RULES)
    announce_position = t.value("announce_position", bool, True)
    announce_every = t.number("announce_every", 30.0, 10.0)
    music = t.string("music", "default")
    if music != "default":
        if not music.lower().endswith(".wav"):
            raise t.error("music", f"{music!r} is neither 'default' nor a .wav file")
        path = _resolve(music, base_dir)
        if not path.is_file():
            raise t.error("music", f"{music!r}: no such file ({path})")
        music = str(path)
    cfg = QueueConfig(
        name=name,
        members=members,
        number=number,
        strategy=strategy,
        required_skills=required_skills,
        ring_timeout=ring_timeout,
        wrapup=wrapup,
        max_no_answer=max_no_answer,
        max_wait=max_wait,
        fallback=fallback,
        join_rule=join_rule,
        leave_rule=leave_rule,
        announce_position=announce_position,
        announce_every=announce_every,
        music=music,
        service_level_s=t.positive("service_level_s", 20.0),
        short_abandon_s=t.number("short_abandon_s", 5.0, 0.0),
        aht_s=t.positive("aht_s", 180.0),
        aging_s=t.positive("aging_s", 60.0),
        vip_priority=t.integer("vip_priority", 10, 0, 1000),
        sticky_s=t.number("sticky_s", 30.0, 0.0),
        best_skill_first=t.value("best_skill_first", bool, False),
        overflow=_overflow(t),
    )
    t.done()
    return cfg


def _overflow(t: _Table) -> OverflowConfig | None:
    from gateway.config_mesh import parse_overflow  # late: config_mesh imports this module

    return parse_overflow(t.table("overflow")) if t.has("overflow") else None


def _cc(t: _Table, site: str, base_dir: Path) -> CcConfig:
    language = _choice(t, "language", "en", CC_LANGUAGES)
    prompts = t.string("prompts", "")
    if prompts:
        folder = _resolve(prompts, base_dir)
        if not folder.is_dir():
            raise t.error("prompts", f"{prompts!r}: no such folder ({folder})")
        prompts = str(folder)
    voicemail_dir = t.string("voicemail_dir", f"var/{site}-voicemail")
    if not voicemail_dir:
        raise t.error("voicemail_dir", "must not be empty")
    voicemail_max_s = t.positive("voicemail_max_s", 120.0)
    webhook = t.string("webhook", None)
    if webhook is not None and not _URL_RE.fullmatch(webhook):
        raise t.error("webhook", f"{webhook!r} is not an http:// or https:// URL")
    smtp = t.string("smtp", None)
    if smtp is not None:
        host, sep, port = smtp.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise t.error("smtp", f"{smtp!r} is not host:port")
    mail_from = t.string("mail_from", f"ccgw@{site}")
    if "@" not in mail_from:
        raise t.error("mail_from", f"{mail_from!r} is not an e-mail address")

    def address(text: str) -> str:
        if "@" not in text or any(c.isspace() for c in text):
            raise ValueError("not an e-mail address")
        return text

    mail_to = t.items("mail_to", address, ())
    if smtp is not None and not mail_to:
        raise t.error("mail_to", "is required with smtp: who gets the voicemail e-mails")
    codes: dict[str, str] = {}
    for key in FEATURE_CODES:
        code = t.string(key, CcConfig.__dataclass_fields__[key].default)
        if not _FEATURE_CODE_RE.fullmatch(code):
            raise t.error(key, f"{code!r} is not a feature code ('*' and 1-4 digits)")
        same = next((k for k, c in codes.items() if c == code), None)
        if same is not None:
            raise t.error(key, f"{code!r} is also {t.key(same)}")
        codes[key] = code
    t.done()
    return CcConfig(
        language=language,
        prompts=prompts,
        voicemail_dir=str(_resolve(voicemail_dir, base_dir)),
        voicemail_max_s=voicemail_max_s,
        webhook=webhook,
        smtp=smtp,
        mail_from=mail_from,
        mail_to=mail_to,
        **codes,
    )


def _frozen(value: Any) -> Any:
    """A TOML value made read-only: tables → mapping proxies, arrays → tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _raw_table(root: _Table, name: str) -> dict[str, Any]:
    raw = root.raw(name)
    if raw is _MISSING:
        return {}
    if not isinstance(raw, dict):
        raise root.error(name, f"must be a table, not {_type_name(raw)}")
    return raw


def _ivr(root: _Table) -> Mapping[str, Any]:
    """``[ivr]``, shape only: a table whose ``flows`` is a table of flow tables (docs/ivr.md)."""
    ivr = _raw_table(root, "ivr")
    flows = ivr.get("flows", {})
    key = root.key("ivr")
    if not isinstance(flows, dict):
        raise ConfigError(root.source, f"{key}.flows", f"must be a table, not {_type_name(flows)}")
    for name, flow in flows.items():
        flow_key = _join_key(f"{key}.flows", name)
        if not _FLOW_NAME_RE.fullmatch(name):
            raise ConfigError(root.source, flow_key, f"is not a flow name ({_FLOW_NAME_WHAT})")
        if not isinstance(flow, dict):
            raise ConfigError(
                root.source, flow_key, f"must be a table (a flow), not {_type_name(flow)}"
            )
    frozen: Mapping[str, Any] = _frozen(ivr)
    return frozen


def _schedules(root: _Table) -> Mapping[str, Any]:
    """``[schedules]``, shape only: name → table (docs/ivr.md)."""
    schedules = _raw_table(root, "schedules")
    for name, table in schedules.items():
        if not isinstance(table, dict):
            raise ConfigError(
                root.source,
                _join_key("schedules", name),
                f"must be a table (a schedule), not {_type_name(table)}",
            )
    frozen: Mapping[str, Any] = _frozen(schedules)
    return frozen


def _dialplan(t: _Table, trunks: tuple[TrunkConfig, ...]) -> DialplanConfig:
    pattern_text = t.string("external_pattern", r"^\+?[0-9]{6,15}$")
    try:
        pattern = re.compile(pattern_text)
    except re.error as exc:
        raise t.error("external_pattern", f"{pattern_text!r} is not a valid regex: {exc}") from None
    outbound = t.string("outbound_trunk", trunks[0].name if trunks else None)
    if outbound is not None and outbound not in {tr.name for tr in trunks}:
        raise t.error("outbound_trunk", f"{outbound!r} is not a [[trunks]] name")
    cfg = DialplanConfig(pattern, outbound, t.positive("no_answer_timeout", 30.0))
    t.done()
    return cfg


def _unique(table_path: str, key: str, values: list[str], source: str) -> None:
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            raise ConfigError(
                source,
                f"{table_path}[{i}].{key}",
                f"{value!r} duplicates {table_path}[{seen[value]}]",
            )
        seen[value] = i


def _cross_check(cfg: SiteConfig) -> None:
    src = cfg.source
    _check_mesh(cfg)
    _unique("trunks", "name", [t.name for t in cfg.trunks], src)
    _unique("agents", "extension", [a.extension for a in cfg.agents], src)
    _unique("groups", "name", [g.name for g in cfg.groups], src)
    _unique("queues", "name", [q.name for q in cfg.queues], src)
    extensions = {a.extension for a in cfg.agents}
    numbers: dict[str, str] = {}
    numbered = [
        ("groups", "group", i, g.name, g.members, g.number) for i, g in enumerate(cfg.groups)
    ]
    numbered += [
        ("queues", "queue", i, q.name, q.members, q.number) for i, q in enumerate(cfg.queues)
    ]
    for table, kind, i, name, members, number in numbered:
        for mi, member in enumerate(members):
            if member not in extensions:
                raise ConfigError(
                    src, f"{table}[{i}].members[{mi}]", f"no agent has extension {member!r}"
                )
        if number is not None:
            key = f"{table}[{i}].number"
            if number in extensions:
                raise ConfigError(src, key, f"{number!r} is an agent's extension")
            if number in numbers:
                raise ConfigError(src, key, f"{number!r} is also {numbers[number]}'s")
            numbers[number] = f"{kind} {name!r}"
    targets: list[tuple[str, Destination]] = []
    for ti, t in enumerate(cfg.trunks):
        targets += [(_join_key(f"trunks[{ti}].dids", n), d) for n, d in t.dids.items()]
        if t.default_destination is not None:
            targets.append((f"trunks[{ti}].default_destination", t.default_destination))
    targets += [
        (f"queues[{qi}].fallback", q.fallback) for qi, q in enumerate(cfg.queues) if q.fallback
    ]
    for key, dest in targets:
        why = _missing_target(cfg, dest)
        if why:
            raise ConfigError(src, key, f"{str(dest)!r}: {why}")
    _check_fallback_loops(cfg)
    _check_ivr_queues(cfg)
    peers: dict[HostPort, str] = {}
    for ti, t in enumerate(cfg.trunks):
        for pi, peer in enumerate(t.peers):
            if peer in peers:
                raise ConfigError(
                    src, f"trunks[{ti}].peers[{pi}]", f"'{peer}' is also {peers[peer]}"
                )
            peers[peer] = f"trunks[{ti}]"
    sip, media, http = cfg.sip, cfg.media, cfg.http
    tcp_clash = http.port == sip.port != 0 and "tcp" in sip.transports
    if tcp_clash and _same_host(http.listen, sip.listen):
        raise ConfigError(src, "http.port", f"{http.port} is also sip.port (tcp)")
    in_rtp = media.rtp_port_min <= sip.port <= media.rtp_port_max and "udp" in sip.transports
    if in_rtp and _same_host(media.host, sip.listen):
        raise ConfigError(src, "sip.port", f"{sip.port} lies in the media RTP port range")


def _missing_target(cfg: SiteConfig, dest: Destination) -> str:
    """Why ``dest`` names nothing in ``cfg`` ("" when it exists). Voicemail boxes always exist."""
    if dest.kind == "agent" and cfg.agent(dest.target) is None:
        return "no such agent"
    if dest.kind == "group" and cfg.group(dest.target) is None:
        return "no such group"
    if dest.kind == "queue" and cfg.queue(dest.target) is None:
        return "no such queue"
    if dest.kind == "flow" and dest.target not in cfg.flow_names:
        known = ", ".join(sorted(cfg.flow_names)) or "none defined"
        return f"no such flow in [ivr.flows] (known: {known})"
    return ""


def _check_mesh(cfg: SiteConfig) -> None:
    """Overflow targets are sites we have an inter-site trunk to; one trunk per site."""
    hq_http = cfg.hq.http if cfg.hq is not None else None
    if hq_http is not None and not cfg.http.api_token and not _loopback(hq_http.host):
        raise ConfigError(
            cfg.source,
            "http.api_token",
            f"is required when hq.http ({hq_http.host}) is not a loopback address: HQ's API "
            "publishes routing policy and edits customers with this file's [http] tokens",
        )
    if "tls" in cfg.sip.transports and (cfg.mesh is None or cfg.mesh.pki is None):
        raise ConfigError(
            cfg.source,
            "sip.transports",
            "'tls' needs mesh.pki (this site's certificate and the mesh CA; see ccgw certs)",
        )
    seen: dict[str, int] = {}
    for ti, t in enumerate(cfg.trunks):
        if t.site is None:
            continue
        if t.site == cfg.name:
            raise ConfigError(cfg.source, f"trunks[{ti}].site", "is this site itself")
        if t.site in seen:
            raise ConfigError(
                cfg.source,
                f"trunks[{ti}].site",
                f"trunks[{seen[t.site]}] already goes to {t.site!r}",
            )
        seen[t.site] = ti
    for qi, q in enumerate(cfg.queues):
        if q.overflow is None:
            continue
        hours = q.overflow.hours
        if hours is not None and hours not in cfg.schedules:
            known = ", ".join(sorted(cfg.schedules)) or "none defined"
            raise ConfigError(
                cfg.source,
                f"queues[{qi}].overflow.hours",
                f"no schedule {hours!r} (known: {known})",
            )
        for i, target in enumerate(q.overflow.targets):
            if target != "*" and target not in seen:
                raise ConfigError(
                    cfg.source,
                    f"queues[{qi}].overflow.targets[{i}]",
                    f"no [[trunks]] entry with site = {target!r} to reach it",
                )


def _check_fallback_loops(cfg: SiteConfig) -> None:
    """Queue fallbacks must not lead back to a queue already passed (callers would circle)."""
    for qi, q in enumerate(cfg.queues):
        seen = [q.name]
        nxt = q.fallback
        while nxt is not None and nxt.kind == "queue":
            if nxt.target in seen:
                loop = " → ".join([*seen, nxt.target])
                raise ConfigError(cfg.source, f"queues[{qi}].fallback", f"fallbacks loop: {loop}")
            seen.append(nxt.target)
            target = cfg.queue(nxt.target)
            nxt = target.fallback if target is not None else None


def _check_ivr_queues(cfg: SiteConfig) -> None:
    """Every IVR ``queue`` / ``callback`` node names a ``[[queues]]`` queue (the flow grammar
    itself is checked by ``gateway.cc.ivr``, which does not know the site's queues)."""

    def walk(node: Mapping[str, Any], key: str) -> Iterator[tuple[str, str]]:
        if node.get("kind") in ("queue", "callback") and isinstance(node.get("queue"), str):
            yield f"{key}.queue", node["queue"]
        for name, value in node.items():
            if isinstance(value, Mapping):
                yield from walk(value, _join_key(key, name))

    flows = cfg.ivr.get("flows", {})
    for key, queue in walk(flows, "ivr.flows") if isinstance(flows, Mapping) else ():
        if queue and cfg.queue(queue) is None:
            known = ", ".join(q.name for q in cfg.queues) or "none defined"
            raise ConfigError(cfg.source, key, f"no queue {queue!r} in [[queues]] (known: {known})")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _same_host(a: str, b: str) -> bool:
    wildcard = ("0.0.0.0", "::")
    return a == b or a in wildcard or b in wildcard


# ---------------------------------------------------------------------------------------------
# Entry points


def parse_config(
    data: Mapping[str, Any],
    source: str = "<config>",
    *,
    base_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> SiteConfig:
    """Validate a decoded TOML document into a :class:`SiteConfig`.

    ``base_dir`` resolves relative paths (``store.path``, ``cc.voicemail_dir``, ``cc.prompts``,
    ``queues[].music``; default: the working directory); ``env``
    supplies ``CCGW_AUTH_SECRET`` (default: ``os.environ``). Raises :class:`ConfigError`.
    """
    root = _Table(dict(data), "", source)
    env = os.environ if env is None else env
    base = Path.cwd() if base_dir is None else Path(base_dir)
    if not root.has("site"):
        raise root.error("site", "is required: a [site] table with name = ...")
    site = _site(root.table("site"))
    sip = _sip(root.table("sip"), site.name, env)
    media = _media(root.table("media"), sip.listen, sip.advertise)
    http = _http(root.table("http"), env)
    store = _store(root.table("store"), site.name, base)
    security = _security(root.table("security"))
    trunks = tuple(_trunk(t, sip.transports) for t in root.tables("trunks"))
    agents = tuple(_agent(t) for t in root.tables("agents"))
    groups = tuple(_group(t) for t in root.tables("groups"))
    queues = tuple(_queue(t, base) for t in root.tables("queues"))
    cc = _cc(root.table("cc"), site.name, base)
    ivr = _ivr(root)
    schedules = _schedules(root)
    dialplan = _dialplan(root.table("dialplan"), trunks)
    from gateway.config_mesh import parse_hq, parse_mesh  # late: config_mesh imports this module

    mesh = parse_mesh(root.table("mesh"), base, env) if root.has("mesh") else None
    hq = parse_hq(root.table("hq"), base) if root.has("hq") else None
    root.done()
    cfg = SiteConfig(
        site=site,
        sip=sip,
        media=media,
        http=http,
        store=store,
        security=security,
        dialplan=dialplan,
        trunks=trunks,
        agents=agents,
        groups=groups,
        source=source,
        queues=queues,
        cc=cc,
        ivr=ivr,
        schedules=schedules,
        mesh=mesh,
        hq=hq,
    )
    _cross_check(cfg)
    return cfg


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> SiteConfig:
    """Read and validate ``path`` (TOML). Raises :class:`ConfigError` naming the file and key."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"invalid TOML: {exc}") from None
    return parse_config(data, source, base_dir=Path(path).resolve().parent, env=env)


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway.config FILE...``: print ``ok`` per valid file, else the error; exit 1."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m gateway.config sites/<site>.toml ...", file=sys.stderr)
        return 2
    status = 0
    for path in args:
        try:
            load_config(path)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            status = 1
        else:
            print(f"{path}: ok" if len(args) > 1 else "ok")
    return status


if __name__ == "__main__":
    sys.exit(main())
