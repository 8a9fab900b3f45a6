"""Recording what one side says: RTP G.711 packets → 8 kHz 16-bit PCM → WAV (voicemail, calls).

Packets are placed by their RTP timestamp (RFC 3550 §5.1), so loss leaves silence of the right
length, reordering lands in the right place and duplicates overwrite themselves. Pure: the caller
feeds packets and decides when to stop.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .g711 import alaw_decode, ulaw_decode
from .player import RATE, Pcm, write_wav

_HEADER = struct.Struct("!BBHII")


class Recorder:
    """Collects one RTP stream's audio, up to ``max_seconds``."""

    def __init__(self, max_seconds: float = 120.0, max_gap_seconds: float = 2.0) -> None:
        self.max_samples = int(max_seconds * RATE)
        self.max_gap = int(max_gap_seconds * RATE)
        self._buf = np.zeros(RATE * 4, dtype=np.int16)  # capacity; grows by doubling
        self._len = 0
        self._base: int | None = None
        self._ssrc: int | None = None
        self._shift = 0  # samples already written before an SSRC change
        self.packets = 0
        self.full = False

    @property
    def seconds(self) -> float:
        """Length recorded so far."""
        return self._len / RATE

    def feed(self, packet: bytes) -> None:
        """Add one RTP packet (PCMU or PCMA; anything else, e.g. telephone-event, is ignored)."""
        if len(packet) < 12 or self.full:
            return
        b0, b1, _seq, ts, ssrc = _HEADER.unpack_from(packet)
        pt = b1 & 0x7F
        if pt not in (0, 8) or b0 & 0xC0 != 0x80:
            return
        start = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:  # header extension (RFC 3550 §5.3.1)
            if len(packet) < start + 4:
                return
            start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
        end = len(packet)
        if b0 & 0x20 and end > start:  # padding: the last octet counts it
            end -= packet[-1]
        if end <= start:
            return
        payload = packet[start:end]
        pcm = ulaw_decode(payload) if pt == 0 else alaw_decode(payload)
        if ssrc != self._ssrc:  # a new source (e.g. re-INVITE): continue after what we have
            self._ssrc = ssrc
            self._shift = self._len
            self._base = ts
        assert self._base is not None
        offset = self._shift + ((ts - self._base) & 0xFFFFFFFF)
        if offset >= 0x80000000 or offset - self._len > self.max_gap:
            # Far in the past (wrapped) or a jump beyond the gap limit: restart the clock here.
            self._base = ts
            self._shift = self._len
            offset = self._shift
        self._place(offset, pcm)
        self.packets += 1

    def _place(self, offset: int, pcm: Pcm) -> None:
        end = offset + len(pcm)
        if end >= self.max_samples:
            end = self.max_samples
            pcm = pcm[: max(0, end - offset)]
            self.full = True
        if end > len(self._buf):
            grown = np.zeros(max(end, 2 * len(self._buf)), dtype=np.int16)
            grown[: self._len] = self._buf[: self._len]
            self._buf = grown
        if len(pcm):
            self._buf[offset:end] = pcm
        self._len = max(self._len, end)

    def pcm(self) -> Pcm:
        """The audio so far."""
        return self._buf[: self._len].copy()

    def save(self, path: str | Path) -> float:
        """Write the WAV; returns its length in seconds."""
        write_wav(path, self._buf[: self._len])
        return self.seconds
