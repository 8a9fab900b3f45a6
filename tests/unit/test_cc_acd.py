"""Automatic call distribution (gateway.cc.acd)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cc.acd import (
    Offer,
    QueuePolicy,
    Strategy,
    StrategyState,
    choose,
    dispatch,
    dispatch_all,
    eligible,
    has_skills,
    member_order,
    queue_staffing,
    skill_score,
)
from gateway.cc.agents import AgentConfig, AgentState, AgentTable, AgentView
from gateway.cc.queue import QueueConfig, QueueEntry, WaitingLine

S = AgentState
Q = "sales"


def agent(
    ext: str,
    state: AgentState = S.AVAILABLE,
    *,
    queues: Iterable[str] = (Q,),
    skills: Mapping[str, int] | None = None,
    idle_since: float = 0.0,
    calls: int = 0,
) -> AgentView:
    return AgentView(
        extension=ext,
        name=f"agent {ext}",
        skills=MappingProxyType(dict(skills or {})),
        state=state,
        state_since=0.0,
        idle_since=idle_since,
        calls_answered=calls,
        consecutive_no_answers=0,
        pause_reason="x" if state is S.PAUSED else None,
        call_id="busy" if state in (S.RINGING, S.ON_CALL, S.WRAP_UP) else None,
        queues=frozenset(queues) if state is not S.LOGGED_OUT else frozenset(),
        member_of=frozenset(queues),
        wrapup_until=None,
        ring_until=None,
    )


def entry(call_id: str, arrived_at: float = 0.0, priority: int = 0, **kw: object) -> QueueEntry:
    return QueueEntry(call_id, arrived_at, priority, **kw)  # type: ignore[arg-type]


def line_of(*entries: QueueEntry, name: str = Q, aging_s: float | None = 60.0) -> WaitingLine:
    line = WaitingLine(QueueConfig(name, aging_s=aging_s))
    for x in entries:
        line.join(x, x.arrived_at)
    return line


def offers_of(
    strategy: Strategy,
    agents: Sequence[AgentView],
    *entries: QueueEntry,
    members: tuple[str, ...] = (),
    state: StrategyState | None = None,
    now: float = 10.0,
    rng: random.Random | None = None,
    best_skill_first: bool = False,
) -> list[Offer]:
    policy = QueuePolicy(Q, strategy, members, best_skill_first)
    return dispatch(line_of(*entries), policy, agents, state or StrategyState(), now, rng)


def pairs(offers: list[Offer]) -> list[tuple[str, tuple[str, ...]]]:
    return [(o.call_id, o.agents) for o in offers]


SINGLE = [s for s in Strategy if s is not Strategy.RINGALL]


# -- eligibility --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(AgentState))
@pytest.mark.parametrize("strategy", list(Strategy))
def test_only_available_agents_are_offered(state: AgentState, strategy: Strategy) -> None:
    offers = offers_of(strategy, [agent("1", state)], entry("c"), rng=random.Random(1))
    assert pairs(offers) == ([("c", ("1",))] if state is S.AVAILABLE else [])


@pytest.mark.parametrize("strategy", list(Strategy))
def test_only_agents_logged_into_the_queue(strategy: Strategy) -> None:
    agents = [agent("1", queues=["support"]), agent("2", queues=["support", Q])]
    offers = offers_of(strategy, agents, entry("c"), rng=random.Random(1))
    assert pairs(offers) == [("c", ("2",))]


@pytest.mark.parametrize(
    ("have", "need", "ok"),
    [
        ({}, {}, True),
        ({"zh": 1}, {}, True),
        ({}, {"zh": 1}, False),
        ({"zh": 3}, {"zh": 3}, True),
        ({"zh": 2}, {"zh": 3}, False),
        ({"zh": 9, "tv": 5}, {"zh": 3, "tv": 5}, True),
        ({"zh": 9, "tv": 4}, {"zh": 3, "tv": 5}, False),
        ({"zh": 9}, {"zh": 3, "tv": 1}, False),
    ],
)
def test_skill_requirements(have: dict[str, int], need: dict[str, int], ok: bool) -> None:
    a = agent("1", skills=have)
    assert has_skills(a, need) is ok
    for strategy in Strategy:
        offers = offers_of(strategy, [a], entry("c", required_skills=need), rng=random.Random(0))
        assert bool(offers) is ok


def test_skill_score() -> None:
    a = agent("1", skills={"zh": 7, "tv": 3, "fridge": 9})
    assert skill_score(a, entry("c")) == 0
    assert skill_score(a, entry("c", required_skills={"zh": 1, "tv": 1})) == 10
    assert skill_score(a, entry("c", required_skills={"radio": 1})) == 0


def test_eligible_respects_exclude_and_keeps_order() -> None:
    agents = [agent("3"), agent("1"), agent("2")]
    got = eligible(entry("c"), Q, agents, 0.0, frozenset({"1"}))
    assert [a.extension for a in got] == ["3", "2"]


def test_choose_with_no_candidates() -> None:
    for strategy in Strategy:
        policy = QueuePolicy(Q, strategy)
        assert choose(policy, entry("c"), [], [], StrategyState(), random.Random(0)) == []


# -- sticky (named) agents ----------------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(Strategy))
def test_sticky_agent_only(strategy: Strategy) -> None:
    agents = [agent("1"), agent("2"), agent("3")]
    e = entry("vip", sticky_agent="2", sticky_until=60.0)
    offers = offers_of(strategy, agents, e, now=10.0, rng=random.Random(3))
    assert pairs(offers) == [("vip", ("2",))]
    assert offers[0].sticky


@pytest.mark.parametrize("strategy", list(Strategy))
def test_sticky_agent_busy_call_waits_until_expiry(strategy: Strategy) -> None:
    agents = [agent("1"), agent("2", S.ON_CALL)]
    e = entry("vip", sticky_agent="2", sticky_until=60.0)
    assert offers_of(strategy, agents, e, now=59.0, rng=random.Random(0)) == []
    offers = offers_of(strategy, agents, e, now=60.0, rng=random.Random(0))
    assert pairs(offers) == [("vip", ("1",))]
    assert not offers[0].sticky


def test_sticky_wait_does_not_block_others() -> None:
    agents = [agent("1"), agent("2", S.ON_CALL)]
    vip = entry("vip", 0.0, 5, sticky_agent="2", sticky_until=60.0)
    offers = offers_of(Strategy.LINEAR, agents, vip, entry("c", 1.0), now=10.0)
    assert pairs(offers) == [("c", ("1",))]


def test_sticky_agent_must_still_be_eligible() -> None:
    agents = [agent("1"), agent("2", skills={})]
    e = entry("vip", sticky_agent="2", sticky_until=60.0, required_skills={"zh": 1})
    assert offers_of(Strategy.LINEAR, agents, e) == []
    e2 = entry("vip", sticky_agent="9", sticky_until=60.0)  # unknown agent: waits
    assert offers_of(Strategy.LINEAR, agents, e2) == []


# -- ringall ------------------------------------------------------------------------------------


def test_ringall_rings_every_eligible_agent_in_member_order() -> None:
    agents = [
        agent("4"),
        agent("1"),
        agent("3", S.PAUSED),
        agent("2"),
        agent("5", queues=["other"]),
    ]
    offers = offers_of(Strategy.RINGALL, agents, entry("c"), members=("2", "1"))
    assert pairs(offers) == [("c", ("2", "1", "4"))]


def test_ringall_second_caller_gets_nobody_when_all_ring() -> None:
    agents = [agent("1"), agent("2")]
    offers = offers_of(Strategy.RINGALL, agents, entry("a", 0.0), entry("b", 1.0))
    assert pairs(offers) == [("a", ("1", "2"))]


def test_ringall_second_caller_gets_other_skill() -> None:
    agents = [agent("1", skills={"zh": 5}), agent("2", skills={"en": 5}), agent("3")]
    offers = offers_of(
        Strategy.RINGALL,
        agents,
        entry("zh", 0.0, required_skills={"zh": 1}),
        entry("any", 1.0),
    )
    assert pairs(offers) == [("zh", ("1",)), ("any", ("2", "3"))]


def test_ringall_ignores_tried() -> None:
    agents = [agent("1"), agent("2")]
    offers = offers_of(Strategy.RINGALL, agents, entry("c", tried=frozenset({"1"})))
    assert pairs(offers) == [("c", ("1", "2"))]


# -- linear (hunt) ------------------------------------------------------------------------------


def test_linear_always_from_the_top() -> None:
    agents = [agent("3"), agent("2"), agent("1")]
    for _ in range(5):
        offers = offers_of(Strategy.LINEAR, agents, entry("c"), members=("2", "3", "1"))
        assert pairs(offers) == [("c", ("2",))]


def test_linear_skips_busy() -> None:
    agents = [agent("1", S.ON_CALL), agent("2", S.RINGING), agent("3")]
    offers = offers_of(Strategy.LINEAR, agents, entry("c"), members=("1", "2", "3"))
    assert pairs(offers) == [("c", ("3",))]


def test_linear_several_calls_take_agents_in_order() -> None:
    agents = [agent(x) for x in "1234"]
    offers = offers_of(
        Strategy.LINEAR, agents, *(entry(f"c{i}", float(i)) for i in range(3)), members=("4",)
    )
    assert pairs(offers) == [("c0", ("4",)), ("c1", ("1",)), ("c2", ("2",))]


def test_linear_hunts_past_agents_who_did_not_answer() -> None:
    agents = [agent(x) for x in "123"]
    tried: frozenset[str] = frozenset()
    got = []
    for _ in range(4):
        offers = offers_of(Strategy.LINEAR, agents, entry("c", tried=tried))
        (ext,) = offers[0].agents
        got.append(ext)
        tried = tried | {ext}
    assert got == ["1", "2", "3", "1"]  # everyone tried: from the top again


def test_member_order() -> None:
    agents = [agent("9"), agent("1"), agent("5", queues=["x"]), agent("2", S.LOGGED_OUT)]
    assert member_order(QueuePolicy(Q, members=("7", "9")), agents) == ["7", "9", "1"]


# -- rrmemory -----------------------------------------------------------------------------------


def test_rrmemory_next_after_last() -> None:
    agents = [agent(x) for x in "1234"]
    for last, expected in [(None, "1"), ("1", "2"), ("2", "3"), ("3", "4"), ("4", "1")]:
        offers = offers_of(Strategy.RRMEMORY, agents, entry("c"), state=StrategyState(last))
        assert pairs(offers) == [("c", (expected,))]


def test_rrmemory_skips_busy_and_wraps() -> None:
    agents = [agent("1"), agent("2", S.ON_CALL), agent("3", S.PAUSED), agent("4")]
    offers = offers_of(Strategy.RRMEMORY, agents, entry("c"), state=StrategyState("1"))
    assert pairs(offers) == [("c", ("4",))]
    offers = offers_of(Strategy.RRMEMORY, agents, entry("c"), state=StrategyState("4"))
    assert pairs(offers) == [("c", ("1",))]


def test_rrmemory_last_agent_busy_still_counts_as_position() -> None:
    agents = [agent("1"), agent("2", S.ON_CALL), agent("3")]
    offers = offers_of(Strategy.RRMEMORY, agents, entry("c"), state=StrategyState("2"))
    assert pairs(offers) == [("c", ("3",))]


def test_rrmemory_unknown_last_starts_from_top() -> None:
    agents = [agent("1"), agent("2")]
    offers = offers_of(Strategy.RRMEMORY, agents, entry("c"), state=StrategyState("gone"))
    assert pairs(offers) == [("c", ("1",))]


def test_rrmemory_threads_memory_within_one_dispatch() -> None:
    agents = [agent(x) for x in "1234"]
    offers = offers_of(
        Strategy.RRMEMORY,
        agents,
        entry("a", 0.0),
        entry("b", 1.0),
        entry("c", 2.0),
        state=StrategyState("2"),
    )
    assert pairs(offers) == [("a", ("3",)), ("b", ("4",)), ("c", ("1",))]
    assert StrategyState("2").after(offers) == StrategyState("1")


def test_rrmemory_uses_configured_member_order() -> None:
    agents = [agent(x) for x in "123"]
    offers = offers_of(
        Strategy.RRMEMORY, agents, entry("c"), members=("3", "1", "2"), state=StrategyState("3")
    )
    assert pairs(offers) == [("c", ("1",))]


def test_strategy_state_after() -> None:
    offers = [Offer("a", Q, ("1",)), Offer("b", "other", ("7",)), Offer("c", Q, ("2", "3"))]
    assert StrategyState().after(offers, Q) == StrategyState("3")
    assert StrategyState().after(offers, "other") == StrategyState("7")
    assert StrategyState("5").after([], Q) == StrategyState("5")
    assert StrategyState().after(offers) == StrategyState("3")


# -- longest idle -------------------------------------------------------------------------------


def test_longest_idle_picks_oldest_idle_since() -> None:
    agents = [agent("1", idle_since=50.0), agent("2", idle_since=10.0), agent("3", idle_since=30)]
    offers = offers_of(Strategy.LONGEST_IDLE, agents, entry("a", 0.0), entry("b", 1.0))
    assert pairs(offers) == [("a", ("2",)), ("b", ("3",))]


def test_longest_idle_ties_higher_skill_then_extension() -> None:
    agents = [
        agent("3", idle_since=5.0, skills={"zh": 9}),
        agent("1", idle_since=5.0, skills={"zh": 2}),
        agent("2", idle_since=5.0, skills={"zh": 9}),
    ]
    offers = offers_of(
        Strategy.LONGEST_IDLE,
        agents,
        *(entry(f"c{i}", float(i), required_skills={"zh": 1}) for i in range(3)),
    )
    assert pairs(offers) == [("c0", ("2",)), ("c1", ("3",)), ("c2", ("1",))]


def test_longest_idle_ignores_skill_when_not_tied() -> None:
    agents = [agent("1", idle_since=1.0, skills={"zh": 1}), agent("2", skills={"zh": 9})]
    offers = offers_of(Strategy.LONGEST_IDLE, agents, entry("c", required_skills={"zh": 1}))
    assert pairs(offers) == [("c", ("2",))]  # idle_since 0 < 1


# -- fewest calls -------------------------------------------------------------------------------


def test_fewest_calls() -> None:
    agents = [agent("1", calls=5), agent("2", calls=2), agent("3", calls=9)]
    offers = offers_of(Strategy.FEWEST_CALLS, agents, entry("c"))
    assert pairs(offers) == [("c", ("2",))]


def test_fewest_calls_ties_are_deterministic() -> None:
    agents = [
        agent("4", calls=1, idle_since=1.0),
        agent("3", calls=1, idle_since=2.0, skills={"tv": 4}),
        agent("2", calls=1, idle_since=3.0),
        agent("1", calls=1, idle_since=3.0),
        agent("5", calls=0, idle_since=99.0),
    ]
    entries = [entry(f"c{i}", float(i), required_skills={}) for i in range(5)]
    offers = offers_of(Strategy.FEWEST_CALLS, agents, *entries)
    assert [o.agents[0] for o in offers] == ["5", "4", "3", "1", "2"]
    tv = [
        agent("1", calls=1, skills={"tv": 1}, idle_since=1.0),
        agent("3", calls=1, skills={"tv": 7}, idle_since=1.0),
        agent("2", calls=1, skills={"tv": 7}, idle_since=1.0),
    ]
    offers = offers_of(Strategy.FEWEST_CALLS, tv, entry("c0", required_skills={"tv": 1}))
    assert pairs(offers) == [("c0", ("2",))]  # tie on calls: higher skill, then extension


# -- random -------------------------------------------------------------------------------------


def test_random_needs_an_rng() -> None:
    with pytest.raises(ValueError, match="rng"):
        offers_of(Strategy.RANDOM, [agent("1")], entry("c"))
    with pytest.raises(ValueError, match="rng"):  # even with nobody to offer to
        offers_of(Strategy.RANDOM, [])


def test_random_is_reproducible_and_uniform_enough() -> None:
    agents = [agent(x) for x in "1234"]

    def run(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [
            offers_of(Strategy.RANDOM, agents, entry("c"), rng=rng)[0].agents[0] for _ in range(400)
        ]

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    counts = Counter(first)
    assert set(counts) == set("1234")
    assert all(60 < n < 140 for n in counts.values()), counts


def test_random_independent_of_input_order() -> None:
    agents = [agent(x) for x in "1234"]
    a = offers_of(Strategy.RANDOM, agents, entry("c"), rng=random.Random(5))
    b = offers_of(Strategy.RANDOM, agents[::-1], entry("c"), rng=random.Random(5))
    assert a == b


# -- tried agents and skill tiers ---------------------------------------------------------------


@pytest.mark.parametrize("strategy", SINGLE)
def test_untried_agents_preferred(strategy: Strategy) -> None:
    agents = [agent("1"), agent("2", idle_since=5.0, calls=3)]
    offers = offers_of(strategy, agents, entry("c", tried=frozenset({"1"})), rng=random.Random(0))
    assert pairs(offers) == [("c", ("2",))]


@pytest.mark.parametrize("strategy", SINGLE)
def test_tried_agent_offered_again_when_alone(strategy: Strategy) -> None:
    offers = offers_of(
        strategy, [agent("1")], entry("c", tried=frozenset({"1"})), rng=random.Random(0)
    )
    assert pairs(offers) == [("c", ("1",))]


@pytest.mark.parametrize("strategy", SINGLE)
def test_best_skill_first(strategy: Strategy) -> None:
    agents = [
        agent("1", skills={"zh": 3}),
        agent("2", skills={"zh": 8}, idle_since=9.0, calls=9),
        agent("3", skills={"zh": 5}),
    ]
    e = entry("c", required_skills={"zh": 2})
    offers = offers_of(strategy, agents, e, best_skill_first=True, rng=random.Random(0))
    assert pairs(offers) == [("c", ("2",))]


def test_best_skill_first_falls_back_to_lower_levels_when_best_busy() -> None:
    agents = [agent("1", skills={"zh": 3}), agent("2", S.ON_CALL, skills={"zh": 8})]
    e = entry("c", required_skills={"zh": 2})
    offers = offers_of(Strategy.LINEAR, agents, e, best_skill_first=True)
    assert pairs(offers) == [("c", ("1",))]


# -- queue order and skills-based routing -------------------------------------------------------


@pytest.mark.parametrize("strategy", list(Strategy))
def test_busy_specialist_does_not_block_the_line(strategy: Strategy) -> None:
    agents = [agent("1", S.ON_CALL, skills={"zh": 5}), agent("2", skills={"en": 5})]
    offers = offers_of(
        strategy,
        agents,
        entry("head", 0.0, required_skills={"zh": 1}),
        entry("next", 5.0, required_skills={"en": 1}),
        rng=random.Random(0),
    )
    assert pairs(offers) == [("next", ("2",))]


def test_entries_served_in_queue_order() -> None:
    agents = [agent("1")]
    offers = offers_of(Strategy.LINEAR, agents, entry("old", 0.0), entry("vip", 5.0, 3))
    assert pairs(offers) == [("vip", ("1",))]


def test_entries_already_ringing_are_skipped() -> None:
    agents = [agent("1"), agent("2", S.RINGING)]
    offers = offers_of(
        Strategy.LINEAR, agents, entry("a", 0.0, offered_to=frozenset({"2"})), entry("b", 1.0)
    )
    assert pairs(offers) == [("b", ("1",))]


def test_virtual_entry_offer_is_flagged() -> None:
    offers = offers_of(Strategy.LINEAR, [agent("1")], entry("cb", virtual=True))
    assert offers == [Offer("cb", Q, ("1",), virtual=True, sticky=False)]


def test_exclude() -> None:
    policy = QueuePolicy(Q, Strategy.LINEAR)
    offers = dispatch(
        line_of(entry("c")),
        policy,
        [agent("1"), agent("2")],
        StrategyState(),
        0.0,
        exclude=frozenset({"1"}),
    )
    assert pairs(offers) == [("c", ("2",))]


def test_policy_must_match_line() -> None:
    with pytest.raises(ValueError):
        dispatch(line_of(entry("c")), QueuePolicy("other"), [], StrategyState(), 0.0)
    with pytest.raises(ValueError):
        dispatch_all([(line_of(entry("c")), QueuePolicy("other"), StrategyState())], [], 0.0)


def test_members_must_not_repeat() -> None:
    with pytest.raises(ValueError):
        QueuePolicy(Q, members=("1", "1"))


def test_empty_line_no_offers() -> None:
    for strategy in Strategy:
        assert offers_of(strategy, [agent("1")], rng=random.Random(0)) == []


def test_strategy_names() -> None:
    assert [s.value for s in Strategy] == [
        "ringall",
        "linear",
        "rrmemory",
        "longest_idle",
        "fewest_calls",
        "random",
    ]


# -- several queues -----------------------------------------------------------------------------


def test_dispatch_all_shares_agents_by_priority() -> None:
    both = ["sales", "support"]
    agents = [agent("1", queues=both)]
    sales = line_of(entry("s", 0.0), name="sales")
    support = line_of(entry("vip", 5.0, 2), name="support")
    queues = [
        (sales, QueuePolicy("sales", Strategy.LINEAR), StrategyState()),
        (support, QueuePolicy("support", Strategy.LINEAR), StrategyState()),
    ]
    assert pairs(dispatch_all(queues, agents, 6.0)) == [("vip", ("1",))]
    # equal priority: the earlier arrival wins, whatever the queue
    support2 = line_of(entry("late", 5.0), name="support")
    queues[1] = (support2, queues[1][1], queues[1][2])
    assert pairs(dispatch_all(queues, agents, 6.0)) == [("s", ("1",))]


def test_dispatch_all_one_offer_per_agent_across_queues() -> None:
    both = ["sales", "support"]
    agents = [agent("1", queues=both), agent("2", queues=["support"])]
    queues = [
        (line_of(entry("s", 0.0), name="sales"), QueuePolicy("sales", Strategy.RINGALL)),
        (line_of(entry("t", 1.0), name="support"), QueuePolicy("support", Strategy.RINGALL)),
    ]
    offers = dispatch_all([(ln, p, StrategyState()) for ln, p in queues], agents, 2.0)
    assert pairs(offers) == [("s", ("1",)), ("t", ("2",))]
    assert [o.queue for o in offers] == ["sales", "support"]


def test_queue_staffing() -> None:
    agents = [
        agent("1"),
        agent("2", S.ON_CALL),
        agent("3", S.PAUSED),
        agent("4", S.LOGGED_OUT),
        agent("5", queues=["other"]),
    ]
    assert queue_staffing(Q, agents) == (3, 1)
    assert queue_staffing("nobody", agents) == (0, 0)


# -- order of offers over many calls, with the agent table ---------------------------------------


def simulate(
    strategy: Strategy,
    n_agents: int,
    n_calls: int,
    *,
    members: tuple[str, ...] = (),
    answers: dict[str, bool] | None = None,
    seed: int = 0,
) -> list[str]:
    """Calls arrive one at a time; the agent offered answers (unless ``answers`` says not) and the
    call ends at once (no wrap-up). Returns the agent offered for each offer, in order."""
    table = AgentTable(AgentConfig(wrapup_s=0, max_no_answer=0))
    for i in range(1, n_agents + 1):
        table.add(str(i), member_of=[Q])
        table.login(str(i), 0.0)
    line = WaitingLine(QueueConfig(Q))
    policy = QueuePolicy(Q, strategy, members)
    state = StrategyState()
    rng = random.Random(seed)
    offered: list[str] = []
    now = 0.0
    for c in range(n_calls):
        now += 1.0
        call = f"c{c}"
        line.join(QueueEntry(call, now), now)
        while call in line:
            now += 0.01
            offers = dispatch(line, policy, table.snapshot(), state, now, rng)
            state = state.after(offers)
            assert len(offers) == 1
            (offer,) = offers
            for ext in offer.agents:
                table.offer(ext, offer.call_id, now)
            line.mark_offered(offer.call_id, offer.agents)
            offered.extend(offer.agents)
            winner = next(
                (x for x in offer.agents if (answers or {}).get(x, True)),
                None,
            )
            for ext in offer.agents:
                if ext == winner:
                    table.answer(ext, call, now)
                elif winner is not None:
                    table.withdraw(ext, call, now)
                    line.offer_withdrawn(call, ext)
                else:
                    table.no_answer(ext, call, now)
                    line.offer_failed(call, ext, now)
            if winner is not None:
                line.remove(call)
                now += 0.5
                table.hangup(winner, call, now)
    return offered


def test_sim_linear_always_first() -> None:
    assert simulate(Strategy.LINEAR, 4, 10) == ["1"] * 10


def test_sim_linear_hunts_on_no_answer() -> None:
    got = simulate(Strategy.LINEAR, 4, 3, answers={"1": False, "2": False})
    assert got == ["1", "2", "3", "1", "2", "3", "1", "2", "3"]


def test_sim_rrmemory_cycles() -> None:
    assert simulate(Strategy.RRMEMORY, 4, 12) == list("123412341234")


def test_sim_rrmemory_configured_order() -> None:
    got = simulate(Strategy.RRMEMORY, 3, 6, members=("3", "1", "2"))
    assert got == list("312312")


def test_sim_rrmemory_with_no_answer() -> None:
    got = simulate(Strategy.RRMEMORY, 3, 5, answers={"2": False})
    # c1 rings 2 (no answer) then 3; memory moves on from 3 to 1 for c2
    assert got == ["1", "2", "3", "1", "2", "3", "1"]


def test_sim_longest_idle_rotates() -> None:
    assert simulate(Strategy.LONGEST_IDLE, 3, 9) == list("123123123")


def test_sim_fewest_calls_rotates() -> None:
    assert simulate(Strategy.FEWEST_CALLS, 3, 9) == list("123123123")


def test_sim_fewest_calls_unanswered_does_not_count() -> None:
    got = simulate(Strategy.FEWEST_CALLS, 2, 3, answers={"1": False})
    # 1 never answers: it keeps 0 calls and is tried first for each call, then 2 takes it
    assert got == ["1", "2", "1", "2", "1", "2"]


def test_sim_ringall_single_winner() -> None:
    got = simulate(Strategy.RINGALL, 3, 2)
    assert got == ["1", "2", "3", "1", "2", "3"]


def test_sim_random_covers_everyone() -> None:
    got = simulate(Strategy.RANDOM, 5, 200, seed=42)
    assert got == simulate(Strategy.RANDOM, 5, 200, seed=42)
    assert set(got) == set("12345")


# -- properties ---------------------------------------------------------------------------------

SKILLS = ["zh", "en", "tv"]
QUEUES = [Q, "support"]

skill_map = st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 10), max_size=3)


@st.composite
def agent_views(draw: st.DrawFn) -> list[AgentView]:
    n = draw(st.integers(0, 8))
    out = []
    for i in range(n):
        out.append(
            agent(
                f"{i + 1:02d}",
                draw(st.sampled_from(list(AgentState))),
                queues=draw(st.sets(st.sampled_from(QUEUES), max_size=2)),
                skills=draw(skill_map),
                idle_since=draw(st.floats(0, 100)),
                calls=draw(st.integers(0, 5)),
            )
        )
    return out


@st.composite
def entries(draw: st.DrawFn) -> list[QueueEntry]:
    n = draw(st.integers(0, 8))
    out = []
    for i in range(n):
        sticky = draw(st.one_of(st.none(), st.sampled_from(["01", "02", "03", "99"])))
        out.append(
            QueueEntry(
                f"c{i}",
                draw(st.floats(0, 100)),
                draw(st.integers(0, 3)),
                required_skills=draw(
                    st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 10), max_size=2)
                ),
                sticky_agent=sticky,
                sticky_until=draw(st.floats(0, 200)),
                virtual=draw(st.booleans()),
                tried=frozenset(draw(st.sets(st.sampled_from(["01", "02", "03"]), max_size=2))),
                offered_to=frozenset({"xx"}) if draw(st.integers(0, 9)) == 0 else frozenset(),
            )
        )
    return out


@settings(max_examples=200, deadline=None)
@given(
    agents=agent_views(),
    waiting=entries(),
    strategy=st.sampled_from(list(Strategy)),
    members=st.lists(st.sampled_from(["01", "02", "03", "04"]), unique=True, max_size=4),
    last=st.one_of(st.none(), st.sampled_from(["01", "02", "05"])),
    best=st.booleans(),
    now=st.floats(0, 200),
    seed=st.integers(0, 1000),
)
def test_dispatch_properties(
    agents: list[AgentView],
    waiting: list[QueueEntry],
    strategy: Strategy,
    members: list[str],
    last: str | None,
    best: bool,
    now: float,
    seed: int,
) -> None:
    policy = QueuePolicy(Q, strategy, tuple(members), best)
    line = line_of(*waiting)
    offers = dispatch(line, policy, agents, StrategyState(last), now, random.Random(seed))
    by_ext = {a.extension: a for a in agents}
    by_call = {x.call_id: x for x in waiting}
    offered_agents = [ext for o in offers for ext in o.agents]
    # never two offers to one agent, never two offers for one call
    assert len(offered_agents) == len(set(offered_agents))
    assert len({o.call_id for o in offers}) == len(offers)
    order = {x.call_id: i for i, x in enumerate(line.ordered(now))}
    assert [order[o.call_id] for o in offers] == sorted(order[o.call_id] for o in offers)
    for o in offers:
        e = by_call[o.call_id]
        assert not e.offered_to
        assert o.queue == Q
        assert o.virtual == e.virtual
        assert o.agents
        if strategy is not Strategy.RINGALL:
            assert len(o.agents) == 1
        for ext in o.agents:
            a = by_ext[ext]
            assert a.state is S.AVAILABLE  # never busy, paused or logged out
            assert Q in a.queues
            for skill, level in e.required_skills.items():  # never lacking a skill
                assert a.skills.get(skill, 0) >= level
            if e.is_sticky(now):
                assert ext == e.sticky_agent
    taken = set(offered_agents)
    for e in waiting:
        if e.offered_to:
            continue
        elig = {a.extension for a in eligible(e, Q, agents, now)}
        got = next((o for o in offers if o.call_id == e.call_id), None)
        if got is None:
            # nobody blocked it: every agent it could have had went to another call
            assert elig <= taken
        elif strategy is Strategy.RINGALL:
            # ringall offers every eligible agent not already ringing for an earlier call
            earlier = {
                ext for o in offers if order[o.call_id] < order[e.call_id] for ext in o.agents
            }
            assert set(got.agents) == elig - earlier
    if strategy is Strategy.RINGALL and len(waiting) == 1 and not waiting[0].offered_to:
        only = {a.extension for a in eligible(waiting[0], Q, agents, now)}
        if only:
            assert set(offers[0].agents) == only


@settings(max_examples=50, deadline=None)
@given(agents=agent_views(), waiting=entries(), now=st.floats(0, 200), seed=st.integers(0, 99))
def test_dispatch_is_pure(
    agents: list[AgentView], waiting: list[QueueEntry], now: float, seed: int
) -> None:
    line = line_of(*waiting)
    before = line.entries()
    for strategy in Strategy:
        policy = QueuePolicy(Q, strategy)
        a = dispatch(line, policy, agents, StrategyState(), now, random.Random(seed))
        b = dispatch(line, policy, agents, StrategyState(), now, random.Random(seed))
        assert a == b
    assert line.entries() == before
