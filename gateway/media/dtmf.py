"""RFC 4733 telephone-events: payload format and a detector that reports each digit once.

An event is carried by a series of packets sharing one RTP timestamp (the event's start,
RFC 4733 §2.5.1.2) with a growing duration; the last three carry the E (end) bit (§2.5.1.4).
:class:`DtmfDetector` turns that stream into one :class:`DtmfDigit` per key press, even when the
start or all end packets are lost.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "EVENT_CODES",
    "DtmfDetector",
    "DtmfDigit",
    "DtmfError",
    "TelephoneEvent",
    "digit_to_event",
    "event_to_digit",
]

# RFC 4733 §3.2 Table 7: DTMF named events 0-15 (and 16 = flash, §3.3 "hook flash" in RFC 4734).
EVENT_CODES = "0123456789*#ABCD"
FLASH = 16

# RFC 4733 §2.3: event(8) | E(1) R(1) volume(6) | duration(16)
_EVENT = struct.Struct("!BBH")


class DtmfError(ValueError):
    """A malformed telephone-event payload or an unknown digit."""


def event_to_digit(event: int) -> str:
    """Event code → ``"0"``-``"9"``, ``"*"``, ``"#"``, ``"A"``-``"D"``, ``"!"`` (flash), ``"?"``."""
    if 0 <= event < 16:
        return EVENT_CODES[event]
    return "!" if event == FLASH else "?"


def digit_to_event(digit: str) -> int:
    """Inverse of :func:`event_to_digit` for DTMF digits and flash (``"!"``)."""
    if digit == "!":
        return FLASH
    index = EVENT_CODES.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise DtmfError(f"not a DTMF digit: {digit!r}")
    return index


@dataclass(slots=True, frozen=True)
class TelephoneEvent:
    """One RFC 4733 §2.3 event block: ``volume`` is -dBm0 (0-63), ``duration`` timestamp units."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    @classmethod
    def parse(cls, payload: bytes, offset: int = 0) -> TelephoneEvent:
        """The first event block at ``offset``; :class:`DtmfError` when fewer than 4 octets."""
        if len(payload) - offset < 4:
            raise DtmfError("telephone-event payload shorter than 4 octets")
        event, flags, duration = _EVENT.unpack_from(payload, offset)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        if not 0 <= self.event <= 255 or not 0 <= self.volume <= 63:
            raise DtmfError("event must be 0-255 and volume 0-63")
        if not 0 <= self.duration <= 0xFFFF:
            raise DtmfError("duration must fit 16 bits")
        flags = (0x80 if self.end else 0) | self.volume  # R bit (0x40) is reserved, sent as 0
        return _EVENT.pack(self.event, flags, self.duration)

    @property
    def digit(self) -> str:
        """The DTMF digit this event stands for."""
        return event_to_digit(self.event)


@dataclass(slots=True, frozen=True)
class DtmfDigit:
    """A finished key press: ``duration_ms`` from the event's final duration field."""

    digit: str
    duration_ms: int
    timestamp: int  # RTP timestamp of the event start


_HALF = 0x80000000
_MASK32 = 0xFFFFFFFF


class DtmfDetector:
    """Turns RFC 4733 packets of one stream into exactly one :class:`DtmfDigit` per event.

    Feed every telephone-event packet with :meth:`feed` (RTP timestamp, marker and the event block);
    call :meth:`expire` now and then so that an event whose end packets were all lost is still
    reported, ``end_timeout`` seconds (default 0.5) after its last packet.
    """

    __slots__ = (
        "_base",
        "_clock_rate",
        "_done_ts",
        "_duration",
        "_event",
        "_first_ts",
        "_last_seen",
        "_ts",
        "end_timeout",
    )

    def __init__(self, clock_rate: int = 8000, end_timeout: float = 0.5) -> None:
        self._clock_rate = clock_rate
        self.end_timeout = end_timeout
        self._ts: int | None = None  # timestamp of the event (segment) in progress
        self._first_ts = 0  # timestamp of its first segment
        self._event = 0
        self._duration = 0
        self._base = 0  # RFC 4733 §2.5.1.3: duration of earlier segments of a long event
        self._last_seen = 0.0
        self._done_ts: int | None = None  # timestamp of the last event reported

    def feed(
        self, timestamp: int, event: int, end: bool, duration: int, marker: bool, now: float
    ) -> DtmfDigit | None:
        """Account one packet; the digit when this packet finishes an event, else None."""
        done = self._done_ts
        if done is not None:
            age = (timestamp - done) & _MASK32
            if age == 0 or age >= _HALF:
                return None  # a retransmitted end packet or a late packet of an older event
        result: DtmfDigit | None = None
        current = self._ts
        if current is None:
            self._start(timestamp, event, duration, now)
        elif timestamp != current:
            if ((timestamp - current) & _MASK32) >= _HALF:
                return None  # late packet from before the event in progress
            if not marker and event == self._event and self._duration >= 0xFFFF - 1:
                # RFC 4733 §2.5.1.3: a long event continues in a new segment with a new timestamp.
                self._base += self._duration
                self._ts = timestamp
                self._duration = duration
                self._last_seen = now
            else:
                result = self._finish()  # its end packets were lost: report it now
                self._start(timestamp, event, duration, now)
        else:
            if duration > self._duration:
                self._duration = duration
            self._last_seen = now
        if end:
            if result is not None:
                # Two events finished by one packet: keep the earlier, the new one is retried by
                # its retransmitted end packets (§2.5.1.4 sends three).
                return result
            return self._finish()
        return result

    def expire(self, now: float) -> DtmfDigit | None:
        """Report an event whose end never arrived, once ``end_timeout`` has passed."""
        if self._ts is not None and now - self._last_seen >= self.end_timeout:
            return self._finish()
        return None

    def _start(self, timestamp: int, event: int, duration: int, now: float) -> None:
        self._ts = timestamp
        self._first_ts = timestamp
        self._event = event
        self._duration = duration
        self._base = 0
        self._last_seen = now

    def _finish(self) -> DtmfDigit:
        ts = self._ts
        assert ts is not None
        total = self._base + self._duration
        ms = total * 1000 // self._clock_rate
        digit = DtmfDigit(event_to_digit(self._event), ms, self._first_ts)
        self._done_ts = ts
        self._ts = None
        self._base = 0
        self._duration = 0
        return digit
