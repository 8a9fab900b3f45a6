"""IVR flows: loading checks and the interpreter driven event by event with a fake clock."""

from __future__ import annotations

import copy
import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.cc.digits import DigitSpec
from gateway.cc.ivr import (
    _TABLE,
    AgentAction,
    CallbackAction,
    CallerInfo,
    CollectDigits,
    Command,
    FlowSet,
    Hangup,
    IvrSession,
    Play,
    QueueAction,
    Route,
    SetVar,
    StopPlayback,
    TransferAction,
    VoicemailAction,
    _Event,
    _Phase,
)
from gateway.cc.prompts import PromptKey, PromptLibrary
from gateway.cc.schedule import Schedule

REPO = Path(__file__).resolve().parents[2]
SH = ZoneInfo("Asia/Shanghai")

# The seed's 24×7 in three shifts on weekdays, mornings only at weekends, holidays.
SCHEDULE: dict[str, Any] = {
    "timezone": "Asia/Shanghai",
    "shifts": {"morning": "08:00-16:00", "evening": "16:00-24:00", "night": "00:00-08:00"},
    "week": {"mon-fri": ["morning", "evening", "night"], "sat,sun": ["morning"]},
    "holidays": [
        {"name": "National Day", "from": "2025-10-01", "to": "2025-10-07", "hours": ["morning"]},
        {"name": "New Year", "date": "2026-01-01"},
    ],
}

# The example of docs/ivr.md, as a dict (test_docs_example_matches_fixture keeps them equal).
EXAMPLE: dict[str, Any] = {
    "entry": "main",
    "languages": ["cmn", "en"],
    "default_language": "cmn",
    "max_menu_depth": 3,
    "flows": {
        "main": {
            "start": "welcome",
            "welcome": {
                "kind": "play",
                "prompts": ["cmn/welcome", "en/welcome"],
                "barge_in": True,
                "next": "hours",
            },
            "hours": {
                "kind": "branch",
                "on": "schedule:main",
                "cases": {"open": "language", "closed": "closed"},
            },
            "closed": {
                "kind": "voicemail",
                "box": "general",
                "prompts": ["closed", "voicemail_intro"],
            },
            "language": {
                "kind": "menu",
                "prompts": ["cmn/menu_language", "en/menu_language"],
                "options": {"1": "chinese", "2": "english"},
                "tries": 2,
                "fallback": "chinese",
            },
            "chinese": {"kind": "set", "vars": {"lang": "cmn"}, "next": "vip"},
            "english": {"kind": "set", "vars": {"lang": "en"}, "next": "vip"},
            "vip": {
                "kind": "branch",
                "on": "caller:vip",
                "cases": {"true": "vip_queue", "false": "main_menu"},
            },
            "vip_queue": {
                "kind": "queue",
                "queue": "service",
                "priority": 10,
                "prompts": ["please_hold"],
            },
            "main_menu": {
                "kind": "menu",
                "prompts": ["menu_main"],
                "options": {
                    "1": "sales",
                    "2": "service_menu",
                    "3": "complaints",
                    "9": "callback_number",
                    "0": {"kind": "agent", "extension": "200"},
                },
                "tries": 3,
                "timeout": 5,
                "fallback": {"kind": "queue", "queue": "service"},
            },
            "sales": {"kind": "queue", "queue": "sales", "skills": {"sales": 1}},
            "complaints": {
                "kind": "queue",
                "queue": "complaints",
                "priority": 5,
                "skills": {"complaints": 2},
            },
            "service_menu": {
                "kind": "menu",
                "prompts": ["menu_service"],
                "options": {"1": "installation", "2": "repair", "*": "main_menu"},
                "fallback": "repair",
            },
            "installation": {"kind": "set", "vars": {"service": "installation"}, "next": "service"},
            "repair": {"kind": "set", "vars": {"service": "repair"}, "next": "service"},
            "service": {
                "kind": "queue",
                "queue": "service",
                "skills": ["service"],
                "prompts": ["please_hold"],
            },
            "callback_number": {
                "kind": "collect",
                "prompts": ["enter_number"],
                "var": "callback_number",
                "min_digits": 5,
                "max_digits": 15,
                "confirm": True,
                "next": "callback",
                "fallback": "service",
            },
            "callback": {
                "kind": "callback",
                "queue": "service",
                "number_var": "callback_number",
                "prompts": ["callback_done", "goodbye"],
            },
        }
    },
}

OPEN = datetime(2025, 11, 25, 10, 0, tzinfo=SH)  # a Tuesday morning
CLOSED = datetime(2025, 11, 29, 20, 0, tzinfo=SH)  # a Saturday evening
CALLER = CallerInfo("13800138000", dialled="4008001234")
VIP = CallerInfo("13900139000", customer_id="C42", vip_tier="gold")


def flows(data: dict[str, Any] | None = None, **kw: Any) -> FlowSet:
    schedules = {"main": Schedule.parse(SCHEDULE)}
    return FlowSet.parse(EXAMPLE if data is None else data, schedules=schedules, **kw)


def example_with(**nodes: Any) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    for name, node in nodes.items():
        if node is None:
            del data["flows"]["main"][name]
        else:
            data["flows"]["main"][name] = node
    return data


class Driver:
    """Drives a session: a clock, the last Play, helpers that answer like a media player."""

    def __init__(
        self, caller: CallerInfo = CALLER, wall: datetime = OPEN, fs: FlowSet | None = None
    ):
        self.now = 1000.0
        self.session = IvrSession(fs or flows(), caller, self.now, wall)
        self.log: list[Command] = []

    def _take(self, cmds: list[Command]) -> list[Command]:
        self.log.extend(cmds)
        return cmds

    def start(self) -> list[Command]:
        return self._take(self.session.start(self.now))

    def play_done(self, after: float = 2.0) -> list[Command]:
        self.now += after
        return self._take(self.session.on_prompt_done(self.now))

    def digit(self, d: str, after: float = 0.5) -> list[Command]:
        self.now += after
        return self._take(self.session.on_digit(d, self.now))

    def keys(self, digits: str) -> list[Command]:
        out: list[Command] = []
        for d in digits:
            out += self.digit(d)
        return out

    def wait(self) -> list[Command]:
        due = self.session.deadline()
        assert due is not None
        self.now = due
        return self._take(self.session.on_timer(self.now))

    def to_main_menu(self) -> None:
        self.start()
        self.play_done()  # welcome
        self.play_done()  # language menu prompt
        self.digit("1")


def plays(cmds: list[Command]) -> list[tuple[str, ...]]:
    return [c.prompt_ids for c in cmds if isinstance(c, Play)]


# ---------------------------------------------------------------------------------------------
# Loading


def test_example_loads_without_warnings() -> None:
    fs = flows()
    assert fs.warnings == ()
    assert str(fs.entry) == "main/welcome"
    assert fs.languages == ("cmn", "en")


def test_docs_example_matches_fixture() -> None:
    text = (REPO / "docs" / "ivr.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    site = tomllib.loads(blocks[0])
    assert site["ivr"] == EXAMPLE
    assert Schedule.parse(site["schedules"]["main"]) == Schedule.parse(SCHEDULE)


def test_example_prompts_exist_in_shipped_library() -> None:
    library = PromptLibrary()
    fs = flows(prompts=library)
    keys = fs.prompt_keys()
    assert PromptKey("en", "menu_main") in keys and PromptKey("cmn", "yao") in keys
    assert all(library.has(k.lang, k.id) for k in keys)


class _Catalog:
    def __init__(self, missing: str) -> None:
        self.missing = missing

    def has(self, lang: str, prompt_id: str) -> bool:
        return f"{lang}/{prompt_id}" != self.missing


@pytest.mark.parametrize(
    ("missing", "key"),
    [
        ("en/menu_service", "flows.main.service_menu.prompts[0]"),
        ("cmn/invalid", "flows.main.callback_number.invalid_prompts[0]"),
        ("en/you_entered", "flows.main.callback_number.confirm"),
        ("cmn/digit_7", "prompts"),
    ],
)
def test_missing_prompt_names_the_key(missing: str, key: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{key}: ")) as err:
        flows(prompts=_Catalog(missing))
    assert missing in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"welcome": {"kind": "play", "prompts": ["welcome"], "next": "nowhere"}},
         "flows.main.welcome.next: unknown node 'nowhere'"),
        ({"welcome": {"kind": "play", "prompts": ["welcome"], "next": "other/x"}},
         "flows.main.welcome.next: unknown flow 'other'"),
        ({"welcome": {"kind": "dance", "next": "hours"}},
         "flows.main.welcome.kind: unknown kind 'dance'"),
        ({"welcome": {"kind": "play", "prompts": ["welcome"], "next": "hours", "colour": 1}},
         "flows.main.welcome.colour: unknown key"),
        ({"hours": {"kind": "branch", "on": "schedule:night", "cases": {"open": "language"}}},
         "flows.main.hours.on: unknown schedule 'night'"),
        ({"hours": {"kind": "branch", "on": "schedule:main", "cases": {"weekend": "closed"}}},
         "flows.main.hours.cases.weekend: never matches"),
        ({"hours": {"kind": "branch", "on": "schedule:main", "cases": {"open": "language"}}},
         "flows.main.hours.default: missing"),
        ({"hours": {"kind": "branch", "on": "caller:shoe_size", "cases": {}, "default": "closed"}},
         "flows.main.hours.on: unknown caller attribute"),
        ({"chinese": {"kind": "set", "vars": {"lang": "fr"}, "next": "vip"}},
         "flows.main.chinese.vars.lang: 'fr' is not in languages"),
        ({"language": {"kind": "menu", "prompts": ["menu_language"], "options": {"11": "chinese"}}},
         "flows.main.language.options.11: an option is one DTMF key"),
        ({"main_menu": {"kind": "menu", "prompts": ["menu_main"], "options": {"1": "sales"},
                        "tries": 0}},
         "flows.main.main_menu.tries: must be between 1 and 10"),
        ({"sales": {"kind": "queue", "skills": ["sales"]}}, "flows.main.sales.queue: missing"),
        ({"welcome": {"kind": "play", "prompts": ["fr/welcome"], "next": "hours"}},
         "flows.main.welcome.prompts[0]: language 'fr' is not in languages"),
        ({"callback_number": {"kind": "collect", "prompts": ["enter_number"], "var": "2bad",
                              "next": "callback"}},
         "flows.main.callback_number.var: a variable name"),
    ],
)  # fmt: skip
def test_load_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        flows(example_with(**change))


def test_loop_without_input_is_refused() -> None:
    data = example_with(
        chinese={"kind": "set", "vars": {"lang": "cmn"}, "next": "again"},
        again={"kind": "goto", "node": "chinese"},
    )
    with pytest.raises(ValueError, match=r"loop that never waits for the caller: main/\w+ → "):
        flows(data)


def test_loop_of_plays_is_refused() -> None:
    data = example_with(welcome={"kind": "play", "prompts": ["welcome"], "next": "welcome"})
    with pytest.raises(ValueError, match="loop that never waits"):
        flows(data)


def test_loop_through_a_menu_is_allowed() -> None:
    # service_menu "*" → main_menu → "2" → service_menu: the caller chooses each turn.
    assert flows().nodes  # no error


def _deep_menus(levels: int) -> dict[str, Any]:
    flow: dict[str, Any] = {"start": "m1"}
    for i in range(1, levels + 1):
        nxt = f"m{i + 1}" if i < levels else "q"
        flow[f"m{i}"] = {"kind": "menu", "prompts": ["menu_main"], "options": {"1": nxt, "*": "m1"}}
    flow["q"] = {"kind": "queue", "queue": "sales"}
    flow["orphan"] = {"kind": "hangup"}
    return {"flows": {"main": flow}}


def test_menu_depth_warning_and_unreachable_nodes() -> None:
    assert [w for w in flows(_deep_menus(3)).warnings if "deep" in w] == []
    warnings = flows(_deep_menus(5)).warnings
    assert any(w.startswith("flows.main.m4: menu is 4 levels deep") for w in warnings)
    assert any(w.startswith("flows.main.m5: menu is 5 levels deep") for w in warnings)
    assert "flows.main.orphan: unreachable from the entry flow" in warnings


def test_cross_flow_references() -> None:
    data: dict[str, Any] = {
        "entry": "main",
        "flows": {
            "main": {
                "start": "m",
                "m": {"kind": "menu", "prompts": ["menu_main"],
                      "options": {"1": "support/", "2": "support/deep", "3": "jump"}},
                "jump": {"kind": "goto", "flow": "support", "node": "deep"},
            },
            "support": {
                "start": "top",
                "top": {"kind": "queue", "queue": "support"},
                "deep": {"kind": "agent", "extension": "301"},
            },
        },
    }  # fmt: skip
    fs = flows(data)
    for key, expected in (("1", QueueAction("support")), ("2", AgentAction("301")),
                          ("3", AgentAction("301"))):  # fmt: skip
        s = IvrSession(fs, CALLER, 0.0, OPEN)
        s.start(0.0)
        cmds = s.on_digit(key, 1.0)
        assert cmds[-1] == Route(expected)


# ---------------------------------------------------------------------------------------------
# Running


def test_three_level_menu_to_queue_with_skills() -> None:
    d = Driver()
    cmds = d.start()
    assert cmds == [Play((PromptKey("cmn", "welcome"), PromptKey("en", "welcome")), True, 1)]
    cmds = d.play_done()
    assert plays(cmds) == [("cmn/menu_language", "en/menu_language")]
    assert cmds[0] == CollectDigits(DigitSpec(1, None, 5.0, 5.0))
    d.play_done()
    cmds = d.digit("1")  # 中文
    assert SetVar("lang", "cmn") in cmds
    assert plays(cmds) == [("cmn/menu_main",)]
    cmds = d.digit("2")  # service → sub-menu (level 3)
    assert cmds[0] == StopPlayback(3)
    assert plays(cmds) == [("cmn/menu_service",)]
    cmds = d.digit("2")  # repair
    assert cmds[:2] == [StopPlayback(4), SetVar("service", "repair")]
    assert plays(cmds) == [("cmn/please_hold",)]
    assert not d.session.done  # the hold prompt plays first
    assert d.digit("5") == []  # no barge-in on a terminal prompt
    cmds = d.play_done()
    assert cmds == [Route(QueueAction("service", None, {"service": 1}))]
    assert d.session.done and d.session.outcome == cmds[0]
    record = d.session.record()
    assert record.outcome == "queue:service"
    assert record.variables == {"lang": "cmn", "service": "repair"}
    assert record.path_text() == (
        "main/welcome > main/hours:open > main/language:1 > main/chinese > main/vip:false > "
        "main/main_menu:2 > main/service_menu:2 > main/repair > main/service"
    )
    assert d.play_done() == [] and d.digit("1") == [] and d.session.on_timer(1e9) == []


def test_english_prompts_after_choosing_english() -> None:
    d = Driver()
    d.start()
    d.play_done()
    d.play_done()
    cmds = d.digit("2")
    assert SetVar("lang", "en") in cmds
    assert plays(cmds) == [("en/menu_main",)]
    cmds = d.digit("1")
    assert cmds[-1] == Route(QueueAction("sales", None, {"sales": 1}))
    assert d.session.variables["lang"] == "en"


def test_barge_in_on_welcome_is_type_ahead_for_the_language_menu() -> None:
    d = Driver()
    d.start()
    cmds = d.digit("2")  # during the welcome
    # the welcome stops, the language menu takes the digit without playing its prompt
    assert cmds[0] == StopPlayback(1)
    assert SetVar("lang", "en") in cmds
    assert plays(cmds) == [("en/menu_main",)]
    assert d.session.path[2].choice == "2"


def test_non_barge_in_play_ignores_digits() -> None:
    data = copy.deepcopy(EXAMPLE)
    data["flows"]["main"]["welcome"]["barge_in"] = False
    d = Driver(fs=flows(data))
    d.start()
    assert d.digit("2") == []
    cmds = d.play_done()
    assert plays(cmds) == [("cmn/menu_language", "en/menu_language")]  # nothing typed ahead


def test_invalid_then_valid_choice() -> None:
    d = Driver()
    d.to_main_menu()
    cmds = d.digit("7")
    assert cmds[0] == StopPlayback(3)
    assert plays(cmds) == [("cmn/invalid", "cmn/menu_main")]
    cmds = d.digit("3")
    assert cmds[-1] == Route(QueueAction("complaints", 5, {"complaints": 2}))
    step = d.session.path[-2]
    assert (step.node, step.choice, step.retries) == ("main/main_menu", "3", 1)


def test_no_input_repeats_with_timeout_prompt_then_fallback() -> None:
    d = Driver()
    d.to_main_menu()
    assert d.session.deadline() is None  # the prompt still plays: no timer yet
    d.play_done()
    assert d.session.deadline() == pytest.approx(d.now + 5.0)
    cmds = d.wait()
    assert plays(cmds) == [("cmn/timeout", "cmn/menu_main")]
    d.play_done()
    cmds = d.wait()
    assert plays(cmds) == [("cmn/timeout", "cmn/menu_main")]
    d.play_done()
    assert d.session.on_timer(d.now + 1.0) == []  # early timer: nothing
    cmds = d.wait()  # third no-input: tries = 3 → fallback queue
    assert cmds == [Route(QueueAction("service"))]
    assert str(d.session.path[-2]) == "main/main_menu:fallback (3 retries)"
    assert d.session.path[-1].node == "main/main_menu[fallback]"


def test_language_menu_fallback_is_chinese() -> None:
    d = Driver()
    d.start()
    d.play_done()
    d.play_done()
    d.wait()
    d.play_done()
    cmds = d.digit("8")  # invalid on the last try
    assert SetVar("lang", "cmn") in cmds
    assert plays(cmds) == [("cmn/menu_main",)]


def test_operator_inline_agent() -> None:
    d = Driver()
    d.to_main_menu()
    assert d.digit("0")[-1] == Route(AgentAction("200"))
    assert d.session.path[-1].node == "main/main_menu[0]"


def test_back_to_main_menu_from_submenu() -> None:
    d = Driver()
    d.to_main_menu()
    d.digit("2")
    cmds = d.digit("*")
    assert plays(cmds) == [("cmn/menu_main",)]
    assert d.session.path[-1].node == "main/main_menu"


@pytest.mark.parametrize(
    "wall",
    [
        CLOSED,  # Saturday 20:00: weekends are mornings only
        datetime(2026, 1, 1, 10, 0, tzinfo=SH),  # New Year's day, closed
        datetime(2025, 10, 2, 17, 0, tzinfo=SH),  # National Day holiday afternoon
        datetime(2025, 11, 29, 12, 0, tzinfo=ZoneInfo("UTC")),  # Saturday 20:00 in Shanghai
    ],
)
def test_closed_hours_go_to_voicemail(wall: datetime) -> None:
    d = Driver(wall=wall)
    d.start()
    cmds = d.play_done()
    assert plays(cmds) == [("cmn/closed", "cmn/voicemail_intro")]
    assert d.play_done() == [Route(VoicemailAction("general"))]
    assert d.session.record().path_text() == "main/welcome > main/hours:closed > main/closed"


@pytest.mark.parametrize(
    "wall",
    [
        datetime(2025, 11, 25, 3, 0, tzinfo=SH),  # Tuesday night shift
        datetime(2025, 10, 2, 9, 0, tzinfo=SH),  # holiday morning
        datetime(2025, 11, 29, 8, 0, tzinfo=SH),  # Saturday, opening minute
    ],
)
def test_open_hours_go_to_the_menus(wall: datetime) -> None:
    d = Driver(wall=wall)
    d.start()
    assert plays(d.play_done()) == [("cmn/menu_language", "en/menu_language")]


def test_schedule_uses_time_elapsed_since_start() -> None:
    # Saturday 15:59:59: open at start, but the welcome takes 5 s, so the branch finds it closed.
    d = Driver(wall=datetime(2025, 11, 29, 15, 59, 59, tzinfo=SH))
    d.start()
    assert plays(d.play_done(after=5.0)) == [("cmn/closed", "cmn/voicemail_intro")]


def test_branch_on_shift_name() -> None:
    data: dict[str, Any] = {
        "flows": {
            "main": {
                "start": "b",
                "b": {"kind": "branch", "on": "schedule:main",
                      "cases": {"night": "night_q", "open": "day_q", "closed": "vm"}},
                "night_q": {"kind": "queue", "queue": "night"},
                "day_q": {"kind": "queue", "queue": "day"},
                "vm": {"kind": "voicemail", "box": "general"},
            }
        }
    }  # fmt: skip
    fs = flows(data)
    for hour, queue in ((3, "night"), (9, "day"), (20, "day")):
        s = IvrSession(fs, CALLER, 0.0, datetime(2025, 11, 25, hour, tzinfo=SH))
        assert s.start(0.0) == [Route(QueueAction(queue))]
    s = IvrSession(fs, CALLER, 0.0, datetime(2025, 11, 29, 3, tzinfo=SH))
    assert s.start(0.0) == [Route(VoicemailAction("general"))]


def test_wall_defaults_to_unix_time() -> None:
    fs = flows()
    now = datetime(2025, 11, 29, 20, 0, tzinfo=SH).timestamp()
    s = IvrSession(fs, CALLER, now)
    s.start(now)
    assert plays(s.on_prompt_done(now + 1)) == [("cmn/closed", "cmn/voicemail_intro")]


def test_vip_caller_skips_the_main_menu() -> None:
    d = Driver(caller=VIP)
    d.start()
    d.play_done()
    cmds = d.digit("1")
    assert plays(cmds) == [("cmn/please_hold",)]
    assert d.play_done() == [Route(QueueAction("service", 10))]
    assert "main/vip:true" in d.session.record().path_text()


def test_branch_on_variable_and_caller_attributes() -> None:
    data: dict[str, Any] = {
        "flows": {
            "main": {
                "start": "known",
                "known": {"kind": "branch", "on": "caller:known",
                          "cases": {"true": "region", "false": "anon"}},
                "region": {"kind": "branch", "on": "caller:attr.region",
                           "cases": {"north": "set_n"}, "default": "lang"},
                "set_n": {"kind": "set", "vars": {"team": "north", "lang": "en"}, "next": "lang"},
                "lang": {"kind": "branch", "on": "var:lang",
                         "cases": {"en": "en_q"}, "default": "cmn_q"},
                "en_q": {"kind": "queue", "queue": "en"},
                "cmn_q": {"kind": "queue", "queue": "cmn"},
                "anon": {"kind": "transfer", "number": "+862100000000"},
            }
        }
    }  # fmt: skip
    fs = flows(data)

    def run(caller: CallerInfo) -> list[Command]:
        return IvrSession(fs, caller, 0.0, OPEN).start(0.0)

    north = CallerInfo("1", customer_id="C1", attributes={"region": "north"})
    south = CallerInfo("1", customer_id="C2", attributes={"region": "south"})
    assert run(north)[-1] == Route(QueueAction("en"))
    assert SetVar("team", "north") in run(north)
    assert run(south) == [Route(QueueAction("cmn"))]
    assert run(CALLER) == [Route(TransferAction("+862100000000"))]


def test_callback_number_collected_confirmed_and_routed() -> None:
    d = Driver()
    d.to_main_menu()
    cmds = d.digit("9")
    assert plays(cmds) == [("cmn/enter_number",)]
    spec = next(c.spec for c in cmds if isinstance(c, CollectDigits))
    assert spec == DigitSpec(15, "#", 5.0, 3.0, None)
    d.play_done()
    cmds = d.keys("13912345678#")
    assert plays(cmds) == [
        ("cmn/you_entered", "cmn/yao", "cmn/digit_3", "cmn/digit_9", "cmn/yao", "cmn/digit_2",
         "cmn/digit_3", "cmn/digit_4", "cmn/digit_5", "cmn/digit_6", "cmn/digit_7", "cmn/digit_8",
         "cmn/confirm_entry")
    ]  # fmt: skip
    cmds = d.digit("1")  # barge-in: confirmed
    assert cmds[:2] == [StopPlayback(5), SetVar("callback_number", "13912345678")]
    assert plays(cmds) == [("cmn/callback_done", "cmn/goodbye")]
    assert d.play_done() == [Route(CallbackAction("13912345678", "service"))]
    assert d.session.variables["callback_number"] == "13912345678"
    assert "main/callback_number:entered" in d.session.record().path_text()


def test_callback_number_reentered_after_confirmation_says_no() -> None:
    d = Driver()
    d.to_main_menu()
    d.digit("9")
    d.keys("12345#")
    cmds = d.digit("2")  # enter again
    assert plays(cmds) == [("cmn/enter_number",)]
    d.keys("654321")
    cmds = d.wait()  # inter-digit timeout ends the entry: 6 digits are enough
    assert plays(cmds)[0][:2] == ("cmn/you_entered", "cmn/digit_6")
    d.play_done()
    cmds = d.digit("1")
    assert SetVar("callback_number", "654321") in cmds


def test_callback_number_too_short_is_invalid_then_fallback() -> None:
    d = Driver()
    d.to_main_menu()
    d.digit("9")
    cmds = d.keys("123#")
    assert plays(cmds) == [("cmn/invalid", "cmn/enter_number")]
    d.keys("#")
    cmds = d.keys("1#")
    assert cmds[-1] == Play((PromptKey("cmn", "please_hold"),), False, cmds[-1].seq)  # type: ignore[union-attr]
    assert d.play_done() == [Route(QueueAction("service", None, {"service": 1}))]


def test_callback_without_number_var_uses_caller_number() -> None:
    data = example_with(callback={"kind": "callback"})
    fs = flows(data)
    s = IvrSession(fs, CALLER, 0.0, OPEN)
    s.start(0.0)
    s.on_digit("1", 0.5)
    s.on_digit("9", 1.0)
    s.on_digit("1", 1.5)
    s.on_digit("2", 1.6)
    s.on_digit("3", 1.7)
    s.on_digit("4", 1.8)
    s.on_digit("5", 1.9)
    s.on_digit("#", 2.0)
    s.on_digit("1", 2.5)
    assert s.outcome == Route(CallbackAction(CALLER.number, None))


def test_caller_hangup_mid_menu() -> None:
    d = Driver()
    d.to_main_menu()
    d.now += 1
    assert d.session.on_hangup(d.now) == []
    assert d.session.done and d.session.outcome is None and d.session.deadline() is None
    record = d.session.record()
    assert record.outcome == "caller-hangup" and record.route is None
    assert d.digit("1") == []


def test_stale_prompt_done_is_ignored() -> None:
    d = Driver()
    d.start()
    d.digit("1")  # stops the welcome (seq 1) and answers the language menu
    assert d.session.on_prompt_done(d.now, seq=1) == []  # the stopped welcome reports late
    assert d.session.deadline() is None  # the main menu prompt (seq 2) still plays
    assert d.session.on_prompt_done(d.now, seq=2) == []
    assert d.session.deadline() is not None


def test_max_visits_hangs_up_a_caller_looping_in_menus() -> None:
    data = copy.deepcopy(EXAMPLE)
    data["max_visits"] = 12
    d = Driver(fs=flows(data))
    d.to_main_menu()
    cmds: list[Command] = []
    for _ in range(10):
        cmds = d.digit("2") + d.digit("*")
        if d.session.done:
            break
    assert cmds[-1] == Hangup("max-visits")
    assert d.session.record().outcome == "max-visits"


def test_hangup_node_and_default_fallback() -> None:
    data: dict[str, Any] = {
        "flows": {
            "main": {
                "start": "m",
                "m": {
                    "kind": "menu",
                    "prompts": ["menu_main"],
                    "options": {"1": "bye"},
                    "tries": 1,
                },
                "bye": {"kind": "hangup", "prompts": ["goodbye"]},
            }
        }
    }
    fs = flows(data)
    s = IvrSession(fs, CALLER, 0.0, OPEN)
    s.start(0.0)
    cmds = s.on_digit("5", 1.0)  # one try only: default fallback = goodbye then hang up
    assert [c.prompt_ids for c in cmds if isinstance(c, Play)] == [("cmn/goodbye",)]
    assert s.on_prompt_done(2.0) == [Hangup("flow")]
    assert s.record().outcome == "hangup"


def test_events_before_start_and_double_start() -> None:
    s = IvrSession(flows(), CALLER, 0.0, OPEN)
    with pytest.raises(RuntimeError):
        s.on_digit("1", 0.0)
    s.start(0.0)
    with pytest.raises(RuntimeError):
        s.start(0.0)
    with pytest.raises(ValueError):
        s.on_digit("x", 0.0)


def test_transition_table_is_complete() -> None:
    phases = [p for p in _Phase if p is not _Phase.NEW]
    assert set(_TABLE) == {(p, e) for p in phases for e in _Event}


def test_confirmation_invalid_key_repeats_the_readback() -> None:
    d = Driver()
    d.to_main_menu()
    d.digit("9")
    d.keys("55555#")
    cmds = d.digit("7")  # neither 1 nor 2
    assert plays(cmds) == [
        ("cmn/invalid", "cmn/you_entered", *["cmn/digit_5"] * 5, "cmn/confirm_entry")
    ]
    d.play_done()
    cmds = d.wait()  # no answer to the confirmation: second failure, the timeout prompt
    assert plays(cmds)[0][:2] == ("cmn/timeout", "cmn/you_entered")
    d.play_done()
    cmds = d.wait()  # third failure (tries = 3) → fallback
    assert plays(cmds) == [("cmn/please_hold",)]
    assert "callback_number" not in d.session.variables


def test_branch_on_lang_with_unknown_language_is_refused() -> None:
    data = example_with(
        vip={"kind": "branch", "on": "var:lang", "cases": {"fr": "main_menu"}, "default": "sales"}
    )
    with pytest.raises(ValueError, match=r"^flows\.main\.vip\.cases\.fr: not in languages"):
        flows(data)
