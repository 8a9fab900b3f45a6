"""ITU-T G.711 μ-law (PCMU) and A-law (PCMA) with numpy tables.

Decoding and encoding follow the ITU-T G.191 software tool library (``g711.c``, the reference
implementation of G.711 Tables 1a/2a); encoding is a lookup in a 65 536-entry table indexed by the
int16 sample viewed as uint16, built once at import. The μ-law ⇄ A-law transcoding tables are
256-byte ``bytes`` for :meth:`bytes.translate`, the fastest per-packet transcoder Python offers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALAW_TO_ULAW",
    "ULAW_TO_ALAW",
    "alaw_decode",
    "alaw_encode",
    "alaw_to_ulaw",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_to_alaw",
]

Int16Array = npt.NDArray[np.int16]

# ITU-T G.711 Table 2a: μ-law bias 0x84 (33 << 2) in 16-bit units.
_ULAW_BIAS = 0x84


def _build_ulaw_decode() -> Int16Array:
    # G.711 Table 2a: complement the code word, then t = ((mantissa << 3) + bias) << segment.
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + _ULAW_BIAS
    t = t << ((u & 0x70) >> 4)
    out = np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS)
    return out.astype(np.int16)


def _build_alaw_decode() -> Int16Array:
    # G.711 Table 1a: even bits inverted (XOR 0x55); segment 0 linear, each next one doubled.
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    out = np.where(a & 0x80, t, -t)
    return out.astype(np.int16)


def _int16_index() -> npt.NDArray[np.int32]:
    # Every int16 value in the order of its uint16 view: encode tables are indexed by that view.
    pcm = np.arange(65536, dtype=np.int32)
    return np.where(pcm >= 32768, pcm - 65536, pcm)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    # ITU-T G.191 (STL) ulaw_compress: 14-bit magnitude (one's complement for negatives) + 33,
    # clipped at 0x1FFF; the segment is the position of the leading 1 above bit 5.
    pcm = _int16_index()
    absno = (np.where(pcm < 0, ~pcm, pcm) >> 2) + 33
    absno = np.minimum(absno, 0x1FFF)
    segno = np.zeros_like(absno) + 1
    i = absno >> 6
    while np.any(i):
        segno += i != 0
        i >>= 1
    high = 8 - segno
    low = 0x0F - ((absno >> segno) & 0x0F)
    out = (high << 4) | low
    signed: npt.NDArray[np.int32] = np.where(pcm >= 0, out | 0x80, out)
    return signed.astype(np.uint8)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    # ITU-T G.191 (STL) alaw_compress: 12-bit magnitude (one's complement for negatives); above 15
    # the exponent counts the right shifts that bring it into 16..31; even bits inverted (XOR 0x55).
    pcm = _int16_index()
    ix = np.where(pcm < 0, ~pcm, pcm) >> 4
    shifts = np.zeros_like(ix)
    v = ix.copy()
    while np.any(v > 31):
        big = v > 31
        shifts += big
        v = np.where(big, v >> 1, v)
    code = np.where(ix > 15, ((shifts + 1) << 4) + (v - 16), ix)
    code = np.where(pcm >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


_ULAW_DECODE = _build_ulaw_decode()
_ALAW_DECODE = _build_alaw_decode()
_ULAW_ENCODE = _build_ulaw_encode()
_ALAW_ENCODE = _build_alaw_encode()

# ITU-T G.711 Table 3 (μ → A) and Table 4 (A → μ), for magnitudes (sign stripped, 1-based codes as
# in the reference tables). These are the normative transcoding rules: they keep the error of
# either direction within one μ-law step (max 132 linear units), better than going through linear.
_U2A = (
    1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8,
    9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
    25, 27, 29, 31, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
    46, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62,
    64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79,
    81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96,
    97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112,
    113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128,
)  # fmt: skip
_A2U = (
    1, 3, 5, 7, 9, 11, 13, 15, 16, 17, 18, 19, 20, 21, 22, 23,
    24, 25, 26, 27, 28, 29, 30, 31, 32, 32, 33, 33, 34, 34, 35, 35,
    36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 48, 49, 49,
    50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 64,
    65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 79,
    80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95,
    96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
    112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127,
)  # fmt: skip


def _ulaw_to_alaw_code(u: int) -> int:
    return (0xD5 ^ (_U2A[0xFF ^ u] - 1)) if u & 0x80 else (0x55 ^ (_U2A[0x7F ^ u] - 1))


def _alaw_to_ulaw_code(a: int) -> int:
    return (0xFF ^ _A2U[a ^ 0xD5]) if a & 0x80 else (0x7F ^ _A2U[a ^ 0x55])


ULAW_TO_ALAW: bytes = bytes(_ulaw_to_alaw_code(c) for c in range(256))
ALAW_TO_ULAW: bytes = bytes(_alaw_to_ulaw_code(c) for c in range(256))


def ulaw_to_alaw(data: bytes) -> bytes:
    """Transcode a μ-law payload to A-law, byte for byte."""
    return data.translate(ULAW_TO_ALAW)


def alaw_to_ulaw(data: bytes) -> bytes:
    """Transcode an A-law payload to μ-law, byte for byte."""
    return data.translate(ALAW_TO_ULAW)


def _codes(data: bytes | bytearray | memoryview | npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False)
    return np.frombuffer(data, dtype=np.uint8)


def _samples(pcm: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        arr = np.clip(arr, -32768, 32767).astype(np.int16)
    return arr.view(np.uint16)


def ulaw_decode(data: bytes | bytearray | memoryview | npt.NDArray[Any]) -> Int16Array:
    """μ-law codes (bytes or uint8 array) → int16 linear PCM."""
    return _ULAW_DECODE[_codes(data)]


def alaw_decode(data: bytes | bytearray | memoryview | npt.NDArray[Any]) -> Int16Array:
    """A-law codes (bytes or uint8 array) → int16 linear PCM."""
    return _ALAW_DECODE[_codes(data)]


def ulaw_encode(pcm: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Linear PCM (int16, or anything clipped to int16) → μ-law codes; ``.tobytes()`` for RTP."""
    return _ULAW_ENCODE[_samples(pcm)]


def alaw_encode(pcm: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Linear PCM (int16, or anything clipped to int16) → A-law codes; ``.tobytes()`` for RTP."""
    return _ALAW_ENCODE[_samples(pcm)]
