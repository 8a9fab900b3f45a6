"""The shipped prompt set and the number grammar that strings prompts together."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.cc.prompts import (
    LANGUAGES,
    PROMPT_ROOT,
    SAMPLE_RATE,
    MissingPromptError,
    PromptKey,
    PromptLibrary,
    PromptSet,
    number_prompt_ids,
    say_digits,
    say_number,
    say_position,
    say_wait,
)
from tools.make_prompts import TEXTS

# Every id the brief asks for, in both languages.
REQUIRED = {
    "welcome", "menu_language", "menu_main", "invalid", "timeout", "please_hold", "position_is",
    "in_queue", "estimated_wait", "minutes", "seconds", "less_than_a_minute", "callback_offer",
    "callback_confirm", "callback_done", "voicemail_intro", "goodbye", "closed",
    *(f"digit_{d}" for d in range(10)),
}  # fmt: skip


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"), (7, "seven"), (10, "ten"), (13, "thirteen"), (19, "nineteen"),
        (20, "twenty"), (42, "forty two"), (99, "ninety nine"), (100, "one hundred"),
        (101, "one hundred one"), (110, "one hundred ten"), (115, "one hundred fifteen"),
        (250, "two hundred fifty"), (305, "three hundred five"), (999, "nine hundred ninety nine"),
    ],
)  # fmt: skip
def test_english_numbers(n: int, words: str) -> None:
    texts = TEXTS["en"]
    assert " ".join(texts[p] for p in say_number(n, "en")) == words


@pytest.mark.parametrize(
    ("n", "chars"),
    [
        (0, "零"), (2, "二"), (10, "十"), (15, "十五"), (20, "二十"), (99, "九十九"),
        (100, "一百"), (101, "一百零一"), (110, "一百一十"), (115, "一百一十五"),
        (200, "两百"), (205, "两百零五"), (320, "三百二十"), (999, "九百九十九"),
    ],
)  # fmt: skip
def test_mandarin_numbers(n: int, chars: str) -> None:
    transcripts = PromptLibrary()["cmn"]
    assert "".join(transcripts.transcript(p) or "?" for p in say_number(n, "cmn")) == chars


def test_number_limits_and_languages() -> None:
    for bad in (-1, 1000):
        with pytest.raises(ValueError, match="0-999"):
            say_number(bad, "en")
    with pytest.raises(ValueError, match="no number grammar"):
        say_number(1, "fr")


def test_digits_one_at_a_time() -> None:
    assert say_digits("1390", "en") == ["digit_1", "digit_3", "digit_9", "digit_0"]
    assert say_digits("1390", "cmn") == ["yao", "digit_3", "digit_9", "digit_0"]
    for bad in ("12a", "", "١٢"):
        with pytest.raises(ValueError):
            say_digits(bad, "en")


def test_position_and_wait_phrases() -> None:
    assert say_position(3, "en") == ["position_is", "digit_3", "in_queue"]
    assert say_position(12, "cmn") == ["position_is", "n_10", "digit_2", "in_queue"]
    assert say_position(5000, "en")[1:-1] == say_number(999, "en")
    assert say_wait(59, "en") == ["estimated_wait", "less_than_a_minute"]
    assert say_wait(60, "en") == ["estimated_wait", "digit_1", "minute"]
    assert say_wait(61, "en") == ["estimated_wait", "digit_2", "minutes"]
    assert say_wait(600, "cmn") == ["estimated_wait", "n_10", "minutes"]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_shipped_set_has_every_prompt_the_code_needs(lang: str) -> None:
    prompts = PromptLibrary()[lang]
    prompts.check(REQUIRED | number_prompt_ids(lang))
    assert prompts.ids == frozenset(TEXTS[lang])  # the script and the shipped files agree
    for pid in prompts.ids:
        assert prompts.transcript(pid)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_wav_is_8khz_mono_16bit_and_trimmed(lang: str) -> None:
    prompts = PromptLibrary()[lang]
    for pid in prompts.ids:
        samples = prompts.samples(pid)
        assert samples.dtype == np.int16 and samples.ndim == 1
        assert 0.15 < prompts.duration(pid) < 15.0, pid
        peak = int(np.abs(samples.astype(np.int32)).max())
        assert 8000 < peak <= 32767, pid  # normalised speech, not silence
        assert np.abs(samples[:80].astype(np.int32)).max() < peak // 4, pid  # 10 ms lead-in


def test_total_size_is_small() -> None:
    total = sum(p.stat().st_size for p in PROMPT_ROOT.rglob("*") if p.is_file())
    assert total < 3_000_000


def test_samples_are_cached_and_read_only() -> None:
    prompts = PromptLibrary()["en"]
    a = prompts.samples("welcome")
    assert prompts.samples("welcome") is a
    with pytest.raises(ValueError):
        a[0] = 1
    joined = prompts.concat(["position_is", "digit_3", "in_queue"])
    assert len(joined) == sum(
        len(prompts.samples(p)) for p in ("position_is", "digit_3", "in_queue")
    )
    assert prompts.total_duration(["digit_1", "digit_2"]) == pytest.approx(
        (len(prompts.samples("digit_1")) + len(prompts.samples("digit_2"))) / SAMPLE_RATE
    )
    assert len(prompts.concat([])) == 0


def test_missing_prompts_are_named() -> None:
    library = PromptLibrary()
    assert library.languages == ("cmn", "en")
    assert library.has("en", "welcome") and not library.has("en", "nope")
    assert not library.has("fr", "welcome")
    with pytest.raises(MissingPromptError) as err:
        library.check([PromptKey("en", "welcome"), PromptKey("cmn", "nope"), PromptKey("fr", "x")])
    assert err.value.missing == ("cmn/nope", "fr/x")
    with pytest.raises(MissingPromptError, match="en/zzz"):
        library["en"].check(["welcome", "zzz"])
    with pytest.raises(KeyError):
        library["en"].samples("zzz")


def test_prompt_key_parsing() -> None:
    assert PromptKey.parse("en/welcome", "cmn") == PromptKey("en", "welcome")
    assert PromptKey.parse("welcome", "cmn") == PromptKey("cmn", "welcome")
    assert str(PromptKey("en", "welcome")) == "en/welcome"
    for bad in ("/x", "en/", "a/b/c"):
        with pytest.raises(ValueError):
            PromptKey.parse(bad, "en")


def test_wrong_wav_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    with wave.open(str(tmp_path / "en" / "hi.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\x00\x00" * 160)
    prompts = PromptLibrary(tmp_path)["en"]
    with pytest.raises(ValueError, match="expected 8000 Hz mono 16-bit PCM, got 16000 Hz"):
        prompts.samples("hi")
    with pytest.raises(ValueError, match="no prompt directory"):
        PromptSet("fr", tmp_path / "fr")
