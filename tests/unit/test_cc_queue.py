"""Waiting lines (gateway.cc.queue)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.cc.queue import (
    AlreadyQueued,
    JoinRule,
    LeaveRule,
    NotQueued,
    QueueConfig,
    QueueEntry,
    QueueFull,
    WaitingLine,
    effective_priority,
    may_join,
    must_leave,
)


def line(**kwargs: object) -> WaitingLine:
    return WaitingLine(QueueConfig("sales", **kwargs))  # type: ignore[arg-type]


def e(call_id: str, arrived_at: float, priority: int = 0, **kwargs: object) -> QueueEntry:
    return QueueEntry(call_id, arrived_at, priority, **kwargs)  # type: ignore[arg-type]


def ids(entries: list[QueueEntry]) -> list[str]:
    return [x.call_id for x in entries]


# -- configuration and entries -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "q", "aging_s": 0},
        {"name": "q", "aging_s": -5},
        {"name": "q", "aging_s": math.inf},
        {"name": "q", "max_wait_s": 0},
        {"name": "q", "max_len": 0},
    ],
)
def test_bad_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        QueueConfig(**kwargs)  # type: ignore[arg-type]


def test_config_defaults() -> None:
    c = QueueConfig("q")
    assert (c.aging_s, c.max_wait_s, c.join_rule, c.leave_rule, c.max_len) == (
        60.0,
        None,
        JoinRule.ALWAYS,
        LeaveRule.NEVER,
        None,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"call_id": "", "arrived_at": 0.0},
        {"call_id": "a", "arrived_at": math.nan},
        {"call_id": "a", "arrived_at": 0.0, "required_skills": {"x": 0}},
        {"call_id": "a", "arrived_at": 0.0, "required_skills": {"x": 11}},
        {"call_id": "a", "arrived_at": 0.0, "required_skills": {"x": True}},
    ],
)
def test_bad_entry(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        QueueEntry(**kwargs)  # type: ignore[arg-type]


def test_entry_skills_are_frozen_copies() -> None:
    skills = {"sales": 3}
    entry = e("a", 0.0, required_skills=skills)
    skills["sales"] = 9
    assert entry.required_skills["sales"] == 3
    with pytest.raises(TypeError):
        entry.required_skills["x"] = 1  # type: ignore[index]


def test_entry_sticky_and_wait() -> None:
    entry = e("a", 10.0, sticky_agent="1001", sticky_until=40.0)
    assert entry.is_sticky(39.9)
    assert not entry.is_sticky(40.0)
    assert not e("b", 0.0, sticky_until=100.0).is_sticky(1.0)  # no agent named
    assert entry.wait(25.0) == 15.0
    assert entry.wait(5.0) == 0.0


# -- effective priority ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "wait", "aging", "expected"),
    [
        (0, 0.0, 60.0, 0),
        (0, 59.9, 60.0, 0),
        (0, 60.0, 60.0, 1),
        (0, 179.0, 60.0, 2),
        (5, 0.0, 60.0, 5),
        (5, 600.0, 60.0, 15),
        (2, 1e6, None, 2),
        (0, -10.0, 60.0, 0),  # clock before arrival: no negative aging
        (-1, 30.0, 10.0, 2),
    ],
)
def test_effective_priority(priority: int, wait: float, aging: float | None, expected: int) -> None:
    entry = e("a", 100.0, priority)
    assert effective_priority(entry, 100.0 + wait, aging) == expected


# -- ordering ----------------------------------------------------------------------------------


def test_fifo_for_equal_priority() -> None:
    q = line()
    for i in range(5):
        q.join(e(f"c{i}", float(i)), float(i))
    assert ids(q.ordered(5.0)) == ["c0", "c1", "c2", "c3", "c4"]


def test_higher_priority_first() -> None:
    q = line()
    q.join(e("normal", 0.0), 0.0)
    q.join(e("vip", 1.0, priority=5), 1.0)
    q.join(e("gold", 2.0, priority=2), 2.0)
    assert ids(q.ordered(3.0)) == ["vip", "gold", "normal"]


def test_aging_lets_an_old_call_catch_up() -> None:
    q = line(aging_s=10.0)
    q.join(e("old", 0.0), 0.0)
    q.join(e("vip", 25.0, priority=2), 25.0)
    # at t=25: old has 0+2=2, vip has 2 → tie, earlier arrival (old) first
    assert ids(q.ordered(25.0)) == ["old", "vip"]
    q2 = line(aging_s=10.0)
    q2.join(e("old", 0.0), 0.0)
    q2.join(e("vip", 15.0, priority=2), 15.0)
    assert ids(q2.ordered(15.0)) == ["vip", "old"]  # old has 1 < 2
    assert ids(q2.ordered(20.0)) == ["old", "vip"]  # old has 2, vip 2: arrival decides


def test_no_aging_is_strict_priority() -> None:
    q = line(aging_s=None)
    q.join(e("old", 0.0), 0.0)
    q.join(e("vip", 1e6, priority=1), 1e6)
    assert ids(q.ordered(2e6)) == ["vip", "old"]


def test_original_arrival_orders_overflowed_calls() -> None:
    q = line()
    q.join(e("local", 100.0), 100.0)
    q.join(e("overflowed", 40.0), 110.0)  # arrived earlier at another site
    assert ids(q.ordered(110.0)) == ["overflowed", "local"]
    assert q.position("overflowed", 110.0) == 1
    assert q.get("overflowed").joined_at == 110.0


def test_join_order_breaks_exact_ties() -> None:
    q = line()
    q.join(e("b", 5.0), 5.0)
    q.join(e("a", 5.0), 5.0)
    assert ids(q.ordered(6.0)) == ["b", "a"]


def test_head_and_pop_next() -> None:
    q = line()
    assert q.head(0.0) is None
    assert q.pop_next(0.0) is None
    q.join(e("a", 0.0), 0.0)
    q.join(e("b", 1.0, 3), 1.0)
    head = q.head(2.0)
    assert head is not None and head.call_id == "b"
    popped = q.pop_next(2.0)
    assert popped is not None and popped.call_id == "b"
    assert ids(q.entries()) == ["a"]


# -- positions ----------------------------------------------------------------------------------


def test_position_and_positions() -> None:
    q = line()
    assert q.join(e("a", 0.0), 0.0) == 1
    assert q.join(e("b", 1.0), 1.0) == 2
    assert q.join(e("vip", 2.0, 9), 2.0) == 1
    assert q.position("a", 3.0) == 2
    assert q.position("b", 3.0) == 3
    assert q.positions(3.0) == {"vip": 1, "a": 2, "b": 3}


def test_virtual_entries_hold_a_place() -> None:
    q = line()
    q.join(e("cb", 0.0, virtual=True), 0.0)
    q.join(e("live", 1.0), 1.0)
    assert q.position("live", 2.0) == 2
    assert q.live_count() == 1
    assert len(q) == 2


def test_position_unknown_call() -> None:
    with pytest.raises(NotQueued) as err:
        line().position("x", 0.0)
    assert err.value.status == 404


def test_remove() -> None:
    q = line()
    q.join(e("a", 0.0), 0.0)
    q.join(e("b", 1.0), 1.0)
    assert q.remove("a").call_id == "a"
    assert "a" not in q
    assert q.position("b", 2.0) == 1
    with pytest.raises(NotQueued):
        q.remove("a")


def test_duplicate_join() -> None:
    q = line()
    q.join(e("a", 0.0), 0.0)
    with pytest.raises(AlreadyQueued):
        q.join(e("a", 1.0), 1.0)


def test_rejoin_after_remove_goes_to_the_back_of_equal_arrivals() -> None:
    q = line()
    q.join(e("a", 0.0), 0.0)
    q.join(e("b", 0.0), 0.0)
    q.remove("a")
    q.join(e("a", 0.0), 1.0)
    assert ids(q.ordered(1.0)) == ["b", "a"]


# -- join and leave rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "logged_in", "available", "expected"),
    [
        (JoinRule.ALWAYS, 0, 0, True),
        (JoinRule.ALWAYS, 3, 0, True),
        (JoinRule.IF_LOGGED_IN, 0, 0, False),
        (JoinRule.IF_LOGGED_IN, 1, 0, True),
        (JoinRule.IF_AVAILABLE, 1, 0, False),
        (JoinRule.IF_AVAILABLE, 1, 1, True),
    ],
)
def test_may_join(rule: JoinRule, logged_in: int, available: int, expected: bool) -> None:
    assert may_join(rule, logged_in, available) is expected
    assert line(join_rule=rule).may_join(logged_in, available) is expected


@pytest.mark.parametrize(
    ("rule", "logged_in", "available", "expected"),
    [
        (LeaveRule.NEVER, 0, 0, False),
        (LeaveRule.IF_NONE_LOGGED_IN, 0, 0, True),
        (LeaveRule.IF_NONE_LOGGED_IN, 2, 0, False),
        (LeaveRule.IF_NONE_AVAILABLE, 2, 0, True),
        (LeaveRule.IF_NONE_AVAILABLE, 2, 1, False),
    ],
)
def test_must_leave(rule: LeaveRule, logged_in: int, available: int, expected: bool) -> None:
    assert must_leave(rule, logged_in, available) is expected
    q = line(leave_rule=rule)
    q.join(e("a", 0.0), 0.0)
    q.join(e("cb", 0.0, virtual=True), 0.0)
    assert ids(q.must_leave(logged_in, available)) == (["a"] if expected else [])


def test_rules_from_strings() -> None:
    assert JoinRule("if_logged_in") is JoinRule.IF_LOGGED_IN
    assert LeaveRule("if_none_available") is LeaveRule.IF_NONE_AVAILABLE


def test_max_len() -> None:
    q = line(max_len=2)
    q.join(e("a", 0.0), 0.0)
    q.join(e("b", 0.0), 0.0)
    assert not q.may_join(5, 5)
    with pytest.raises(QueueFull) as err:
        q.join(e("c", 0.0), 0.0)
    assert err.value.status == 503
    q.remove("a")
    assert q.may_join(5, 5)


# -- waits and time-outs ------------------------------------------------------------------------


def test_longest_wait() -> None:
    q = line()
    assert q.longest_wait(10.0) == 0.0
    q.join(e("cb", 0.0, virtual=True), 0.0)
    assert q.longest_wait(10.0) == 0.0  # virtual entries have no caller waiting
    q.join(e("a", 3.0), 3.0)
    q.join(e("b", 5.0), 5.0)
    assert q.longest_wait(10.0) == 7.0


def test_longest_wait_counts_original_arrival() -> None:
    q = line()
    q.join(e("ov", 0.0), 50.0)
    assert q.longest_wait(60.0) == 60.0


def test_timed_out_uses_time_in_this_queue() -> None:
    q = line(max_wait_s=30.0)
    q.join(e("ov", 0.0), 50.0)  # overflowed: waited 50 s elsewhere
    q.join(e("a", 55.0), 55.0)
    q.join(e("cb", 0.0, virtual=True), 0.0)
    assert q.timed_out(79.9) == []
    assert ids(q.timed_out(80.0)) == ["ov"]
    assert ids(q.timed_out(85.0)) == ["ov", "a"]
    assert q.next_timeout() == 80.0


def test_timed_out_skips_ringing_entries() -> None:
    q = line(max_wait_s=10.0)
    q.join(e("a", 0.0), 0.0)
    q.mark_offered("a", ["1001"])
    assert q.timed_out(20.0) == []
    q.offer_failed("a", "1001", 20.0)
    assert ids(q.timed_out(20.0)) == ["a"]


def test_no_max_wait() -> None:
    q = line()
    q.join(e("a", 0.0), 0.0)
    assert q.timed_out(1e9) == []
    assert q.next_timeout() is None


def test_next_timeout_empty() -> None:
    assert line(max_wait_s=5.0).next_timeout() is None


# -- offers -------------------------------------------------------------------------------------


def test_offer_bookkeeping() -> None:
    q = line()
    q.join(e("a", 0.0), 0.0)
    q.mark_offered("a", ["1", "2", "3"])
    assert q.get("a").offered_to == {"1", "2", "3"}
    q.offer_failed("a", "1", 5.0)
    q.offer_withdrawn("a", "2")
    entry = q.get("a")
    assert entry.offered_to == {"3"}
    assert entry.tried == {"1"}
    q.offer_failed("a", "3", 6.0)
    assert q.get("a").offered_to == frozenset()
    assert q.get("a").tried == {"1", "3"}


def test_sticky_agent_failure_ends_stickiness() -> None:
    q = line()
    q.join(e("a", 0.0, sticky_agent="1001", sticky_until=60.0), 0.0)
    q.mark_offered("a", ["1001"])
    q.offer_failed("a", "1001", 10.0)
    assert not q.get("a").is_sticky(10.0)
    assert q.get("a").sticky_until == 10.0


def test_other_agent_failure_keeps_stickiness() -> None:
    q = line()
    q.join(e("a", 0.0, sticky_agent="1001", sticky_until=60.0), 0.0)
    q.offer_failed("a", "2002", 10.0)
    assert q.get("a").is_sticky(10.0)


def test_update_keeps_joined_at() -> None:
    q = line()
    q.join(e("a", 0.0), 5.0)
    q.join(e("b", 1.0), 5.0)
    q.update(e("b", 1.0, priority=3))
    assert q.get("b").joined_at == 5.0
    assert ids(q.ordered(6.0)) == ["b", "a"]
    with pytest.raises(NotQueued):
        q.update(e("zz", 0.0))


# -- properties ---------------------------------------------------------------------------------

entry_st = st.builds(
    lambda i, at, pr, virtual: (f"c{i}", at, pr, virtual),
    st.integers(0, 10_000),
    st.floats(0, 1000, allow_nan=False),
    st.integers(0, 5),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(
    raw=st.lists(entry_st, max_size=30, unique_by=lambda r: r[0]),
    now=st.floats(0, 5000, allow_nan=False),
    aging=st.one_of(st.none(), st.floats(1, 300)),
)
def test_order_properties(
    raw: list[tuple[str, float, int, bool]], now: float, aging: float | None
) -> None:
    q = line(aging_s=aging)
    for call_id, at, pr, virtual in raw:
        q.join(e(call_id, at, pr, virtual=virtual), at)
    ordered = q.ordered(now)
    assert sorted(ids(ordered)) == sorted(r[0] for r in raw)
    positions = q.positions(now)
    for i, entry in enumerate(ordered, start=1):
        assert positions[entry.call_id] == i
        assert q.position(entry.call_id, now) == i
    for a, b in itertools.pairwise(ordered):
        ea, eb = q.effective_priority(a, now), q.effective_priority(b, now)
        assert ea >= eb
        if ea == eb:
            assert a.arrived_at <= b.arrived_at
    same = [x for x in ordered if x.priority == 0]
    assert [x.arrived_at for x in same] == sorted(x.arrived_at for x in same)
    head = q.head(now)
    assert (head is None and not raw) or (head is not None and head == ordered[0])


@st.composite
def vip_stream(draw: st.DrawFn) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    """Entries already waiting (arrival offset ≤ 0, priority) and a stream of steps
    (time advance, VIPs arriving before the next dequeue)."""
    before = draw(st.lists(st.tuples(st.floats(-300, 0), st.integers(0, 5)), max_size=10))
    stream = draw(st.lists(st.tuples(st.floats(0, 20), st.integers(0, 4)), min_size=1, max_size=40))
    return before, stream


@settings(max_examples=300, deadline=None)
@given(
    data=vip_stream(),
    aging=st.sampled_from([1.0, 5.0, 10.0, 60.0]),
    vip_priority=st.integers(1, 5),
    mine=st.integers(0, 1),
)
def test_no_starvation_under_a_vip_stream(
    data: tuple[list[tuple[float, int]], list[tuple[float, int]]],
    aging: float,
    vip_priority: int,
    mine: int,
) -> None:
    """Entry E (priority ``mine``) arriving at t0 is served before any entry of priority P that
    arrives after t0 + (P − mine + 1)·aging_s; so the dequeues ahead of it are bounded by the
    entries already waiting plus the arrivals in that window, however long VIPs keep coming."""
    before, stream = data
    t0 = 1000.0
    q = line(aging_s=aging)
    for i, (dt, pr) in enumerate(before):
        q.join(e(f"old{i}", t0 + dt, pr), t0 + dt)
    q.join(e("E", t0, mine), t0)
    window_end = t0 + (vip_priority - mine + 1) * aging
    now = t0
    served_before_e: list[QueueEntry] = []
    arrivals_in_window = 0
    n = 0
    steps = iter(stream)
    while True:
        dt, vips = next(steps, (aging, 1))  # after the drawn stream, a steady trickle of VIPs
        now += dt
        for _ in range(vips):
            q.join(e(f"vip{n}", now, vip_priority), now)
            if now <= window_end:
                arrivals_in_window += 1
            n += 1
        popped = q.pop_next(now)
        assert popped is not None
        if popped.call_id == "E":
            break
        served_before_e.append(popped)
        assert len(served_before_e) < 10_000
    for x in served_before_e:
        assert x.arrived_at <= t0 + (x.priority - mine + 1) * aging
    assert len(served_before_e) <= len(before) + arrivals_in_window


@settings(max_examples=100, deadline=None)
@given(
    arrivals=st.lists(st.floats(0, 100), min_size=2, max_size=20),
    now=st.floats(100, 10_000),
)
def test_aging_never_reorders_equal_priority(arrivals: list[float], now: float) -> None:
    assume(len(set(arrivals)) == len(arrivals))
    q = line(aging_s=7.0)
    for i, at in enumerate(arrivals):
        q.join(e(f"c{i}", at), at)
    assert [x.arrived_at for x in q.ordered(now)] == sorted(arrivals)
