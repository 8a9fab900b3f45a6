"""The dial plan: where a dialled number goes. Pure functions over plain data."""

from __future__ import annotations

import re
from collections.abc import Mapping
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
class ToTrunk:
    """Out to the PSTN through a carrier trunk."""

    trunk: str
    number: str


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the call with a SIP status."""

    status: int
    reason: str


Destination = ToAgent | ToGroup | ToTrunk | Reject


def parse_destination(text: str) -> Destination:
    """``agent:1001`` / ``group:sales`` → a destination; ValueError otherwise."""
    kind, sep, value = text.partition(":")
    if not sep or not value:
        raise ValueError(f"{text!r} is not kind:value (agent:1001, group:sales)")
    if kind == "agent":
        return ToAgent(value)
    if kind == "group":
        return ToGroup(value)
    raise ValueError(f"unknown destination kind {kind!r} in {text!r} (agent, group)")


@dataclass(frozen=True, slots=True)
class DialPlan:
    """What the routing functions need to know of a site's configuration."""

    agents: frozenset[str] = frozenset()
    group_numbers: Mapping[str, str] = field(default_factory=dict)  # extension → group name
    dids: Mapping[str, Mapping[str, Destination]] = field(
        default_factory=dict
    )  # trunk → DID → dest
    trunk_defaults: Mapping[str, Destination] = field(default_factory=dict)  # trunk → fallback
    external_pattern: re.Pattern[str] = re.compile(r"^\+?[0-9]{6,15}$")
    outbound_trunk: str | None = None


def normalise_number(user: str) -> str:
    """Strip visual separators from a dialled user part (RFC 3966 §5.1.1)."""
    return user.replace("-", "").replace(".", "").replace("(", "").replace(")", "").replace(" ", "")


def route_inbound(plan: DialPlan, trunk: str, dialled: str) -> Destination:
    """A call from carrier ``trunk`` to ``dialled`` (the DID)."""
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
    if number == caller:
        return Reject(486, "Busy Here")
    if number in plan.agents:
        return ToAgent(number)
    group = plan.group_numbers.get(number)
    if group is not None:
        return ToGroup(group)
    if plan.external_pattern.fullmatch(number):
        if plan.outbound_trunk is None:
            return Reject(403, "No Outbound Route")
        return ToTrunk(plan.outbound_trunk, number)
    return Reject(404, "Not Found")
