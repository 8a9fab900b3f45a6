"""Hybrid logical clocks and the customer-record merge (pure code; Hypothesis properties)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.store.hlc import ClockDriftError, Hlc, HlcClock
from gateway.store.merge import (
    CUSTOMER_FIELDS,
    STAMPS,
    CustomerChange,
    merge,
    merge_all,
    merge_records,
    new_record,
    normalize_phone,
    record_changes,
)

# --- Hlc --------------------------------------------------------------------------------------

hlcs = st.builds(
    Hlc,
    wall_ms=st.integers(0, 10**15 - 2),  # the largest one has no successor (see below)
    counter=st.integers(0, 10**6 - 1),
    node=st.text(min_size=1, max_size=8),
)


@given(hlcs)
def test_hlc_text_round_trips(h: Hlc) -> None:
    assert Hlc.parse(str(h)) == h


@given(hlcs, hlcs)
def test_hlc_text_sorts_like_the_stamps(a: Hlc, b: Hlc) -> None:
    assert (str(a) < str(b)) == (a < b)
    assert (str(a) == str(b)) == (a == b)


def test_hlc_text_is_fixed_width() -> None:
    assert str(Hlc(1_700_000_000_123, 7, "sh")) == "001700000000123-000007-sh"


@pytest.mark.parametrize(
    "text", ["", "1-2-x", "001700000000123-000007-", "001700000000123_000007_sh", "x" * 30]
)
def test_hlc_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        Hlc.parse(text)


@pytest.mark.parametrize(
    "args", [(-1, 0, "a"), (10**15, 0, "a"), (0, -1, "a"), (0, 10**6, "a"), (0, 0, "")]
)
def test_hlc_rejects_out_of_range(args: tuple[int, int, str]) -> None:
    with pytest.raises(ValueError):
        Hlc(*args)


class FakeMs:
    def __init__(self, t: int = 0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


@given(st.lists(st.tuples(st.integers(0, 50), st.none() | hlcs), max_size=60))
def test_clock_is_monotonic_whatever_physical_time_does(
    events: list[tuple[int, Hlc | None]],
) -> None:
    now = FakeMs()
    clock = HlcClock("sh", now)
    last = clock.last
    for t, remote in events:
        now.t = t
        stamp = clock.tick() if remote is None else clock.observe(remote)
        assert stamp > last
        if remote is not None:
            assert (stamp.wall_ms, stamp.counter) > (remote.wall_ms, remote.counter)
        assert stamp.wall_ms >= t
        last = stamp


def test_clock_follows_physical_time_and_counts_within_a_millisecond() -> None:
    now = FakeMs(1000)
    clock = HlcClock("sh", now)
    assert clock.tick() == Hlc(1000, 0, "sh")
    assert clock.tick() == Hlc(1000, 1, "sh")
    now.t = 999  # physical clock stepped back
    assert clock.tick() == Hlc(1000, 2, "sh")
    assert clock.observe(Hlc(1500, 4, "gz")) == Hlc(1500, 5, "sh")
    now.t = 2000
    assert clock.tick() == Hlc(2000, 0, "sh")


def test_counter_overflow_borrows_the_next_millisecond() -> None:
    clock = HlcClock("sh", FakeMs(5))
    assert clock.observe(Hlc(5, 10**6 - 2, "gz")) == Hlc(5, 10**6 - 1, "sh")
    assert clock.tick() == Hlc(6, 0, "sh")
    assert clock.observe(Hlc(6, 10**6 - 1, "gz")) == Hlc(7, 0, "sh")


def test_clock_refuses_a_stamp_too_far_ahead() -> None:
    clock = HlcClock("sh", FakeMs(1000), max_drift_ms=500)
    assert clock.observe(Hlc(1500, 0, "gz")) == Hlc(1500, 1, "sh")
    with pytest.raises(ClockDriftError):
        clock.observe(Hlc(2600, 0, "gz"))
    assert clock.last == Hlc(1500, 1, "sh")


# --- changes ----------------------------------------------------------------------------------

H = Hlc(10, 0, "sh")


def test_change_payload_round_trips_through_json() -> None:
    c = CustomerChange("C1", {"phones": ["+86 21-5555 0100"], "vip": True}, H, "sh", "1001")
    assert c.fields["phones"] == ["+862155550100"]
    payload = json.loads(json.dumps(c.to_payload()))
    assert CustomerChange.from_payload(payload) == c
    assert c.to_payload(only={"vip"})["fields"] == {"vip": True}


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"delete": True},
        {"deleted": True, "name": "x"},
        {"customer_id": None},
        {"customer_id": "C2"},
        {"name": None},
        {"phones": None},
        {"phones": "+8610"},
        {"phones": ["not a number"]},
        {"vip": "yes"},
        {"name": 5},
        {"shoe_size": "42"},
    ],
)
def test_invalid_changes_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CustomerChange("C1", fields, H, "sh", "1001")


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"customer_id": "C1", "fields": {"name": "x"}, "hlc": "bad", "site": "sh", "author": "a"},
        {"customer_id": "", "fields": {"name": "x"}, "hlc": str(H), "site": "sh", "author": "a"},
        {"customer_id": "C1", "fields": ["name"], "hlc": str(H), "site": "sh", "author": "a"},
    ],
)
def test_malformed_payloads_are_refused(payload: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CustomerChange.from_payload(payload)


def test_identity_may_be_repeated_but_not_changed() -> None:
    c = CustomerChange("C1", {"customer_id": "C1", "name": "x"}, H, "sh", "a")
    assert dict(c.fields) == {"name": "x"}


def test_normalize_phone() -> None:
    assert normalize_phone("+86 (21) 5555-0100") == "+862155550100"
    assert normalize_phone("1001") == "1001"
    for bad in ("", "anonymous", "+", "12+34", "sip:1001@x"):
        with pytest.raises(ValueError):
            normalize_phone(bad)


# --- merge ------------------------------------------------------------------------------------


def test_field_level_last_writer_wins() -> None:
    a = CustomerChange("C1", {"name": "Li", "tier": "gold"}, Hlc(10, 0, "sh"), "sh", "1")
    b = CustomerChange("C1", {"name": "Lee"}, Hlc(12, 0, "gz"), "gz", "2")
    rec = merge(merge(None, a), b)
    assert (rec["name"], rec["tier"], rec["notes"], rec["vip"]) == ("Lee", "gold", "", False)
    assert rec[STAMPS]["name"] == {"hlc": str(b.hlc), "site": "gz", "author": "2"}
    assert rec[STAMPS]["tier"]["site"] == "sh"
    assert set(rec) == {*CUSTOMER_FIELDS, STAMPS}
    assert merge(merge(None, b), a) == rec


def test_merge_does_not_modify_its_inputs() -> None:
    rec = merge(None, CustomerChange("C1", {"phones": ["+8610"]}, H, "sh", "a"))
    before = json.dumps(rec, sort_keys=True)
    merge(rec, CustomerChange("C1", {"phones": ["+8620"]}, Hlc(11, 0, "sh"), "sh", "a"))
    assert json.dumps(rec, sort_keys=True) == before


def test_merge_refuses_another_customer() -> None:
    with pytest.raises(ValueError):
        merge(new_record("C1"), CustomerChange("C2", {"name": "x"}, H, "sh", "a"))


# Small domains so that stamps, sites and values collide often: ties are where merges go wrong.
field_values: dict[str, st.SearchStrategy[Any]] = {
    "phones": st.lists(st.sampled_from(["+8610", "+8620", "1001"]), max_size=2),
    "region": st.none() | st.sampled_from(["sh", "gz"]),
    "name": st.sampled_from(["Li", "Lee", ""]),
    "tier": st.none() | st.sampled_from(["gold", "tin"]),
    "named_agent": st.none() | st.sampled_from(["1001", "1002"]),
    "notes": st.sampled_from(["", "a", "b"]),
    "vip": st.booleans(),
}
changes = st.builds(
    CustomerChange,
    customer_id=st.just("C1"),
    fields=st.dictionaries(
        st.sampled_from(sorted(field_values)), st.none(), min_size=1, max_size=4
    ).flatmap(
        lambda d: st.fixed_dictionaries({k: field_values[k] for k in d}),
    ),
    hlc=st.builds(Hlc, st.integers(0, 3), st.integers(0, 2), st.sampled_from(["sh", "gz"])),
    site=st.sampled_from(["sh", "gz", "bj"]),
    author=st.sampled_from(["1001", "1002"]),
)


@settings(max_examples=300)
@given(st.lists(changes, min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_any_order_and_duplication_gives_the_same_record(
    cs: list[CustomerChange], rnd: Any
) -> None:
    reference = merge_all(None, cs)
    shuffled = cs + [rnd.choice(cs) for _ in range(rnd.randint(0, 5))]
    rnd.shuffle(shuffled)
    assert merge_all(None, shuffled) == reference


@settings(max_examples=200)
@given(st.lists(changes, max_size=6), st.lists(changes, max_size=6), st.lists(changes, max_size=6))
def test_merging_records_is_associative_and_matches_applying_every_change(
    a: list[CustomerChange], b: list[CustomerChange], c: list[CustomerChange]
) -> None:
    ra, rb, rc = (merge_all(new_record("C1"), x) or {} for x in (a, b, c))
    left = merge_records(merge_records(ra, rb), rc)
    right = merge_records(ra, merge_records(rb, rc))
    assert left == right == merge_all(new_record("C1"), a + b + c)
    assert merge_records(left, left) == left  # idempotent
    assert merge_records(rb, ra) == merge_records(ra, rb)  # commutative


@given(st.lists(changes, min_size=1, max_size=8))
def test_a_record_is_rebuilt_from_its_own_changes(cs: list[CustomerChange]) -> None:
    rec = merge_all(None, cs)
    assert rec is not None
    assert merge_all(None, record_changes(rec)) == rec


def test_a_remote_stamp_at_the_largest_value_is_refused_clearly() -> None:
    clock = HlcClock("a", lambda: 0)
    with pytest.raises(ClockDriftError):
        clock.observe(Hlc(10**15 - 1, 10**6 - 1, "b"))
