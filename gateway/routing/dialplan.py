"""The dial plan: where a dialled number goes. Pure functions over plain data."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ToAgent:
    """Ring one agent's registered phones."""

    extension: str


@dataclass(frozen=True, slots=True)
class ToGroup:
    """Ring a group of agents (ring-all or hunt)."""

    name: str


@dataclass(frozen=True, slots=True)
class ToQueue:
    """Wait in a contact-centre queue for an agent."""

    name: str


@dataclass(frozen=True, slots=True)
class ToFlow:
    """Run an IVR flow (which routes on to a queue, an agent, voicemail ...)."""

    name: str


@dataclass(frozen=True, slots=True)
class ToVoicemail:
    """Leave a message in a voicemail box."""

    box: str


@dataclass(frozen=True, slots=True)
class FeatureCode:
    """An agent's feature code (``*45`` log in, ...): handled by the contact centre."""

    code: str


@dataclass(frozen=True, slots=True)
class ToTrunk:
    """Out to the PSTN through a carrier trunk."""

    trunk: str
    number: str


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the call with a SIP status."""

    status: int
    reason: str


Destination = ToAgent | ToGroup | ToQueue | ToFlow | ToVoicemail | FeatureCode | ToTrunk | Reject
AppDestination = ToQueue | ToFlow | ToVoicemail | FeatureCode
"""Destinations the gateway answers itself (the contact centre), rather than ringing a phone."""


def parse_destination(text: str) -> Destination:
    """``agent:1001`` / ``group:sales`` / ``queue:sales`` / ``flow:main`` / ``voicemail:box`` →
    a destination; ValueError otherwise."""
    kind, sep, value = text.partition(":")
    if not sep or not value:
        raise ValueError(f"{text!r} is not kind:value (agent:1001, group:sales, queue:sales)")
    make = _KINDS.get(kind)
    if make is None:
        raise ValueError(f"unknown destination kind {kind!r} in {text!r} ({', '.join(_KINDS)})")
    return make(value)


_KINDS: dict[str, Callable[[str], Destination]] = {
    "agent": ToAgent,
    "group": ToGroup,
    "queue": ToQueue,
    "flow": ToFlow,
    "voicemail": ToVoicemail,
}


@dataclass(frozen=True, slots=True)
class DialPlan:
    """What the routing functions need to know of a site's configuration."""

    agents: frozenset[str] = frozenset()
    group_numbers: Mapping[str, str] = field(default_factory=dict)  # extension → group name
    queue_numbers: Mapping[str, str] = field(default_factory=dict)  # extension → queue name
    feature_codes: frozenset[str] = frozenset()  # "*45" ...
    dids: Mapping[str, Mapping[str, Destination]] = field(
        default_factory=dict
    )  # trunk → DID → dest
    trunk_defaults: Mapping[str, Destination] = field(default_factory=dict)  # trunk → fallback
    external_pattern: re.Pattern[str] = re.compile(r"^\+?[0-9]{6,15}$")
    outbound_trunk: str | None = None
    site_prefixes: Mapping[str, str] = field(default_factory=dict)
    """Extension prefix → inter-site trunk: extensions that live at another site."""
    mesh_trunks: frozenset[str] = frozenset()
    """Trunks to other site gateways (overflow and extension calls arrive on them)."""


OVERFLOW_PREFIX = "overflow-"
"""Request-URI user of an overflow INVITE between sites: ``overflow-<queue>``."""


def normalise_number(user: str) -> str:
    """Strip visual separators from a dialled user part (RFC 3966 §5.1.1)."""
    return user.replace("-", "").replace(".", "").replace("(", "").replace(")", "").replace(" ", "")


def route_inbound(plan: DialPlan, trunk: str, dialled: str) -> Destination:
    """A call from carrier ``trunk`` to ``dialled`` (the DID). On an inter-site trunk,
    ``overflow-<queue>`` joins that queue and a local extension rings its agent; a number is
    never passed on to the PSTN from there (no hairpin through another site's trunk)."""
    if trunk in plan.mesh_trunks:
        if dialled.startswith(OVERFLOW_PREFIX):
            return ToQueue(dialled[len(OVERFLOW_PREFIX) :])
        if dialled in plan.agents:
            return ToAgent(dialled)
        queue = plan.queue_numbers.get(dialled)
        if queue is not None:
            return ToQueue(queue)
        group = plan.group_numbers.get(dialled)
        if group is not None:
            return ToGroup(group)
    number = normalise_number(dialled)
    dids = plan.dids.get(trunk, {})
    dest = dids.get(number)
    if dest is None and number.startswith("+"):
        dest = dids.get(number[1:])
    elif dest is None:
        dest = dids.get("+" + number)
    if dest is None:
        dest = plan.trunk_defaults.get(trunk)
    if dest is None:
        return Reject(404, "Not Found")
    return dest


def route_internal(plan: DialPlan, caller: str, dialled: str) -> Destination:
    """A call from authenticated agent ``caller`` to ``dialled``."""
    number = normalise_number(dialled)
    if number in plan.feature_codes:
        return FeatureCode(number)
    if number == caller:
        return Reject(486, "Busy Here")
    if number in plan.agents:
        return ToAgent(number)
    group = plan.group_numbers.get(number)
    if group is not None:
        return ToGroup(group)
    queue = plan.queue_numbers.get(number)
    if queue is not None:
        return ToQueue(queue)
    trunk = site_trunk(plan, number)
    if trunk is not None:
        return ToTrunk(trunk, number)
    if plan.external_pattern.fullmatch(number):
        if plan.outbound_trunk is None:
            return Reject(403, "No Outbound Route")
        return ToTrunk(plan.outbound_trunk, number)
    return Reject(404, "Not Found")


def site_trunk(plan: DialPlan, number: str) -> str | None:
    """The inter-site trunk for an extension at another site (longest prefix wins), or None."""
    best: str | None = None
    best_len = 0
    for prefix, trunk in plan.site_prefixes.items():
        if number.startswith(prefix) and len(prefix) > best_len and number.isdigit():
            best, best_len = trunk, len(prefix)
    return best
