"""Live queue figures (gateway.cc.figures)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cc.agents import AgentState
from gateway.cc.figures import Exit, FiguresConfig, QueueFigures, UnknownCall

S = AgentState
CFG = FiguresConfig(service_level_s=20.0, short_abandon_s=5.0, rolling_s=900.0)


def figs(now: float = 0.0) -> QueueFigures:
    return QueueFigures("sales", CFG, now)


def test_empty_snapshot() -> None:
    snap = figs().snapshot(10.0)
    assert snap.queue == "sales"
    assert snap.waiting == 0
    assert snap.longest_wait_s == 0.0
    for w in (snap.day, snap.rolling):
        assert (w.offered, w.answered, w.abandoned, w.handled) == (0, 0, 0, 0)
        assert w.service_level is None
        assert w.asa_s is None
        assert w.aht_s is None
        assert w.occupancy is None
        assert w.answer_rate is None
        assert w.abandon_rate is None
    assert dict(snap.agents) == dict.fromkeys(AgentState, 0)


def test_answered_within_and_after_target() -> None:
    f = figs()
    f.record_joined("a", 0.0)
    f.record_joined("b", 0.0)
    f.record_joined("c", 0.0)
    assert f.record_answered("a", 20.0) == 20.0  # exactly T: within
    assert f.record_answered("b", 20.5) == 20.5
    assert f.record_answered("c", 2.0) == 2.0
    d = f.snapshot(30.0).day
    assert (d.offered, d.answered, d.answered_within_sl) == (3, 3, 2)
    assert d.service_level == pytest.approx(2 / 3)
    assert d.asa_s == pytest.approx((20.0 + 20.5 + 2.0) / 3)
    assert d.answer_rate == 1.0


def test_short_abandons_are_excluded() -> None:
    f = figs()
    for c in "abc":
        f.record_joined(c, 0.0)
    f.record_abandoned("a", 4.9)  # short
    f.record_abandoned("b", 5.0)  # not short (threshold inclusive)
    f.record_answered("c", 1.0)
    d = f.snapshot(10.0).day
    assert d.short_abandoned == 1
    assert d.abandoned == 1
    assert d.offered == 2
    assert d.answer_rate == 0.5
    assert d.abandon_rate == 0.5


def test_service_level_counts_abandons_after_target_only() -> None:
    f = figs()
    for c in "abcde":
        f.record_joined(c, 0.0)
    f.record_answered("a", 10.0)  # within T
    f.record_answered("b", 30.0)  # after T
    f.record_abandoned("c", 10.0)  # abandoned within T: not in the denominator
    f.record_abandoned("d", 25.0)  # abandoned after T: in the denominator
    f.record_exit("e", 100.0, Exit.TIMED_OUT)  # sent elsewhere: not in the denominator
    d = f.snapshot(100.0).day
    assert (d.answered, d.answered_within_sl, d.abandoned, d.abandoned_after_sl) == (2, 1, 2, 1)
    assert d.sent_elsewhere == 1
    assert d.offered == 5
    assert d.service_level == pytest.approx(1 / 3)
    assert d.answer_rate == pytest.approx(2 / 5)
    assert d.abandon_rate == pytest.approx(2 / 5)


@pytest.mark.parametrize("how", list(Exit))
def test_every_exit_counts_as_offered(how: Exit) -> None:
    f = figs()
    f.record_joined("a", 0.0)
    assert f.record_exit("a", 7.0, how) == 7.0
    d = f.snapshot(7.0).day
    assert (d.offered, d.answered, d.abandoned, d.sent_elsewhere) == (1, 0, 0, 1)


def test_short_abandon_disabled() -> None:
    f = QueueFigures("q", FiguresConfig(short_abandon_s=0.0))
    f.record_joined("a", 0.0)
    f.record_abandoned("a", 0.0)
    d = f.snapshot(1.0).day
    assert (d.abandoned, d.short_abandoned, d.offered) == (1, 0, 1)


def test_unknown_call() -> None:
    f = figs()
    with pytest.raises(UnknownCall):
        f.record_answered("x", 1.0)
    f.record_joined("a", 0.0)
    f.record_answered("a", 1.0)
    with pytest.raises(UnknownCall):
        f.record_abandoned("a", 2.0)  # already left


def test_original_arrival_counts_for_wait() -> None:
    f = figs()
    f.record_joined("ov", 100.0, arrived_at=60.0)
    assert f.longest_wait(110.0) == 50.0
    assert f.record_answered("ov", 110.0) == 50.0
    assert f.snapshot(110.0).day.answered_within_sl == 0


def test_waiting_and_longest_wait() -> None:
    f = figs()
    f.record_joined("a", 0.0)
    f.record_joined("b", 5.0)
    snap = f.snapshot(12.0)
    assert (snap.waiting, snap.longest_wait_s) == (2, 12.0)
    f.record_answered("a", 12.0)
    snap = f.snapshot(13.0)
    assert (snap.waiting, snap.longest_wait_s) == (1, 8.0)


def test_aht() -> None:
    f = figs()
    f.record_handled(100.0, 20.0, 200.0)
    f.record_handled(50.0, 10.0, 300.0)
    d = f.snapshot(300.0).day
    assert d.handled == 2
    assert (d.talk_s, d.wrap_up_s) == (150.0, 30.0)
    assert d.aht_s == pytest.approx(90.0)
    with pytest.raises(ValueError):
        f.record_handled(-1.0, 0.0, 300.0)


def test_occupancy_and_agent_states() -> None:
    f = figs()
    f.record_agent_state("1", S.AVAILABLE, 0.0)
    f.record_agent_state("2", S.AVAILABLE, 0.0)
    f.record_agent_state("1", S.RINGING, 10.0)
    f.record_agent_state("1", S.ON_CALL, 15.0)
    f.record_agent_state("1", S.WRAP_UP, 75.0)
    f.record_agent_state("1", S.AVAILABLE, 85.0)
    f.record_agent_state("2", S.PAUSED, 50.0)
    snap = f.snapshot(100.0)
    d = snap.day
    # agent 1: available 10 + 15, ringing 5, on call 60, wrap-up 10; agent 2: available 50,
    # paused 50 (not counted)
    assert d.agent_seconds[S.ON_CALL] == 60.0
    assert d.agent_seconds[S.WRAP_UP] == 10.0
    assert d.agent_seconds[S.RINGING] == 5.0
    assert d.agent_seconds[S.AVAILABLE] == 75.0
    assert d.agent_seconds[S.PAUSED] == 50.0
    assert d.occupancy == pytest.approx(70.0 / 150.0)
    assert snap.agents[S.AVAILABLE] == 1
    assert snap.agents[S.PAUSED] == 1
    assert sum(snap.agents.values()) == 2


def test_agent_logout_removes_from_counts() -> None:
    f = figs()
    f.record_agent_state("1", S.AVAILABLE, 0.0)
    f.record_agent_state("1", S.LOGGED_OUT, 10.0)
    snap = f.snapshot(20.0)
    assert sum(snap.agents.values()) == 0
    assert snap.day.agent_seconds[S.AVAILABLE] == 10.0
    assert snap.day.agent_seconds[S.LOGGED_OUT] == 0.0


def test_rolling_window_drops_old_events() -> None:
    f = figs()
    f.record_joined("a", 0.0)
    f.record_answered("a", 10.0)
    f.record_joined("b", 500.0)
    f.record_abandoned("b", 600.0)
    snap = f.snapshot(905.0)
    assert (snap.rolling.answered, snap.rolling.abandoned) == (1, 1)
    snap = f.snapshot(910.0)  # the answer at t=10 is now older than 15 minutes
    assert (snap.rolling.answered, snap.rolling.abandoned) == (0, 1)
    assert (snap.day.answered, snap.day.abandoned) == (1, 1)
    assert snap.rolling.start == 10.0
    assert snap.rolling.end == 910.0


def test_rolling_window_splits_agent_time() -> None:
    f = figs()
    f.record_agent_state("1", S.ON_CALL, 0.0)
    f.record_agent_state("1", S.AVAILABLE, 1000.0)
    snap = f.snapshot(1200.0)
    r = snap.rolling  # window [300, 1200]
    assert r.agent_seconds[S.ON_CALL] == 700.0
    assert r.agent_seconds[S.AVAILABLE] == 200.0
    assert r.occupancy == pytest.approx(700 / 900)
    assert snap.day.agent_seconds[S.ON_CALL] == 1000.0
    snap = f.snapshot(2000.0)  # the ON_CALL interval has left the window
    assert snap.rolling.agent_seconds[S.ON_CALL] == 0.0
    assert snap.rolling.agent_seconds[S.AVAILABLE] == 900.0


def test_roll_day() -> None:
    f = figs()
    f.record_agent_state("1", S.AVAILABLE, 0.0)
    f.record_joined("a", 0.0)
    f.record_answered("a", 1.0)
    f.record_joined("b", 80_000.0)
    f.roll_day(86_400.0)
    snap = f.snapshot(86_410.0)
    assert snap.day.answered == 0
    assert snap.day.start == 86_400.0
    assert snap.day.agent_seconds[S.AVAILABLE] == 10.0  # the open interval is split at midnight
    assert snap.waiting == 1  # calls waiting across midnight stay waiting
    f.record_agent_state("1", S.ON_CALL, 86_420.0)
    snap = f.snapshot(86_420.0)
    assert snap.day.agent_seconds[S.AVAILABLE] == 20.0


def test_bad_config() -> None:
    for kwargs in (
        {"service_level_s": -1.0},
        {"short_abandon_s": -1.0},
        {"rolling_s": 0.0},
        {"service_level_s": math.inf},
    ):
        with pytest.raises(ValueError):
            FiguresConfig(**kwargs)


def test_snapshot_views_are_read_only() -> None:
    snap = figs().snapshot(1.0)
    with pytest.raises(TypeError):
        snap.agents[S.AVAILABLE] = 3  # type: ignore[index]
    with pytest.raises(TypeError):
        snap.day.agent_seconds[S.AVAILABLE] = 3.0  # type: ignore[index]


# -- properties -----------------------------------------------------------------------------------

outcome = st.sampled_from(["answered", "abandoned", "exit"])


@settings(max_examples=200, deadline=None)
@given(
    calls=st.lists(
        st.tuples(st.floats(0, 3000), st.floats(0, 120), outcome), min_size=0, max_size=40
    ),
    now_extra=st.floats(0, 2000),
)
def test_counts_add_up(calls: list[tuple[float, float, str]], now_extra: float) -> None:
    f = figs()
    events = []
    for i, (arrive, wait, how) in enumerate(calls):
        events.append((arrive, "join", i, how, wait))
        events.append((arrive + wait, "leave", i, how, wait))
    events.sort(key=lambda x: (x[0], x[1] != "join"))
    for t, kind, i, how, _ in events:
        cid = f"c{i}"
        if kind == "join":
            f.record_joined(cid, t)
        elif how == "answered":
            f.record_answered(cid, t)
        elif how == "abandoned":
            f.record_abandoned(cid, t)
        else:
            f.record_exit(cid, t, Exit.OVERFLOWED)
    end = max((e[0] for e in events), default=0.0) + now_extra
    snap = f.snapshot(end)
    d = snap.day
    assert snap.waiting == 0
    assert d.offered + d.short_abandoned == len(calls)
    assert d.offered == d.answered + d.abandoned + d.sent_elsewhere
    assert d.answered == sum(1 for c in calls if c[2] == "answered")
    assert d.short_abandoned == sum(1 for c in calls if c[2] == "abandoned" and c[1] < 5.0)
    assert d.answered_within_sl <= d.answered
    assert d.abandoned_after_sl <= d.abandoned
    if d.service_level is not None:
        assert 0.0 <= d.service_level <= 1.0
    r = snap.rolling
    assert r.offered <= d.offered
    in_window = sum(
        1 for a, w, how in calls if a + w > end - 900 and not (how == "abandoned" and w < 5.0)
    )
    assert r.offered == in_window
