"""Records the site store keeps: call detail records and outbox entries."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Final, Literal

__all__ = ["DIRECTIONS", "HANGUP_SIDES", "Cdr", "Direction", "HangupSide", "OutboxEntry"]

Direction = Literal["inbound", "outbound", "internal"]
HangupSide = Literal["caller", "callee", "system"]
DIRECTIONS: Final = ("inbound", "outbound", "internal")
HANGUP_SIDES: Final = ("caller", "callee", "system")


@dataclass(frozen=True, slots=True)
class Cdr:
    """A call detail record. Timestamps are Unix epoch seconds; ``answer_ts`` is ``None`` for an
    unanswered call. ``id`` is ``None`` until the store has written it."""

    call_id: str
    site: str
    direction: Direction
    caller: str
    callee: str
    start_ts: float
    end_ts: float
    cause_code: int
    """SIP status of the outcome: 200 answered, 486 busy, 487 cancelled, 408 no answer, ..."""
    cause_text: str
    answer_ts: float | None = None
    destination: str | None = None
    """Routed destination, e.g. ``"group:sales"``."""
    agent: str | None = None
    """Extension of the agent who answered."""
    hangup_side: HangupSide | None = None
    trunk: str | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction {self.direction!r} is not one of {DIRECTIONS}")
        if self.hangup_side is not None and self.hangup_side not in HANGUP_SIDES:
            raise ValueError(f"hangup_side {self.hangup_side!r} is not one of {HANGUP_SIDES}")
        if self.end_ts < self.start_ts:
            raise ValueError("end_ts is before start_ts")
        if self.answer_ts is not None and not self.start_ts <= self.answer_ts <= self.end_ts:
            raise ValueError("answer_ts is not between start_ts and end_ts")

    @property
    def duration_s(self) -> float:
        """Seconds from start to end (ms precision)."""
        return round(self.end_ts - self.start_ts, 3)

    @property
    def billsec_s(self) -> float:
        """Seconds from answer to end; 0 when unanswered (ms precision)."""
        return 0.0 if self.answer_ts is None else round(self.end_ts - self.answer_ts, 3)

    def to_dict(self) -> dict[str, Any]:
        """All fields plus ``duration_s`` and ``billsec_s``, JSON-ready (the outbox payload)."""
        out = {f: getattr(self, f) for f in _CDR_FIELDS}  # asdict() deep-copies: slower
        out["duration_s"] = self.duration_s
        out["billsec_s"] = self.billsec_s
        return out


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One change waiting to reach HQ. ``seq`` increases strictly and is never reused."""

    seq: int
    kind: str
    payload: dict[str, Any] | str
    """The record (a dict), or its JSON text as stored (:meth:`outbox_peek` with ``raw``: what the
    sync client sends as is, without decoding and encoding it again)."""
    created_ts: float


_CDR_FIELDS: Final = tuple(f.name for f in fields(Cdr))
