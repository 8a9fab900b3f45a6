"""IVR flows from configuration, and a pure interpreter that runs one caller through them.

A *flow set* (the site's ``[ivr]`` table) holds named flows; a flow holds named nodes. The
interpreter, :class:`IvrSession`, is a state machine with events in (``on_digit``,
``on_prompt_done``, ``on_timer``, ``on_hangup``, each with ``now`` in seconds) and commands out
(:class:`Play`, :class:`StopPlayback`, :class:`CollectDigits`, :class:`SetVar`, :class:`Route`,
:class:`Hangup`). It never sleeps and never touches the network: the owner plays what it is told,
re-arms one timer at :meth:`IvrSession.deadline` and feeds the events back. ``docs/ivr.md`` is the
reference for the TOML; in short::

    [ivr]
    entry = "main"                      # flow to start in
    languages = ["cmn", "en"]           # prompt languages; "lang" variable selects one
    default_language = "cmn"            # initial value of "lang" (default: first language)
    max_menu_depth = 3                  # a menu deeper than this is a load warning
    max_visits = 100                    # node visits before the caller is hung up (loop guard)

    [ivr.flows.main]
    start = "welcome"
    welcome = { kind = "play", prompts = ["welcome"], next = "hours" }
    hours = { kind = "branch", on = "schedule:main", cases = { open = "menu", closed = "closed" } }
    ...

Node kinds: ``play``, ``menu``, ``collect``, ``set``, ``branch``, ``goto`` and the terminal
``queue``, ``agent``, ``voicemail``, ``callback``, ``transfer``, ``hangup``. A reference to a node
is ``"name"`` (same flow), ``"flow/name"`` or an inline table (an anonymous node). A prompt
reference is ``"id"`` (in the caller's current language) or ``"lang/id"``.

Checked at load (``ValueError("<key>: <why>")``): unknown keys and kinds, references to unknown
nodes, flows or schedules, loops that never wait for the caller's input, prompts missing from the
prompt library (when one is given). Warnings (kept on :attr:`FlowSet.warnings`): menus deeper than
``max_menu_depth``, unreachable nodes.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final, Protocol

from gateway.cc.digits import DTMF_DIGITS, DigitCollector, DigitResult, DigitSpec, EndReason
from gateway.cc.prompts import LANGUAGES, PromptKey, say_digits
from gateway.cc.schedule import Schedule

__all__ = [
    "AgentAction",
    "CallbackAction",
    "CallerInfo",
    "CollectDigits",
    "Command",
    "FlowSet",
    "Hangup",
    "IvrRecord",
    "IvrSession",
    "NodeId",
    "PathStep",
    "Play",
    "PromptCatalog",
    "QueueAction",
    "Route",
    "RouteAction",
    "SetVar",
    "StopPlayback",
    "TransferAction",
    "VoicemailAction",
]

_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_VAR: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CALLER_ATTRS: Final = (
    "number", "dialled", "customer_id", "vip_tier", "named_agent", "known", "vip",
)  # fmt: skip
_DEFAULT_FALLBACK_PROMPTS: Final = ("goodbye",)
_CONFIRM_YES, _CONFIRM_AGAIN = "1", "2"
# Instantaneous nodes (set, branch, goto) followed in one step before giving up; loops of them
# are refused at load, so this only guards against a bug.
_MAX_HOPS: Final = 256


# ---------------------------------------------------------------------------------------------
# What the interpreter is given


@dataclass(frozen=True, slots=True)
class CallerInfo:
    """What is known about the caller when the IVR starts (from the store's customer record).

    ``vip_tier`` is ``None`` for ordinary callers; ``attributes`` are extra string facts a flow can
    branch on as ``caller:attr.<name>``.
    """

    number: str
    dialled: str = ""
    customer_id: str | None = None
    vip_tier: str | None = None
    named_agent: str | None = None
    attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def known(self) -> bool:
        """Whether the caller matched a customer record."""
        return self.customer_id is not None

    def attribute(self, name: str) -> str:
        """The value a ``caller:<name>`` branch tests; ``""`` when unknown."""
        if name == "known":
            return "true" if self.known else "false"
        if name == "vip":
            return "true" if self.vip_tier else "false"
        if name.startswith("attr."):
            return self.attributes.get(name[5:], "")
        value = getattr(self, name) if name in _CALLER_ATTRS else None
        return value if isinstance(value, str) else ""


class PromptCatalog(Protocol):
    """What flow loading needs of a prompt library (``gateway.cc.prompts.PromptLibrary``)."""

    def has(self, lang: str, prompt_id: str) -> bool: ...


# ---------------------------------------------------------------------------------------------
# Where a caller is sent


@dataclass(frozen=True, slots=True)
class QueueAction:
    """Join ``queue``; ``priority`` overrides the queue's default, ``skills`` maps skill → minimum
    level the agent must have."""

    queue: str
    priority: int | None = None
    skills: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def __str__(self) -> str:
        return f"queue:{self.queue}"


@dataclass(frozen=True, slots=True)
class AgentAction:
    """Ring one agent's extension."""

    extension: str

    def __str__(self) -> str:
        return f"agent:{self.extension}"


@dataclass(frozen=True, slots=True)
class VoicemailAction:
    """Record a message into ``box``."""

    box: str

    def __str__(self) -> str:
        return f"voicemail:{self.box}"


@dataclass(frozen=True, slots=True)
class CallbackAction:
    """Offer a callback to ``number`` that keeps its place in ``queue`` (``None``: the site's
    default callback queue)."""

    number: str
    queue: str | None = None

    def __str__(self) -> str:
        return f"callback:{self.queue or ''}"


@dataclass(frozen=True, slots=True)
class TransferAction:
    """Blind-transfer the call to an external ``number``."""

    number: str

    def __str__(self) -> str:
        return f"transfer:{self.number}"


RouteAction = QueueAction | AgentAction | VoicemailAction | CallbackAction | TransferAction


# ---------------------------------------------------------------------------------------------
# Commands out


@dataclass(frozen=True, slots=True)
class Play:
    """Play ``prompts`` one after another, then report ``on_prompt_done(now, seq)``.

    With ``barge_in`` a digit stops the playback (the session emits :class:`StopPlayback`).
    """

    prompts: tuple[PromptKey, ...]
    barge_in: bool
    seq: int

    @property
    def prompt_ids(self) -> tuple[str, ...]:
        """The prompts as ``lang/id`` strings."""
        return tuple(str(p) for p in self.prompts)


@dataclass(frozen=True, slots=True)
class StopPlayback:
    """Stop the playback ``seq`` now; no ``on_prompt_done`` is expected for it."""

    seq: int


@dataclass(frozen=True, slots=True)
class CollectDigits:
    """The session now collects digits as ``spec`` says (timers run in the session)."""

    spec: DigitSpec


@dataclass(frozen=True, slots=True)
class SetVar:
    """A call variable changed; call control keeps it with the call (handed over on overflow)."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Route:
    """The IVR is over: send the call to ``action``."""

    action: RouteAction


@dataclass(frozen=True, slots=True)
class Hangup:
    """The IVR is over: hang up (``reason``: ``"flow"``, ``"max-visits"``)."""

    reason: str


Command = Play | StopPlayback | CollectDigits | SetVar | Route | Hangup


# ---------------------------------------------------------------------------------------------
# Nodes


@dataclass(frozen=True, slots=True, order=True)
class NodeId:
    """A node's identity: its flow and its name (inline nodes: ``parent[key]``)."""

    flow: str
    node: str

    def __str__(self) -> str:
        return f"{self.flow}/{self.node}"


@dataclass(frozen=True, slots=True)
class PlayNode:
    id: NodeId
    prompts: tuple[str, ...]
    next: NodeId
    barge_in: bool = False


@dataclass(frozen=True, slots=True)
class MenuNode:
    id: NodeId
    prompts: tuple[str, ...]
    options: Mapping[str, NodeId]
    fallback: NodeId
    tries: int = 3
    timeout: float = 5.0
    invalid_prompts: tuple[str, ...] = ("invalid",)
    timeout_prompts: tuple[str, ...] = ("timeout",)

    def spec(self) -> DigitSpec:
        return DigitSpec(1, None, self.timeout, self.timeout)


@dataclass(frozen=True, slots=True)
class CollectNode:
    id: NodeId
    prompts: tuple[str, ...]
    var: str
    next: NodeId
    fallback: NodeId
    min_digits: int = 1
    max_digits: int = 20
    terminator: str | None = "#"
    timeout: float = 5.0
    inter_digit_timeout: float = 3.0
    overall_timeout: float | None = None
    tries: int = 3
    confirm: bool = False
    invalid_prompts: tuple[str, ...] = ("invalid",)
    timeout_prompts: tuple[str, ...] = ("timeout",)
    confirm_prompts: tuple[str, ...] = ("confirm_entry",)

    def spec(self) -> DigitSpec:
        return DigitSpec(
            self.max_digits,
            self.terminator,
            self.timeout,
            self.inter_digit_timeout,
            self.overall_timeout,
        )


@dataclass(frozen=True, slots=True)
class SetNode:
    id: NodeId
    values: Mapping[str, str]
    next: NodeId


@dataclass(frozen=True, slots=True)
class BranchNode:
    id: NodeId
    source: str  # "schedule" | "var" | "caller"
    name: str  # schedule name, variable name or caller attribute
    cases: Mapping[str, NodeId]
    default: NodeId | None


@dataclass(frozen=True, slots=True)
class GotoNode:
    id: NodeId
    target: NodeId


@dataclass(frozen=True, slots=True)
class RouteNode:
    """A terminal node: play ``prompts`` (no barge-in), then route or hang up.

    ``action`` ``None`` is a hangup; a callback's number comes from ``number_var`` (or the caller).
    """

    id: NodeId
    kind: str
    action: RouteAction | None
    prompts: tuple[str, ...] = ()
    number_var: str | None = None


Node = PlayNode | MenuNode | CollectNode | SetNode | BranchNode | GotoNode | RouteNode

_WAITS_FOR_INPUT: Final = (MenuNode, CollectNode)


def _successors(node: Node) -> list[NodeId]:
    match node:
        case PlayNode() | SetNode():
            return [node.next]
        case MenuNode():
            return [*node.options.values(), node.fallback]
        case CollectNode():
            return [node.next, node.fallback]
        case BranchNode():
            return [*node.cases.values(), *([node.default] if node.default else [])]
        case GotoNode():
            return [node.target]
        case RouteNode():
            return []


def _node_prompts(node: Node) -> Iterable[tuple[str, tuple[str, ...]]]:
    """(field, prompt refs) pairs of a node, for the load-time prompt check."""
    for name in ("prompts", "invalid_prompts", "timeout_prompts", "confirm_prompts"):
        refs = getattr(node, name, None)
        if refs:
            yield name, refs
    if isinstance(node, CollectNode) and node.confirm:
        yield "confirm", ("you_entered",)


# ---------------------------------------------------------------------------------------------
# The flow set


@dataclass(frozen=True, slots=True)
class FlowSet:
    """Every node of every flow, validated; built by :meth:`parse`."""

    nodes: Mapping[NodeId, Node]
    entry: NodeId
    languages: tuple[str, ...]
    default_language: str
    schedules: Mapping[str, Schedule]
    max_visits: int = 100
    warnings: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls,
        data: Mapping[str, object],
        *,
        schedules: Mapping[str, Schedule] | None = None,
        prompts: PromptCatalog | None = None,
    ) -> FlowSet:
        """Build and check a flow set from the ``[ivr]`` table.

        ``schedules`` are the site's parsed schedules (``schedule:<name>`` branches must name
        one); with ``prompts`` every prompt reference is checked in every language it may play in.
        Raises ``ValueError("<key>: <why>")``.
        """
        return _Loader(data, schedules or {}).load(prompts)

    def prompt_keys(self) -> frozenset[PromptKey]:
        """Every prompt the flows may play, in every language (numbers for confirmations too)."""
        keys: set[PromptKey] = set()
        for node in self.nodes.values():
            for _, refs in _node_prompts(node):
                for ref in refs:
                    keys.update(self._expand(ref))
            if isinstance(node, CollectNode) and node.confirm:
                for lang in self.languages:
                    keys.update(PromptKey(lang, p) for p in say_digits("0123456789", lang))
        return frozenset(keys)

    def _expand(self, ref: str) -> list[PromptKey]:
        if "/" in ref:
            return [PromptKey.parse(ref, self.default_language)]
        return [PromptKey(lang, ref) for lang in self.languages]


class _Loader:
    def __init__(self, data: Mapping[str, object], schedules: Mapping[str, Schedule]) -> None:
        self.top = _Table(data, "")
        self.schedules = schedules
        self.nodes: dict[NodeId, Node] = {}
        self.keys: dict[NodeId, str] = {}  # node → its key path, for messages
        self.flows: dict[str, _Table] = {}
        self.starts: dict[str, NodeId] = {}
        self.warnings: list[str] = []

    def load(self, catalog: PromptCatalog | None) -> FlowSet:
        top = self.top
        languages = top.strings("languages", ("cmn", "en"))
        if not languages:
            raise top.error("languages", "must name at least one language")
        default_language = top.string("default_language", languages[0])
        if default_language not in languages:
            raise top.error("default_language", f"{default_language!r} is not in languages")
        self.languages = languages
        max_depth = top.integer("max_menu_depth", 3, 1, 20)
        max_visits = top.integer("max_visits", 100, 1, 100_000)
        flows = top.table("flows")
        if not flows.names():
            raise top.error("flows", "no flows defined")
        for name in flows.names():
            if not _NAME.match(name):
                raise flows.error(name, "flow names are letters, digits, '_' and '-'")
            self.flows[name] = flows.table(name)
        for name, table in self.flows.items():
            start = table.string("start")
            if start not in table.names() or start == "start":
                raise table.error("start", f"no node {start!r} in flow {name!r}")
            self.starts[name] = NodeId(name, start)
        for name, table in self.flows.items():
            for node_name in table.names():
                if node_name != "start":
                    self._node(table.table(node_name), NodeId(name, node_name))
            table.done()
        flows.done()
        entry_name = top.string("entry", next(iter(self.flows)))
        if entry_name not in self.flows:
            raise top.error("entry", f"no flow {entry_name!r}")
        top.done()
        entry = self.starts[entry_name]
        self._check_loops()
        self._check_languages()
        self._warn_depth_and_reach(entry, max_depth)
        flow_set = FlowSet(
            MappingProxyType(dict(self.nodes)),
            entry,
            languages,
            default_language,
            MappingProxyType(dict(self.schedules)),
            max_visits,
            tuple(self.warnings),
        )
        if catalog is not None:
            self._check_prompts(flow_set, catalog)
        return flow_set

    # -- references -------------------------------------------------------------------------

    def _ref(self, table: _Table, name: str, owner: NodeId, raw: object | None = None) -> NodeId:
        value = table.get(name) if raw is None else raw
        if isinstance(value, Mapping):
            inline = NodeId(owner.flow, f"{owner.node}[{name}]")
            self._node(_Table(value, table.path(name)), inline)
            return inline
        if not isinstance(value, str):
            raise table.error(name, "expected a node name, 'flow/node' or an inline table")
        flow, sep, node = value.partition("/")
        if not sep:
            flow, node = owner.flow, value
        if flow not in self.flows:
            raise table.error(name, f"unknown flow {flow!r} in {value!r}")
        if not node:
            return self.starts[flow]
        if node == "start" or node not in self.flows[flow].names():
            raise table.error(name, f"unknown node {value!r}")
        return NodeId(flow, node)

    def _prompt_refs(
        self, table: _Table, name: str, default: tuple[str, ...] | None = None
    ) -> tuple[str, ...]:
        refs = table.strings(name, default)
        for i, ref in enumerate(refs):
            try:
                key = PromptKey.parse(ref, "x")
            except ValueError as err:
                raise table.error(f"{name}[{i}]", str(err)) from None
            if "/" in ref and key.lang not in self.languages:
                raise table.error(f"{name}[{i}]", f"language {key.lang!r} is not in languages")
        return refs

    # -- nodes ------------------------------------------------------------------------------

    def _node(self, t: _Table, nid: NodeId) -> None:
        if nid in self.nodes:
            return
        self.keys[nid] = t.key
        kind = t.string("kind")
        builder = self._BUILDERS.get(kind)
        if builder is None:
            raise t.error("kind", f"unknown kind {kind!r} (expected {', '.join(self._BUILDERS)})")
        self.nodes[nid] = builder(self, t, nid)
        t.done()

    def _play(self, t: _Table, nid: NodeId) -> Node:
        prompts = self._prompt_refs(t, "prompts")
        if not prompts:
            raise t.error("prompts", "a play node needs at least one prompt")
        return PlayNode(nid, prompts, self._ref(t, "next", nid), t.boolean("barge_in", False))

    def _fallback(self, t: _Table, nid: NodeId) -> NodeId:
        if t.has("fallback"):
            return self._ref(t, "fallback", nid)
        inline = NodeId(nid.flow, f"{nid.node}[fallback]")
        self.nodes[inline] = RouteNode(inline, "hangup", None, _DEFAULT_FALLBACK_PROMPTS)
        self.keys[inline] = t.path("fallback")
        return inline

    def _menu(self, t: _Table, nid: NodeId) -> Node:
        prompts = self._prompt_refs(t, "prompts")
        options_table = t.table("options")
        options: dict[str, NodeId] = {}
        for key in options_table.names():
            if len(key) != 1 or key.upper() not in DTMF_DIGITS:
                raise options_table.error(key, "an option is one DTMF key: 0-9, *, #, A-D")
            options[key.upper()] = self._ref(options_table, key, NodeId(nid.flow, nid.node))
        if not options:
            raise t.error("options", "a menu needs at least one option")
        options_table.done()
        return MenuNode(
            nid,
            prompts,
            MappingProxyType(options),
            self._fallback(t, nid),
            t.integer("tries", 3, 1, 10),
            t.number("timeout", 5.0, 0.5, 120.0),
            self._prompt_refs(t, "invalid_prompts", ("invalid",)),
            self._prompt_refs(t, "timeout_prompts", ("timeout",)),
        )

    def _collect(self, t: _Table, nid: NodeId) -> Node:
        var = t.string("var")
        if not _VAR.match(var):
            raise t.error("var", "a variable name is letters, digits and '_'")
        max_digits = t.integer("max_digits", 20, 1, 64)
        min_digits = t.integer("min_digits", 1, 1, max_digits)
        terminator = t.string("terminator", "#") or None
        if terminator is not None and (len(terminator) != 1 or terminator not in DTMF_DIGITS):
            raise t.error("terminator", 'one DTMF key, or "" for none')
        overall = t.number("overall_timeout", 0.0, 0.0, 600.0) or None
        confirm = t.boolean("confirm", False)
        if confirm and not set(self.languages) <= set(LANGUAGES):
            raise t.error("confirm", f"reading digits back needs languages among {LANGUAGES}")
        return CollectNode(
            nid,
            self._prompt_refs(t, "prompts"),
            var,
            self._ref(t, "next", nid),
            self._fallback(t, nid),
            min_digits,
            max_digits,
            terminator,
            t.number("timeout", 5.0, 0.5, 120.0),
            t.number("inter_digit_timeout", 3.0, 0.5, 60.0),
            overall,
            t.integer("tries", 3, 1, 10),
            confirm,
            self._prompt_refs(t, "invalid_prompts", ("invalid",)),
            self._prompt_refs(t, "timeout_prompts", ("timeout",)),
            self._prompt_refs(t, "confirm_prompts", ("confirm_entry",)),
        )

    def _set(self, t: _Table, nid: NodeId) -> Node:
        table = t.table("vars")
        values: dict[str, str] = {}
        for name in table.names():
            if not _VAR.match(name):
                raise table.error(name, "a variable name is letters, digits and '_'")
            raw = table.get(name)
            if isinstance(raw, bool):
                values[name] = "true" if raw else "false"
            elif isinstance(raw, str | int):
                values[name] = str(raw)
            else:
                raise table.error(name, "expected a string, integer or boolean")
            if name == "lang" and values[name] not in self.languages:
                raise table.error(name, f"{values[name]!r} is not in languages")
        if not values:
            raise t.error("vars", "nothing to set")
        table.done()
        return SetNode(nid, MappingProxyType(values), self._ref(t, "next", nid))

    def _branch(self, t: _Table, nid: NodeId) -> Node:
        on = t.string("on")
        source, sep, name = on.partition(":")
        if not sep or source not in ("schedule", "var", "caller") or not name:
            raise t.error("on", "expected 'schedule:<name>', 'var:<name>' or 'caller:<attr>'")
        exhaustive: set[str] = set()
        allowed: set[str] | None = None
        if source == "schedule":
            schedule = self.schedules.get(name)
            if schedule is None:
                known = ", ".join(sorted(self.schedules)) or "none defined"
                raise t.error("on", f"unknown schedule {name!r} (known: {known})")
            allowed = {"open", "closed", *schedule.shift_names}
            exhaustive = {"open", "closed"}
        elif source == "caller":
            if name not in _CALLER_ATTRS and not (name.startswith("attr.") and len(name) > 5):
                attrs = ", ".join(_CALLER_ATTRS)
                raise t.error("on", f"unknown caller attribute {name!r} ({attrs}, attr.<name>)")
            if name in ("known", "vip"):
                allowed = exhaustive = {"true", "false"}
        elif not _VAR.match(name):
            raise t.error("on", "a variable name is letters, digits and '_'")
        cases_table = t.table("cases")
        cases: dict[str, NodeId] = {}
        for key in cases_table.names():
            if allowed is not None and key not in allowed:
                raise cases_table.error(key, f"never matches (expected one of {sorted(allowed)})")
            cases[key] = self._ref(cases_table, key, nid)
        cases_table.done()
        default = self._ref(t, "default", nid) if t.has("default") else None
        if default is None and not (exhaustive and exhaustive <= set(cases)):
            raise t.error("default", "missing (the cases do not cover every value)")
        return BranchNode(nid, source, name, MappingProxyType(cases), default)

    def _goto(self, t: _Table, nid: NodeId) -> Node:
        if t.has("flow"):
            flow = t.string("flow")
            if flow not in self.flows:
                raise t.error("flow", f"unknown flow {flow!r}")
            if t.has("node"):
                node = t.string("node")
                return GotoNode(nid, self._ref(t, "node", nid, f"{flow}/{node}"))
            return GotoNode(nid, self.starts[flow])
        if not t.has("node"):
            raise t.error("node", "a goto needs a node or a flow")
        return GotoNode(nid, self._ref(t, "node", nid))

    def _route(self, t: _Table, nid: NodeId) -> Node:
        kind = t.string("kind")
        prompts = self._prompt_refs(t, "prompts", ())
        action: RouteAction | None
        number_var: str | None = None
        if kind == "queue":
            skills_raw = t.get("skills") if t.has("skills") else {}
            skills: dict[str, int] = {}
            if isinstance(skills_raw, Sequence) and not isinstance(skills_raw, str):
                for i, skill in enumerate(skills_raw):
                    if not isinstance(skill, str) or not skill:
                        raise t.error(f"skills[{i}]", "expected a skill name")
                    skills[skill] = 1
            elif isinstance(skills_raw, Mapping):
                for skill, level in skills_raw.items():
                    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
                        raise t.error(f"skills.{skill}", "expected a level (integer >= 0)")
                    skills[skill] = level
            else:
                raise t.error("skills", "expected a list of skills or a table skill = level")
            priority = t.integer("priority", -1, 0, 1000)
            action = QueueAction(
                t.string("queue"), None if priority < 0 else priority, MappingProxyType(skills)
            )
        elif kind == "agent":
            action = AgentAction(t.string("extension"))
        elif kind == "voicemail":
            action = VoicemailAction(t.string("box"))
        elif kind == "transfer":
            action = TransferAction(t.string("number"))
        elif kind == "callback":
            queue = t.string("queue", "") or None
            number_var = t.string("number_var", "") or None
            if number_var is not None and not _VAR.match(number_var):
                raise t.error("number_var", "a variable name is letters, digits and '_'")
            action = CallbackAction("", queue)
        else:  # hangup
            action = None
        return RouteNode(nid, kind, action, prompts, number_var)

    _BUILDERS: Final[Mapping[str, Callable[[_Loader, _Table, NodeId], Node]]] = {
        "play": _play,
        "menu": _menu,
        "collect": _collect,
        "set": _set,
        "branch": _branch,
        "goto": _goto,
        "queue": _route,
        "agent": _route,
        "voicemail": _route,
        "callback": _route,
        "transfer": _route,
        "hangup": _route,
    }

    # -- whole-graph checks -----------------------------------------------------------------

    def _check_loops(self) -> None:
        """Refuse a cycle whose nodes never wait for input: the caller would be stuck in it."""
        white, grey, black = 0, 1, 2
        colour = dict.fromkeys(self.nodes, white)
        for root in sorted(self.nodes):
            if colour[root] != white or isinstance(self.nodes[root], _WAITS_FOR_INPUT):
                continue
            stack: list[tuple[NodeId, Iterator[NodeId]]] = [(root, iter(self._moves(root)))]
            colour[root] = grey
            while stack:
                current, children = stack[-1]
                child = next(children, None)
                if child is None:
                    colour[current] = black
                    stack.pop()
                elif colour[child] == grey:
                    cycle = [n for n, _ in stack]
                    cycle = [*cycle[cycle.index(child) :], child]
                    shown = " → ".join(str(n) for n in cycle)
                    raise ValueError(
                        f"{self.keys[child]}: loop that never waits for the caller: {shown}"
                    )
                elif colour[child] == white:
                    colour[child] = grey
                    stack.append((child, iter(self._moves(child))))

    def _moves(self, nid: NodeId) -> list[NodeId]:
        return [
            n
            for n in _successors(self.nodes[nid])
            if not isinstance(self.nodes[n], _WAITS_FOR_INPUT)
        ]

    def _check_languages(self) -> None:
        for nid, node in self.nodes.items():
            if isinstance(node, BranchNode) and node.source == "var" and node.name == "lang":
                for key in node.cases:
                    if key not in self.languages:
                        raise ValueError(f"{self.keys[nid]}.cases.{key}: not in languages")

    def _warn_depth_and_reach(self, entry: NodeId, max_depth: int) -> None:
        # 0-1 BFS: entering a menu costs one level; depth = fewest menus a caller goes through.
        depth = {entry: 1 if isinstance(self.nodes[entry], MenuNode) else 0}
        queue: deque[NodeId] = deque([entry])
        while queue:
            current = queue.popleft()
            for child in _successors(self.nodes[current]):
                cost = 1 if isinstance(self.nodes[child], MenuNode) else 0
                if child not in depth or depth[current] + cost < depth[child]:
                    depth[child] = depth[current] + cost
                    (queue.append if cost else queue.appendleft)(child)
        for nid in sorted(self.nodes):
            node = self.nodes[nid]
            if nid not in depth:
                if "[" not in nid.node:
                    self.warnings.append(f"{self.keys[nid]}: unreachable from the entry flow")
            elif isinstance(node, MenuNode) and depth[nid] > max_depth:
                self.warnings.append(
                    f"{self.keys[nid]}: menu is {depth[nid]} levels deep "
                    f"(max_menu_depth = {max_depth}); callers prefer shallow menus"
                )

    def _check_prompts(self, flow_set: FlowSet, catalog: PromptCatalog) -> None:
        for nid, node in sorted(self.nodes.items()):
            for name, refs in _node_prompts(node):
                for i, ref in enumerate(refs):
                    for key in flow_set._expand(ref):
                        if not catalog.has(key.lang, key.id):
                            where = f"{self.keys[nid]}.{name}"
                            where += "" if name == "confirm" else f"[{i}]"
                            raise ValueError(f"{where}: no prompt {str(key)!r}")
        missing = [
            str(k) for k in sorted(flow_set.prompt_keys(), key=str) if not catalog.has(k.lang, k.id)
        ]
        if missing:
            raise ValueError(f"prompts: missing {', '.join(missing)}")


class _Table:
    """A TOML table being read: typed getters, key paths in errors, unknown keys refused."""

    _REQUIRED: Final = object()

    def __init__(self, data: object, key: str) -> None:
        if not isinstance(data, Mapping):
            raise ValueError(f"{key or 'ivr'}: expected a table")
        self.data: Mapping[str, object] = data
        self.key = key
        self.used: set[str] = set()

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def error(self, name: str, why: str) -> ValueError:
        return ValueError(f"{self.path(name)}: {why}")

    def names(self) -> list[str]:
        return list(self.data)

    def has(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str) -> object:
        if name not in self.data:
            raise self.error(name, "missing")
        self.used.add(name)
        return self.data[name]

    def done(self) -> None:
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            raise self.error(unknown[0], "unknown key")

    def _value(self, name: str, default: object) -> object:
        if name not in self.data:
            if default is self._REQUIRED:
                raise self.error(name, "missing")
            return default
        return self.get(name)

    def string(self, name: str, default: str | object = _REQUIRED) -> str:
        value = self._value(name, default)
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {value!r}")
        return value

    def strings(self, name: str, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        value = self._value(name, self._REQUIRED if default is None else default)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise self.error(name, "expected a list of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.error(f"{name}[{i}]", "expected a non-empty string")
        return tuple(str(item) for item in value)

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self._value(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"expected an integer, got {value!r}")
        if name in self.data and not lo <= value <= hi:
            raise self.error(name, f"must be between {lo} and {hi}, got {value}")
        return value

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self._value(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number of seconds, got {value!r}")
        if name in self.data and not lo <= value <= hi:
            raise self.error(name, f"must be between {lo} and {hi}, got {value}")
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._value(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {value!r}")
        return value

    def table(self, name: str) -> _Table:
        return _Table(self.get(name), self.path(name))


# ---------------------------------------------------------------------------------------------
# The interpreter


@dataclass(frozen=True, slots=True)
class PathStep:
    """One node visit: when, and the choice made there (a menu key, ``"entered"`` for a collect,
    the branch case taken, ``"fallback"``); ``retries`` counts invalid or missing inputs."""

    node: str
    at: float
    choice: str | None = None
    retries: int = 0

    def __str__(self) -> str:
        text = self.node if self.choice is None else f"{self.node}:{self.choice}"
        return text + (f" ({self.retries} retries)" if self.retries else "")


@dataclass(frozen=True, slots=True)
class IvrRecord:
    """What the interaction record keeps of the IVR: path, variables, outcome.

    ``outcome`` is the route (``"queue:sales"``), ``"hangup"``, ``"caller-hangup"`` or
    ``"max-visits"``; ``""`` while the session runs.
    """

    path: tuple[PathStep, ...]
    variables: Mapping[str, str]
    outcome: str
    route: RouteAction | None = None

    def path_text(self) -> str:
        """The path as ``main/welcome > main/hours:open > ...``."""
        return " > ".join(str(step) for step in self.path)


class _Phase(enum.Enum):
    NEW = "new"
    PLAYING = "playing"  # a play node's prompts
    ASKING = "asking"  # a menu/collect prompt, digits barge in
    LISTENING = "listening"  # waiting for digits, timers running
    FINISHING = "finishing"  # a terminal node's prompts, then route
    DONE = "done"


class _Event(enum.Enum):
    DIGIT = "digit"
    PROMPT_DONE = "prompt-done"
    TIMER = "timer"
    HANGUP = "hangup"


class _Ask(enum.Enum):
    MENU = "menu"
    COLLECT = "collect"
    CONFIRM = "confirm"


class IvrSession:
    """One caller's run through a :class:`FlowSet` (see the module docstring).

    ``now`` is the owner's clock in seconds (any epoch); ``wall`` is the wall-clock time at
    ``now`` for schedule branches (default: ``now`` read as a UNIX time). Every event method
    returns the commands to carry out, in order; after each call the owner re-arms its one timer
    at :meth:`deadline`. Events that arrive when they no longer matter (a digit while a terminal
    prompt plays, a stale ``on_prompt_done``, anything after the end) are ignored.
    """

    def __init__(
        self,
        flow_set: FlowSet,
        caller: CallerInfo,
        now: float,
        wall: datetime | None = None,
    ) -> None:
        self.flow_set = flow_set
        self.caller = caller
        self._epoch = now
        self._wall = wall
        self._vars: dict[str, str] = {"lang": flow_set.default_language}
        self._path: list[PathStep] = []
        self._phase = _Phase.NEW
        self._node: Node | None = None
        self._seq = 0
        self._collector: DigitCollector | None = None
        self._ask = _Ask.MENU
        self._attempts = 0
        self._value = ""
        self._typeahead: list[str] = []
        self._visits = 0
        self._final: Route | Hangup | None = None
        self._outcome = ""

    # -- the owner's view -------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Whether the session is over (routed, hung up, or the caller left)."""
        return self._phase is _Phase.DONE

    @property
    def variables(self) -> Mapping[str, str]:
        """Call variables (``lang`` always present); read-only view."""
        return MappingProxyType(self._vars)

    @property
    def path(self) -> tuple[PathStep, ...]:
        """Nodes visited so far, with the choices made."""
        return tuple(self._path)

    @property
    def outcome(self) -> Route | Hangup | None:
        """The final command once the session is done (``None`` if the caller hung up)."""
        return self._final if self.done else None

    def record(self) -> IvrRecord:
        """Path, variables and outcome for the interaction record and the call hand-over."""
        route = self._final.action if isinstance(self._final, Route) and self.done else None
        return IvrRecord(self.path, dict(self._vars), self._outcome, route)

    def deadline(self) -> float | None:
        """When :meth:`on_timer` must be called next, or ``None``."""
        if self._phase is _Phase.LISTENING and self._collector is not None:
            return self._collector.deadline()
        return None

    # -- events in --------------------------------------------------------------------------

    def start(self, now: float) -> list[Command]:
        """Enter the entry flow's start node."""
        if self._phase is not _Phase.NEW:
            raise RuntimeError("IVR session already started")
        out: list[Command] = []
        self._enter(self.flow_set.entry, now, out)
        return out

    def on_digit(self, digit: str, now: float) -> list[Command]:
        """A DTMF key from the caller (RFC 4733 or SIP INFO)."""
        if len(digit) != 1 or digit.upper() not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF key: {digit!r}")
        return self._dispatch(_Event.DIGIT, now, digit.upper())

    def on_prompt_done(self, now: float, seq: int | None = None) -> list[Command]:
        """The playback ``seq`` (default: the latest) finished."""
        if seq is not None and seq != self._seq:
            return []
        return self._dispatch(_Event.PROMPT_DONE, now, "")

    def on_timer(self, now: float) -> list[Command]:
        """The timer armed at :meth:`deadline` fired (early or late calls are harmless)."""
        return self._dispatch(_Event.TIMER, now, "")

    def on_hangup(self, now: float) -> list[Command]:
        """The caller hung up; the session ends with outcome ``caller-hangup``."""
        return self._dispatch(_Event.HANGUP, now, "")

    def _dispatch(self, event: _Event, now: float, digit: str) -> list[Command]:
        if self._phase is _Phase.NEW:
            raise RuntimeError(f"{event.value} before start()")
        handler = _TABLE[(self._phase, event)]
        out: list[Command] = []
        handler(self, now, digit, out)
        return out

    # -- transitions (the table below names one per phase and event) ------------------------

    def _ignore(self, now: float, digit: str, out: list[Command]) -> None:
        pass

    def _caller_left(self, now: float, digit: str, out: list[Command]) -> None:
        self._phase = _Phase.DONE
        self._final = None
        self._outcome = "caller-hangup"
        self._collector = None

    def _play_digit(self, now: float, digit: str, out: list[Command]) -> None:
        node = self._node
        assert isinstance(node, PlayNode)
        if not node.barge_in:
            return
        out.append(StopPlayback(self._seq))
        self._typeahead.append(digit)
        self._enter(node.next, now, out)

    def _play_done(self, now: float, digit: str, out: list[Command]) -> None:
        node = self._node
        assert isinstance(node, PlayNode)
        self._enter(node.next, now, out)

    def _ask_digit(self, now: float, digit: str, out: list[Command]) -> None:
        out.append(StopPlayback(self._seq))
        self._phase = _Phase.LISTENING
        self._listen_digit(now, digit, out)

    def _ask_done(self, now: float, digit: str, out: list[Command]) -> None:
        assert self._collector is not None
        self._collector.start(now)
        self._phase = _Phase.LISTENING

    def _listen_digit(self, now: float, digit: str, out: list[Command]) -> None:
        assert self._collector is not None
        result = self._collector.feed(digit, now)
        if result is not None:
            self._on_result(result, now, out)

    def _listen_timer(self, now: float, digit: str, out: list[Command]) -> None:
        assert self._collector is not None
        result = self._collector.on_timer(now)
        if result is not None:
            self._on_result(result, now, out)

    def _finish_done(self, now: float, digit: str, out: list[Command]) -> None:
        assert self._final is not None
        self._end(self._final, out)

    # -- walking the graph ------------------------------------------------------------------

    def _enter(self, nid: NodeId, now: float, out: list[Command]) -> None:
        for _ in range(_MAX_HOPS):
            self._visits += 1
            if self._visits > self.flow_set.max_visits:
                self._end(Hangup("max-visits"), out)
                return
            node = self.flow_set.nodes[nid]
            self._node = node
            self._path.append(PathStep(str(nid), now))
            match node:
                case SetNode():
                    for name, value in node.values.items():
                        self._vars[name] = value
                        out.append(SetVar(name, value))
                    nid = node.next
                case BranchNode():
                    case, nid = self._branch(node, now)
                    self._choose(case)
                case GotoNode():
                    nid = node.target
                case PlayNode():
                    if node.barge_in and self._typeahead:
                        nid = node.next  # the caller already answered what comes next
                        continue
                    self._play(node.prompts, node.barge_in, out)
                    self._phase = _Phase.PLAYING
                    return
                case MenuNode():
                    self._begin_ask(_Ask.MENU, node.prompts, node.spec(), now, out, attempts=0)
                    return
                case CollectNode():
                    self._begin_ask(_Ask.COLLECT, node.prompts, node.spec(), now, out, attempts=0)
                    return
                case RouteNode():
                    self._typeahead.clear()
                    final = self._final_command(node)
                    if node.prompts:
                        self._final = final
                        self._play(node.prompts, False, out)
                        self._phase = _Phase.FINISHING
                    else:
                        self._end(final, out)
                    return
        self._end(Hangup("max-visits"), out)  # unreachable after the load-time loop check

    def _branch(self, node: BranchNode, now: float) -> tuple[str, NodeId]:
        if node.source == "schedule":
            shift = self.flow_set.schedules[node.name].current_shift(self._wall_at(now))
            keys = [shift, "open"] if shift is not None else ["closed"]
        elif node.source == "var":
            keys = [self._vars.get(node.name, "")]
        else:
            keys = [self.caller.attribute(node.name)]
        for key in keys:
            if key is not None and key in node.cases:
                return key, node.cases[key]
        assert node.default is not None  # load refuses non-exhaustive branches without one
        return "default", node.default

    def _wall_at(self, now: float) -> datetime:
        if self._wall is None:
            return datetime.fromtimestamp(now, UTC)
        return self._wall + timedelta(seconds=now - self._epoch)

    def _final_command(self, node: RouteNode) -> Route | Hangup:
        action = node.action
        if action is None:
            return Hangup("flow")
        if isinstance(action, CallbackAction):
            number = self._vars.get(node.number_var, "") if node.number_var else ""
            return Route(replace(action, number=number or self.caller.number))
        return Route(action)

    def _end(self, final: Route | Hangup, out: list[Command]) -> None:
        self._final = final
        self._phase = _Phase.DONE
        self._collector = None
        self._outcome = str(final.action) if isinstance(final, Route) else final.reason
        if self._outcome == "flow":
            self._outcome = "hangup"
        out.append(final)

    def _play(self, refs: Sequence[str], barge_in: bool, out: list[Command]) -> None:
        lang = self._vars.get("lang", self.flow_set.default_language)
        self._seq += 1
        keys = tuple(PromptKey.parse(ref, lang) for ref in refs)
        out.append(Play(keys, barge_in, self._seq))

    def _choose(self, choice: str) -> None:
        self._path[-1] = replace(self._path[-1], choice=choice)

    # -- menus and digit collection ---------------------------------------------------------

    def _begin_ask(
        self,
        ask: _Ask,
        prompts: Sequence[str],
        spec: DigitSpec,
        now: float,
        out: list[Command],
        attempts: int | None = None,
    ) -> None:
        self._ask = ask
        if attempts is not None:
            self._attempts = attempts
        self._collector = DigitCollector.from_spec(spec)
        typeahead, self._typeahead = self._typeahead, []
        for digit in typeahead:
            result = self._collector.feed(digit, now)
            if result is not None:
                self._phase = _Phase.LISTENING
                self._on_result(result, now, out)
                return
        out.append(CollectDigits(spec))
        if typeahead or not prompts:
            self._collector.start(now)
            self._phase = _Phase.LISTENING
        else:
            self._play(prompts, True, out)
            self._phase = _Phase.ASKING

    def _on_result(self, result: DigitResult, now: float, out: list[Command]) -> None:
        node = self._node
        if self._ask is _Ask.MENU:
            assert isinstance(node, MenuNode)
            target = node.options.get(result.digits)
            if target is not None:
                self._choose(result.digits)
                self._enter(target, now, out)
            else:
                self._retry(result, now, out)
            return
        assert isinstance(node, CollectNode)
        if self._ask is _Ask.COLLECT:
            digits = result.digits
            if result.reason is EndReason.NO_INPUT or not digits or len(digits) < node.min_digits:
                self._retry(result, now, out)
            elif node.confirm:
                self._value = digits
                self._confirm(node, (), now, out)
            else:
                self._accept(node, digits, now, out)
            return
        if result.digits == _CONFIRM_YES:
            self._accept(node, self._value, now, out)
        elif result.digits == _CONFIRM_AGAIN:
            self._attempts += 1
            if self._attempts >= node.tries:
                self._fallback(node.fallback, now, out)
            else:
                self._begin_ask(_Ask.COLLECT, node.prompts, node.spec(), now, out)
        else:
            self._retry(result, now, out)

    def _confirm(
        self, node: CollectNode, before: Sequence[str], now: float, out: list[Command]
    ) -> None:
        lang = self._vars.get("lang", self.flow_set.default_language)
        readback = [f"{lang}/{p}" for p in say_digits(self._value, lang)]
        prompts = [*before, "you_entered", *readback, *node.confirm_prompts]
        spec = DigitSpec(1, None, node.timeout, node.timeout)
        self._begin_ask(_Ask.CONFIRM, prompts, spec, now, out)

    def _accept(self, node: CollectNode, value: str, now: float, out: list[Command]) -> None:
        self._vars[node.var] = value
        out.append(SetVar(node.var, value))
        self._choose("entered")
        self._enter(node.next, now, out)

    def _retry(self, result: DigitResult, now: float, out: list[Command]) -> None:
        node = self._node
        assert isinstance(node, MenuNode | CollectNode)
        self._attempts += 1
        self._path[-1] = replace(self._path[-1], retries=self._attempts)
        if self._attempts >= node.tries:
            self._fallback(node.fallback, now, out)
            return
        no_input = result.reason is EndReason.NO_INPUT or not result.digits
        before = node.timeout_prompts if no_input else node.invalid_prompts
        if self._ask is _Ask.CONFIRM:
            assert isinstance(node, CollectNode)
            self._confirm(node, before, now, out)
        else:
            self._begin_ask(self._ask, [*before, *node.prompts], node.spec(), now, out)

    def _fallback(self, target: NodeId, now: float, out: list[Command]) -> None:
        self._choose("fallback")
        self._enter(target, now, out)


_Handler = Callable[[IvrSession, float, str, list[Command]], None]

# (phase, event) → transition. Every pair is listed: a new phase or event must be placed here.
_TABLE: Final[Mapping[tuple[_Phase, _Event], _Handler]] = {
    (_Phase.PLAYING, _Event.DIGIT): IvrSession._play_digit,
    (_Phase.PLAYING, _Event.PROMPT_DONE): IvrSession._play_done,
    (_Phase.PLAYING, _Event.TIMER): IvrSession._ignore,
    (_Phase.PLAYING, _Event.HANGUP): IvrSession._caller_left,
    (_Phase.ASKING, _Event.DIGIT): IvrSession._ask_digit,
    (_Phase.ASKING, _Event.PROMPT_DONE): IvrSession._ask_done,
    (_Phase.ASKING, _Event.TIMER): IvrSession._ignore,
    (_Phase.ASKING, _Event.HANGUP): IvrSession._caller_left,
    (_Phase.LISTENING, _Event.DIGIT): IvrSession._listen_digit,
    (_Phase.LISTENING, _Event.PROMPT_DONE): IvrSession._ignore,
    (_Phase.LISTENING, _Event.TIMER): IvrSession._listen_timer,
    (_Phase.LISTENING, _Event.HANGUP): IvrSession._caller_left,
    (_Phase.FINISHING, _Event.DIGIT): IvrSession._ignore,
    (_Phase.FINISHING, _Event.PROMPT_DONE): IvrSession._finish_done,
    (_Phase.FINISHING, _Event.TIMER): IvrSession._ignore,
    (_Phase.FINISHING, _Event.HANGUP): IvrSession._caller_left,
    (_Phase.DONE, _Event.DIGIT): IvrSession._ignore,
    (_Phase.DONE, _Event.PROMPT_DONE): IvrSession._ignore,
    (_Phase.DONE, _Event.TIMER): IvrSession._ignore,
    (_Phase.DONE, _Event.HANGUP): IvrSession._ignore,
}
