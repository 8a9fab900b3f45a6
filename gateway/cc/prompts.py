"""The shipped spoken prompts: loading them per language, checking ids, and speaking numbers.

Prompts live in ``gateway/prompts/<lang>/<id>.wav`` as 8 kHz mono 16-bit PCM (the media player
encodes G.711); ``tools/make_prompts.py`` regenerates them and ``gateway/prompts/README.md`` lists
them. Languages are ``"en"`` (English) and ``"cmn"`` (Mandarin).

Numbers (queue positions, minutes of wait, a callback number) are spoken by concatenating prompts:
:func:`say_number` (0-999, with each language's grammar), :func:`say_digits` (one digit at a time),
:func:`say_position` and :func:`say_wait`. They return prompt ids for one language; a
:class:`PromptSet` turns ids into samples. No I/O happens until a prompt is first loaded.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "LANGUAGES",
    "PROMPT_ROOT",
    "SAMPLE_RATE",
    "MissingPromptError",
    "PromptKey",
    "PromptLibrary",
    "PromptSet",
    "number_prompt_ids",
    "say_digits",
    "say_number",
    "say_position",
    "say_wait",
]

PROMPT_ROOT: Final = Path(__file__).resolve().parent.parent / "prompts"
"""Where the shipped prompts live (``gateway/prompts``)."""

SAMPLE_RATE: Final = 8000
"""Sample rate of every prompt, Hz."""

LANGUAGES: Final = ("cmn", "en")
"""Languages the number grammar knows: Mandarin and English."""

_EN_TEENS: Final = {10 + i: f"n_{10 + i}" for i in range(10)}


class MissingPromptError(ValueError):
    """Prompt ids that a flow uses are not on disk; ``missing`` lists them as ``lang/id``."""

    def __init__(self, missing: Iterable[str]) -> None:
        self.missing = tuple(sorted(set(missing)))
        super().__init__("missing prompts: " + ", ".join(self.missing))


@dataclass(frozen=True, slots=True)
class PromptKey:
    """One prompt in one language; written ``lang/id`` (``"en/welcome"``)."""

    lang: str
    id: str

    def __str__(self) -> str:
        return f"{self.lang}/{self.id}"

    @classmethod
    def parse(cls, text: str, default_lang: str) -> PromptKey:
        """``"en/welcome"`` → (en, welcome); ``"welcome"`` → (``default_lang``, welcome)."""
        lang, sep, ident = text.partition("/")
        if not sep:
            lang, ident = default_lang, text
        if not lang or not ident or "/" in ident:
            raise ValueError(f"bad prompt reference {text!r} (expected 'id' or 'lang/id')")
        return cls(lang, ident)


# ---------------------------------------------------------------------------------------------
# Number grammar


def _check_lang(lang: str) -> None:
    if lang not in LANGUAGES:
        raise ValueError(f"no number grammar for language {lang!r} (known: {', '.join(LANGUAGES)})")


def say_number(n: int, lang: str) -> list[str]:
    """Prompt ids speaking the cardinal ``n`` (0-999) in ``lang``.

    English (US, no "and"): 7 → seven; 15 → fifteen; 42 → forty two; 305 → three hundred five.
    Mandarin: 10 → 十; 15 → 十五; 20 → 二十; 105 → 一百零五; 110 → 一百一十; 200 → 两百.
    """
    _check_lang(lang)
    if not 0 <= n <= 999:
        raise ValueError(f"cannot speak {n}: only 0-999")
    return _say_cmn(n) if lang == "cmn" else _say_en(n)


def _say_en(n: int) -> list[str]:
    if n < 10:
        return [f"digit_{n}"]
    if n < 20:
        return [_EN_TEENS[n]]
    if n < 100:
        tens, units = divmod(n, 10)
        return [f"n_{tens * 10}"] + ([f"digit_{units}"] if units else [])
    hundreds, rest = divmod(n, 100)
    return [f"digit_{hundreds}", "hundred"] + (_say_en(rest) if rest else [])


def _say_cmn(n: int) -> list[str]:
    if n < 10:
        return [f"digit_{n}"]
    if n < 100:
        tens, units = divmod(n, 10)
        head = ["n_10"] if tens == 1 else [f"digit_{tens}", "n_10"]
        return head + ([f"digit_{units}"] if units else [])
    hundreds, rest = divmod(n, 100)
    # 两百 is the usual spoken form of 200; 二百 is correct but rarer.
    out = ["liang" if hundreds == 2 else f"digit_{hundreds}", "hundred"]
    if rest == 0:
        return out
    if rest < 10:
        return [*out, "digit_0", f"digit_{rest}"]  # 一百零五
    tens, units = divmod(rest, 10)
    out += [f"digit_{tens}", "n_10"]  # 一百一十: after 百 the tens digit is always said
    return out + ([f"digit_{units}"] if units else [])


def say_digits(digits: str, lang: str) -> list[str]:
    """Prompt ids reading ``digits`` one at a time (a phone or customer number).

    Mandarin reads 1 as 幺 (yao), as is usual for phone numbers.
    """
    _check_lang(lang)
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(f"not a digit string: {digits!r}")
    if lang == "cmn":
        return ["yao" if d == "1" else f"digit_{d}" for d in digits]
    return [f"digit_{d}" for d in digits]


def say_position(position: int, lang: str) -> list[str]:
    """ "You are number 3 in the queue" / "您现在排在第三位"; positions over 999 say 999."""
    return ["position_is", *say_number(min(max(position, 1), 999), lang), "in_queue"]


def say_wait(seconds: float, lang: str) -> list[str]:
    """ "Your estimated wait is 4 minutes"; under a minute says "less than a minute".

    Whole minutes are rounded up (an announced wait should not be beaten by the real one) and
    capped at 999.
    """
    _check_lang(lang)
    if seconds < 60:
        return ["estimated_wait", "less_than_a_minute"]
    minutes = min(math.ceil(seconds / 60), 999)
    unit = "minute" if minutes == 1 else "minutes"
    return ["estimated_wait", *say_number(minutes, lang), unit]


def number_prompt_ids(lang: str) -> frozenset[str]:
    """Every prompt id that :func:`say_number` and :func:`say_digits` may return for ``lang``."""
    ids: set[str] = set()
    for n in range(1000):
        ids.update(say_number(n, lang))
    ids.update(say_digits("0123456789", lang))
    return frozenset(ids)


# ---------------------------------------------------------------------------------------------
# Loading


Samples = npt.NDArray[np.int16]


class PromptSet:
    """The prompts of one language: ids found on disk, samples loaded lazily and cached.

    Samples are read-only ``int16`` arrays at :data:`SAMPLE_RATE`. A file that is not 8 kHz mono
    16-bit PCM raises ``ValueError`` naming it.
    """

    def __init__(self, lang: str, directory: Path) -> None:
        self.lang = lang
        self.directory = directory
        if not directory.is_dir():
            raise ValueError(f"{directory}: no prompt directory for language {lang!r}")
        self._paths = {p.stem: p for p in sorted(directory.glob("*.wav"))}
        self._cache: dict[str, Samples] = {}

    @property
    def ids(self) -> frozenset[str]:
        """Every prompt id present for this language."""
        return frozenset(self._paths)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self._paths

    def path(self, prompt_id: str) -> Path:
        """The WAV file of ``prompt_id``; ``KeyError`` when there is none."""
        try:
            return self._paths[prompt_id]
        except KeyError:
            raise KeyError(f"{self.lang}/{prompt_id}") from None

    def samples(self, prompt_id: str) -> Samples:
        """The prompt's samples (read-only, cached after the first call)."""
        cached = self._cache.get(prompt_id)
        if cached is None:
            cached = _read_wav(self.path(prompt_id))
            self._cache[prompt_id] = cached
        return cached

    def concat(self, prompt_ids: Iterable[str]) -> Samples:
        """The prompts one after another as one array."""
        parts = [self.samples(p) for p in prompt_ids]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def duration(self, prompt_id: str) -> float:
        """Length of the prompt in seconds."""
        return len(self.samples(prompt_id)) / SAMPLE_RATE

    def total_duration(self, prompt_ids: Iterable[str]) -> float:
        """Length of the prompts played one after another, seconds."""
        return sum(self.duration(p) for p in prompt_ids)

    def missing(self, prompt_ids: Iterable[str]) -> list[str]:
        """The ids among ``prompt_ids`` that have no file, sorted, without duplicates."""
        return sorted({p for p in prompt_ids if p not in self._paths})

    def check(self, prompt_ids: Iterable[str]) -> None:
        """Raise :class:`MissingPromptError` unless every id has a file."""
        missing = self.missing(prompt_ids)
        if missing:
            raise MissingPromptError(f"{self.lang}/{p}" for p in missing)

    def transcript(self, prompt_id: str) -> str | None:
        """What the prompt says (from ``texts.tsv``), or ``None`` when not recorded there."""
        return self._transcripts().get(prompt_id)

    def _transcripts(self) -> dict[str, str]:
        path = self.directory / "texts.tsv"
        if not path.is_file():
            return {}
        out: dict[str, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, text = line.partition("\t")
            if sep:
                out[key] = text
        return out


class PromptLibrary:
    """Every language's :class:`PromptSet` under one root (default: the shipped prompts)."""

    def __init__(self, root: Path = PROMPT_ROOT) -> None:
        self.root = root
        self._sets: dict[str, PromptSet] = {}

    @property
    def languages(self) -> tuple[str, ...]:
        """Languages that have a directory under the root, sorted."""
        if not self.root.is_dir():
            return ()
        return tuple(sorted(p.name for p in self.root.iterdir() if p.is_dir()))

    def __getitem__(self, lang: str) -> PromptSet:
        found = self._sets.get(lang)
        if found is None:
            found = PromptSet(lang, self.root / lang)
            self._sets[lang] = found
        return found

    def has(self, lang: str, prompt_id: str) -> bool:
        """Whether ``lang/prompt_id`` exists."""
        if lang not in self._sets and not (self.root / lang).is_dir():
            return False
        return prompt_id in self[lang]

    def check(self, keys: Iterable[PromptKey]) -> None:
        """Raise :class:`MissingPromptError` naming every key without a file."""
        missing = [str(k) for k in keys if not self.has(k.lang, k.id)]
        if missing:
            raise MissingPromptError(missing)


def _read_wav(path: Path) -> Samples:
    with wave.open(str(path), "rb") as wav:
        rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
        if (rate, channels, width) != (SAMPLE_RATE, 1, 2):
            raise ValueError(
                f"{path}: expected {SAMPLE_RATE} Hz mono 16-bit PCM, "
                f"got {rate} Hz, {channels} channel(s), {8 * width}-bit"
            )
        data = wav.readframes(wav.getnframes())
    samples = np.frombuffer(data, dtype="<i2").astype(np.int16)
    samples.setflags(write=False)
    return samples
