"""Erlang C and estimated waits (gateway.cc.erlang)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cc.erlang import (
    EstimatorConfig,
    WaitEstimator,
    agents_needed,
    average_speed_of_answer,
    erlang_b,
    erlang_c,
    occupancy,
    service_level,
    traffic_erlangs,
    wait_at_position,
)

# -- an independent implementation: the direct factorial formulas, in exact fractions ------------


def direct_erlang_c(a: Fraction, n: int) -> Fraction:
    """P(W>0) = (A^N/N! · N/(N−A)) / (Σ_{k<N} A^k/k! + A^N/N! · N/(N−A))."""
    top = a**n / math.factorial(n) * Fraction(n) / (n - a)
    bottom = sum((a**k / math.factorial(k) for k in range(n)), Fraction(0)) + top
    return top / bottom


def direct_erlang_b(a: Fraction, n: int) -> Fraction:
    """B = (A^N/N!) / Σ_{k≤N} A^k/k!."""
    return (a**n / math.factorial(n)) / sum(
        (a**k / math.factorial(k) for k in range(n + 1)), Fraction(0)
    )


# -- textbook values: 10 erlangs (e.g. 200 calls/hour × 180 s), 20 s target ----------------------

# (agents, P(W>0), SL(20 s), ASA s) for A = 10, AHT = 180 s; the standard worked example.
TEXTBOOK = [
    (11, 0.6821, 0.3896, 122.78),
    (12, 0.4494, 0.6402, 40.44),
    (13, 0.2853, 0.7956, 17.12),
    (14, 0.1741, 0.8884, 7.84),
]


@pytest.mark.parametrize(("agents", "pw", "sl", "asa"), TEXTBOOK)
def test_textbook_ten_erlangs(agents: int, pw: float, sl: float, asa: float) -> None:
    assert erlang_c(10.0, agents) == pytest.approx(pw, abs=5e-5)
    assert service_level(10.0, agents, 180.0, 20.0) == pytest.approx(sl, abs=5e-5)
    assert average_speed_of_answer(10.0, agents, 180.0) == pytest.approx(asa, abs=5e-3)


def test_textbook_agents_for_80_20() -> None:
    assert agents_needed(10.0, 180.0, 0.80, 20.0) == 14
    assert agents_needed(10.0, 180.0, 0.79, 20.0) == 13
    assert agents_needed(10.0, 180.0, 0.90, 20.0) == 15


def test_traffic() -> None:
    assert traffic_erlangs(200, 3600, 180) == 10.0
    assert traffic_erlangs(100, 1800, 180) == 10.0
    with pytest.raises(ValueError):
        traffic_erlangs(1, 0, 180)


@pytest.mark.parametrize(
    ("a", "n"),
    [
        (Fraction(1, 2), 1),
        (Fraction(1), 2),
        (Fraction(5), 6),
        (Fraction(10), 11),
        (Fraction(10), 13),
        (Fraction(37, 3), 15),
        (Fraction(20), 25),
        (Fraction(50), 55),
        (Fraction(3, 10), 4),
    ],
)
def test_matches_direct_formula(a: Fraction, n: int) -> None:
    assert erlang_c(float(a), n) == pytest.approx(float(direct_erlang_c(a, n)), rel=1e-12)
    assert erlang_b(float(a), n) == pytest.approx(float(direct_erlang_b(a, n)), rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    a=st.fractions(min_value=Fraction(1, 100), max_value=60, max_denominator=100),
    extra=st.integers(1, 20),
)
def test_matches_direct_formula_property(a: Fraction, extra: int) -> None:
    n = math.floor(a) + extra
    assert erlang_c(float(a), n) == pytest.approx(float(direct_erlang_c(a, n)), rel=1e-9)


def test_erlang_b_edges() -> None:
    assert erlang_b(0.0, 0) == 1.0
    assert erlang_b(5.0, 0) == 1.0
    assert erlang_b(0.0, 3) == 0.0
    assert erlang_b(1.0, 1) == 0.5


def test_erlang_c_overloaded_is_one() -> None:
    assert erlang_c(10.0, 10) == 1.0
    assert erlang_c(10.0, 5) == 1.0
    assert erlang_c(0.5, 0) == 1.0
    assert service_level(10.0, 10, 180, 20) == 0.0
    assert average_speed_of_answer(10.0, 9, 180) == math.inf


def test_erlang_c_no_traffic() -> None:
    assert erlang_c(0.0, 1) == 0.0
    assert service_level(0.0, 1, 180, 0) == 1.0
    assert average_speed_of_answer(0.0, 3, 180) == 0.0


def test_large_centre_is_stable() -> None:
    # 1000 agents: factorials would overflow floats; the recursion does not.
    c = erlang_c(950.0, 1000)
    assert 0.0 < c < 1.0
    assert math.isfinite(average_speed_of_answer(950.0, 1000, 180.0))
    assert agents_needed(950.0, 180.0, 0.8, 20.0) > 950


@settings(max_examples=200, deadline=None)
@given(a=st.floats(0.01, 200), extra=st.integers(1, 50))
def test_monotone_in_agents(a: float, extra: int) -> None:
    n = math.floor(a) + extra
    assert 0.0 <= erlang_c(a, n + 1) <= erlang_c(a, n) <= 1.0
    assert service_level(a, n + 1, 180, 20) >= service_level(a, n, 180, 20) - 1e-12
    assert average_speed_of_answer(a, n + 1, 180) <= average_speed_of_answer(a, n, 180)
    assert erlang_c(a, n) >= erlang_b(a, n)  # waiting is likelier than blocking


@settings(max_examples=100, deadline=None)
@given(a=st.floats(0.1, 100), sl=st.floats(0.0, 0.99), t=st.floats(0, 120))
def test_agents_needed_is_the_minimum(a: float, sl: float, t: float) -> None:
    n = agents_needed(a, 180.0, sl, t)
    assert service_level(a, n, 180.0, t) >= sl
    if n - 1 > a:
        assert service_level(a, n - 1, 180.0, t) < sl


def test_agents_needed_with_occupancy_cap() -> None:
    assert agents_needed(10.0, 180.0, 0.0, 20.0) == 11
    assert agents_needed(10.0, 180.0, 0.0, 20.0, max_occupancy=0.8) == 13
    assert agents_needed(0.0, 180.0, 0.8, 20.0) == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"target_sl": 1.0}, {"target_sl": -0.1}, {"max_occupancy": 0.0}, {"max_occupancy": 1.5}],
)
def test_agents_needed_bad_targets(kwargs: dict[str, float]) -> None:
    args: dict[str, float] = {"target_sl": 0.8, **kwargs}
    with pytest.raises(ValueError):
        agents_needed(10.0, 180.0, target_s=20.0, **args)  # type: ignore[arg-type]


def test_agents_needed_limit() -> None:
    with pytest.raises(ValueError):
        agents_needed(10.0, 180.0, 0.8, 20.0, limit=12)


def test_occupancy() -> None:
    assert occupancy(10.0, 12) == pytest.approx(10 / 12)
    assert occupancy(10.0, 5) == 1.0
    assert occupancy(0.0, 0) == 1.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: erlang_c(-1.0, 3),
        lambda: erlang_c(math.nan, 3),
        lambda: erlang_c(math.inf, 3),
        lambda: erlang_b(1.0, -1),
        lambda: service_level(1.0, 3, 0.0, 20),
        lambda: service_level(1.0, 3, 180.0, -1),
        lambda: average_speed_of_answer(1.0, 3, 0.0),
    ],
)
def test_bad_arguments(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


# -- wait at a position --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("position", "staffed", "available", "expected"),
    [
        (1, 10, 0, 18.0),
        (5, 10, 0, 90.0),
        (10, 10, 0, 180.0),
        (1, 1, 0, 180.0),
        (1, 10, 1, 0.0),
        (3, 10, 3, 0.0),
        (4, 10, 3, 18.0),
        (1, 0, 0, math.inf),
    ],
)
def test_wait_at_position(position: int, staffed: int, available: int, expected: float) -> None:
    assert wait_at_position(position, staffed, 180.0, available) == expected


def test_wait_at_position_bad() -> None:
    with pytest.raises(ValueError):
        wait_at_position(0, 1, 180.0)
    with pytest.raises(ValueError):
        wait_at_position(1, -1, 180.0)


def test_wait_at_position_agrees_with_erlang_c_asa() -> None:
    # In M/M/N, averaging the conditional wait (j+1)·AHT/N over the number j of callers found
    # waiting (P(j) = C·(1−ρ)·ρ^j) gives the Erlang C ASA.
    a, n, aht = 10.0, 12, 180.0
    rho = a / n
    c = erlang_c(a, n)
    mean = sum(c * (1 - rho) * rho**j * wait_at_position(j + 1, n, aht) for j in range(2000))
    assert mean == pytest.approx(average_speed_of_answer(a, n, aht), rel=1e-9)


# -- the estimator -------------------------------------------------------------------------------


def test_estimator_uses_erlang_until_enough_history() -> None:
    est = WaitEstimator(EstimatorConfig(aht_s=180.0, window_s=600.0, min_samples=3))
    w = est.estimate(2, 4, now=0.0)
    assert (w.seconds, w.source, w.aht_s) == (90.0, "erlang", 180.0)
    est.record_handled(10.0, 60.0)
    est.record_handled(20.0, 120.0)
    assert est.service_rate(20.0) is None
    assert est.estimate(2, 4, now=20.0).source == "erlang"
    est.record_handled(30.0, 90.0)
    assert est.samples(30.0) == 3
    assert est.service_rate(30.0) == pytest.approx(3 / 270)
    w = est.estimate(2, 4, now=30.0)
    assert w.source == "observed"
    assert w.aht_s == pytest.approx(90.0)
    assert w.seconds == pytest.approx(45.0)


def test_estimator_window_slides() -> None:
    est = WaitEstimator(EstimatorConfig(aht_s=100.0, window_s=60.0, min_samples=1))
    est.record_handled(0.0, 10.0)
    assert est.aht(59.0) == (10.0, "observed")
    assert est.aht(60.0) == (100.0, "erlang")  # the sample left the window
    est.record_handled(70.0, 20.0)
    est.record_handled(100.0, 40.0)
    assert est.aht(100.0) == (30.0, "observed")
    assert est.aht(135.0) == (40.0, "observed")


def test_estimator_free_agent_and_no_agents() -> None:
    est = WaitEstimator()
    assert est.estimate(1, 5, 0.0, available=1).seconds == 0.0
    assert est.estimate(1, 0, 0.0).seconds == math.inf


def test_estimator_zero_handle_times_fall_back() -> None:
    est = WaitEstimator(EstimatorConfig(min_samples=1))
    est.record_handled(0.0, 0.0)
    assert est.service_rate(0.0) is None


@pytest.mark.parametrize(
    "kwargs", [{"aht_s": 0}, {"window_s": 0}, {"min_samples": 0}, {"aht_s": -5}]
)
def test_estimator_bad_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EstimatorConfig(**kwargs)  # type: ignore[arg-type]


def test_estimator_bad_sample() -> None:
    with pytest.raises(ValueError):
        WaitEstimator().record_handled(0.0, -1.0)
    with pytest.raises(ValueError):
        WaitEstimator().record_handled(0.0, math.nan)
