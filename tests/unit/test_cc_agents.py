"""Agent state machine and agent table (gateway.cc.agents)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cc.agents import (
    BUSY_STATES,
    TRANSITIONS,
    AgentConfig,
    AgentError,
    AgentInput,
    AgentState,
    AgentTable,
    DuplicateAgent,
    InvalidTransition,
    UnknownAgent,
    WrongCall,
    check_skills,
)

S = AgentState
In = AgentInput
EXT = "1001"
CALL = "call-1"

# Config without automatic follow-ups, so that the table alone decides the state.
PLAIN = AgentConfig(wrapup_s=30.0, ring_timeout_s=15.0, max_no_answer=0)


def table_with(state: AgentState, config: AgentConfig = PLAIN, now: float = 100.0) -> AgentTable:
    """A table whose agent 1001 is in ``state`` (with call CALL where the state has a call)."""
    t = AgentTable(config)
    t.add(EXT, name="Ann", skills={"sales": 5}, member_of=["sales", "support"], now=0.0)
    if state is S.LOGGED_OUT:
        return t
    t.login(EXT, now - 10)
    if state is S.AVAILABLE:
        return t
    if state is S.PAUSED:
        t.pause(EXT, now - 5, "lunch")
        return t
    t.offer(EXT, CALL, now - 8)
    if state is S.RINGING:
        return t
    t.answer(EXT, CALL, now - 6)
    if state is S.ON_CALL:
        return t
    t.hangup(EXT, CALL, now - 2)
    assert state is S.WRAP_UP
    return t


def kwargs_for(event: AgentInput) -> dict[str, str]:
    if event is In.OFFER:
        return {"call_id": "call-new"}
    if event is In.PAUSE:
        return {"reason": "break"}
    return {}


# -- the table ------------------------------------------------------------------------------


def test_every_state_is_reachable_in_the_helper() -> None:
    for state in AgentState:
        assert table_with(state).state(EXT) is state


@pytest.mark.parametrize(("state", "event"), list(itertools.product(AgentState, AgentInput)))
def test_each_pair_follows_the_table_or_raises(state: AgentState, event: AgentInput) -> None:
    t = table_with(state)
    expected = TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(InvalidTransition) as err:
            t.apply(EXT, event, 100.0, **kwargs_for(event))  # type: ignore[arg-type]
        assert err.value.state is state
        assert err.value.input is event
        assert err.value.status == 409
        assert t.state(EXT) is state  # nothing changed
    else:
        tr = t.apply(EXT, event, 100.0, **kwargs_for(event))  # type: ignore[arg-type]
        assert tr.before is state
        assert tr.after is expected
        assert t.state(EXT) is expected
        assert tr.inputs == (event,)


def test_table_covers_leg_failed_in_every_state() -> None:
    for state in AgentState:
        assert (state, In.LEG_FAILED) in TRANSITIONS


def test_leg_failed_never_leaves_ringing_or_on_call() -> None:
    for (state, event), nxt in TRANSITIONS.items():
        if event is In.LEG_FAILED:
            assert nxt not in (S.RINGING, S.ON_CALL), state


def test_offer_only_from_available() -> None:
    assert [s for (s, e) in TRANSITIONS if e is In.OFFER] == [S.AVAILABLE]


def test_table_values_are_states() -> None:
    assert all(isinstance(v, AgentState) for v in TRANSITIONS.values())
    with pytest.raises(TypeError):
        TRANSITIONS[(S.AVAILABLE, In.LOGIN)] = S.AVAILABLE  # type: ignore[index]


# -- login, logout, pause ------------------------------------------------------------------


def test_login_joins_member_queues_by_default() -> None:
    t = table_with(S.LOGGED_OUT)
    tr = t.login(EXT, 5.0)
    assert tr.changed
    v = t.get(EXT)
    assert v.state is S.AVAILABLE
    assert v.queues == frozenset({"sales", "support"})
    assert v.state_since == 5.0
    assert v.idle_since == 5.0


def test_login_into_chosen_queues() -> None:
    t = table_with(S.LOGGED_OUT)
    t.login(EXT, 5.0, queues=["vip"])
    assert t.get(EXT).queues == frozenset({"vip"})


def test_logout_clears_queues() -> None:
    t = table_with(S.AVAILABLE)
    t.logout(EXT, 200.0)
    v = t.get(EXT)
    assert v.state is S.LOGGED_OUT
    assert v.queues == frozenset()


def test_login_twice_is_an_error() -> None:
    t = table_with(S.AVAILABLE)
    with pytest.raises(InvalidTransition):
        t.login(EXT, 200.0)


def test_pause_and_unpause() -> None:
    t = table_with(S.AVAILABLE)
    t.pause(EXT, 200.0, "lunch")
    v = t.get(EXT)
    assert (v.state, v.pause_reason, v.state_since) == (S.PAUSED, "lunch", 200.0)
    t.pause(EXT, 210.0, "meeting")  # change of reason, same state
    v = t.get(EXT)
    assert (v.pause_reason, v.state_since) == ("meeting", 200.0)
    t.unpause(EXT, 300.0)
    v = t.get(EXT)
    assert (v.state, v.pause_reason, v.idle_since) == (S.AVAILABLE, None, 300.0)


def test_pause_default_reason() -> None:
    t = table_with(S.AVAILABLE)
    t.apply(EXT, In.PAUSE, 1.0)
    assert t.get(EXT).pause_reason == "paused"


def test_logout_from_pause_clears_reason() -> None:
    t = table_with(S.PAUSED)
    t.logout(EXT, 200.0)
    assert t.get(EXT).pause_reason is None


def test_unpause_when_available_is_an_error() -> None:
    with pytest.raises(InvalidTransition):
        table_with(S.AVAILABLE).unpause(EXT, 1.0)


def test_pause_while_ringing_drops_the_offer() -> None:
    t = table_with(S.RINGING)
    tr = t.pause(EXT, 100.0, "break")
    assert tr.dropped_call == CALL
    v = t.get(EXT)
    assert (v.state, v.call_id, v.ring_until) == (S.PAUSED, None, None)


def test_logout_while_ringing_drops_the_offer() -> None:
    t = table_with(S.RINGING)
    tr = t.logout(EXT, 100.0)
    assert tr.dropped_call == CALL
    assert t.get(EXT).call_id is None


def test_logout_on_call_is_refused() -> None:
    with pytest.raises(InvalidTransition):
        table_with(S.ON_CALL).logout(EXT, 100.0)


# -- offers ---------------------------------------------------------------------------------


def test_offer_sets_call_and_ring_deadline() -> None:
    t = table_with(S.AVAILABLE)
    tr = t.offer(EXT, "c9", 100.0)
    assert tr.call_id == "c9"
    v = t.get(EXT)
    assert (v.state, v.call_id, v.ring_until) == (S.RINGING, "c9", 115.0)


def test_offer_ring_timeout_override() -> None:
    t = table_with(S.AVAILABLE)
    t.offer(EXT, "c9", 100.0, ring_timeout_s=3.0)
    assert t.get(EXT).ring_until == 103.0


def test_offer_needs_call_id() -> None:
    t = table_with(S.AVAILABLE)
    with pytest.raises(ValueError):
        t.apply(EXT, In.OFFER, 1.0)


def test_one_offer_at_a_time() -> None:
    t = table_with(S.RINGING)
    with pytest.raises(InvalidTransition):
        t.offer(EXT, "other", 100.0)
    assert t.get(EXT).call_id == CALL


def test_answer_counts_and_resets_no_answers() -> None:
    t = AgentTable(AgentConfig(max_no_answer=5))
    t.add(EXT)
    t.login(EXT, 0.0)
    t.offer(EXT, "a", 1.0)
    t.no_answer(EXT, "a", 2.0)
    assert t.get(EXT).consecutive_no_answers == 1
    t.offer(EXT, "b", 3.0)
    t.answer(EXT, "b", 4.0)
    v = t.get(EXT)
    assert (v.state, v.calls_answered, v.consecutive_no_answers) == (S.ON_CALL, 1, 0)
    assert v.ring_until is None


def test_answer_for_another_call_is_wrong_call() -> None:
    t = table_with(S.RINGING)
    with pytest.raises(WrongCall) as err:
        t.answer(EXT, "stale", 100.0)
    assert err.value.expected == CALL
    assert err.value.got == "stale"
    assert t.state(EXT) is S.RINGING


@pytest.mark.parametrize("event", [In.ANSWER, In.NO_ANSWER, In.WITHDRAW, In.HANGUP, In.LEG_FAILED])
def test_wrong_call_checked_while_ringing(event: AgentInput) -> None:
    t = table_with(S.RINGING)
    with pytest.raises(WrongCall):
        t.apply(EXT, event, 100.0, call_id="nope")


@pytest.mark.parametrize("event", [In.HANGUP, In.LEG_FAILED])
def test_wrong_call_checked_on_call(event: AgentInput) -> None:
    t = table_with(S.ON_CALL)
    with pytest.raises(WrongCall):
        t.apply(EXT, event, 100.0, call_id="nope")
    assert t.state(EXT) is S.ON_CALL


def test_leg_failed_without_call_id_is_accepted() -> None:
    t = table_with(S.ON_CALL)
    t.leg_failed(EXT, 100.0)
    assert t.state(EXT) is S.AVAILABLE


def test_no_answer_returns_to_available_keeping_idle_since() -> None:
    t = table_with(S.RINGING)
    idle = t.get(EXT).idle_since
    t.no_answer(EXT, CALL, 100.0)
    v = t.get(EXT)
    assert (v.state, v.call_id, v.idle_since) == (S.AVAILABLE, None, idle)
    assert v.consecutive_no_answers == 1


def test_withdraw_is_not_a_no_answer() -> None:
    t = table_with(S.RINGING, AgentConfig(max_no_answer=1))
    tr = t.withdraw(EXT, CALL, 100.0)
    assert tr.after is S.AVAILABLE
    assert tr.auto_paused is None
    assert t.get(EXT).consecutive_no_answers == 0


def test_caller_hangup_while_ringing_is_not_a_no_answer() -> None:
    t = table_with(S.RINGING, AgentConfig(max_no_answer=1))
    tr = t.hangup(EXT, CALL, 100.0)
    assert tr.after is S.AVAILABLE
    assert t.get(EXT).consecutive_no_answers == 0
    assert t.get(EXT).call_id is None


# -- auto-pause -----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 3, 5])
def test_auto_pause_after_max_no_answer(limit: int) -> None:
    t = AgentTable(AgentConfig(max_no_answer=limit))
    t.add(EXT)
    t.login(EXT, 0.0)
    for i in range(limit):
        t.offer(EXT, f"c{i}", float(i))
        tr = t.no_answer(EXT, f"c{i}", float(i) + 0.5)
        if i < limit - 1:
            assert tr.after is S.AVAILABLE
            assert tr.auto_paused is None
    assert tr.after is S.PAUSED
    assert tr.auto_paused == "no-answer"
    assert tr.inputs == (In.NO_ANSWER, In.PAUSE)
    assert t.get(EXT).pause_reason == "no-answer"


def test_auto_pause_counts_consecutive_only() -> None:
    t = AgentTable(AgentConfig(max_no_answer=2, wrapup_s=0))
    t.add(EXT)
    t.login(EXT, 0.0)
    t.offer(EXT, "a", 1.0)
    t.no_answer(EXT, "a", 2.0)
    t.offer(EXT, "b", 3.0)
    t.answer(EXT, "b", 4.0)
    t.hangup(EXT, "b", 5.0)
    t.offer(EXT, "c", 6.0)
    assert t.no_answer(EXT, "c", 7.0).after is S.AVAILABLE


def test_leg_failure_while_ringing_counts_towards_auto_pause() -> None:
    t = AgentTable(AgentConfig(max_no_answer=2))
    t.add(EXT)
    t.login(EXT, 0.0)
    t.offer(EXT, "a", 1.0)
    t.leg_failed(EXT, 2.0, "a")
    t.offer(EXT, "b", 3.0)
    tr = t.leg_failed(EXT, 4.0, "b")
    assert tr.after is S.PAUSED
    assert tr.auto_paused == "no-answer"


def test_unpause_resets_the_no_answer_count() -> None:
    t = AgentTable(AgentConfig(max_no_answer=1))
    t.add(EXT)
    t.login(EXT, 0.0)
    t.offer(EXT, "a", 1.0)
    t.no_answer(EXT, "a", 2.0)
    assert t.state(EXT) is S.PAUSED
    t.unpause(EXT, 3.0)
    assert t.get(EXT).consecutive_no_answers == 0
    t.offer(EXT, "b", 4.0)
    assert t.no_answer(EXT, "b", 5.0).after is S.PAUSED  # one more miss: paused again


def test_max_no_answer_zero_never_pauses() -> None:
    t = table_with(S.AVAILABLE, AgentConfig(max_no_answer=0))
    for i in range(20):
        t.offer(EXT, f"c{i}", float(i))
        t.no_answer(EXT, f"c{i}", float(i))
    assert t.state(EXT) is S.AVAILABLE
    assert t.get(EXT).consecutive_no_answers == 20


# -- leg failure ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(AgentState))
@pytest.mark.parametrize("pause", [False, True])
def test_leg_failure_leaves_a_sane_state(state: AgentState, pause: bool) -> None:
    config = AgentConfig(wrapup_s=30, max_no_answer=0, pause_on_leg_failure=pause)
    t = table_with(state, config)
    tr = t.leg_failed(EXT, 100.0)
    v = t.get(EXT)
    assert v.state not in (S.RINGING, S.ON_CALL)
    expected = {
        S.LOGGED_OUT: S.LOGGED_OUT,
        S.PAUSED: S.PAUSED,
        S.AVAILABLE: S.PAUSED if pause else S.AVAILABLE,
        S.RINGING: S.PAUSED if pause else S.AVAILABLE,
        S.ON_CALL: S.PAUSED if pause else S.AVAILABLE,
        S.WRAP_UP: S.PAUSED if pause else S.WRAP_UP,
    }[state]
    assert v.state is expected
    if v.state is S.PAUSED and state is not S.PAUSED:
        assert v.pause_reason == "leg-failed"
        assert tr.auto_paused == "leg-failed"
    if v.state is not S.WRAP_UP:
        assert v.call_id is None


def test_leg_failure_keeps_pause_reason() -> None:
    t = table_with(S.PAUSED, AgentConfig(pause_on_leg_failure=True))
    t.leg_failed(EXT, 100.0)
    assert t.get(EXT).pause_reason == "lunch"


def test_leg_failure_on_call_resets_idle_since() -> None:
    t = table_with(S.ON_CALL)
    t.leg_failed(EXT, 123.0, CALL)
    assert t.get(EXT).idle_since == 123.0


def test_leg_failure_on_call_applies_pending_pause() -> None:
    t = table_with(S.ON_CALL)
    t.pause(EXT, 99.0, "after-call")
    tr = t.leg_failed(EXT, 100.0)
    assert tr.after is S.PAUSED
    assert t.get(EXT).pause_reason == "after-call"


# -- wrap-up --------------------------------------------------------------------------------


def test_hangup_starts_wrapup_and_due_wrapups_reports_it() -> None:
    t = table_with(S.ON_CALL)
    tr = t.hangup(EXT, CALL, 100.0)
    assert tr.after is S.WRAP_UP
    v = t.get(EXT)
    assert (v.wrapup_until, v.call_id) == (130.0, CALL)
    assert t.due_wrapups(129.9) == []
    assert t.due_wrapups(130.0) == [EXT]
    assert t.next_deadline() == 130.0
    t.wrapup_done(EXT, 130.0)
    v = t.get(EXT)
    assert (v.state, v.call_id, v.idle_since, v.wrapup_until) == (S.AVAILABLE, None, 130.0, None)
    assert t.due_wrapups(1000.0) == []


def test_wrapup_override_per_call() -> None:
    t = table_with(S.ON_CALL)
    t.hangup(EXT, CALL, 100.0, wrapup_s=5.0)
    assert t.get(EXT).wrapup_until == 105.0


def test_zero_wrapup_is_available_at_once() -> None:
    t = table_with(S.ON_CALL, AgentConfig(wrapup_s=0))
    tr = t.hangup(EXT, CALL, 100.0)
    assert tr.after is S.AVAILABLE
    assert tr.inputs == (In.HANGUP, In.WRAPUP_DONE)
    assert t.get(EXT).idle_since == 100.0
    assert t.get(EXT).call_id is None


def test_negative_wrapup_override_is_zero() -> None:
    t = table_with(S.ON_CALL)
    assert t.hangup(EXT, CALL, 100.0, wrapup_s=-3).after is S.AVAILABLE


def test_pause_requested_on_call_applies_after_wrapup() -> None:
    t = table_with(S.ON_CALL)
    tr = t.pause(EXT, 99.0, "training")
    assert tr.after is S.ON_CALL
    assert t.get(EXT).pause_reason == "training"
    t.hangup(EXT, CALL, 100.0)
    assert t.state(EXT) is S.WRAP_UP
    tr = t.wrapup_done(EXT, 130.0)
    assert tr.inputs == (In.WRAPUP_DONE, In.PAUSE)
    v = t.get(EXT)
    assert (v.state, v.pause_reason) == (S.PAUSED, "training")


def test_pending_pause_with_zero_wrapup() -> None:
    t = table_with(S.ON_CALL, AgentConfig(wrapup_s=0))
    t.pause(EXT, 99.0, "training")
    tr = t.hangup(EXT, CALL, 100.0)
    assert tr.inputs == (In.HANGUP, In.WRAPUP_DONE, In.PAUSE)
    assert tr.after is S.PAUSED


def test_unpause_cancels_pending_pause() -> None:
    for cancel_in in (S.ON_CALL, S.WRAP_UP):
        t = table_with(S.ON_CALL)
        t.pause(EXT, 99.0, "training")
        if cancel_in is S.WRAP_UP:
            t.hangup(EXT, CALL, 100.0)
        t.unpause(EXT, 100.0)
        if cancel_in is S.ON_CALL:
            t.hangup(EXT, CALL, 100.0)
        assert t.wrapup_done(EXT, 130.0).after is S.AVAILABLE


def test_pause_in_wrapup_pauses_at_once() -> None:
    t = table_with(S.WRAP_UP)
    t.pause(EXT, 100.0, "break")
    v = t.get(EXT)
    assert (v.state, v.call_id, v.wrapup_until) == (S.PAUSED, None, None)


def test_due_wrapups_sorted() -> None:
    t = AgentTable(AgentConfig(wrapup_s=10))
    for ext in ("3", "1", "2"):
        t.add(ext)
        t.login(ext, 0.0)
        t.offer(ext, f"c{ext}", 1.0)
        t.answer(ext, f"c{ext}", 2.0)
        t.hangup(ext, f"c{ext}", 3.0)
    assert t.due_wrapups(13.0) == ["1", "2", "3"]


# -- ring timeouts --------------------------------------------------------------------------


def test_expired_offers_and_next_deadline() -> None:
    t = AgentTable(AgentConfig(ring_timeout_s=10))
    for ext in ("a", "b"):
        t.add(ext)
        t.login(ext, 0.0)
    assert t.next_deadline() is None
    t.offer("a", "ca", 1.0)
    t.offer("b", "cb", 2.0)
    assert t.next_deadline() == 11.0
    assert t.expired_offers(10.9) == []
    assert t.expired_offers(11.0) == [("a", "ca")]
    assert t.expired_offers(12.0) == [("a", "ca"), ("b", "cb")]
    t.answer("a", "ca", 5.0)
    assert t.expired_offers(12.0) == [("b", "cb")]


# -- idle time and counters -----------------------------------------------------------------


def test_idle_since_rules() -> None:
    t = AgentTable(AgentConfig(wrapup_s=5, max_no_answer=0))
    t.add(EXT, now=0.0)
    t.login(EXT, 10.0)
    assert t.get(EXT).idle_since == 10.0
    t.offer(EXT, "a", 20.0)
    t.withdraw(EXT, "a", 21.0)
    assert t.get(EXT).idle_since == 10.0  # a lost ring-all costs nothing
    t.offer(EXT, "b", 22.0)
    t.no_answer(EXT, "b", 23.0)
    assert t.get(EXT).idle_since == 10.0
    t.offer(EXT, "c", 30.0)
    t.answer(EXT, "c", 31.0)
    t.hangup(EXT, "c", 40.0)
    assert t.get(EXT).idle_since == 10.0
    t.wrapup_done(EXT, 45.0)
    assert t.get(EXT).idle_since == 45.0
    t.pause(EXT, 50.0)
    t.unpause(EXT, 60.0)
    assert t.get(EXT).idle_since == 60.0


def test_reset_counters() -> None:
    t = table_with(S.ON_CALL)
    assert t.get(EXT).calls_answered == 1
    t.reset_counters()
    assert t.get(EXT).calls_answered == 0


def test_calls_answered_survive_logout() -> None:
    t = table_with(S.WRAP_UP)
    t.logout(EXT, 200.0)
    t.login(EXT, 300.0)
    assert t.get(EXT).calls_answered == 1


# -- table management -----------------------------------------------------------------------


def test_unknown_agent() -> None:
    t = AgentTable()
    with pytest.raises(UnknownAgent) as err:
        t.login("404", 0.0)
    assert err.value.status == 404
    with pytest.raises(UnknownAgent):
        t.get("404")


def test_duplicate_agent() -> None:
    t = AgentTable()
    t.add(EXT)
    with pytest.raises(DuplicateAgent):
        t.add(EXT)


def test_remove() -> None:
    t = table_with(S.ON_CALL)
    with pytest.raises(AgentError):
        t.remove(EXT)
    t = table_with(S.PAUSED)
    assert t.remove(EXT).extension == EXT
    assert EXT not in t
    assert len(t) == 0


def test_set_skills_and_queues() -> None:
    t = table_with(S.AVAILABLE)
    t.set_skills(EXT, {"zh": 9})
    assert dict(t.get(EXT).skills) == {"zh": 9}
    t.set_queues(EXT, ["vip"])
    assert t.get(EXT).queues == frozenset({"vip"})
    with pytest.raises(InvalidTransition):
        table_with(S.LOGGED_OUT).set_queues(EXT, ["x"])


@pytest.mark.parametrize(
    "skills", [{"": 1}, {"a": 0}, {"a": 11}, {"a": True}, {"a": 1.5}, {"a": "3"}]
)
def test_bad_skills(skills: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        check_skills(skills)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AgentTable().add(EXT, skills=skills)  # type: ignore[arg-type]


def test_good_skills() -> None:
    assert check_skills({"a": 1, "b": 10}) == {"a": 1, "b": 10}


def test_views_are_read_only() -> None:
    t = table_with(S.AVAILABLE)
    v = t.get(EXT)
    with pytest.raises(TypeError):
        v.skills["sales"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        v.state = S.PAUSED  # type: ignore[misc]


def test_snapshot_sorted_and_counts() -> None:
    t = AgentTable(PLAIN)
    t.add("3", member_of=["sales"])
    t.add("1", member_of=["sales"])
    t.add("2", member_of=["support"])
    t.add("4", member_of=["sales"])
    t.login("1", 0.0)
    t.login("2", 0.0)
    t.login("3", 0.0, queues=["support"])
    t.pause("3", 1.0)
    t.offer("1", "c", 2.0)
    assert [v.extension for v in t.snapshot()] == ["1", "2", "3", "4"]
    counts = t.counts()
    assert counts[S.RINGING] == 1
    assert counts[S.AVAILABLE] == 1
    assert counts[S.PAUSED] == 1
    assert counts[S.LOGGED_OUT] == 1
    assert sum(counts.values()) == 4
    sales = t.counts("sales")
    assert sales == {**dict.fromkeys(AgentState, 0), S.RINGING: 1, S.LOGGED_OUT: 1}
    support = t.counts("support")
    assert support == {**dict.fromkeys(AgentState, 0), S.AVAILABLE: 1, S.PAUSED: 1}


@pytest.mark.parametrize(
    "kwargs",
    [{"wrapup_s": -1}, {"ring_timeout_s": 0}, {"max_no_answer": -1}, {"wrapup_s": float("inf")}],
)
def test_bad_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AgentConfig(**kwargs)  # type: ignore[arg-type]


def test_transition_changed_flag() -> None:
    t = table_with(S.PAUSED)
    assert not t.pause(EXT, 1.0, "x").changed
    assert t.unpause(EXT, 2.0).changed


# -- random walks ---------------------------------------------------------------------------

CALLS = ["c1", "c2", "c3"]


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[AgentInput, str | None, float]]:
    n = draw(st.integers(1, 60))
    out = []
    for _ in range(n):
        event = draw(st.sampled_from(list(AgentInput)))
        call = draw(st.one_of(st.none(), st.sampled_from(CALLS)))
        dt = draw(st.floats(0, 50, allow_nan=False))
        out.append((event, call, dt))
    return out


@settings(max_examples=300, deadline=None)
@given(
    walk=steps(),
    max_no_answer=st.integers(0, 3),
    wrapup=st.sampled_from([0.0, 5.0]),
    pause_on_fail=st.booleans(),
)
def test_random_walk_invariants(
    walk: list[tuple[AgentInput, str | None, float]],
    max_no_answer: int,
    wrapup: float,
    pause_on_fail: bool,
) -> None:
    config = AgentConfig(
        wrapup_s=wrapup, max_no_answer=max_no_answer, pause_on_leg_failure=pause_on_fail
    )
    t = AgentTable(config)
    t.add(EXT, member_of=["q"])
    now = 0.0
    for event, call, dt in walk:
        now += dt
        before = t.get(EXT)
        if event is In.OFFER and call is None:
            call = "c0"
        try:
            tr = t.apply(EXT, event, now, call_id=call)
        except InvalidTransition:
            assert (before.state, event) not in TRANSITIONS
            assert t.get(EXT) == before
            continue
        except WrongCall:
            assert before.state in BUSY_STATES
            assert t.get(EXT) == before
            continue
        assert (before.state, event) in TRANSITIONS
        assert tr.before is before.state
        v = t.get(EXT)
        assert tr.after is v.state
        # Every step, automatic ones included, is a pair of the table.
        state = before.state
        for step in tr.inputs:
            assert (state, step) in TRANSITIONS
            state = TRANSITIONS[(state, step)]
        assert state is v.state
        # Record invariants.
        assert (v.call_id is not None) == (v.state in BUSY_STATES)
        assert (v.ring_until is not None) == (v.state is S.RINGING)
        assert (v.wrapup_until is not None) == (v.state is S.WRAP_UP)
        if v.state is S.PAUSED:
            assert v.pause_reason
        if v.state in (S.AVAILABLE, S.RINGING, S.LOGGED_OUT):
            assert v.pause_reason is None
        if v.state is S.LOGGED_OUT:
            assert v.queues == frozenset()
        if event is In.LEG_FAILED:
            assert v.state not in (S.RINGING, S.ON_CALL)
        if max_no_answer:
            assert v.consecutive_no_answers <= max_no_answer
        assert v.state_since <= now
        assert v.idle_since <= now
        if v.state is not before.state:
            assert v.state_since == now
