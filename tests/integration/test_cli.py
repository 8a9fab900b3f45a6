"""The ``ccgw`` command as a user runs it: a site in its own process, config errors, the demo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from . import peers

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CCGW = [sys.executable, "-m", "gateway.cli"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _site_toml(tmp_path: Path, **sip: object) -> Path:
    text = (ROOT / "sites" / "shanghai.toml").read_text()
    text = text.replace('listen = "127.0.0.2"', 'listen = "127.0.0.1"')
    text = text.replace('path = "../var/shanghai.db"', f'path = "{tmp_path / "sh.db"}"')
    tls = peers.free_port("127.0.0.1", "tcp")  # the inter-site TLS listener, on a free port
    text = text.replace("tls_port = 5063", f"tls_port = {tls}")
    # The mesh: certificates made as a user would; etcd and HQ are not running (the site
    # serves its own callers anyway); the handoff server on a free port.
    text = text.replace('pki = "../var/pki"', f'pki = "{tmp_path / "pki"}"')
    text = text.replace('handoff_listen = "127.0.0.2:7402"', 'handoff_listen = "127.0.0.1:0"')
    etcd = peers.free_port("127.0.0.1", "tcp")  # nothing listens there
    text = text.replace('etcd = ["127.0.0.1:2379"]', f'etcd = ["127.0.0.1:{etcd}"]')
    hq = peers.free_port("127.0.0.1", "tcp")
    text = text.replace('hq = "127.0.0.1:7400"', f'hq = "127.0.0.1:{hq}"')
    certs = [*CCGW, "certs", "--dir", str(tmp_path / "pki"), "--ca", "--site", "shanghai"]
    subprocess.run(certs, env=_env(), check=True, capture_output=True, timeout=60)
    path = tmp_path / "shanghai.toml"
    path.write_text(text)
    return path


def test_run_serves_sip_health_and_metrics_then_stops_on_sigterm(tmp_path: Path) -> None:
    cfg = _site_toml(tmp_path)
    sip_port = peers.free_port("127.0.0.1", "both")
    http_port = peers.free_port("127.0.0.1", "tcp")
    args = ["run", "--config", str(cfg), "--sip-port", str(sip_port), "--http-port", str(http_port)]
    proc = subprocess.Popen(
        [*CCGW, *args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 15
        health = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{http_port}/healthz", timeout=1
                ) as r:
                    health = json.loads(r.read())
                    break
            except OSError:
                time.sleep(0.1)
        assert health is not None and health["status"] == "ok", health
        assert health["site"] == "shanghai"
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=2) as r:
            metrics = r.read().decode()
            assert r.headers["Content-Type"].startswith("text/plain")
        assert "# TYPE ccgw_active_calls gauge" in metrics
        assert "ccgw_calls_offered_total 0" in metrics
        # SIP answers on the configured port: an OPTIONS ping from a real SIPp.
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/nope", timeout=2) as r:
            pytest.fail(f"expected 404, got {r.status}")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
        assert json.loads(exc.read())["status"] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out.decode()


def test_options_ping_is_answered_by_a_running_site(tmp_path: Path, sipp_factory) -> None:  # type: ignore[no-untyped-def]
    cfg = _site_toml(tmp_path)
    sip_port = peers.free_port("127.0.0.1", "both")
    proc = subprocess.Popen(
        [*CCGW, "run", "--config", str(cfg), "--sip-port", str(sip_port), "--http-port", "0"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()  # "ccgw site shanghai: sip ... http ..." once up
        while "ccgw site" not in line and line:
            line = proc.stdout.readline().decode()
        assert "ccgw site shanghai" in line, line
        ping = sipp_factory("options.xml", f"127.0.0.1:{sip_port}", timeout=5)
        assert ping.start().wait(8).ok, ping.result().describe()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_a_bad_config_names_the_key_and_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[site]\nname = "x"\n[sip]\nport = 99999\n')
    res = subprocess.run(
        [*CCGW, "run", "--config", str(bad)], env=_env(), capture_output=True, text=True, timeout=30
    )
    assert res.returncode != 0
    assert "sip.port" in res.stderr, res.stderr
    res = subprocess.run(
        [*CCGW, "check-config", str(ROOT / "sites" / "hq.toml")],
        env=_env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


@pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("sipp", "baresip", "etcd")),
    reason="needs sipp, baresip and etcd",
)
def test_demo_runs_calls_end_to_end_and_exits_cleanly() -> None:
    res = subprocess.run(
        [*CCGW, "demo", "--seconds", "4", "--rate", "1"],
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = res.stdout.strip().splitlines()[-1]
    assert summary.startswith("demo: "), summary
    offered = int(summary.split()[1])
    answered = int(summary.split(",")[1].split()[0])
    # Four callers reach Shanghai's service queue; the mesh's agents (baresip) take them.
    assert offered >= 4 and answered >= 2, summary
    records = int(summary.split(",")[-1].split()[0])
    assert records >= 2, summary  # the sites' records reached HQ
    board = res.stdout
    assert "etcd up" in board and "site       waiting" in board, board[-3000:]
    for site in ("hq ", "shanghai ", "guangzhou "):
        assert f"\n{site}" in board, board[-3000:]


def test_a_site_without_its_certificates_says_how_to_make_them(tmp_path: Path) -> None:
    cfg = _site_toml(tmp_path)
    shutil.rmtree(tmp_path / "pki")
    res = subprocess.run(
        [*CCGW, "run", "--config", str(cfg), "--sip-port", "0", "--http-port", "0"],
        env=_env(), capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    assert "mesh.pki" in res.stderr and "ccgw certs --dir" in res.stderr, res.stderr
