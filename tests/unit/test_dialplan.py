"""The dial plan: pure routing decisions."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.routing.dialplan import (
    DialPlan,
    Reject,
    ToAgent,
    ToGroup,
    ToTrunk,
    normalise_number,
    parse_destination,
    route_inbound,
    route_internal,
)

PLAN = DialPlan(
    agents=frozenset({"1001", "1002"}),
    group_numbers={"600": "sales"},
    dids={"carrier": {"+861000": ToAgent("1001"), "+862000": ToGroup("sales")}},
    trunk_defaults={"carrier": ToGroup("sales")},
    external_pattern=re.compile(r"^\+?[0-9]{6,15}$"),
    outbound_trunk="carrier",
)


@pytest.mark.parametrize(
    ("dialled", "expected"),
    [
        ("+861000", ToAgent("1001")),
        ("861000", ToAgent("1001")),  # without the plus
        ("+86-1000", ToAgent("1001")),  # visual separators (RFC 3966)
        ("+862000", ToGroup("sales")),
        ("+869999", ToGroup("sales")),  # the trunk's default
    ],
)
def test_inbound(dialled: str, expected: object) -> None:
    assert route_inbound(PLAN, "carrier", dialled) == expected


def test_inbound_unknown_trunk_without_default_is_404() -> None:
    assert route_inbound(PLAN, "other", "+861000") == Reject(404, "Not Found")


@pytest.mark.parametrize(
    ("dialled", "expected"),
    [
        ("1002", ToAgent("1002")),
        ("600", ToGroup("sales")),
        ("+8613800138000", ToTrunk("carrier", "+8613800138000")),
        ("02150001234", ToTrunk("carrier", "02150001234")),
        ("1001", Reject(486, "Busy Here")),  # calling oneself
        ("9", Reject(404, "Not Found")),
        ("abc", Reject(404, "Not Found")),
    ],
)
def test_internal(dialled: str, expected: object) -> None:
    assert route_internal(PLAN, "1001", dialled) == expected


def test_external_without_outbound_trunk_is_refused() -> None:
    plan = DialPlan(agents=frozenset({"1001"}))
    assert route_internal(plan, "1001", "+8613800138000") == Reject(403, "No Outbound Route")


@given(st.text(max_size=30))
def test_internal_never_raises_and_only_routes_digits_out(dialled: str) -> None:
    dest = route_internal(PLAN, "1001", dialled)
    if isinstance(dest, ToTrunk):
        assert PLAN.external_pattern.fullmatch(dest.number)
        assert dest.number == normalise_number(dialled)


def test_parse_destination() -> None:
    assert parse_destination("agent:1001") == ToAgent("1001")
    assert parse_destination("group:sales") == ToGroup("sales")
    for bad in ("agent", "nope:x", "agent:"):
        with pytest.raises(ValueError):
            parse_destination(bad)
