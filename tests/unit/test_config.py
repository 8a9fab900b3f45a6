"""Site configuration: defaults, the example sites, and errors that name the key."""

from __future__ import annotations

import copy
import itertools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.cc.ivr import FlowSet
from gateway.cc.prompts import PromptLibrary
from gateway.cc.schedule import parse_schedules
from gateway.config import (
    AUTH_SECRET_ENV,
    CcConfig,
    ConfigError,
    Destination,
    HostPort,
    QueueConfig,
    load_config,
    parse_config,
    parse_destination,
    parse_host_port,
)

ROOT = Path(__file__).resolve().parents[2]
SITES = sorted((ROOT / "sites").glob("*.toml"))


def minimal() -> dict[str, Any]:
    return {"site": {"name": "shanghai"}}


def full() -> dict[str, Any]:
    return {
        "site": {"name": "shanghai", "region": "cn-east"},
        "sip": {"listen": "127.0.0.2", "port": 5062},
        "trunks": [
            {
                "name": "ct",
                "peers": ["127.0.0.2:5070", "127.0.0.2:5071"],
                "username": "u",
                "password": "p",
                "dids": {"+862150000000": "group:sales", "+862150000001": "agent:1001"},
                "default_destination": "agent:1002",
                "prefixes": ["+8621"],
                "cost": 0.06,
            }
        ],
        "agents": [
            {"extension": "1001", "password": "a"},
            {"extension": "1002", "password": "b", "name": "Wang"},
        ],
        "groups": [{"name": "sales", "number": "6000", "members": ["1001", "1002"]}],
        "dialplan": {"outbound_trunk": "ct"},
    }


def error_for(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "sites/test.toml", env={})
    return info.value


# --- the shipped examples --------------------------------------------------------------------


def test_three_example_sites_exist() -> None:
    assert {p.stem for p in SITES} >= {"shanghai", "guangzhou", "hq"}


@pytest.mark.parametrize("path", SITES, ids=lambda p: p.stem)
def test_example_site_loads(path: Path) -> None:
    cfg = load_config(path, env={})
    assert cfg.name == path.stem
    assert 3 <= len(cfg.agents) <= 5
    assert cfg.trunks and cfg.dialplan.outbound_trunk == cfg.trunks[0].name
    assert cfg.sip.listen.startswith("127.0.0.")
    assert Path(cfg.store.path) == (ROOT / "var" / f"{path.stem}.db").resolve()
    for number in cfg.trunks[0].dids:
        assert cfg.trunks[0].destination_for(number) is not None


def test_example_sites_do_not_collide() -> None:
    cfgs = [load_config(p, env={}) for p in SITES]
    assert len({c.sip.listen for c in cfgs}) == len(cfgs)
    assert len({c.sip.port for c in cfgs}) == len(cfgs)
    assert len({c.http.port for c in cfgs}) == len(cfgs)
    ranges = sorted((c.media.rtp_port_min, c.media.rtp_port_max) for c in cfgs)
    for (_, hi), (lo, _) in itertools.pairwise(ranges):
        assert hi < lo


# --- defaults ----------------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = parse_config(minimal(), env={}, base_dir="/srv/ccgw")
    assert cfg.sip.listen == "127.0.0.1" and cfg.sip.port == 5060
    assert cfg.sip.transports == ("udp", "tcp")
    assert cfg.sip.domain == "shanghai" and cfg.sip.realm == "shanghai"
    assert (cfg.sip.T1, cfg.sip.T2, cfg.sip.T4) == (0.5, 4.0, 5.0)
    assert cfg.sip.max_forwards == 70
    assert cfg.sip.options_ping_interval == 30 and cfg.sip.nonce_lifetime == 300
    assert cfg.media.host == "127.0.0.1"
    assert (cfg.media.rtp_port_min, cfg.media.rtp_port_max) == (20000, 29999)
    assert cfg.media.stall_timeout == 30 and cfg.media.codecs == ("PCMU", "PCMA")
    assert (cfg.http.listen, cfg.http.port) == ("127.0.0.1", 8080)
    assert cfg.store.path == str(Path("/srv/ccgw/var/shanghai.db"))
    sec = cfg.security
    assert (sec.rate_window, sec.rate_limit, sec.fail_window, sec.fail_limit, sec.ban_time) == (
        2.0,
        50,
        60.0,
        5,
        300.0,
    )
    assert sec.trusted == ()
    assert cfg.trunks == () and cfg.agents == () and cfg.groups == ()
    assert cfg.dialplan.outbound_trunk is None and cfg.dialplan.no_answer_timeout == 30
    assert cfg.dialplan.is_external("+8613800000000")
    assert not cfg.dialplan.is_external("1001")


def test_media_host_follows_sip_listen() -> None:
    data = minimal() | {"sip": {"listen": "127.0.0.3"}}
    assert parse_config(data, env={}).media.host == "127.0.0.3"


def test_full_config_values() -> None:
    cfg = parse_config(full(), env={})
    trunk = cfg.trunks[0]
    assert trunk.peers == (HostPort("127.0.0.2", 5070), HostPort("127.0.0.2", 5071))
    assert trunk.outbound_peer == HostPort("127.0.0.2", 5070)
    assert trunk.destination_for("+862150000000") == Destination("group", "sales")
    assert trunk.destination_for("+869999") == Destination("agent", "1002")
    assert trunk.inbound_auth is False and trunk.transport == "udp"
    assert cfg.agent("1002") is not None and cfg.agent("1002").name == "Wang"  # type: ignore[union-attr]
    assert cfg.group("sales") is not None and cfg.trunk("ct") is trunk
    assert cfg.agent("9999") is None
    assert cfg.agents[0].max_contacts == 5
    g = cfg.groups[0]
    assert g.strategy == "ringall" and g.ring_timeout == 20.0 and g.members == ("1001", "1002")


def test_integers_accepted_for_float_fields() -> None:
    data = minimal() | {"sip": {"T1": 1, "T2": 8}}
    cfg = parse_config(data, env={})
    assert cfg.sip.T1 == 1.0 and isinstance(cfg.sip.T1, float)


def test_config_is_frozen() -> None:
    cfg = parse_config(full(), env={})
    with pytest.raises(AttributeError):
        cfg.sip.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.trunks[0].dids["+1"] = Destination("agent", "1001")  # type: ignore[index]


def test_secrets_not_in_repr() -> None:
    cfg = parse_config(full() | {"sip": {"auth_secret": "s3cret-nonce-key"}}, env={})
    text = repr(cfg)
    assert "s3cret-nonce-key" not in text
    assert "'p'" not in text and "password" not in text


# --- auth secret -------------------------------------------------------------------------------


def test_auth_secret_random_per_start() -> None:
    a = parse_config(minimal(), env={}).sip.auth_secret
    b = parse_config(minimal(), env={}).sip.auth_secret
    assert len(a) >= 32 and a != b


def test_auth_secret_from_file_and_env_wins() -> None:
    data = minimal() | {"sip": {"auth_secret": "from-file"}}
    assert parse_config(data, env={}).sip.auth_secret == "from-file"
    env = {AUTH_SECRET_ENV: "from-env"}
    assert parse_config(data, env=env).sip.auth_secret == "from-env"


# --- errors name the key -----------------------------------------------------------------------


def mutate(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Set ``value`` at a dotted/indexed path like ``trunks[0].peers[1]`` in a copy of full()."""
    data = copy.deepcopy(base if base is not None else full())
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node: Any = data
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return data


BAD_VALUES = [
    ("site.name", "Shang Hai", "site.name", "is not a site name"),
    ("site.name", 7, "site.name", "must be a string"),
    ("site.region", ["x"], "site.region", "must be a string"),
    ("sip.listen", "localhost", "sip.listen", "not an IP address literal"),
    ("sip.port", 70000, "sip.port", "out of range"),
    ("sip.port", "5060", "sip.port", "must be an integer"),
    ("sip.port", True, "sip.port", "must be an integer, not a boolean"),
    ("sip.port", 5060.0, "sip.port", "must be an integer, not a float"),
    ("sip.transports", ["udp", "sctp"], "sip.transports[1]", "not one of udp, tcp"),
    ("sip.transports", ["udp", "udp"], "sip.transports[1]", "listed twice"),
    ("sip.transports", [], "sip.transports", "must not be empty"),
    ("sip.domain", "bad domain", "sip.domain", "not a domain name"),
    ("sip.T1", 0, "sip.T1", "greater than 0"),
    ("sip.T1", -1.0, "sip.T1", "out of range"),
    ("sip.T2", 0.1, "sip.T2", "less than T1"),
    ("sip.max_forwards", 0, "sip.max_forwards", "out of range"),
    ("sip.nonce_lifetime", "5m", "sip.nonce_lifetime", "must be a number"),
    ("media.host", "::zz", "media.host", "not an IP address literal"),
    ("media.rtp_port_min", 20001, "media.rtp_port_min", "must be even"),
    ("media.rtp_port_max", 20000, "media.rtp_port_max", "greater than rtp_port_min"),
    ("media.rtp_port_min", 80, "media.rtp_port_min", "out of range"),
    ("media.codecs", ["PCMU", "G729"], "media.codecs[1]", "not one of PCMU, PCMA"),
    ("http.port", -1, "http.port", "out of range"),
    ("http.listen", "0.0.0", "http.listen", "not an IP address literal"),
    ("store.path", "", "store.path", "must not be empty"),
    ("security.rate_limit", 0, "security.rate_limit", "out of range"),
    ("security.trusted", ["10.0.0.0/8", "nope"], "security.trusted[1]", "not an IP address"),
    ("security.ban_time", -5, "security.ban_time", "out of range"),
    ("trunks[0].name", "", "trunks[0].name", "is not a name"),
    ("trunks[0].peers", [], "trunks[0].peers", "at least one"),
    ("trunks[0].peers", "127.0.0.1:5060", "trunks[0].peers", "must be an array"),
    (
        "trunks[0].peers[1]",
        "127.0.0.1:99999",
        "trunks[0].peers[1]",
        "is not host:port (port out of range)",
    ),
    ("trunks[0].peers[1]", "carrier.example:5060", "trunks[0].peers[1]", "not an IP address"),
    ("trunks[0].peers[1]", "127.0.0.1", "trunks[0].peers[1]", "missing :port"),
    ("trunks[0].peers[1]", "::1:5060", "trunks[0].peers[1]", "[addr]:port"),
    ("trunks[0].peers[1]", 5060, "trunks[0].peers[1]", "must be a string"),
    ("trunks[0].peers[1]", "127.0.0.2:5070", "trunks[0].peers[1]", "listed twice"),
    ("trunks[0].transport", "tls", "trunks[0].transport", "not one of sip.transports"),
    ("trunks[0].password", None, "trunks[0].password", "required"),
    ("trunks[0].inbound_auth", "yes", "trunks[0].inbound_auth", "must be a boolean"),
    ("trunks[0].cost", -0.1, "trunks[0].cost", "out of range"),
    ("trunks[0].prefixes", ["8621"], "trunks[0].prefixes[0]", "not an E.164 prefix"),
    ("trunks[0].dids.+862150000000", "ivr:x", 'trunks[0].dids."+862150000000"', "unknown"),
    ("trunks[0].dids.+862150000000", "queue:x", 'trunks[0].dids."+862150000000"', "no such queue"),
    ("trunks[0].dids.+862150000000", "flow:main", 'trunks[0].dids."+862150000000"', "no such flow"),
    ("trunks[0].dids.+862150000000", "group:nope", 'trunks[0].dids."+862150000000"', "no such"),
    ("trunks[0].dids.+862150000000", "agent:", 'trunks[0].dids."+862150000000"', "kind:target"),
    ("trunks[0].dids.abc", "agent:1001", "trunks[0].dids.abc", "not a dialled number"),
    ("trunks[0].default_destination", "agent:7777", "trunks[0].default_destination", "no such"),
    ("agents[1].extension", "10a2", "agents[1].extension", "1-10 digits"),
    ("agents[1].extension", 1002, "agents[1].extension", "must be a string"),
    ("agents[1].extension", "1001", "agents[1].extension", "duplicates agents[0]"),
    ("agents[0].password", "", "agents[0].password", "must not be empty"),
    ("agents[0].max_contacts", 0, "agents[0].max_contacts", "out of range"),
    ("groups[0].members", [], "groups[0].members", "at least one"),
    ("groups[0].members", ["1001", "1003"], "groups[0].members[1]", "no agent has extension"),
    ("groups[0].members", ["1001", "1001"], "groups[0].members[1]", "listed twice"),
    ("groups[0].strategy", "random", "groups[0].strategy", "ringall, hunt"),
    ("groups[0].number", "1001", "groups[0].number", "agent's extension"),
    ("groups[0].ring_timeout", 0, "groups[0].ring_timeout", "greater than 0"),
    ("dialplan.external_pattern", "([0-9]", "dialplan.external_pattern", "not a valid regex"),
    ("dialplan.outbound_trunk", "nope", "dialplan.outbound_trunk", "not a [[trunks]] name"),
    ("sip", "udp", "sip", "must be a table"),
    ("trunks", {"name": "x"}, "trunks", "array of tables"),
]


@pytest.mark.parametrize(("path", "value", "key", "why"), BAD_VALUES, ids=lambda v: str(v))
def test_bad_value_names_key(path: str, value: Any, key: str, why: str) -> None:
    data = mutate(path, value)
    if value is None:  # means: delete it
        parts = path.split(".")
        del data["trunks"][0][parts[-1]]
    err = error_for(data)
    assert err.source == "sites/test.toml"
    assert err.key == key, str(err)
    assert why in err.why, str(err)
    assert str(err).startswith(f"sites/test.toml: {key}: ")


def test_peer_error_message_exactly() -> None:
    err = error_for(mutate("trunks[0].peers[1]", "127.0.0.1:99999"))
    assert str(err) == (
        "sites/test.toml: trunks[0].peers[1]: '127.0.0.1:99999' is not host:port "
        "(port out of range)"
    )


def test_unknown_key_with_suggestion() -> None:
    err = error_for(mutate("sip.prot", 5060))
    assert err.key == "sip.prot"
    assert "unknown key" in err.why and "did you mean 'port'" in err.why


def test_unknown_top_level_section() -> None:
    err = error_for(minimal() | {"sipp": {}})
    assert err.key == "sipp" and "did you mean 'sip'" in err.why


def test_unknown_key_in_array_table() -> None:
    err = error_for(mutate("agents[0].pasword", "x"))
    assert err.key == "agents[0].pasword" and "'password'" in err.why


def test_missing_site_and_name() -> None:
    assert error_for({}).key == "site"
    err = error_for({"site": {}})
    assert err.key == "site.name" and "required" in err.why


def test_missing_required_agent_password() -> None:
    data = full()
    del data["agents"][0]["password"]
    err = error_for(data)
    assert err.key == "agents[0].password" and "required" in err.why


def test_duplicate_trunk_and_group_names() -> None:
    data = full()
    data["trunks"].append(copy.deepcopy(data["trunks"][0]) | {"peers": ["127.0.0.9:5060"]})
    assert error_for(data).key == "trunks[1].name"
    data = full()
    data["groups"].append({"name": "sales", "members": ["1001"]})
    assert error_for(data).key == "groups[1].name"


def test_peer_shared_by_two_trunks() -> None:
    data = full()
    data["trunks"].append({"name": "other", "peers": ["127.0.0.2:5071"]})
    err = error_for(data)
    assert err.key == "trunks[1].peers[0]" and "trunks[0]" in err.why


def test_inbound_auth_needs_credentials() -> None:
    data = full()
    t = data["trunks"][0]
    del t["username"], t["password"]
    t["inbound_auth"] = True
    assert error_for(data).key == "trunks[0].inbound_auth"


def test_password_without_username() -> None:
    data = full()
    del data["trunks"][0]["username"]
    assert error_for(data).key == "trunks[0].username"


def test_sip_port_inside_rtp_range() -> None:
    err = error_for(minimal() | {"sip": {"port": 20002}})
    assert err.key == "sip.port" and "RTP port range" in err.why


def test_http_and_sip_tcp_same_port() -> None:
    err = error_for(minimal() | {"sip": {"port": 8080}})
    assert err.key == "http.port"


def test_zero_ports_allowed_for_tests() -> None:
    cfg = parse_config(minimal() | {"sip": {"port": 0}, "http": {"port": 0}}, env={})
    assert cfg.sip.port == 0 and cfg.http.port == 0


def test_ipv6_peer_and_trusted_network() -> None:
    data = mutate("trunks[0].peers", ["[::1]:5080", "[2001:db8::0001]:5060"])
    data["security"] = {"trusted": ["10.0.0.0/8", "::1"]}
    cfg = parse_config(data, env={})
    assert cfg.trunks[0].peers[1] == HostPort("2001:db8::1", 5060)
    assert str(cfg.trunks[0].peers[1]) == "[2001:db8::1]:5060"
    assert cfg.security.is_trusted("10.1.2.3") and cfg.security.is_trusted("::1")
    assert not cfg.security.is_trusted("11.0.0.1") and not cfg.security.is_trusted("junk")


def test_outbound_trunk_defaults_to_first() -> None:
    data = full()
    del data["dialplan"]
    assert parse_config(data, env={}).dialplan.outbound_trunk == "ct"


def test_memory_store_path_kept() -> None:
    cfg = parse_config(minimal() | {"store": {"path": ":memory:"}}, env={})
    assert cfg.store.path == ":memory:"


# --- helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5060", HostPort("127.0.0.1", 5060)),
        ("[::1]:5060", HostPort("::1", 5060)),
        ("10.0.0.1:1", HostPort("10.0.0.1", 1)),
    ],
)
def test_parse_host_port(text: str, expected: HostPort) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1:0", "127.0.0.1:x", ":5060", "[::1]5060", "a:1"])
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text)


def test_parse_destination() -> None:
    assert parse_destination("agent:1001") == Destination("agent", "1001")
    assert str(parse_destination("group:sales")) == "group:sales"
    assert parse_destination("queue:sales") == Destination("queue", "sales")
    assert parse_destination("flow:Main_2") == Destination("flow", "Main_2")
    assert str(parse_destination("voicemail:general")) == "voicemail:general"
    for bad in (
        "agent",
        "agent:x1",
        "group:Sales",
        "ivr:main",
        ":1001",
        "queue:Sales",
        "queue:",
        "flow:2main",
        "flow:a/b",
        "voicemail:Box",
        "voicemail:a b",
    ):
        with pytest.raises(ValueError):
            parse_destination(bad)


# --- files and the command line ----------------------------------------------------------------


def test_load_config_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[site\nname = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: invalid TOML")


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_store_path_relative_to_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "x.toml"
    path.write_text('[site]\nname = "x"\n[store]\npath = "../data/x.db"\n')
    assert load_config(path, env={}).store.path == str((tmp_path / "data" / "x.db").resolve())


def test_cli_ok_and_error(tmp_path: Path) -> None:
    good = subprocess.run(
        [sys.executable, "-m", "gateway.config", str(SITES[0])],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert good.returncode == 0 and good.stdout.strip() == "ok"
    bad_path = tmp_path / "bad.toml"
    bad_path.write_text('[site]\nname = "x"\n[[trunks]]\nname = "t"\npeers = ["1.2.3.4:99999"]\n')
    bad = subprocess.run(
        [sys.executable, "-m", "gateway.config", str(bad_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "trunks[0].peers[0]" in bad.stderr and "port out of range" in bad.stderr


# --- contact centre: queues, skills, [cc], [ivr], [schedules] ---------------------------------


def cc_full() -> dict[str, Any]:
    """full() plus agent skills, two queues, [cc], a schedule and a small IVR flow."""
    data = full()
    data["agents"][0]["skills"] = {"sales": 5, "english": 3}
    data["agents"][1]["skills"] = {"service": 7}
    data["queues"] = [
        {
            "name": "sales",
            "number": "7001",
            "members": ["1001"],
            "required_skills": {"sales": 2},
            "fallback": "queue:service",
        },
        {
            "name": "service",
            "members": ["1001", "1002"],
            "fallback": "voicemail:general",
            "max_wait": 300,
        },
    ]
    data["cc"] = {"language": "cmn", "webhook": "https://crm.example/hook?site=sh"}
    data["schedules"] = {
        "office": {
            "timezone": "Asia/Shanghai",
            "shifts": {"day": "09:00-18:00"},
            "week": {"mon-fri": ["day"]},
            "holidays": [{"name": "New Year", "date": "2026-01-01"}],
        }
    }
    data["ivr"] = {
        "flows": {
            "main": {
                "start": "hours",
                "hours": {
                    "kind": "branch",
                    "on": "schedule:office",
                    "cases": {"open": "menu", "closed": "closed"},
                },
                "closed": {"kind": "voicemail", "box": "general"},
                "menu": {
                    "kind": "menu",
                    "prompts": ["menu_main"],
                    "options": {"1": "sales", "2": {"kind": "queue", "queue": "service"}},
                    "fallback": "sales",
                },
                "sales": {"kind": "queue", "queue": "sales", "skills": {"sales": 1}},
            }
        }
    }
    dids = data["trunks"][0]["dids"]
    dids |= {"+862150000002": "flow:main", "+862150000003": "queue:service"}
    dids["+862150000004"] = "voicemail:general"
    return data


def test_cc_defaults() -> None:
    cfg = parse_config(minimal(), env={}, base_dir="/srv/ccgw")
    assert cfg.queues == () and cfg.queue("sales") is None
    assert cfg.ivr == {} and cfg.schedules == {} and cfg.flow_names == frozenset()
    cc = cfg.cc
    assert cc.language == "en" and cc.prompts == ""
    assert cc.voicemail_dir == str(Path("/srv/ccgw/var/shanghai-voicemail"))
    assert cc.voicemail_max_s == 120 and cc.webhook is None
    assert (cc.login_code, cc.logout_code, cc.pause_code, cc.unpause_code) == (
        "*45",
        "*46",
        "*47",
        "*48",
    )
    assert dict(cc.feature_codes) == {
        "*45": "login",
        "*46": "logout",
        "*47": "pause",
        "*48": "unpause",
    }
    assert CcConfig().language == "en"


def test_agent_skills_default_empty() -> None:
    cfg = parse_config(full(), env={})
    assert cfg.agents[0].skills == {}


def test_queue_defaults() -> None:
    data = full() | {"queues": [{"name": "q", "members": ["1001"]}]}
    q = parse_config(data, env={}).queue("q")
    assert q is not None
    assert q.members == ("1001",) and q.number is None
    assert q.strategy == "longest_idle" and q.required_skills == {}
    assert (q.ring_timeout, q.wrapup, q.max_no_answer, q.max_wait) == (15.0, 10.0, 3, None)
    assert q.fallback is None
    assert (q.join_rule, q.leave_rule) == ("if_logged_in", "if_none_logged_in")
    assert q.announce_position is True and q.announce_every == 30.0 and q.music == "default"
    assert (q.service_level_s, q.short_abandon_s, q.aht_s, q.aging_s) == (20.0, 5.0, 180.0, 60.0)
    assert (q.vip_priority, q.sticky_s, q.best_skill_first) == (10, 30.0, False)
    # the dataclass's own defaults are the documented ones
    assert QueueConfig("q", ("1001",)) == q


def test_cc_full_values() -> None:
    cfg = parse_config(cc_full(), env={})
    assert dict(cfg.agents[0].skills) == {"sales": 5, "english": 3}
    sales, service = cfg.queues
    assert cfg.queue("sales") is sales and sales.number == "7001"
    assert dict(sales.required_skills) == {"sales": 2}
    assert sales.fallback == Destination("queue", "service")
    assert service.fallback == Destination("voicemail", "general") and service.max_wait == 300.0
    assert cfg.cc.language == "cmn" and cfg.cc.webhook == "https://crm.example/hook?site=sh"
    assert cfg.flow_names == {"main"}
    trunk = cfg.trunks[0]
    assert trunk.destination_for("+862150000002") == Destination("flow", "main")
    assert trunk.destination_for("+862150000003") == Destination("queue", "service")
    assert trunk.destination_for("+862150000004") == Destination("voicemail", "general")


def test_cc_sections_are_read_only() -> None:
    cfg = parse_config(cc_full(), env={})
    with pytest.raises(TypeError):
        cfg.agents[0].skills["sales"] = 9  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.queues[0].required_skills["x"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.ivr["flows"]["main"]["start"] = "menu"
    with pytest.raises(TypeError):
        cfg.schedules["office"]["timezone"] = "UTC"
    assert isinstance(cfg.schedules["office"]["holidays"], tuple)
    with pytest.raises(AttributeError):
        cfg.cc.language = "en"  # type: ignore[misc]


def test_cc_full_ivr_and_schedules_validate_with_the_cc_modules() -> None:
    cfg = parse_config(cc_full(), env={})
    schedules = parse_schedules(cfg.schedules)
    flows = FlowSet.parse(cfg.ivr, schedules=schedules, prompts=PromptLibrary())
    assert flows.entry.flow == "main"


CC_BAD_VALUES = [
    # [[agents]] skills
    ("agents[0].skills", ["sales"], "agents[0].skills", "must be a table"),
    ("agents[0].skills", {"Sales": 3}, "agents[0].skills.Sales", "not a skill name"),
    ("agents[0].skills", {"sales": 0}, "agents[0].skills.sales", "out of range [1, 10]"),
    ("agents[0].skills", {"sales": 11}, "agents[0].skills.sales", "out of range [1, 10]"),
    ("agents[0].skills", {"sales": 2.5}, "agents[0].skills.sales", "must be an integer"),
    ("agents[0].skills", {"sales": True}, "agents[0].skills.sales", "must be an integer"),
    # [[queues]]
    ("queues", {"name": "x"}, "queues", "array of tables"),
    ("queues[0].name", "Sales", "queues[0].name", "is not a name"),
    ("queues[0].number", "7a", "queues[0].number", "1-10 digits"),
    ("queues[0].strategy", "roundrobin", "queues[0].strategy", "not one of ringall, linear"),
    ("queues[0].members", [], "queues[0].members", "at least one"),
    ("queues[0].members", ["1001", "1001"], "queues[0].members[1]", "listed twice"),
    ("queues[0].members", ["x"], "queues[0].members[0]", "not an agent extension"),
    ("queues[0].members", ["1001", "1009"], "queues[0].members[1]", "no agent has extension"),
    ("queues[0].required_skills", {"sales": 11}, "queues[0].required_skills.sales", "range"),
    ("queues[0].required_skills", {"a b": 1}, 'queues[0].required_skills."a b"', "skill name"),
    ("queues[0].required_skills", "sales", "queues[0].required_skills", "must be a table"),
    ("queues[0].ring_timeout", 0, "queues[0].ring_timeout", "greater than 0"),
    ("queues[0].wrapup", -1, "queues[0].wrapup", "out of range"),
    ("queues[0].max_no_answer", -1, "queues[0].max_no_answer", "out of range"),
    ("queues[0].max_no_answer", 1.5, "queues[0].max_no_answer", "must be an integer"),
    ("queues[0].max_wait", 0, "queues[0].max_wait", "greater than 0"),
    ("queues[0].max_wait", "5m", "queues[0].max_wait", "must be a number"),
    ("queues[0].fallback", "group:sales", "queues[0].fallback", "voicemail:, queue: or agent:"),
    ("queues[0].fallback", "flow:main", "queues[0].fallback", "voicemail:, queue: or agent:"),
    ("queues[0].fallback", "queue:sales", "queues[0].fallback", "this queue itself"),
    ("queues[0].fallback", "queue:nope", "queues[0].fallback", "no such queue"),
    ("queues[0].fallback", "agent:7777", "queues[0].fallback", "no such agent"),
    ("queues[0].fallback", "voicemail:", "queues[0].fallback", "kind:target"),
    ("queues[0].fallback", 3, "queues[0].fallback", "must be a string"),
    ("queues[0].join_rule", "sometimes", "queues[0].join_rule", "not one of always"),
    ("queues[0].leave_rule", "always", "queues[0].leave_rule", "not one of never"),
    ("queues[0].announce_position", "yes", "queues[0].announce_position", "must be a boolean"),
    ("queues[0].announce_every", 5, "queues[0].announce_every", "at least 10"),
    ("queues[0].music", "hold.mp3", "queues[0].music", "neither 'default' nor a .wav"),
    ("queues[0].music", "absent-hold.wav", "queues[0].music", "no such file"),
    ("queues[0].service_level_s", 0, "queues[0].service_level_s", "greater than 0"),
    ("queues[0].short_abandon_s", -1, "queues[0].short_abandon_s", "out of range"),
    ("queues[0].aht_s", 0, "queues[0].aht_s", "greater than 0"),
    ("queues[0].aging_s", 0, "queues[0].aging_s", "greater than 0"),
    ("queues[0].vip_priority", -1, "queues[0].vip_priority", "out of range"),
    ("queues[0].vip_priority", 1001, "queues[0].vip_priority", "out of range"),
    ("queues[0].sticky_s", -1, "queues[0].sticky_s", "out of range"),
    ("queues[0].best_skill_first", 1, "queues[0].best_skill_first", "must be a boolean"),
    ("queues[0].ringtimeout", 5, "queues[0].ringtimeout", "did you mean 'ring_timeout'"),
    # [cc]
    ("cc", "cmn", "cc", "must be a table"),
    ("cc.language", "fr", "cc.language", "not one of en, cmn"),
    ("cc.prompts", "no-such-prompts-dir", "cc.prompts", "no such folder"),
    ("cc.voicemail_dir", "", "cc.voicemail_dir", "must not be empty"),
    ("cc.voicemail_max_s", 0, "cc.voicemail_max_s", "greater than 0"),
    ("cc.webhook", "ftp://crm.example/", "cc.webhook", "not an http:// or https:// URL"),
    ("cc.webhook", "http://", "cc.webhook", "not an http:// or https:// URL"),
    ("cc.webhook", "https://a b", "cc.webhook", "not an http:// or https:// URL"),
    ("cc.login_code", "45", "cc.login_code", "not a feature code"),
    ("cc.logout_code", "*", "cc.logout_code", "not a feature code"),
    ("cc.pause_code", "*12345", "cc.pause_code", "not a feature code"),
    ("cc.unpause_code", "*45", "cc.unpause_code", "also cc.login_code"),
    ("cc.unpause_code", 48, "cc.unpause_code", "must be a string"),
    ("cc.language_", "en", "cc.language_", "unknown key"),
    # destinations
    (
        "trunks[0].dids.+862150000002",
        "flow:other",
        'trunks[0].dids."+862150000002"',
        "no such flow",
    ),
    ("trunks[0].dids.+862150000002", "flow:9", 'trunks[0].dids."+862150000002"', "not a flow name"),
    ("trunks[0].dids.+862150000003", "queue:q", 'trunks[0].dids."+862150000003"', "no such queue"),
    ("trunks[0].dids.+862150000004", "voicemail:A", 'trunks[0].dids."+862150000004"', "box"),
    ("trunks[0].default_destination", "queue:nope", "trunks[0].default_destination", "no such"),
    # [ivr] and [schedules]: shape only
    ("ivr", "main", "ivr", "must be a table"),
    ("ivr.flows", ["main"], "ivr.flows", "must be a table"),
    ("ivr.flows.main", "welcome", "ivr.flows.main", "must be a table (a flow)"),
    ("ivr.flows.bad name", {"start": "x"}, 'ivr.flows."bad name"', "not a flow name"),
    ("ivr.flows.main.sales.queue", "nope", "ivr.flows.main.sales.queue", "no queue 'nope'"),
    (
        "ivr.flows.main.menu.options.2.queue",
        "gone",
        "ivr.flows.main.menu.options.2.queue",
        "no queue 'gone'",
    ),
    ("schedules", ["office"], "schedules", "must be a table"),
    ("schedules.office", "9-18", "schedules.office", "must be a table (a schedule)"),
]


@pytest.mark.parametrize(("path", "value", "key", "why"), CC_BAD_VALUES, ids=lambda v: str(v))
def test_cc_bad_value_names_key(path: str, value: Any, key: str, why: str) -> None:
    err = error_for(mutate(path, value, cc_full()))
    assert err.key == key, str(err)
    assert why in err.why, str(err)
    assert str(err).startswith(f"sites/test.toml: {key}: ")


def test_missing_queue_name_and_members() -> None:
    data = cc_full()
    del data["queues"][1]["name"]
    assert error_for(data).key == "queues[1].name"
    data = cc_full()
    del data["queues"][1]["members"]
    err = error_for(data)
    assert err.key == "queues[1].members" and "required" in err.why


def test_duplicate_queue_name() -> None:
    data = cc_full()
    data["queues"][1]["name"] = "sales"
    data["queues"][0]["fallback"] = "voicemail:x"
    err = error_for(data)
    assert err.key == "queues[1].name" and "duplicates queues[0]" in err.why


@pytest.mark.parametrize(
    ("number", "why"),
    [("1001", "an agent's extension"), ("6000", "also group 'sales''s"), ("7001", "queue 'sales'")],
)
def test_queue_number_unique_across_agents_groups_queues(number: str, why: str) -> None:
    err = error_for(mutate("queues[1].number", number, cc_full()))
    assert err.key == "queues[1].number" and why in err.why, str(err)


def test_group_number_may_not_be_a_queue_number_either() -> None:
    data = cc_full()
    data["queues"][0]["number"] = "6000"
    err = error_for(data)  # groups are checked first: the queue is the later claimant
    assert err.key == "queues[0].number" and "group 'sales'" in err.why


def test_queue_fallbacks_must_not_loop() -> None:
    data = mutate("queues[1].fallback", "queue:sales", cc_full())
    err = error_for(data)
    assert err.key == "queues[0].fallback"
    assert "loop: sales → service → sales" in err.why


def test_queue_fallback_chain_without_loop_is_fine() -> None:
    data = cc_full()
    data["queues"].append({"name": "third", "members": ["1002"], "fallback": "queue:sales"})
    assert parse_config(data, env={}).queue("third") is not None


def test_queue_music_relative_to_config_file(tmp_path: Path) -> None:
    (tmp_path / "sounds").mkdir()
    (tmp_path / "sounds" / "hold.wav").write_bytes(b"RIFF")
    (tmp_path / "my-prompts").mkdir()
    path = tmp_path / "x.toml"
    path.write_text(
        '[site]\nname = "x"\n'
        '[[agents]]\nextension = "1"\npassword = "p"\n'
        '[[queues]]\nname = "q"\nmembers = ["1"]\nmusic = "sounds/hold.wav"\n'
        '[cc]\nprompts = "my-prompts"\nvoicemail_dir = "/tmp/vm"\n'
    )
    cfg = load_config(path, env={})
    assert cfg.queues[0].music == str((tmp_path / "sounds" / "hold.wav").resolve())
    assert cfg.cc.prompts == str((tmp_path / "my-prompts").resolve())
    assert cfg.cc.voicemail_dir == str(Path("/tmp/vm").resolve())


def test_ivr_without_flows_is_only_shape_checked() -> None:
    cfg = parse_config(minimal() | {"ivr": {"entry": "main"}}, env={})
    assert cfg.ivr == {"entry": "main"} and cfg.flow_names == frozenset()


# --- the shipped examples: contact-centre sections -----------------------------------------


@pytest.mark.parametrize("path", SITES, ids=lambda p: p.stem)
def test_example_site_contact_centre(path: Path) -> None:
    cfg = load_config(path, env={})
    assert len(cfg.queues) >= 2
    assert all(a.skills for a in cfg.agents)
    assert cfg.groups, "the ring groups still work beside the queues"
    trunk = cfg.trunks[0]
    main = next(iter(trunk.dids))
    assert trunk.destination_for(main) == Destination("flow", "main")
    assert cfg.cc.voicemail_dir == str((ROOT / "var" / f"{path.stem}-voicemail").resolve())
    for q in cfg.queues:
        for skill, level in q.required_skills.items():
            assert any(cfg.agent(m).skills.get(skill, 0) >= level for m in q.members)  # type: ignore[union-attr]


@pytest.mark.parametrize("path", SITES, ids=lambda p: p.stem)
def test_example_site_ivr_and_schedules_validate(path: Path) -> None:
    cfg = load_config(path, env={})
    schedules = parse_schedules(cfg.schedules)
    assert schedules, "each example has a [schedules] entry"
    flows = FlowSet.parse(cfg.ivr, schedules=schedules, prompts=PromptLibrary())
    assert flows.entry.flow == "main" and not flows.warnings
    assert {"cmn", "en"} <= set(flows.languages)


def test_voicemail_e_mail_needs_a_server_and_recipients() -> None:
    data = minimal()
    data["cc"] = {"smtp": "mail.example:25"}
    with pytest.raises(ConfigError) as err:
        parse_config(data, env={})
    assert err.value.key == "cc.mail_to"
    data["cc"] = {"smtp": "mail.example", "mail_to": ["a@b.example"]}
    with pytest.raises(ConfigError) as err:
        parse_config(data, env={})
    assert err.value.key == "cc.smtp"
    data["cc"] = {"smtp": "127.0.0.1:2525", "mail_to": ["a@b.example", "not an address"]}
    with pytest.raises(ConfigError) as err:
        parse_config(data, env={})
    assert err.value.key == "cc.mail_to[1]"
    data["cc"] = {"smtp": "127.0.0.1:2525", "mail_to": ["a@b.example"]}
    cc = parse_config(data, env={}).cc
    assert cc.mail_to == ("a@b.example",) and cc.mail_from.startswith("ccgw@")


def test_advertised_addresses_for_a_site_behind_nat() -> None:
    doc = minimal()
    doc["sip"] = {"listen": "10.0.0.5", "advertise": "203.0.113.10"}
    cfg = parse_config(doc, env={})
    assert cfg.sip.advertise == "203.0.113.10"
    assert cfg.media.advertise == "203.0.113.10"  # SDP follows SIP unless told otherwise
    doc["media"] = {"advertise": "203.0.113.11"}
    assert parse_config(doc, env={}).media.advertise == "203.0.113.11"
    assert parse_config(minimal(), env={}).sip.advertise == ""  # default: the listen address
    doc["sip"]["advertise"] = "gw.example.com"
    with pytest.raises(ConfigError) as err:
        parse_config(doc, env={})
    assert err.value.key == "sip.advertise"
