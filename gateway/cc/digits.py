"""DTMF digit collection as a pure state object: digits and the time in, a result out.

A :class:`DigitCollector` gathers up to ``max_digits`` digits. It ends when the count is reached
(``COMPLETE``), on the terminator (``TERMINATOR``; the terminator is not part of the digits), when
a timer runs out after some digits (``TIMEOUT``) or before any (``NO_INPUT``). Three timers, all in
seconds and all measured from :meth:`DigitCollector.start` or the last digit:

- ``first_digit_timeout``: from ``start()`` until the first digit;
- ``inter_digit_timeout``: from each digit to the next;
- ``overall_timeout`` (optional): from ``start()`` (or the first digit, when it comes before
  ``start()``) to the end, whatever the caller does.

Digits may arrive before ``start()`` — the caller types ahead while a prompt plays (barge-in): the
first digit then starts the clock. The owner re-arms one timer at :meth:`DigitCollector.deadline`
and calls :meth:`DigitCollector.on_timer` when it fires; an early or late call is harmless.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "DTMF_DIGITS",
    "DigitCollector",
    "DigitResult",
    "DigitSpec",
    "EndReason",
]

DTMF_DIGITS = "0123456789*#ABCD"
"""Keys a digit collector accepts (RFC 4733 §3.2 events 0-15)."""


class EndReason(enum.Enum):
    """How a collection ended."""

    COMPLETE = "complete"  # max_digits reached
    TERMINATOR = "terminator"  # the terminator key was pressed
    TIMEOUT = "timeout"  # inter-digit or overall timer ran out after at least one digit
    NO_INPUT = "no-input"  # no digit before the first-digit or overall timer ran out


@dataclass(frozen=True, slots=True)
class DigitResult:
    """The digits collected (without the terminator) and how the collection ended."""

    digits: str
    reason: EndReason


@dataclass(frozen=True, slots=True)
class DigitSpec:
    """What to collect; the timeouts are seconds.

    ``terminator`` ends the entry early (``None``: no terminator, e.g. a one-key menu where ``#``
    may be an option). ``overall_timeout`` ``None`` means no overall limit.
    """

    max_digits: int = 1
    terminator: str | None = "#"
    first_digit_timeout: float = 5.0
    inter_digit_timeout: float = 3.0
    overall_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.max_digits < 1:
            raise ValueError(f"max_digits: must be at least 1, got {self.max_digits}")
        if self.terminator is not None and (
            len(self.terminator) != 1 or self.terminator not in DTMF_DIGITS
        ):
            raise ValueError(f"terminator: not a DTMF key: {self.terminator!r}")
        for name in ("first_digit_timeout", "inter_digit_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0")
        if self.overall_timeout is not None and not self.overall_timeout > 0:
            raise ValueError("overall_timeout: must be > 0")


class DigitCollector:
    """Collects DTMF digits against :class:`DigitSpec`; see the module docstring."""

    def __init__(
        self,
        max_digits: int = 1,
        terminator: str | None = "#",
        first_digit_timeout: float = 5.0,
        inter_digit_timeout: float = 3.0,
        overall_timeout: float | None = None,
    ) -> None:
        self.spec = DigitSpec(
            max_digits, terminator, first_digit_timeout, inter_digit_timeout, overall_timeout
        )
        self._digits: list[str] = []
        self._started_at: float | None = None
        self._last_digit_at: float | None = None
        self._result: DigitResult | None = None

    @classmethod
    def from_spec(cls, spec: DigitSpec) -> DigitCollector:
        """A collector for ``spec``."""
        return cls(
            spec.max_digits,
            spec.terminator,
            spec.first_digit_timeout,
            spec.inter_digit_timeout,
            spec.overall_timeout,
        )

    @property
    def digits(self) -> str:
        """Digits collected so far (without a terminator)."""
        return "".join(self._digits)

    @property
    def started(self) -> bool:
        """Whether the timers run (``start()`` was called or a digit arrived)."""
        return self._started_at is not None

    @property
    def result(self) -> DigitResult | None:
        """The result once the collection has ended, else ``None``."""
        return self._result

    @property
    def done(self) -> bool:
        """Whether the collection has ended."""
        return self._result is not None

    def start(self, now: float) -> None:
        """Start the timers (usually when the prompt ends); a second call changes nothing."""
        if self._started_at is None:
            self._started_at = now

    def feed(self, digit: str, now: float) -> DigitResult | None:
        """Add one key press; returns the result when this press ends the collection.

        Presses after the end are ignored (``None``). A key that is not DTMF raises ``ValueError``.
        """
        if len(digit) != 1 or digit.upper() not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF key: {digit!r}")
        if self._result is not None:
            return None
        # An expired timer wins over a digit that arrives after it (a late timer callback).
        expired = self.on_timer(now)
        if expired is not None:
            return expired
        digit = digit.upper()
        self.start(now)
        self._last_digit_at = now
        if digit == self.spec.terminator:
            return self._end(EndReason.TERMINATOR)
        self._digits.append(digit)
        if len(self._digits) >= self.spec.max_digits:
            return self._end(EndReason.COMPLETE)
        return None

    def deadline(self) -> float | None:
        """When :meth:`on_timer` must be called next, or ``None`` (not started, or done)."""
        if self._result is not None or self._started_at is None:
            return None
        if self._last_digit_at is None:
            due = self._started_at + self.spec.first_digit_timeout
        else:
            due = self._last_digit_at + self.spec.inter_digit_timeout
        if self.spec.overall_timeout is not None:
            due = min(due, self._started_at + self.spec.overall_timeout)
        return due

    def on_timer(self, now: float) -> DigitResult | None:
        """Check the timers at ``now``; returns the result if one ran out."""
        due = self.deadline()
        if due is None or now < due:
            return None
        return self._end(EndReason.TIMEOUT if self._digits else EndReason.NO_INPUT)

    def _end(self, reason: EndReason) -> DigitResult:
        self._result = DigitResult(self.digits, reason)
        return self._result
