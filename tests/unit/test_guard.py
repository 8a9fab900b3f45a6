"""The scanner / toll-fraud guard: rate limits and bans with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.edge.guard import Guard, Verdict

SCANNER = "198.51.100.66"
CARRIER = "192.0.2.10"
T0 = 5000.0


def test_rate_limit_is_exact() -> None:
    g = Guard(rate_window=2.0, rate_limit=30)
    assert [g.allow(SCANNER, T0) for _ in range(30)] == [Verdict.ALLOW] * 30
    assert g.allow(SCANNER, T0) is Verdict.THROTTLE
    assert g.allow(SCANNER, T0 + 0.01) is Verdict.THROTTLE
    assert g.throttled_total == 2
    # tokens come back at 15/s: one after 1/15 s
    assert g.allow(SCANNER, T0 + 1 / 15 + 1e-9) is Verdict.ALLOW
    assert g.allow(SCANNER, T0 + 1 / 15 + 2e-9) is Verdict.THROTTLE
    # a full window of silence refills the bucket, never above the limit
    later = T0 + 100
    assert [g.allow(SCANNER, later) for _ in range(31)].count(Verdict.ALLOW) == 30
    # other sources are not affected
    assert g.allow("198.51.100.67", T0) is Verdict.ALLOW


def test_steady_rate_at_the_limit_is_never_throttled() -> None:
    g = Guard(rate_window=2.0, rate_limit=30)
    for i in range(1000):
        assert g.allow(SCANNER, T0 + i / 15) is Verdict.ALLOW
    assert g.throttled_total == 0


def test_retry_after() -> None:
    g = Guard(rate_window=2.0, rate_limit=2, fail_limit=1, ban_time=300)
    assert g.retry_after(SCANNER, T0) == 1
    g.allow(SCANNER, T0)
    g.allow(SCANNER, T0)
    assert g.allow(SCANNER, T0) is Verdict.THROTTLE
    assert g.retry_after(SCANNER, T0) == 1
    g.auth_failed(SCANNER, T0)
    assert g.retry_after(SCANNER, T0 + 100) == 200


def test_ban_after_exact_number_of_failures() -> None:
    g = Guard(fail_window=60.0, fail_limit=5, ban_time=300.0)
    results = [g.auth_failed(SCANNER, T0 + i) for i in range(5)]
    assert results == [False, False, False, False, True]
    assert g.is_banned(SCANNER, T0 + 5)
    assert g.bans() == {SCANNER: T0 + 4 + 300.0}
    assert g.banned_total == 1
    # further failures while banned are not new bans
    assert g.auth_failed(SCANNER, T0 + 6) is False
    assert g.banned_total == 1
    # requests are dropped and counted
    assert g.allow(SCANNER, T0 + 7) is Verdict.BANNED
    assert g.allow(SCANNER, T0 + 8) is Verdict.BANNED
    assert g.dropped_total == 2


def test_failures_outside_the_window_do_not_count() -> None:
    g = Guard(fail_window=60.0, fail_limit=3)
    assert not g.auth_failed(SCANNER, T0)
    assert not g.auth_failed(SCANNER, T0 + 30)
    assert not g.auth_failed(SCANNER, T0 + 60)  # the first one fell out (window is 60 s)
    assert g.auth_failed(SCANNER, T0 + 61)


def test_auth_ok_forgets_failures() -> None:
    g = Guard(fail_limit=3)
    g.auth_failed(SCANNER, T0)
    g.auth_failed(SCANNER, T0 + 1)
    g.auth_ok(SCANNER)
    assert not g.auth_failed(SCANNER, T0 + 2)
    assert not g.auth_failed(SCANNER, T0 + 3)
    assert g.auth_failed(SCANNER, T0 + 4)


def test_ban_expires() -> None:
    g = Guard(fail_limit=1, ban_time=300.0)
    assert g.auth_failed(SCANNER, T0)
    assert g.allow(SCANNER, T0 + 299.9) is Verdict.BANNED
    assert not g.is_banned(SCANNER, T0 + 300)
    assert g.bans(T0 + 300) == {}
    assert g.allow(SCANNER, T0 + 300) is Verdict.ALLOW
    assert g.bans() == {}  # the expired ban was dropped
    # a fresh start: the next failure bans again
    assert g.auth_failed(SCANNER, T0 + 301)
    assert g.banned_total == 2


def test_allow_list_is_never_throttled_nor_banned() -> None:
    g = Guard(rate_limit=2, fail_limit=1, allow_list=[CARRIER, "10.8.0.0/16"])
    for _ in range(100):
        assert g.allow(CARRIER, T0) is Verdict.ALLOW
        assert g.allow("10.8.3.4", T0) is Verdict.ALLOW
    assert g.auth_failed(CARRIER, T0) is False
    assert g.auth_failed("10.8.3.4", T0) is False
    assert not g.ban(CARRIER, T0)
    assert g.bans() == {}
    assert g.throttled_total == 0
    assert g.tracked_sources == 0
    assert g.allow("10.9.0.1", T0) is Verdict.ALLOW
    assert g.is_allow_listed("10.8.255.255") and not g.is_allow_listed("not-an-ip")


def test_manual_ban_and_unban() -> None:
    g = Guard()
    assert g.ban(SCANNER, T0, duration=10.0)
    assert g.allow(SCANNER, T0 + 9) is Verdict.BANNED
    assert g.unban(SCANNER) and not g.unban(SCANNER)
    assert g.allow(SCANNER, T0 + 9) is Verdict.ALLOW


def test_memory_is_bounded_under_100k_sources() -> None:
    g = Guard(max_sources=10_000, max_bans=1_000, fail_limit=1)
    for i in range(100_000):
        ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        g.allow(ip, T0)  # all at once: nothing is idle
        g.auth_failed(ip, T0)  # each one banned
    assert g.tracked_sources <= 2 * 10_000
    assert len(g.bans()) <= 1_000
    assert g.banned_total == 100_000


def test_idle_sources_are_evicted() -> None:
    g = Guard(rate_window=2.0, fail_window=5.0, max_sources=1_000_000)
    for i in range(50_000):
        ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        g.allow(ip, T0 + i * 0.001)  # 1000 new sources a second
        g.auth_failed(ip, T0 + i * 0.001)
    # only the sources of the last rate_window and fail_window (plus a little slack) stay
    assert g.tracked_sources <= 2_000 + 5_000 + 10
    # a heavy sender keeps its state while the crowd comes and goes
    g2 = Guard(rate_limit=5, max_sources=100)
    for _ in range(5):
        g2.allow(SCANNER, T0)
    for i in range(1_000):
        g2.allow(f"10.0.{i >> 8}.{i & 255}", T0)
        assert g2.allow(SCANNER, T0) is Verdict.THROTTLE


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(min_value=0, max_value=0.5)),
        max_size=300,
    )
)
def test_never_more_than_the_limit_in_any_window(events: list[tuple[str, float]]) -> None:
    """Token bucket bound: in any window of length w, at most limit + rate·w requests pass."""
    g = Guard(rate_window=2.0, rate_limit=5)
    now = 0.0
    passed: dict[str, list[float]] = {}
    for ip, step in events:
        now += step
        if g.allow(ip, now) is Verdict.ALLOW:
            passed.setdefault(ip, []).append(now)
    for times in passed.values():
        for i, start in enumerate(times):
            inside = [t for t in times[i:] if t - start <= 2.0]
            assert len(inside) <= 5 + 5 * (inside[-1] - start) / 2.0 + 1e-6


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        Guard(rate_limit=0)
    with pytest.raises(ValueError):
        Guard(ban_time=0)
    with pytest.raises(ValueError):
        Guard(allow_list=["not an address"])
