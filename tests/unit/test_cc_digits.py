"""DTMF digit collection: every way an entry ends, timers from a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.cc.digits import DigitCollector, DigitResult, DigitSpec, EndReason


def test_complete_at_max_digits() -> None:
    c = DigitCollector(max_digits=3)
    c.start(0.0)
    assert c.feed("1", 1.0) is None
    assert c.feed("2", 2.0) is None
    assert c.feed("3", 3.0) == DigitResult("123", EndReason.COMPLETE)
    assert c.done and c.deadline() is None
    assert c.feed("4", 3.5) is None  # after the end: ignored
    assert c.result == DigitResult("123", EndReason.COMPLETE)


def test_terminator_ends_without_being_collected() -> None:
    c = DigitCollector(max_digits=10, terminator="#")
    c.start(0.0)
    c.feed("4", 0.5)
    assert c.feed("#", 1.0) == DigitResult("4", EndReason.TERMINATOR)


def test_terminator_alone_gives_empty_digits() -> None:
    c = DigitCollector(max_digits=4)
    c.start(0.0)
    assert c.feed("#", 0.2) == DigitResult("", EndReason.TERMINATOR)


def test_no_terminator_collects_hash_as_a_digit() -> None:
    c = DigitCollector(max_digits=1, terminator=None)
    assert c.feed("#", 0.0) == DigitResult("#", EndReason.COMPLETE)


def test_no_input_after_first_digit_timeout() -> None:
    c = DigitCollector(max_digits=4, first_digit_timeout=5.0)
    assert c.deadline() is None  # not started: the prompt still plays
    c.start(10.0)
    assert c.deadline() == 15.0
    assert c.on_timer(14.9) is None  # early: nothing
    assert c.on_timer(15.0) == DigitResult("", EndReason.NO_INPUT)
    assert c.on_timer(16.0) is None  # once only


def test_inter_digit_timeout_after_some_digits() -> None:
    c = DigitCollector(max_digits=8, first_digit_timeout=5.0, inter_digit_timeout=2.0)
    c.start(0.0)
    c.feed("1", 4.0)
    assert c.deadline() == 6.0  # measured from the last digit
    c.feed("2", 5.5)
    assert c.deadline() == 7.5
    assert c.on_timer(7.5) == DigitResult("12", EndReason.TIMEOUT)


def test_overall_timeout_caps_the_entry() -> None:
    c = DigitCollector(max_digits=20, inter_digit_timeout=3.0, overall_timeout=5.0)
    c.start(0.0)
    for t in (1.0, 2.0, 3.0, 4.0):
        c.feed("9", t)
    assert c.deadline() == 5.0
    assert c.on_timer(5.0) == DigitResult("9999", EndReason.TIMEOUT)


def test_overall_timeout_without_input() -> None:
    c = DigitCollector(max_digits=2, first_digit_timeout=10.0, overall_timeout=4.0)
    c.start(0.0)
    assert c.on_timer(4.0) == DigitResult("", EndReason.NO_INPUT)


def test_barge_in_digit_before_start_starts_the_clock() -> None:
    c = DigitCollector(max_digits=4, inter_digit_timeout=3.0, overall_timeout=10.0)
    assert not c.started
    c.feed("5", 7.0)  # typed during the prompt
    assert c.started and c.deadline() == 10.0
    c.start(8.0)  # prompt ends later: changes nothing
    assert c.deadline() == 10.0
    assert c.on_timer(10.0) == DigitResult("5", EndReason.TIMEOUT)


def test_late_digit_after_expiry_loses_to_the_timer() -> None:
    c = DigitCollector(max_digits=4, first_digit_timeout=5.0)
    c.start(0.0)
    assert c.feed("1", 6.0) == DigitResult("", EndReason.NO_INPUT)


def test_lowercase_abcd_and_bad_keys() -> None:
    c = DigitCollector(max_digits=2)
    c.feed("a", 0.0)
    assert c.digits == "A"
    with pytest.raises(ValueError, match="not a DTMF key"):
        c.feed("x", 0.1)
    with pytest.raises(ValueError):
        c.feed("12", 0.1)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"max_digits": 0}, "max_digits"),
        ({"terminator": "x"}, "terminator"),
        ({"terminator": "##"}, "terminator"),
        ({"first_digit_timeout": 0}, "first_digit_timeout"),
        ({"inter_digit_timeout": -1}, "inter_digit_timeout"),
        ({"overall_timeout": 0}, "overall_timeout"),
    ],
)
def test_spec_validation_names_the_field(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=f"^{key}: "):
        DigitSpec(**kwargs)  # type: ignore[arg-type]


def test_from_spec() -> None:
    spec = DigitSpec(3, None, 2.0, 1.0, 9.0)
    assert DigitCollector.from_spec(spec).spec == spec


_KEYS = st.sampled_from("0123456789*#")


@given(
    presses=st.lists(st.tuples(_KEYS, st.floats(0.0, 4.0)), max_size=30),
    max_digits=st.integers(1, 8),
    terminator=st.sampled_from(["#", "*", None]),
)
def test_any_sequence_ends_sanely(
    presses: list[tuple[str, float]], max_digits: int, terminator: str | None
) -> None:
    c = DigitCollector(max_digits, terminator, 5.0, 3.0, 30.0)
    now = 0.0
    c.start(now)
    fed: list[str] = []
    for key, gap in presses:
        now += gap
        if c.done:
            break
        before = c.deadline()
        result = c.feed(key, now)
        if before is not None and now >= before:
            assert result is not None and result.reason in (EndReason.TIMEOUT, EndReason.NO_INPUT)
            break
        fed.append(key)
    while not c.done:
        due = c.deadline()
        assert due is not None and due >= now
        now = due
        c.on_timer(now)
    result = c.result
    assert result is not None
    assert len(result.digits) <= max_digits
    assert terminator is None or terminator not in result.digits
    assert "".join(fed).startswith(result.digits)
    if result.reason is EndReason.COMPLETE:
        assert len(result.digits) == max_digits
    if result.reason is EndReason.NO_INPUT:
        assert result.digits == ""
    if result.reason is EndReason.TERMINATOR:
        assert fed[-1] == terminator
