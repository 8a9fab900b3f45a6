"""Audio helpers for integration tests: generate test tones, check what a peer heard.

Everything is 8 kHz G.711-world audio unless told otherwise: baresip's ``aufile`` source wants
an 8 kHz mono 16-bit WAV, SIPp's ``rtp_stream`` wants headerless G.711 bytes (it sends the file
as-is, 160 bytes per 20 ms packet), SIPp's ``play_pcap_audio`` wants a pcap of
Ethernet/IPv4/UDP/RTP frames.
"""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import numpy as np

__all__ = [
    "DTMF_EVENTS",
    "alaw_decode",
    "alaw_encode",
    "dominant_frequency",
    "dominant_frequency_of",
    "duration_s",
    "read_wav",
    "rms",
    "tone_samples",
    "ulaw_decode",
    "ulaw_encode",
    "write_dtmf_pcap",
    "write_rtp_pcap",
    "write_tone_wav",
    "write_ulaw_raw",
]

# RFC 4733 §3.2: event codes for DTMF digits.
DTMF_EVENTS = {
    **{str(d): d for d in range(10)},
    "*": 10,
    "#": 11,
    "A": 12,
    "B": 13,
    "C": 14,
    "D": 15,
}


def tone_samples(
    freq_hz: float, seconds: float, rate: int = 8000, amplitude: float = 0.5
) -> np.ndarray:
    """A sine tone as int16 samples; ``amplitude`` is a fraction of full scale (0..1)."""
    n = round(seconds * rate)
    t = np.arange(n, dtype=np.float64) / rate
    return np.round(np.sin(2 * math.pi * freq_hz * t) * amplitude * 32767).astype(np.int16)


def write_tone_wav(
    path: str | Path,
    freq_hz: float,
    seconds: float = 20.0,
    rate: int = 8000,
    amplitude: float = 0.5,
) -> Path:
    """Write a mono 16-bit PCM WAV sine tone (what baresip's ``aufile`` source plays)."""
    path = Path(path)
    samples = tone_samples(freq_hz, seconds, rate, amplitude)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


# ITU-T G.711 μ-law, the classic Sun/CCITT bias-and-segment formulation.
_ULAW_BIAS = 0x84


def ulaw_encode(samples: np.ndarray) -> bytes:
    """Encode int16 samples to G.711 μ-law bytes (bit-exact with the CCITT reference code)."""
    s = samples.astype(np.int32) >> 2  # 14-bit linear, as in the reference
    sign = np.where(s < 0, 0x00, 0x80)
    mag = np.minimum(np.where(s < 0, -s, s), 8159) + 0x21
    exponent = np.maximum(np.floor(np.log2(mag)).astype(np.int32) - 5, 0)
    mantissa = np.where(exponent > 7, 0x0F, (mag >> (exponent + 1)) & 0x0F)  # past the top: clip
    out = (sign | (np.minimum(exponent, 7) << 4) | mantissa) ^ 0x7F
    return bytes(out.astype(np.uint8).tobytes())


def ulaw_decode(data: bytes) -> np.ndarray:
    """Decode G.711 μ-law bytes to int16 samples."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def alaw_encode(samples: np.ndarray) -> bytes:
    """Encode int16 samples to G.711 A-law bytes."""
    s = samples.astype(np.int32) >> 3  # A-law works on 13-bit magnitudes
    sign = np.where(s >= 0, 0x80, 0x00)
    mag = np.minimum(np.where(s < 0, -s - 1, s), 0xFFF)
    exponent = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    exponent = np.clip(exponent, 0, 7)
    mantissa = np.where(exponent == 0, mag >> 1, mag >> exponent) & 0x0F
    out = (sign | (exponent << 4) | mantissa) ^ 0x55
    return bytes(out.astype(np.uint8).tobytes())


def alaw_decode(data: bytes) -> np.ndarray:
    """Decode G.711 A-law bytes to int16 samples."""
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    mag = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(a & 0x80, mag, -mag).astype(np.int16)


def write_ulaw_raw(
    path: str | Path,
    freq_hz: float,
    seconds: float = 4.0,
    amplitude: float = 0.5,
    alaw: bool = False,
) -> Path:
    """Write headerless 8 kHz G.711 (μ-law, or A-law with ``alaw=True``) for SIPp ``rtp_stream``.

    SIPp sends the file byte for byte, so the length is rounded to whole 20 ms packets (160 bytes)
    and the tone to a whole number of periods per file, which keeps looped playback click-free
    for integer frequencies.
    """
    path = Path(path)
    n = max(160, round(seconds * 8000) // 160 * 160)
    samples = tone_samples(freq_hz, n / 8000, 8000, amplitude)
    path.write_bytes(alaw_encode(samples) if alaw else ulaw_encode(samples))
    return path


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Samples (first channel, float64 in -1..1) and the sample rate of a PCM WAV file.

    Handles 16-bit PCM and 32-bit float WAVs (baresip's ``sndfile`` writes whichever sample format
    the audio pipeline uses), read with a tiny RIFF parser because ``wave`` rejects float files.
    """
    data = Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    payload = b""
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: real tag in the GUID
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            # while sndfile still writes, the size field is 0 (or bogus): take what is there
            payload = data[pos + 8 :] if size == 0 else body
            break
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise ValueError(f"{path}: no fmt chunk")
    tag, channels, rate, bits = fmt
    if tag == 1 and bits == 16:
        usable = len(payload) // (2 * channels) * 2 * channels
        arr = np.frombuffer(payload[:usable], dtype="<i2").astype(np.float64) / 32768.0
    elif tag == 3 and bits == 32:
        usable = len(payload) // (4 * channels) * 4 * channels
        arr = np.frombuffer(payload[:usable], dtype="<f4").astype(np.float64)
    else:
        raise ValueError(f"{path}: unsupported WAV format tag={tag} bits={bits}")
    return arr[::channels], rate


def duration_s(path: str | Path) -> float:
    """Length of a WAV file in seconds."""
    samples, rate = read_wav(path)
    return len(samples) / rate


def rms(path: str | Path, skip_s: float = 0.0) -> float:
    """Root-mean-square level of a WAV file, 0..1 of full scale (silence is ~0)."""
    samples, rate = read_wav(path)
    samples = samples[int(skip_s * rate) :]
    if len(samples) == 0:
        return 0.0
    return float(np.sqrt(np.mean(samples**2)))


def dominant_frequency(path: str | Path, skip_s: float = 0.5) -> float:
    """The strongest frequency in a WAV file (Hz), by FFT with a Hann window.

    ``skip_s`` drops the start (jitter-buffer fill, silence before media flows). Returns 0.0 for
    an empty or silent file.
    """
    samples, rate = read_wav(path)
    return dominant_frequency_of(samples, rate, skip_s)


def dominant_frequency_of(samples: np.ndarray, rate: int, skip_s: float = 0.0) -> float:
    """:func:`dominant_frequency` for samples already in memory (any numeric dtype)."""
    x = np.asarray(samples, dtype=np.float64)[int(skip_s * rate) :]
    if len(x) < 64 or not np.any(x):
        return 0.0
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x))))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    # parabolic interpolation between bins for sub-bin accuracy
    if 0 < k < len(spectrum) - 1:
        a, b, c = spectrum[k - 1], spectrum[k], spectrum[k + 1]
        denom = a - 2 * b + c
        if denom != 0:
            return float((k + 0.5 * (a - c) / denom) * rate / len(x))
    return float(k * rate / len(x))


# --- pcap writing (for SIPp play_pcap_audio) --------------------------------------------------

_PCAP_GLOBAL = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # LINKTYPE_ETHERNET


def _frame(payload: bytes, sport: int, dport: int) -> bytes:
    """Ethernet/IPv4/UDP around an RTP packet. SIPp rewrites ports (keeping the offset from the
    lowest destination port) and addresses, and recomputes the UDP checksum itself."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip_hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes(4), bytes(4)
    )
    csum = 0
    for i in range(0, 20, 2):
        csum += (ip_hdr[i] << 8) | ip_hdr[i + 1]
    while csum >> 16:
        csum = (csum & 0xFFFF) + (csum >> 16)
    ip_hdr = ip_hdr[:10] + struct.pack("!H", ~csum & 0xFFFF) + ip_hdr[12:]
    eth = b"\x00" * 12 + b"\x08\x00"
    return eth + ip_hdr + udp


def write_rtp_pcap(path: str | Path, packets: list[tuple[float, bytes]], port: int = 6000) -> Path:
    """Write ``(time_s, rtp_packet_bytes)`` pairs as a pcap SIPp can play with play_pcap_audio."""
    path = Path(path)
    out = bytearray(_PCAP_GLOBAL)
    for t, rtp in packets:
        frame = _frame(rtp, port, port)
        sec = int(t)
        usec = round((t - sec) * 1_000_000)
        out += struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))
    return path


def write_dtmf_pcap(
    path: str | Path,
    digits: str,
    payload_type: int = 101,
    tone_ms: int = 200,
    gap_ms: int = 200,
    ssrc: int = 0x4D544644,
) -> Path:
    """Write RFC 4733 telephone-event packets for ``digits`` as a pcap for play_pcap_audio.

    Per digit: a packet every 20 ms with the marker bit on the first, one RTP timestamp for the
    whole event, growing duration, then three end-of-event packets (RFC 4733 §2.5.1.4).
    SIPp's own ``play_dtmf`` action hard-codes payload type 96; this lets the scenario use 101.
    """
    packets: list[tuple[float, bytes]] = []
    seq = 1000
    t = 0.0
    ts = 8000
    for ch in digits:
        event = DTMF_EVENTS[ch.upper()]
        steps = max(1, tone_ms // 20)
        for i in range(steps):
            duration = (i + 1) * 160
            hdr = struct.pack("!BBHII", 0x80, (0x80 if i == 0 else 0) | payload_type, seq, ts, ssrc)
            packets.append((t, hdr + struct.pack("!BBH", event, 10, duration)))
            seq = (seq + 1) & 0xFFFF
            t += 0.020
        for _ in range(3):
            hdr = struct.pack("!BBHII", 0x80, payload_type, seq, ts, ssrc)
            packets.append((t, hdr + struct.pack("!BBH", event, 0x80 | 10, steps * 160)))
            seq = (seq + 1) & 0xFFFF
        ts += (steps * 20 + gap_ms) * 8
        t += gap_ms / 1000
    return write_rtp_pcap(path, packets)
