"""What a caller hears from the gateway itself: prompts, tones and music, as paced G.711 RTP.

The pure part turns 16-bit 8 kHz PCM into RTP packets (:class:`Packetizer`) and strings audio
sources together (:class:`Playlist`); :class:`Player` is the thin asyncio driver that sends one
20 ms packet per tick, drift-free, through a ``send`` callable (the relay leg's socket).
"""

from __future__ import annotations

import asyncio
import secrets
import struct
import wave
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from .g711 import alaw_encode, ulaw_encode

RATE = 8000
"""G.711 sample rate (Hz)."""
PTIME = 0.020
"""Packet duration (s): 20 ms, 160 samples (RFC 3551 §4.5 default for G.711)."""
FRAME = 160
"""Samples per packet."""

Pcm = npt.NDArray[np.int16]
_HEADER = struct.Struct("!BBHII")


def read_wav(path: str | Path) -> Pcm:
    """An 8 kHz mono 16-bit WAV as int16 samples; ValueError for any other format."""
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(
                f"{path}: need 8000 Hz mono 16-bit, got {w.getframerate()} Hz "
                f"{w.getnchannels()} ch {8 * w.getsampwidth()}-bit"
            )
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def write_wav(path: str | Path, pcm: Pcm) -> None:
    """Write int16 samples as an 8 kHz mono 16-bit WAV."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.astype("<i2").tobytes())


def tone(freqs: Iterable[float], seconds: float, level: float = 0.25) -> Pcm:
    """A sum of sines (e.g. 440 + 480 Hz ringback), ``level`` of full scale."""
    t = np.arange(int(seconds * RATE)) / RATE
    fs = list(freqs)
    wave_ = sum(np.sin(2 * np.pi * f * t) for f in fs) / max(1, len(fs))
    return (np.asarray(wave_) * level * 32767).astype(np.int16)


def silence(seconds: float) -> Pcm:
    """Digital silence."""
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def cadence(freqs: Iterable[float], on: float, off: float, level: float = 0.25) -> Pcm:
    """One period of an on/off tone (repeat it with :class:`Loop`)."""
    return np.concatenate([tone(freqs, on, level), silence(off)])


# ITU-T E.180 / national variants used by the sites' carriers (China: 450 Hz).
RINGBACK_CN = cadence([450], 1.0, 4.0)
BUSY_CN = cadence([450], 0.35, 0.35)
RINGBACK_US = cadence([440, 480], 2.0, 4.0)
BEEP = tone([1000], 0.25, 0.3)


def music_on_hold(seconds: float = 8.0) -> Pcm:
    """A gentle, royalty-free arpeggio (generated) for callers waiting in queue."""
    notes = [261.63, 329.63, 392.0, 523.25, 392.0, 329.63]  # C major arpeggio
    step = seconds / (len(notes) * 2)
    parts = []
    for f in notes * 2:
        n = int(step * RATE)
        env = np.minimum(1.0, np.linspace(3.0, 0.0, n))  # soft decay per note
        t = np.arange(n) / RATE
        parts.append(
            (np.sin(2 * np.pi * f * t) * 0.6 + np.sin(4 * np.pi * f * t) * 0.15) * env * 0.2
        )
    return (np.concatenate(parts) * 32767).astype(np.int16)


class Source(Protocol):
    """Audio a :class:`Player` pulls 160 samples at a time."""

    def read(self, n: int) -> Pcm | None:
        """Up to ``n`` samples, or None when finished."""
        ...


class Clip:
    """A finite piece of audio (a prompt, a beep)."""

    def __init__(self, pcm: Pcm, name: str = "") -> None:
        self.pcm = pcm
        self.name = name
        self.pos = 0

    def read(self, n: int) -> Pcm | None:
        if self.pos >= len(self.pcm):
            return None
        out = self.pcm[self.pos : self.pos + n]
        self.pos += n
        return out


class Loop:
    """Audio repeated until stopped (music on hold, ringback, busy tone)."""

    def __init__(self, pcm: Pcm, name: str = "") -> None:
        if len(pcm) == 0:
            raise ValueError("cannot loop empty audio")
        self.pcm = pcm
        self.name = name
        self.pos = 0

    def read(self, n: int) -> Pcm:
        out = np.empty(n, dtype=np.int16)
        filled = 0
        while filled < n:
            take = min(n - filled, len(self.pcm) - self.pos)
            out[filled : filled + take] = self.pcm[self.pos : self.pos + take]
            filled += take
            self.pos = (self.pos + take) % len(self.pcm)
        return out


@dataclass(slots=True)
class _Item:
    source: Source
    on_done: Callable[[], None] | None


class Playlist:
    """Sources played one after the other; each may call back when it finishes."""

    def __init__(self) -> None:
        self._items: list[_Item] = []

    def add(self, source: Source, on_done: Callable[[], None] | None = None) -> None:
        """Queue a source."""
        self._items.append(_Item(source, on_done))

    def clear(self) -> None:
        """Drop everything queued (barge-in, or a new announcement); no callbacks fire."""
        self._items.clear()

    @property
    def idle(self) -> bool:
        """Nothing left to play."""
        return not self._items

    def read(self, n: int) -> Pcm | None:
        """The next ``n`` samples, spanning sources; None when the list is empty."""
        out: list[Pcm] = []
        need = n
        while need and self._items:
            item = self._items[0]
            chunk = item.source.read(need)
            if chunk is None or len(chunk) == 0:
                self._items.pop(0)
                if item.on_done is not None:
                    item.on_done()
                continue
            out.append(chunk)
            need -= len(chunk)
        if not out:
            return None
        pcm = np.concatenate(out) if len(out) > 1 else out[0]
        if len(pcm) < n:
            pcm = np.concatenate([pcm, np.zeros(n - len(pcm), dtype=np.int16)])
        return pcm


_ENCODED: dict[tuple[int, bytes], bytes] = {}
_ENCODED_MAX = 20_000  # distinct 20 ms frames kept encoded (~6 MB): all prompts and the music


class Packetizer:
    """PCM frames → RTP packets for one stream (RFC 3550 §5.1): own SSRC, sequence, timestamp."""

    def __init__(self, payload_type: int = 0, ssrc: int | None = None) -> None:
        if payload_type not in (0, 8):
            raise ValueError("the player speaks PCMU (0) or PCMA (8)")
        self.payload_type = payload_type
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self.seq = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)
        self._marker = True  # RFC 3551 §4.1: marker on the first packet of a talkspurt
        self._encode = ulaw_encode if payload_type == 0 else alaw_encode

    def packet(self, frame: Pcm) -> bytes:
        """One RTP packet carrying ``frame`` (160 samples)."""
        b1 = self.payload_type | (0x80 if self._marker else 0)
        self._marker = False
        header = _HEADER.pack(0x80, b1, self.seq, self.timestamp, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + len(frame)) & 0xFFFFFFFF
        # Prompts and music repeat for every caller: encode each distinct frame once.
        key = (self.payload_type, frame.tobytes())
        payload = _ENCODED.get(key)
        if payload is None:
            if len(_ENCODED) >= _ENCODED_MAX:
                _ENCODED.clear()
            payload = _ENCODED[key] = self._encode(frame).tobytes()
        return header + payload

    def skip(self, samples: int) -> None:
        """Advance the clock without sending (silence suppressed); the next packet is marked."""
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self._marker = True


class _Ticker:
    """One 20 ms clock per event loop for every :class:`Player` on it (one timer, not one per
    caller: 200 callers on hold are 10,000 packets/s)."""

    _by_loop: ClassVar[dict[int, _Ticker]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.players: dict[int, Player] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Ticker:
        ticker = cls._by_loop.get(id(loop))
        if ticker is None or ticker.loop is not loop:
            ticker = cls._by_loop[id(loop)] = cls(loop)
        return ticker

    def add(self, player: Player) -> None:
        self.players[id(player)] = player
        if self._handle is None:
            self._next = self.loop.time() + PTIME  # the player sent its first packet itself
            self._handle = self.loop.call_at(self._next, self._tick)

    def remove(self, player: Player) -> None:
        self.players.pop(id(player), None)
        if not self.players and self._handle is not None:
            self._handle.cancel()
            self._handle = None
            _Ticker._by_loop.pop(id(self.loop), None)

    def _tick(self) -> None:
        self._handle = None
        for player in list(self.players.values()):
            player.step()
        if not self.players:
            _Ticker._by_loop.pop(id(self.loop), None)
            return
        # Against the ideal clock, not "now + 20 ms": no drift over a long wait.
        self._next += PTIME
        now = self.loop.time()
        if self._next < now - 0.2:  # the loop stalled: resynchronise instead of bursting
            self._next = now
        self._handle = self.loop.call_at(self._next, self._tick)


class Player:
    """Sends a :class:`Playlist` as paced RTP through ``send`` (asyncio; all players on a loop
    share one 20 ms clock)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[bytes], None],
        payload_type: int = 0,
        *,
        send_silence: bool = True,
    ) -> None:
        self.loop = loop
        self.send = send
        self.packetizer = Packetizer(payload_type)
        self.playlist = Playlist()
        self.send_silence = send_silence  # keep NATs and stall detectors happy between prompts
        self.packets_sent = 0
        self._running = False
        self._silence = np.zeros(FRAME, dtype=np.int16)

    def start(self) -> None:
        """Begin the 20 ms clock."""
        if not self._running:
            self._running = True
            self.step()  # the first packet at once
            _Ticker.of(self.loop).add(self)

    def play(
        self, source: Source, on_done: Callable[[], None] | None = None, *, interrupt: bool = False
    ) -> None:
        """Queue ``source`` (``interrupt``: drop what is playing first)."""
        if interrupt:
            self.playlist.clear()
        self.playlist.add(source, on_done)
        self.start()

    def stop_playback(self) -> None:
        """Stop what is playing and drop the queue (barge-in)."""
        self.playlist.clear()

    def close(self) -> None:
        """Stop the clock for good."""
        if self._running:
            self._running = False
            _Ticker.of(self.loop).remove(self)
        self.playlist.clear()

    def step(self) -> None:
        """Send the next 20 ms (the shared clock calls this)."""
        frame = self.playlist.read(FRAME)
        if frame is not None:
            self.send(self.packetizer.packet(frame))
            self.packets_sent += 1
        elif self.send_silence:
            self.send(self.packetizer.packet(self._silence))
            self.packets_sent += 1
        else:
            self.packetizer.skip(FRAME)
