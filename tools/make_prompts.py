"""Regenerate the spoken prompts under ``gateway/prompts/<lang>/<id>.wav`` with espeak-ng and sox.

    .venv/bin/python tools/make_prompts.py                 # every language, into gateway/prompts
    .venv/bin/python tools/make_prompts.py --lang en --out /tmp/prompts

Each prompt is spoken by espeak-ng at its native rate (22 050 Hz), then sox trims leading and
trailing silence, normalises the peak to -3 dBFS, resamples to 8 kHz mono 16-bit signed PCM (the
player encodes G.711) and pads 20 ms before and 120 ms after, so concatenated prompts ("you are
number" "three" "in the queue") leave a short natural gap. The exact commands are in
``gateway/prompts/README.md``.

Mandarin is synthesised from tone-numbered pinyin with the ``cmn-latn-pinyin`` voice: espeak-ng's
character dictionary gives some words the wrong tone (服务 as fu2 wu5), pinyin pins every tone. The
characters are kept beside the pinyin and written to ``texts.tsv`` as the transcript.

Texts are the contract with :mod:`gateway.cc.prompts` (number grammar) and the IVR flows: an id
removed here must be removed there. sox runs without dither (-D), so the output is byte-for-byte
repeatable for a given espeak-ng and sox version.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "gateway" / "prompts"

VOICES = {"en": "en-us", "cmn": "cmn-latn-pinyin"}
SPEED_WPM = 165
# sox effects after the input file: trim silence at both ends, normalise, 8 kHz mono, pad.
SOX_EFFECTS = (
    "silence 1 0.02 -45d reverse silence 1 0.02 -45d reverse "
    "norm -3 rate -v 8000 channels 1 pad 0.02 0.12"
)

# id -> English text
EN: dict[str, str] = {
    "welcome": "Welcome to the customer service centre.",
    "menu_language": "For English, press 2.",
    "menu_main": (
        "For sales, press 1. For service, press 2. For complaints, press 3. "
        "To be called back, press 9. To speak to an operator, press 0."
    ),
    "menu_service": (
        "For installation, press 1. For repairs, press 2. To return to the main menu, press star."
    ),
    "invalid": "Sorry, that is not a valid choice.",
    "timeout": "Sorry, we did not receive your choice.",
    "please_hold": "Please hold while we connect you to an agent.",
    "position_is": "You are number",
    "in_queue": "in the queue.",
    "estimated_wait": "Your estimated wait is",
    "minute": "minute",
    "minutes": "minutes",
    "second": "second",
    "seconds": "seconds",
    "less_than_a_minute": "less than a minute.",
    "callback_offer": "To be called back instead of waiting, press 9.",
    "enter_number": "Please enter your phone number, followed by the hash key.",
    "enter_customer_id": "Please enter your customer number, followed by the hash key.",
    "you_entered": "You entered",
    "confirm_entry": "If this is correct, press 1. To enter it again, press 2.",
    "callback_confirm": "We will call you back at",
    "callback_done": "Thank you. We will call you back as soon as an agent is free.",
    "voicemail_intro": "Please leave a message after the tone.",
    "closed": "Our service centre is closed now. Please call again during our opening hours.",
    "goodbye": "Thank you for calling. Goodbye.",
    # numbers: digits, teens, tens, hundred (US grammar, no "and")
    "digit_0": "zero",
    "digit_1": "one",
    "digit_2": "two",
    "digit_3": "three",
    "digit_4": "four",
    "digit_5": "five",
    "digit_6": "six",
    "digit_7": "seven",
    "digit_8": "eight",
    "digit_9": "nine",
    "n_10": "ten",
    "n_11": "eleven",
    "n_12": "twelve",
    "n_13": "thirteen",
    "n_14": "fourteen",
    "n_15": "fifteen",
    "n_16": "sixteen",
    "n_17": "seventeen",
    "n_18": "eighteen",
    "n_19": "nineteen",
    "n_20": "twenty",
    "n_30": "thirty",
    "n_40": "forty",
    "n_50": "fifty",
    "n_60": "sixty",
    "n_70": "seventy",
    "n_80": "eighty",
    "n_90": "ninety",
    "hundred": "hundred",
}

# id -> (characters, tone-numbered pinyin fed to espeak-ng)
CMN: dict[str, tuple[str, str]] = {
    "welcome": ("欢迎致电客户服务中心。", "huan1 ying2 zhi4 dian4 ke4 hu4 fu2 wu4 zhong1 xin1."),
    "menu_language": ("中文服务请按一。", "zhong1 wen2 fu2 wu4, qing3 an4 yi1."),
    "menu_main": (
        "销售请按一，服务请按二，投诉请按三，回拨请按九，人工服务请按零。",
        "xiao1 shou4 qing3 an4 yi1, fu2 wu4 qing3 an4 er4, tou2 su4 qing3 an4 san1, "
        "hui2 bo1 qing3 an4 jiu3, ren2 gong1 fu2 wu4 qing3 an4 ling2.",
    ),
    "menu_service": (
        "安装请按一，维修请按二，返回主菜单请按星号键。",
        "an1 zhuang1 qing3 an4 yi1, wei2 xiu1 qing3 an4 er4, "
        "fan3 hui2 zhu3 cai4 dan1 qing3 an4 xing1 hao4 jian4.",
    ),
    "invalid": ("对不起，您的输入有误。", "dui4 bu4 qi3, nin2 de shu1 ru4 you3 wu4."),
    "timeout": (
        "对不起，我们没有收到您的输入。",
        "dui4 bu4 qi3, wo3 men mei2 you3 shou1 dao4 nin2 de shu1 ru4.",
    ),
    "please_hold": (
        "请稍候，正在为您转接坐席。",
        "qing3 shao1 hou4, zheng4 zai4 wei4 nin2 zhuan3 jie1 zuo4 xi2.",
    ),
    "position_is": ("您现在排在第", "nin2 xian4 zai4 pai2 zai4 di4"),
    "in_queue": ("位。", "wei4."),
    "estimated_wait": ("您的预计等待时间为", "nin2 de yu4 ji4 deng3 dai4 shi2 jian1 wei2"),
    "minute": ("分钟", "fen1 zhong1"),
    "minutes": ("分钟", "fen1 zhong1"),
    "second": ("秒", "miao3"),
    "seconds": ("秒", "miao3"),
    "less_than_a_minute": ("不到一分钟。", "bu2 dao4 yi4 fen1 zhong1."),
    "callback_offer": ("如需回拨，请按九。", "ru2 xu1 hui2 bo1, qing3 an4 jiu3."),
    "enter_number": (
        "请输入您的电话号码，以井号键结束。",
        "qing3 shu1 ru4 nin2 de dian4 hua4 hao4 ma3, yi3 jing3 hao4 jian4 jie2 shu4.",
    ),
    "enter_customer_id": (
        "请输入您的客户编号，以井号键结束。",
        "qing3 shu1 ru4 nin2 de ke4 hu4 bian1 hao4, yi3 jing3 hao4 jian4 jie2 shu4.",
    ),
    "you_entered": ("您输入的是", "nin2 shu1 ru4 de shi4"),
    "confirm_entry": (
        "确认请按一，重新输入请按二。",
        "que4 ren4 qing3 an4 yi1, chong2 xin1 shu1 ru4 qing3 an4 er4.",
    ),
    "callback_confirm": ("我们将回拨您的号码", "wo3 men jiang1 hui2 bo1 nin2 de hao4 ma3"),
    "callback_done": (
        "谢谢，坐席空闲时我们将尽快给您回电。",
        "xie4 xie, zuo4 xi2 kong4 xian2 shi2 wo3 men jiang1 jin3 kuai4 gei3 nin2 hui2 dian4.",
    ),
    "voicemail_intro": ("请在提示音后留言。", "qing3 zai4 ti2 shi4 yin1 hou4 liu2 yan2."),
    "closed": (
        "现在是非工作时间，请在工作时间再次致电。",
        "xian4 zai4 shi4 fei1 gong1 zuo4 shi2 jian1, "
        "qing3 zai4 gong1 zuo4 shi2 jian1 zai4 ci4 zhi4 dian4.",
    ),
    "goodbye": ("感谢您的来电，再见。", "gan3 xie4 nin2 de lai2 dian4, zai4 jian4."),
    # numbers: 零一二…九, 十, 百, 两 (两百), 幺 (1 when reading a phone number digit by digit)
    "digit_0": ("零", "ling2"),
    "digit_1": ("一", "yi1"),
    "digit_2": ("二", "er4"),
    "digit_3": ("三", "san1"),
    "digit_4": ("四", "si4"),
    "digit_5": ("五", "wu3"),
    "digit_6": ("六", "liu4"),
    "digit_7": ("七", "qi1"),
    "digit_8": ("八", "ba1"),
    "digit_9": ("九", "jiu3"),
    "n_10": ("十", "shi2"),
    "hundred": ("百", "bai3"),
    "liang": ("两", "liang3"),
    "yao": ("幺", "yao1"),
}

TEXTS: dict[str, dict[str, str]] = {
    "en": dict(EN),
    "cmn": {key: pinyin for key, (_, pinyin) in CMN.items()},
}
TRANSCRIPTS: dict[str, dict[str, str]] = {
    "en": dict(EN),
    "cmn": {key: chars for key, (chars, _) in CMN.items()},
}


def espeak_command(lang: str, text: str, out: Path) -> list[str]:
    """The espeak-ng command speaking ``text`` in ``lang`` into the WAV file ``out``."""
    return ["espeak-ng", "-v", VOICES[lang], "-s", str(SPEED_WPM), "-w", str(out), text]


def sox_command(src: Path, out: Path) -> list[str]:
    """The sox command turning espeak-ng's output into the shipped 8 kHz 16-bit mono WAV."""
    return [
        "sox",
        "-D",
        str(src),
        "-b",
        "16",
        "-e",
        "signed-integer",
        str(out),
        *SOX_EFFECTS.split(),
    ]


def generate(lang: str, out_dir: Path) -> int:
    """Write every prompt of ``lang`` into ``out_dir/lang``; returns the bytes written."""
    target = out_dir / lang
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.wav"):
        old.unlink()
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for key, text in TEXTS[lang].items():
            raw = Path(tmp) / f"{key}.raw.wav"
            wav = target / f"{key}.wav"
            subprocess.run(espeak_command(lang, text, raw), check=True)
            subprocess.run(sox_command(raw, wav), check=True)
            total += wav.stat().st_size
    lines = [f"{key}\t{text}" for key, text in sorted(TRANSCRIPTS[lang].items())]
    (target / "texts.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=OUT, help="prompt root (default: %(default)s)")
    parser.add_argument("--lang", nargs="*", choices=sorted(VOICES), default=sorted(VOICES))
    args = parser.parse_args(argv)
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            print(f"{tool} not found on PATH", file=sys.stderr)
            return 1
    for lang in args.lang:
        size = generate(lang, args.out)
        print(f"{lang}: {len(TEXTS[lang])} prompts, {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
