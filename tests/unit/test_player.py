"""Prompt/tone playback as RTP, and recording RTP back to PCM."""

from __future__ import annotations

import asyncio
import itertools
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.media.g711 import ulaw_decode
from gateway.media.player import (
    BUSY_CN,
    FRAME,
    RINGBACK_CN,
    Clip,
    Loop,
    Packetizer,
    Player,
    Playlist,
    music_on_hold,
    read_wav,
    silence,
    tone,
    write_wav,
)
from gateway.media.recorder import Recorder


def _hdr(p: bytes) -> tuple[int, int, int, int, int]:
    return struct.unpack_from("!BBHII", p)


def test_packetizer_counts_sequence_and_timestamp_and_marks_the_first_packet() -> None:
    pk = Packetizer(0, ssrc=7)
    pk.seq, pk.timestamp = 65535, 0xFFFFFF00
    frames = [tone([440], 0.02), tone([440], 0.02), tone([440], 0.02)]
    packets = [pk.packet(f) for f in frames]
    heads = [_hdr(p) for p in packets]
    assert [h[1] & 0x80 for h in heads] == [0x80, 0, 0]  # marker only on the first
    assert [h[2] for h in heads] == [65535, 0, 1]  # sequence wraps
    assert [h[3] for h in heads] == [0xFFFFFF00, 0xFFFFFFA0, 0x40]  # timestamp wraps by 160
    assert all(
        h[4] == 7 and h[0] == 0x80 and len(p) == 172 for h, p in zip(heads, packets, strict=True)
    )
    pk.skip(160)
    assert _hdr(pk.packet(frames[0]))[1] & 0x80  # a new talkspurt is marked again


def test_packetizer_refuses_other_codecs() -> None:
    with pytest.raises(ValueError):
        Packetizer(18)


def test_playlist_spans_sources_and_calls_back_in_order() -> None:
    done: list[str] = []
    pl = Playlist()
    pl.add(Clip(np.ones(100, dtype=np.int16)), lambda: done.append("a"))
    pl.add(Clip(np.full(100, 2, dtype=np.int16)), lambda: done.append("b"))
    first = pl.read(FRAME)
    assert first is not None and list(first[:100]) == [1] * 100 and list(first[100:]) == [2] * 60
    assert done == ["a"]
    second = pl.read(FRAME)
    assert second is not None and list(second[:40]) == [2] * 40 and not second[40:].any()
    assert pl.read(FRAME) is None and done == ["a", "b"] and pl.idle


def test_loop_repeats_seamlessly() -> None:
    pcm = np.arange(300, dtype=np.int16)
    lp = Loop(pcm)
    out = np.concatenate([lp.read(FRAME) for _ in range(4)])
    assert list(out) == [i % 300 for i in range(640)]
    with pytest.raises(ValueError):
        Loop(np.zeros(0, dtype=np.int16))


def test_tones_have_their_cadence() -> None:
    assert len(RINGBACK_CN) == 5 * 8000 and not RINGBACK_CN[8000:].any()
    assert len(BUSY_CN) == int(0.35 * 8000) * 2
    moh = music_on_hold(4.0)
    assert abs(len(moh) - 32000) < 100 and np.abs(moh).max() < 32767


def test_wav_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pcm = tone([1000], 0.5)
    write_wav(tmp_path / "t.wav", pcm)
    assert np.array_equal(read_wav(tmp_path / "t.wav"), pcm)


def test_player_paces_packets_every_20ms_and_reports_done() -> None:
    async def run() -> tuple[list[tuple[float, bytes]], list[float]]:
        loop = asyncio.get_running_loop()
        sent: list[tuple[float, bytes]] = []
        done: list[float] = []
        player = Player(loop, lambda b: sent.append((loop.time(), b)), 0, send_silence=False)
        player.play(Clip(tone([1000], 0.2)), lambda: done.append(loop.time()))
        await asyncio.sleep(0.35)
        player.close()
        return sent, done

    sent, done = asyncio.run(run())
    assert len(sent) == 10  # 200 ms of audio, no silence after it
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(sent)]
    assert all(0.010 < g < 0.035 for g in gaps), gaps
    assert abs((sent[-1][0] - sent[0][0]) - 0.18) < 0.03  # no drift over the clip
    assert len(done) == 1
    decoded = np.concatenate([ulaw_decode(p[12:]) for _, p in sent])
    assert abs(np.abs(decoded).max() - 0.25 * 32767) < 1500


def test_recorder_places_packets_by_timestamp() -> None:
    pk = Packetizer(0, ssrc=1)
    frames = [np.full(FRAME, 1000 * (i + 1), dtype=np.int16) for i in range(5)]
    packets = [pk.packet(f) for f in frames]
    rec = Recorder()
    for i in (0, 1, 3, 2, 2):  # reordered and duplicated; packet 4 lost
        rec.feed(packets[i])
    pcm = rec.pcm()
    assert len(pcm) == 4 * FRAME
    levels = [int(np.median(pcm[i * FRAME : (i + 1) * FRAME])) for i in range(4)]
    assert all(abs(v - 1000 * (i + 1)) < 150 for i, v in enumerate(levels)), levels  # G.711 steps


def test_recorder_fills_a_loss_with_silence_and_stops_at_its_limit() -> None:
    pk = Packetizer(8, ssrc=1)
    rec = Recorder(max_seconds=0.1)
    rec.feed(pk.packet(tone([500], 0.02)))
    pk.skip(FRAME * 2)  # two packets lost
    rec.feed(pk.packet(tone([500], 0.02)))
    assert rec.seconds == pytest.approx(0.08)
    assert not rec.pcm()[FRAME : 3 * FRAME].any()
    rec.feed(pk.packet(tone([500], 0.02)))
    assert rec.full and rec.seconds == pytest.approx(0.1)
    rec.feed(pk.packet(tone([500], 0.02)))
    assert rec.seconds == pytest.approx(0.1)


@given(st.binary(max_size=300))
def test_recorder_never_raises_on_garbage(data: bytes) -> None:
    rec = Recorder(max_seconds=1.0)
    rec.feed(data)
    assert rec.seconds <= 1.0


def test_recorder_ignores_telephone_events_and_handles_a_new_ssrc() -> None:
    rec = Recorder()
    a, b = Packetizer(0, ssrc=1), Packetizer(0, ssrc=2)
    rec.feed(a.packet(silence(0.02)))
    rec.feed(b"\x80\x65" + b"\x00" * 10 + b"\x05\x0a\x00\xa0")  # PT 101
    rec.feed(b.packet(silence(0.02)))
    assert rec.seconds == pytest.approx(0.04)
