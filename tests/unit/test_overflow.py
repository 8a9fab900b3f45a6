"""Overflow between sites: the pure decision (conditions exhaustively, targets with Hypothesis)."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.routing.overflow import (
    REASONS,
    CallInfo,
    LocalState,
    Overflow,
    OverflowPolicy,
    RemoteQueue,
    choose_targets,
    decide,
    expected_wait,
    local_wait,
    overflow_reason,
)

ME = "sh"


def remote(
    site: str,
    *,
    queue: str = "sales",
    waiting: int = 0,
    available: int = 0,
    by_skill: dict[str, int] | None = None,
    ewt_s: float = 30.0,
    path_cost: float = 1.0,
    alive: bool = True,
    age_s: float = 0.5,
    logged_in: dict[str, int] | None = None,
) -> RemoteQueue:
    return RemoteQueue(
        site=site,
        queue=queue,
        waiting=waiting,
        available=available,
        available_by_skill=by_skill or {},
        ewt_s=ewt_s,
        service_level=0.8,
        path_cost=path_cost,
        alive=alive,
        age_s=age_s,
        logged_in_by_skill=logged_in,
    )


def local(
    *,
    waiting: int = 10,
    ewt_s: float = 120.0,
    by_skill: dict[str, int] | None = None,
    open_: bool = True,
    logged_in: int | None = 5,
) -> LocalState:
    return LocalState("sales", waiting, ewt_s, by_skill or {}, open_, site=ME, logged_in=logged_in)


ANY = OverflowPolicy("sales", max_ewt_s=60, targets=("*",))


# --- overflow_reason: every combination of the five conditions ---------------------------


@pytest.mark.parametrize(
    "combo",
    list(itertools.product([None, False, True], repeat=5)),
    ids=lambda c: "".join({None: "-", False: "n", True: "Y"}[x] for x in c),
)
def test_reason_is_the_first_condition_that_holds(combo: tuple[bool | None, ...]) -> None:
    """Each condition is off (None), on but not holding (False) or on and holding (True)."""
    closed, no_skill, ewt, waiting, waited = combo
    policy = OverflowPolicy(
        "sales",
        when_closed=closed is not None,
        when_no_skill=no_skill is not None,
        max_ewt_s=None if ewt is None else 60.0,
        max_waiting=None if waiting is None else 5,
        max_wait_s=None if waited is None else 90.0,
        targets=("*",),
    )
    state = LocalState(
        "sales",
        waiting=6 if waiting else 5,  # "more than 5": 5 does not overflow
        ewt_s=60.5 if ewt else 60.0,  # "above 60": 60 does not
        logged_in_by_skill={"zh": 0 if no_skill else 2, "en": 3},
        open=not closed,
        site=ME,
    )
    call = CallInfo(waited_s=90.01 if waited else 90.0, required_skills={"zh": 3})
    expected = next((r for r, c in zip(REASONS, combo, strict=True) if c), None)
    assert overflow_reason(policy, state, call) == expected


def test_conditions_that_hold_but_are_off_never_fire() -> None:
    state = LocalState("sales", 100, 1e6, {}, False, site=ME, logged_in=0)
    call = CallInfo(waited_s=1e6, required_skills=("zh",))
    assert overflow_reason(OverflowPolicy("sales", targets=("*",)), state, call) is None


@pytest.mark.parametrize(
    ("required", "by_skill", "logged_in", "fires"),
    [
        ((), {}, 0, True),  # nobody logged in at all
        ((), {}, 1, False),
        ((), {"en": 1}, None, False),  # total unknown: derived from the per-skill counts
        ((), {"en": 0}, None, True),
        (("zh",), {"zh": 1}, 1, False),
        (("zh",), {"en": 4}, 4, True),
        (("zh", "vip"), {"zh": 1, "vip": 0}, 1, True),  # every skill must be covered
        ({"zh": 7}, {"zh": 1}, 1, False),  # levels are for the ACD; names decide here
    ],
)
def test_no_skill(
    required: tuple[str, ...] | dict[str, int],
    by_skill: dict[str, int],
    logged_in: int | None,
    fires: bool,
) -> None:
    policy = OverflowPolicy("sales", when_no_skill=True, targets=("*",))
    state = LocalState("sales", 0, 0.0, by_skill, True, site=ME, logged_in=logged_in)
    reason = overflow_reason(policy, state, CallInfo(required_skills=required))
    assert reason == ("no_skill" if fires else None)


def test_policy_for_another_queue_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="support"):
        overflow_reason(OverflowPolicy("support"), local(), CallInfo())
    with pytest.raises(ValueError):
        choose_targets(OverflowPolicy("support"), local(), CallInfo(), [])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"queue": ""},
        {"max_ewt_s": -1.0},
        {"max_ewt_s": math.nan},
        {"max_wait_s": math.inf},
        {"min_gain_s": -0.1},
        {"max_waiting": -1},
        {"max_hops": -1},
        {"targets": ("gz", "gz")},
        {"targets": ("",)},
        {"targets": "gz"},
        {"target_queue": ""},
    ],
)
def test_bad_policy_is_refused(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"queue": "sales", **kwargs}
    with pytest.raises(ValueError):
        OverflowPolicy(**args)  # type: ignore[arg-type]


def test_bad_snapshots_are_refused() -> None:
    with pytest.raises(ValueError):
        LocalState("sales", -1, 0.0, {}, True)
    with pytest.raises(ValueError):
        LocalState("sales", 0, math.nan, {}, True)
    with pytest.raises(ValueError):
        LocalState("sales", 0, 0.0, {"zh": -1}, True)
    with pytest.raises(ValueError):
        remote("gz", ewt_s=-1)
    with pytest.raises(ValueError):
        remote("gz", age_s=math.nan)
    with pytest.raises(ValueError):
        remote("gz", path_cost=math.inf)
    with pytest.raises(ValueError):
        CallInfo(hops=-1)
    with pytest.raises(ValueError):
        CallInfo(waited_s=math.nan)
    assert CallInfo(waited_s=-2.0).waited_s == 0.0  # the first site's clock runs ahead
    with pytest.raises(ValueError):
        CallInfo(required_skills="zh")  # type: ignore[arg-type]


# --- expected wait -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("r", "skills", "wait"),
    [
        (remote("gz", available=1, ewt_s=50), frozenset(), 0.0),  # someone free now
        (remote("gz", available=0, ewt_s=50), frozenset(), 50.0),
        (remote("gz", available=0, ewt_s=math.inf), frozenset(), None),  # nobody serving
        (remote("gz", available=2, by_skill={"zh": 1}, ewt_s=50), frozenset({"zh"}), 0.0),
        # free agents, but not with the skill; logged-in figure unknown: cannot tell
        (remote("gz", available=2, by_skill={"en": 2}, ewt_s=50), frozenset({"zh"}), None),
        # ... known: a zh agent is logged in (busy), so the queue's estimate applies
        (
            remote("gz", available=2, by_skill={"en": 2}, ewt_s=50, logged_in={"zh": 1}),
            frozenset({"zh"}),
            50.0,
        ),
        (remote("gz", ewt_s=50, logged_in={"zh": 0}), frozenset({"zh"}), None),
        (remote("gz", available=1, by_skill={"zh": 1}), frozenset({"zh", "vip"}), None),
    ],
)
def test_expected_wait(r: RemoteQueue, skills: frozenset[str], wait: float | None) -> None:
    assert expected_wait(r, skills) == wait


def test_local_wait() -> None:
    call = CallInfo(required_skills=("zh",))
    assert local_wait(local(ewt_s=40, by_skill={"zh": 1}), call) == 40
    assert local_wait(local(ewt_s=40, by_skill={"zh": 1}, open_=False), call) == math.inf
    assert local_wait(local(ewt_s=40, by_skill={"en": 1}), call) == math.inf


# --- choose_targets: examples ------------------------------------------------------------


def sites(rs: list[RemoteQueue]) -> list[str]:
    return [r.site for r in rs]


def test_lowest_expected_wait_wins_then_path_cost_then_name() -> None:
    rs = [
        remote("bj", ewt_s=20, path_cost=1),
        remote("gz", ewt_s=10, path_cost=5),
        remote("hq", available=1, ewt_s=90, path_cost=9),  # free agent now: wait 0
        remote("sz", ewt_s=10, path_cost=2),
        remote("cd", ewt_s=10, path_cost=2),
    ]
    assert sites(choose_targets(ANY, local(), CallInfo(), rs)) == ["hq", "cd", "sz", "gz", "bj"]


def test_named_targets_preference_breaks_remaining_ties_and_star_matches_the_rest() -> None:
    policy = OverflowPolicy("sales", targets=("sz", "gz", "*"))
    rs = [remote(s, ewt_s=10, path_cost=1) for s in ("aa", "gz", "sz", "bj")]
    assert sites(choose_targets(policy, local(), CallInfo(), rs)) == ["sz", "gz", "aa", "bj"]
    named = OverflowPolicy("sales", targets=("gz", "sz"))
    assert sites(choose_targets(named, local(), CallInfo(), rs)) == ["gz", "sz"]
    # preference never beats a lower expected wait, nor a cheaper path at equal wait
    rs2 = [remote("sz", ewt_s=20), remote("gz", ewt_s=10)]
    assert sites(choose_targets(named, local(), CallInfo(), rs2)) == ["gz", "sz"]
    rs3 = [remote("sz", ewt_s=10, path_cost=1), remote("gz", ewt_s=10, path_cost=2)]
    assert sites(choose_targets(named, local(), CallInfo(), rs3)) == ["sz", "gz"]


@pytest.mark.parametrize(
    ("r", "call", "why"),
    [
        (remote("gz", alive=False), CallInfo(), "dead"),
        (remote("gz", age_s=3.01), CallInfo(), "stale"),
        (remote(ME), CallInfo(), "own site"),
        (remote("gz"), CallInfo(visited=frozenset({"gz"})), "visited"),
        (remote("gz"), CallInfo(hops=1), "hop limit"),
        (remote("gz", queue="support"), CallInfo(), "other queue"),
        (remote("gz", ewt_s=120), CallInfo(), "not better"),
        (remote("gz", ewt_s=130), CallInfo(), "worse"),
        (remote("gz", available=3, by_skill={"en": 3}), CallInfo(required_skills=("zh",)), "skill"),
    ],
)
def test_excluded(r: RemoteQueue, call: CallInfo, why: str) -> None:
    good = remote("bj", ewt_s=5, logged_in={"zh": 1})
    state = local(by_skill={"zh": 1, "en": 1})
    assert sites(choose_targets(ANY, state, call, [r, good])) == (
        [] if why == "hop limit" else ["bj"]
    ), why


def test_fresh_at_exactly_max_age() -> None:
    assert sites(choose_targets(ANY, local(), CallInfo(), [remote("gz", age_s=3.0)])) == ["gz"]
    rs = [remote("gz", age_s=9)]
    assert sites(choose_targets(ANY, local(), CallInfo(), rs, max_age_s=10)) == ["gz"]


def test_target_queue_and_max_hops() -> None:
    policy = OverflowPolicy("sales", targets=("*",), target_queue="overflow", max_hops=2)
    rs = [remote("gz", queue="sales"), remote("bj", queue="overflow")]
    assert sites(choose_targets(policy, local(), CallInfo(hops=1), rs)) == ["bj"]
    assert choose_targets(policy, local(), CallInfo(hops=2), rs) == []


def test_min_gain() -> None:
    policy = OverflowPolicy("sales", targets=("*",), min_gain_s=30)
    rs = [remote("gz", ewt_s=90), remote("bj", ewt_s=90.5)]
    assert sites(choose_targets(policy, local(ewt_s=120), CallInfo(), rs)) == ["gz"]


def test_closed_or_unstaffed_here_makes_any_serving_site_better() -> None:
    rs = [remote("gz", ewt_s=600)]
    assert sites(choose_targets(ANY, local(ewt_s=0, open_=False), CallInfo(), rs)) == ["gz"]
    call = CallInfo(required_skills=("zh",))
    rs2 = [remote("gz", ewt_s=600, logged_in={"zh": 1})]
    assert sites(choose_targets(ANY, local(ewt_s=0, by_skill={"en": 2}), call, rs2)) == ["gz"]


def test_a_site_reported_twice_keeps_its_freshest_figure() -> None:
    old = remote("gz", ewt_s=5, age_s=2.0)
    new = remote("gz", ewt_s=50, age_s=0.2)
    for order in ([old, new], [new, old]):
        assert choose_targets(ANY, local(), CallInfo(), order) == [new]


def test_decide() -> None:
    rs = [remote("gz", ewt_s=10)]
    assert decide(ANY, local(ewt_s=120), CallInfo(), rs) == Overflow("ewt", (rs[0],))
    assert decide(ANY, local(ewt_s=30), CallInfo(), rs) is None  # no condition holds
    assert decide(ANY, local(ewt_s=120), CallInfo(), [remote("gz", alive=False)]) is None
    empty = OverflowPolicy("sales", max_ewt_s=60)  # no targets: never leaves
    assert decide(empty, local(ewt_s=120), CallInfo(), rs) is None


# --- choose_targets: properties ----------------------------------------------------------

SITES = ["sh", "gz", "bj", "hq", "sz", "cd"]
SKILLS = ["zh", "en", "vip"]
counts = st.dictionaries(st.sampled_from(SKILLS), st.integers(0, 3), max_size=3)
waits = st.one_of(
    st.floats(0, 300, allow_nan=False), st.just(math.inf), st.sampled_from([0.0, 10.0])
)

remotes_st = st.builds(
    RemoteQueue,
    site=st.sampled_from(SITES),
    queue=st.sampled_from(["sales", "support"]),
    waiting=st.integers(0, 20),
    available=st.integers(0, 3),
    available_by_skill=counts,
    ewt_s=waits,
    service_level=st.floats(0, 1),
    path_cost=st.sampled_from([0.0, 1.0, 2.5]),
    alive=st.booleans(),
    age_s=st.sampled_from([0.0, 1.0, 3.0, 3.5, 60.0]),
    logged_in_by_skill=st.one_of(st.none(), counts),
)
policies = st.builds(
    OverflowPolicy,
    queue=st.just("sales"),
    targets=st.one_of(
        st.just(("*",)),
        st.lists(st.sampled_from([*SITES, "*"]), unique=True, max_size=4).map(tuple),
    ),
    target_queue=st.sampled_from([None, "sales", "support"]),
    max_hops=st.integers(0, 3),
    min_gain_s=st.sampled_from([0.0, 5.0, 60.0]),
)
locals_st = st.builds(
    LocalState,
    queue=st.just("sales"),
    waiting=st.integers(0, 20),
    ewt_s=waits,
    logged_in_by_skill=counts,
    open=st.booleans(),
    site=st.sampled_from(SITES),
)
calls = st.builds(
    CallInfo,
    waited_s=st.floats(0, 600),
    required_skills=st.lists(st.sampled_from(SKILLS), unique=True, max_size=2).map(tuple),
    hops=st.integers(0, 3),
    visited=st.frozensets(st.sampled_from(SITES), max_size=3),
)
MAX_AGE = 3.0


def eligible(policy: OverflowPolicy, state: LocalState, call: CallInfo, r: RemoteQueue) -> bool:
    """The rules, written out once more, independently of the implementation."""
    wait = expected_wait(r, call.skill_names)
    ours = local_wait(state, call)
    return (
        call.hops < policy.max_hops
        and r.alive
        and r.age_s <= MAX_AGE
        and r.site != state.site
        and r.site not in call.visited
        and r.queue == (policy.target_queue or policy.queue)
        and (r.site in policy.targets or "*" in policy.targets)
        and wait is not None
        and wait < ours
        and ours - wait >= policy.min_gain_s
    )


@settings(max_examples=400, deadline=None)
@given(policies, locals_st, calls, st.lists(remotes_st, max_size=8), st.randoms())
def test_choose_targets_properties(
    policy: OverflowPolicy,
    state: LocalState,
    call: CallInfo,
    rs: list[RemoteQueue],
    rnd: random.Random,
) -> None:
    out = choose_targets(policy, state, call, rs, max_age_s=MAX_AGE)
    # a subset of the input, one entry per site, every one eligible
    assert all(any(o is r for r in rs) for o in out)
    assert len({o.site for o in out}) == len(out)
    for o in out:
        assert o.alive and o.age_s <= MAX_AGE
        assert o.site != state.site and o.site not in call.visited
        assert eligible(policy, state, call, o)
    if call.hops >= policy.max_hops:
        assert out == []
    # complete: every site with an eligible report is offered
    assert {o.site for o in out} == {r.site for r in rs if eligible(policy, state, call, r)}
    # ordered by (expected wait, path cost, preference, name)
    keys = [
        (expected_wait(o, call.skill_names), o.path_cost, policy.preference(o.site), o.site)
        for o in out
    ]
    assert keys == sorted(keys)
    # independent of the input order
    shuffled = list(rs)
    rnd.shuffle(shuffled)
    assert choose_targets(policy, state, call, shuffled, max_age_s=MAX_AGE) == out
    # decide agrees
    d = decide(policy, state, call, rs, max_age_s=MAX_AGE)
    reason = overflow_reason(policy, state, call)
    if reason is None or not out:
        assert d is None
    else:
        assert d == Overflow(reason, tuple(out))


@settings(max_examples=200, deadline=None)
@given(policies, locals_st, calls, st.lists(remotes_st, max_size=6))
def test_more_visited_sites_never_adds_targets(
    policy: OverflowPolicy, state: LocalState, call: CallInfo, rs: list[RemoteQueue]
) -> None:
    before = {o.site for o in choose_targets(policy, state, call, rs)}
    more = CallInfo(call.waited_s, call.required_skills, call.hops, call.visited | {"gz", "bj"})
    after = {o.site for o in choose_targets(policy, state, more, rs)}
    assert after <= before - {"gz", "bj"}
