"""The multi-site parts of a site's TOML and the policy HQ publishes."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import ConfigError, parse_config
from gateway.config_mesh import parse_policy


def _doc(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "site": {"name": "shanghai"},
        "sip": {"listen": "127.0.0.2", "port": 5062},
        "agents": [{"extension": "1001", "password": "pw"}],
        "trunks": [
            {"name": "carrier", "peers": ["127.0.0.2:5070"]},
            {"name": "mesh-gz", "peers": ["127.0.0.3:5064"], "site": "guangzhou"},
        ],
        "queues": [{"name": "service", "members": ["1001"]}],
    }
    for key, value in extra.items():
        doc[key] = value
    return doc


def test_a_mesh_site_reads_every_key() -> None:
    cfg = parse_config(
        _doc(
            mesh={
                "etcd": ["127.0.0.1:2379"],
                "handoff_listen": "127.0.0.2:0",
                "hq": "127.0.0.1:7400",
                "path_cost": {"guangzhou": 2},
                "export": ["cdr", "customer"],
                "customer_fields": ["name"],
            }
        ),
        env={},
    )
    mesh = cfg.mesh
    assert mesh is not None and mesh.enabled
    assert mesh.handoff_listen is not None and mesh.handoff_listen.port == 0
    assert mesh.path_cost == {"guangzhou": 2.0}
    assert mesh.export == ("cdr", "customer")
    assert mesh.customer_fields == ("customer_id", "name")  # the id always travels
    assert cfg.mesh_trunk("guangzhou") is not None and cfg.mesh_trunk("hq") is None


@pytest.mark.parametrize(
    ("mesh", "key"),
    [
        ({"etcd": ["localhost:2379"]}, "mesh.etcd[0]"),
        ({"hq": "127.0.0.1"}, "mesh.hq"),
        ({"export": ["cdrs"]}, "mesh.export[0]"),
        ({"lease_ttl": 0.5}, "mesh.lease_ttl"),
        ({"path_cost": {"Bad Site": 1}}, "mesh.path_cost"),
        ({"etdc": []}, "mesh.etdc"),
    ],
)
def test_a_bad_mesh_key_is_named(mesh: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_doc(mesh=mesh), env={})
    assert err.value.key.startswith(key), err.value


def test_an_overflow_target_needs_a_trunk_to_that_site() -> None:
    doc = _doc()
    doc["queues"][0]["overflow"] = {"max_wait": 30, "targets": ["hq"]}
    with pytest.raises(ConfigError) as err:
        parse_config(doc, env={})
    assert err.value.key == "queues[0].overflow.targets[0]"
    doc["queues"][0]["overflow"] = {"max_wait": 30, "targets": ["guangzhou", "*"]}
    q = parse_config(doc, env={}).queues[0]
    assert q.overflow is not None and q.overflow.enabled and q.overflow.max_wait == 30


def test_an_inter_site_trunk_to_itself_or_twice_is_refused() -> None:
    doc = _doc()
    doc["trunks"].append({"name": "again", "peers": ["127.0.0.3:5065"], "site": "guangzhou"})
    with pytest.raises(ConfigError, match="already goes to"):
        parse_config(doc, env={})
    doc["trunks"][-1]["site"] = "shanghai"
    with pytest.raises(ConfigError, match="this site itself"):
        parse_config(doc, env={})


def test_hq_needs_listen_and_a_database() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_doc(hq={"listen": "127.0.0.1:7400"}), env={})
    assert err.value.key == "hq.database"
    with pytest.raises(ConfigError) as err:
        parse_config(_doc(hq={"listen": "127.0.0.1:7400", "database": "mysql://x"}), env={})
    assert err.value.key == "hq.database"
    cfg = parse_config(
        _doc(hq={"listen": "127.0.0.1:0", "database": "sqlite:central.db"}),
        env={},
        base_dir="/srv/ccgw",
    )
    assert cfg.hq is not None and cfg.hq.database == "sqlite:////srv/ccgw/central.db".replace(
        "////", "///"
    )


def test_a_published_policy_is_validated_with_the_key_named() -> None:
    good = parse_policy("overflow", {"service": {"max_ewt": 60, "targets": ["*"]}})
    assert good["service"].max_ewt == 60
    with pytest.raises(ValueError, match=r"service\.max_hops"):
        parse_policy("overflow", {"service": {"max_hops": 99}})
    with pytest.raises(ValueError, match="unknown key"):
        parse_policy("overflow", {"service": {"max_wiat": 3}})
    with pytest.raises(ValueError, match="unknown policy"):
        parse_policy("hours", {})
    with pytest.raises(ValueError, match="must be a table"):
        parse_policy("overflow", {"service": 3})


def test_overflow_when_closed_names_the_schedule_of_opening_hours() -> None:
    doc = _doc()
    doc["queues"][0]["overflow"] = {"when_closed": True}
    with pytest.raises(ConfigError) as err:
        parse_config(doc, env={})
    assert err.value.key == "queues[0].overflow.hours"
    doc["queues"][0]["overflow"] = {"when_closed": True, "hours": "office"}
    with pytest.raises(ConfigError, match="no schedule 'office'"):
        parse_config(doc, env={})
    doc["schedules"] = {
        "office": {"timezone": "Asia/Shanghai", "shifts": {"day": "08:00-20:00"},
                   "week": {"mon-sun": ["day"]}},
    }  # fmt: skip
    q = parse_config(doc, env={}).queues[0]
    assert q.overflow is not None and q.overflow.hours == "office"


def test_published_service_rules_take_only_the_rules_they_may_set() -> None:
    rules = parse_policy("service", {"service": {"announce_every": 45, "wrapup": 0}})
    assert rules == {"service": {"announce_every": 45.0, "wrapup": 0.0}}
    with pytest.raises(ValueError, match=r"service\.announce_every"):
        parse_policy("service", {"service": {"announce_every": 5}})
    with pytest.raises(ValueError, match="unknown key"):
        parse_policy("service", {"service": {"members": ["1001"]}})  # not a service rule


def test_the_published_prompt_set_is_one_of_the_shipped_languages() -> None:
    assert parse_policy("prompts", {"language": "cmn"}) == {"language": "cmn"}
    with pytest.raises(ValueError, match="language"):
        parse_policy("prompts", {"language": "fr"})
    with pytest.raises(ValueError, match="unknown key"):
        parse_policy("prompts", {"voice": "female"})


def test_sip_over_tls_between_sites_needs_the_mesh_pki_and_an_inter_site_trunk(
    tmp_path: Any,
) -> None:
    tls_sip = {"listen": "127.0.0.2", "port": 5062, "transports": ["udp", "tls"]}
    doc = _doc(sip=tls_sip)
    doc["trunks"][1] |= {"transport": "tls", "peers": ["127.0.0.3:5065"]}
    with pytest.raises(ConfigError) as err:
        parse_config(doc, env={})
    assert err.value.key == "sip.transports" and "mesh.pki" in str(err.value)

    (tmp_path / "pki").mkdir()
    doc["mesh"] = {"etcd": ["127.0.0.1:2379"], "pki": str(tmp_path / "pki")}
    cfg = parse_config(doc, env={})
    assert cfg.sip.tls_port == 5063  # port + 1 by default
    assert cfg.trunks[1].transport == "tls"

    doc["trunks"][0] |= {"transport": "tls"}  # a carrier: no certificate from our CA
    with pytest.raises(ConfigError) as err:
        parse_config(doc, env={})
    assert err.value.key == "trunks[0].transport" and "inter-site" in str(err.value)

    doc["trunks"][0]["transport"] = "udp"
    doc["sip"] = tls_sip | {"tls_port": 5062}
    with pytest.raises(ConfigError) as err:
        parse_config(doc, env={})
    assert err.value.key == "sip.tls_port"
    doc["sip"] = tls_sip | {"port": 0}
    assert parse_config(doc, env={}).sip.tls_port == 0  # any free port, as for sip.port


def test_etcd_over_tls_needs_the_pki_and_a_user_needs_a_password(tmp_path: Any) -> None:
    (tmp_path / "pki").mkdir()
    mesh: dict[str, Any] = {"etcd": ["127.0.0.1:2379"], "etcd_tls": True}
    with pytest.raises(ConfigError) as err:
        parse_config(_doc(mesh=mesh), env={})
    assert err.value.key == "mesh.etcd_tls"
    mesh["pki"] = str(tmp_path / "pki")
    cfg = parse_config(_doc(mesh=mesh), env={})
    assert cfg.mesh is not None and cfg.mesh.etcd_tls
    with pytest.raises(ConfigError) as err:
        parse_config(_doc(mesh=mesh | {"etcd_username": "sh"}), env={})
    assert err.value.key == "mesh.etcd_username"
    env = {"CCGW_ETCD_PASSWORD": "from-the-environment"}
    cfg = parse_config(_doc(mesh=mesh | {"etcd_username": "sh", "etcd_password": "x"}), env=env)
    assert cfg.mesh is not None and cfg.mesh.etcd_password == "from-the-environment"
    assert "from-the-environment" not in repr(cfg.mesh)
