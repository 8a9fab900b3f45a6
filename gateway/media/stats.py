"""Per-stream RTP receive statistics: RFC 3550 Appendix A.1 (sequence), A.3 (loss), A.8 (jitter).

:meth:`ReceiveStats.update` runs once per packet on the relay's hot path: plain integer and float
arithmetic on slots, no containers, no objects built.
"""

from __future__ import annotations

__all__ = ["ReceiveStats"]

# RFC 3550 §A.1 constants.
RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2


class ReceiveStats:
    """Reception statistics of one RTP source.

    ``packets``/``bytes`` count every packet given to :meth:`update` or :meth:`count`;
    ``received``, ``expected`` and ``lost`` follow RFC 3550 A.1/A.3, so a new source is counted
    only after ``min_sequential`` in-order packets (its probation). Arrival times are in RTP
    timestamp units (``seconds * clock_rate``) so the jitter of A.8 needs no conversion.
    """

    __slots__ = (
        "_transit",
        "bad_seq",
        "base_seq",
        "bytes",
        "clock_rate",
        "cycles",
        "jitter",
        "last_arrival",
        "max_seq",
        "min_sequential",
        "packets",
        "probation",
        "received",
    )

    def __init__(self, clock_rate: int = 8000, min_sequential: int = MIN_SEQUENTIAL) -> None:
        self.clock_rate = clock_rate
        self.min_sequential = min_sequential
        self.packets = 0
        self.bytes = 0
        self.last_arrival: float | None = None
        self.reset_source(None)

    def reset_source(self, seq: int | None) -> None:
        """Start over for a new source (SSRC change); totals of ``packets``/``bytes`` are kept.

        With ``seq`` the source is put on probation at that sequence number (A.1 ``init_seq`` then
        ``max_seq = seq - 1``); without it the next packet does that.
        """
        self.base_seq = 0
        self.max_seq = 0
        self.bad_seq = RTP_SEQ_MOD + 1  # RFC 3550 A.1: so seq == bad_seq is false
        self.cycles = 0
        self.received = 0
        self.probation = -1  # -1: no packet seen yet
        self.jitter = 0.0
        self._transit: float | None = None
        if seq is not None:
            self._init_source(seq)

    def _init_source(self, seq: int) -> None:
        # RFC 3550 A.1: init_seq(s, seq); s->max_seq = seq - 1; s->probation = MIN_SEQUENTIAL
        self.base_seq = seq
        self.max_seq = (seq - 1) & 0xFFFF if self.min_sequential else seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.probation = self.min_sequential

    def count(self, seq: int, nbytes: int) -> bool:
        """Account a packet's sequence number and size only (A.1); True if it was valid.

        For packets whose timestamp is not a sampling instant, such as RFC 4733 events (their
        timestamp is the event start), which would otherwise inflate the jitter.
        """
        self.packets += 1
        self.bytes += nbytes
        probation = self.probation
        if probation < 0:
            self._init_source(seq)
            probation = self.probation
        if probation:
            # RFC 3550 A.1: source is not valid until MIN_SEQUENTIAL packets in sequence
            if seq == ((self.max_seq + 1) & 0xFFFF):
                self.probation = probation - 1
                self.max_seq = seq
                if probation == 1:
                    self.base_seq = seq
                    self.cycles = 0
                    self.bad_seq = RTP_SEQ_MOD + 1
                    self.received = 1
                    return True
            else:
                self.probation = self.min_sequential - 1
                self.max_seq = seq
            return False
        udelta = (seq - self.max_seq) & 0xFFFF
        if udelta < MAX_DROPOUT:
            # in order, with permissible gap
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD  # sequence number wrapped
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            # the sequence number made a very large jump
            if seq == self.bad_seq:
                # two sequential packets: assume the other side restarted without telling us
                self.base_seq = seq
                self.max_seq = seq
                self.cycles = 0
                self.bad_seq = RTP_SEQ_MOD + 1
                self.received = 0
                self._transit = None
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet
        self.received += 1
        return True

    def update(self, seq: int, ts: int, arrival: float, nbytes: int) -> None:
        """Account one media packet: sequence (A.1) and interarrival jitter (A.8).

        ``arrival`` is the arrival time in timestamp units (``now * clock_rate``).
        """
        self.last_arrival = arrival
        if not self.count(seq, nbytes):
            return
        # RFC 3550 A.8: D = (Rj - Sj) - (Ri - Si); J += (|D| - J) / 16
        transit = arrival - ts
        previous = self._transit
        self._transit = transit
        if previous is not None:
            d = transit - previous
            if d < 0:
                d = -d
            if d >= 0x80000000:  # the 32-bit timestamp wrapped between the two packets
                d = 0x100000000 - d
                if d < 0:
                    d = -d
            self.jitter += (d - self.jitter) / 16.0

    # ------------------------------------------------------------------ derived figures (A.3)

    @property
    def extended_max_seq(self) -> int:
        """Extended highest sequence number received (cycles + max_seq)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the source became valid (A.3)."""
        if self.probation != 0:
            return 0
        return self.extended_max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3): expected - received; negative with duplicates."""
        return self.expected - self.received

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter in milliseconds."""
        return self.jitter * 1000.0 / self.clock_rate

    @property
    def last_packet_time(self) -> float | None:
        """Arrival time of the last media packet in seconds (same clock as ``arrival``)."""
        if self.last_arrival is None:
            return None
        return self.last_arrival / self.clock_rate
