"""G.711 against reference values (ITU-T G.711 / G.191) and round-trip properties."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gateway.media import g711

ALL_CODES = bytes(range(256))


@pytest.mark.parametrize(
    ("code", "linear"),
    [
        (0xFF, 0),
        (0x7F, 0),
        (0x00, -32124),
        (0x80, 32124),
        (0xFE, 8),
        (0xEF, 132),
        (0x6F, -132),
        (0x70, -120),
    ],
)
def test_ulaw_decode_reference_values(code: int, linear: int) -> None:
    assert int(g711.ulaw_decode(bytes([code]))[0]) == linear


@pytest.mark.parametrize(
    ("code", "linear"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0xC5, 264)],
)
def test_alaw_decode_reference_values(code: int, linear: int) -> None:
    assert int(g711.alaw_decode(bytes([code]))[0]) == linear


def test_decode_returns_int16_and_accepts_arrays() -> None:
    out = g711.ulaw_decode(np.array([0xFF, 0x00], dtype=np.uint8))
    assert out.dtype == np.int16
    assert out.tolist() == [0, -32124]
    assert g711.alaw_decode(bytearray(b"\xd5")).tolist() == [8]


def test_alaw_round_trip_every_code() -> None:
    assert g711.alaw_encode(g711.alaw_decode(ALL_CODES)).tobytes() == ALL_CODES


def test_ulaw_round_trip_every_code_but_negative_zero() -> None:
    back = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES)).tobytes()
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF  # μ-law has two zeros; the encoder produces +0
    assert back == bytes(expected)


def test_encode_clips_and_signs() -> None:
    assert g711.ulaw_encode(np.array([32767, -32768], dtype=np.int16)).tolist() == [0x80, 0x00]
    assert g711.alaw_encode(np.array([32767, -32768], dtype=np.int16)).tolist() == [0xAA, 0x2A]
    # wider input is clipped to int16 before encoding
    assert g711.ulaw_encode(np.array([100000, -100000])).tolist() == [0x80, 0x00]
    assert g711.ulaw_encode([0]).tolist() == [0xFF]
    assert g711.alaw_encode([0]).tolist() == [0xD5]


@pytest.mark.parametrize(
    ("decode", "encode"),
    [(g711.ulaw_decode, g711.ulaw_encode), (g711.alaw_decode, g711.alaw_encode)],
)
def test_encode_picks_a_neighbouring_level(decode, encode) -> None:  # type: ignore[no-untyped-def]
    levels = np.unique(decode(ALL_CODES).astype(np.int32))
    pcm = np.arange(-32768, 32768, dtype=np.int32)
    got = decode(encode(pcm.astype(np.int16))).astype(np.int32)
    # the quantised value is one of the two decision levels around the sample
    idx = np.searchsorted(levels, pcm)
    lo = levels[np.clip(idx - 1, 0, len(levels) - 1)]
    hi = levels[np.clip(idx, 0, len(levels) - 1)]
    assert np.all((got == lo) | (got == hi) | (got == pcm))


def test_decode_is_monotonic_in_magnitude() -> None:
    # μ-law: 0xFF..0x80 rising positive values; A-law: codes ^ 0x55 order within each sign
    pos = g711.ulaw_decode(bytes(range(0xFF, 0x7F, -1))).astype(np.int32)
    assert np.all(np.diff(pos) > 0)
    apos = g711.alaw_decode(bytes(c ^ 0x55 for c in range(0x80, 0x100))).astype(np.int32)
    assert np.all(np.diff(apos) > 0)


def test_transcoding_tables() -> None:
    assert len(g711.ULAW_TO_ALAW) == len(g711.ALAW_TO_ULAW) == 256
    assert g711.ulaw_to_alaw(b"\xff\x7f") == b"\xd5\x55"  # ±0 → ±8, A-law's smallest level
    assert g711.alaw_to_ulaw(b"\xd5\x55") == b"\xfe\x7e"  # ±8 exists in μ-law
    assert g711.ulaw_to_alaw(b"\x80\x00") == b"\xaa\x2a"  # full scale stays full scale
    u = g711.ulaw_decode(ALL_CODES).astype(np.int32)
    a = g711.alaw_decode(ALL_CODES).astype(np.int32)
    u2a = a[np.frombuffer(g711.ULAW_TO_ALAW, np.uint8)]
    a2u = u[np.frombuffer(g711.ALAW_TO_ULAW, np.uint8)]
    # G.711 Tables 3/4 stay within one μ-law step of the source value, signs preserved
    assert np.max(np.abs(u - u2a)) <= 132
    assert np.max(np.abs(a - a2u)) <= 132
    nonzero = u != 0
    assert np.all(np.sign(u2a[nonzero]) == np.sign(u[nonzero]))


def test_transcoding_matches_g711_table_entries() -> None:
    # spot values of G.711 Table 3 (μ → A) as in the ITU reference code
    assert g711.ULAW_TO_ALAW[0xFF ^ 32] == 0xD5 ^ (25 - 1)
    assert g711.ULAW_TO_ALAW[0x7F ^ 48] == 0x55 ^ (46 - 1)
    assert g711.ALAW_TO_ULAW[0xD5 ^ 0x18] == 0xFF ^ 32


def test_agrees_with_audioop() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    assert g711.ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    assert g711.alaw_encode(pcm).tobytes() == audioop.lin2alaw(pcm.tobytes(), 2)
    # audioop rounds negative μ-law input two's-complement style; G.191 uses one's complement.
    positive = pcm[pcm >= 0]
    assert g711.ulaw_encode(positive).tobytes() == audioop.lin2ulaw(positive.tobytes(), 2)
