"""Two site gateways in a mesh, for the multi-site benchmarks (``overflow``, ``pooling``).

    SIPp callers ──► shanghai (127.0.0.2) ══ gRPC handoff + SIP trunk ══► guangzhou (127.0.0.3)
                        │   ▲                                                 │    ▲
                        │   └────────────── etcd (127.0.0.1) ─────────────────┘    │
                        └──► SIPp agents (registered)          SIPp agents ◄──────┘

Each site gateway runs in **its own Python process** (``python -m tools.bench.mesh_common site``,
pinned with ``taskset``): a :class:`gateway.app.SiteGateway` on a uvloop loop, exactly as
``ccgw run`` starts one (same GC tuning), plus a small **control socket** (JSON lines over TCP on
127.0.0.1) through which the bench reads what only the process knows: the overflow decisions
(``cc.mesh.decisions``), the handoff reservation round trips (``mesh.reserve_ms``), the
interaction records, agents' states. Requests run on the gateway's loop, between its callbacks,
so they read consistent state; the bench only asks between or after measurements.

etcd, both gateways and their control sockets are started and ended by PID by :class:`MeshPair`
(a context manager); SIPp runs are :class:`tools.bench.common.Child` processes too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python tools/bench/mesh_common.py site ...`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.bench.common import (
    REPO,
    SIPP_DIR,
    Child,
    core_times,
    cores_busy_percent,
    cpu_seconds,
    free_udp_port,
    udp_bound,
    wait_for,
)

__all__ = [
    "CALLER_HOST",
    "DID",
    "QUEUE",
    "SITES",
    "TEST_SIPP_DIR",
    "Etcd",
    "LoadMeter",
    "MeshPair",
    "SipMsg",
    "SiteProc",
    "SiteSpec",
    "dist_ms",
    "log",
    "parse_trace",
    "percentile",
    "python_bin",
    "site_doc",
]

SITES = {"shanghai": "127.0.0.2", "guangzhou": "127.0.0.3"}
"""The two sites and their loopback addresses (as in tests/integration/test_mesh_overflow.py)."""
CALLER_HOST = "127.0.0.1"
"""Where SIPp callers, agents and etcd live."""
QUEUE = "support"
DID = "+864000"
TEST_SIPP_DIR = REPO / "tests" / "data" / "sipp"
SIPP_MEDIA_RANGE = (8000, 9999)  # SIPp's media ports: below the ephemeral range (as acd/cps)
RTP_RANGES = {"shanghai": (10000, 14999), "guangzhou": (15000, 19999)}


def log(msg: str) -> None:
    """Progress to stderr (stdout carries the one JSON object)."""
    print(msg, file=sys.stderr, flush=True)


RESULTS = Path(__file__).resolve().parent / "results"


def save_report(report: dict[str, Any], bench: str, out: Path | None = None) -> int:
    """Print ``report`` as the bench's one JSON object, keep it under ``results/`` (or at
    ``out``) and return the exit status: 1 when it holds an ``"error"``."""
    text = json.dumps(report, indent=2)
    print(text)
    path = out or RESULTS / f"{bench}-{time.strftime('%Y-%m-%d-%H%M')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    log(f"wrote {path}")
    return 0 if "error" not in report else 1


def python_bin() -> str:
    """The project's venv interpreter, or this one."""
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def dist_ms(values_s: list[float]) -> dict[str, Any]:
    """Count, p50, p90, p99, max and mean of durations given in seconds, in ms."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1e3, 2)

    return {
        "n": len(values_s),
        "p50_ms": ms(percentile(values_s, 50)),
        "p90_ms": ms(percentile(values_s, 90)),
        "p99_ms": ms(percentile(values_s, 99)),
        "max_ms": ms(max(values_s) if values_s else None),
        "mean_ms": ms(sum(values_s) / len(values_s) if values_s else None),
    }


# --------------------------------------------------------------------------------------------
# site configuration


@dataclass(frozen=True)
class SiteSpec:
    """One site of the pair: its agents and its queue's overflow policy."""

    name: str
    agents: tuple[str, ...]
    """Extensions of the site's agents (all members of :data:`QUEUE`), password ``pw-<ext>``."""
    overflow: Mapping[str, Any] | None = None
    """The queue's ``overflow`` table (None: this site never sends calls away)."""
    phones: bool = True
    """Whether the agents get a SIPp phone; without, they are logged out at start."""
    aht_s: float = 10.0
    """The queue's configured AHT (its wait estimate before it has observed calls)."""
    service_level_s: float = 20.0

    @property
    def ip(self) -> str:
        return SITES[self.name]


def site_doc(
    spec: SiteSpec,
    *,
    sip_port: int,
    other: SiteSpec,
    other_sip_port: int,
    carrier_ports: list[int],
    etcd: str,
    workdir: Path,
) -> dict[str, Any]:
    """The site's config (the mapping ``parse_config`` takes): one carrier trunk from the
    callers' SIPp ports (DID → queue ``support``), one inter-site trunk to the other site, the
    mesh over ``etcd`` with a gRPC handoff server on a free port."""
    queue: dict[str, Any] = {
        "name": QUEUE,
        "members": list(spec.agents),
        "strategy": "longest_idle",
        "wrapup": 0,
        "ring_timeout": 10,
        "announce_every": 600,
        "join_rule": "always",
        "leave_rule": "never",
        "short_abandon_s": 0,
        "service_level_s": spec.service_level_s,
        "aht_s": spec.aht_s,
        "max_no_answer": 0,
    }
    if spec.overflow is not None:
        queue["overflow"] = dict(spec.overflow)
    lo, hi = RTP_RANGES[spec.name]
    trusted = [CALLER_HOST, *SITES.values()]
    return {
        "site": {"name": spec.name, "description": "tools/bench/mesh_common.py"},
        "sip": {
            "listen": spec.ip,
            "port": sip_port,
            "transports": ["udp"],
            "options_ping_interval": 0,
        },
        "media": {"host": spec.ip, "rtp_port_min": lo, "rtp_port_max": hi, "stall_timeout": 3600},
        "http": {"listen": spec.ip, "port": 0},
        "store": {"path": str(workdir / f"{spec.name}.db")},
        "security": {"rate_limit": 1000000, "trusted": trusted},
        "trunks": [
            {
                "name": "carrier",
                "peers": [f"{CALLER_HOST}:{p}" for p in carrier_ports],
                "dids": {DID: f"queue:{QUEUE}"},
            },
            {
                "name": f"to-{other.name}",
                "peers": [f"{other.ip}:{other_sip_port}"],
                "site": other.name,
            },
        ],
        "agents": [
            {"extension": e, "password": f"pw-{e}", "name": f"agent {e}"} for e in spec.agents
        ],
        "queues": [queue],
        "cc": {"voicemail_dir": str(workdir / f"{spec.name}-voicemail")},
        "mesh": {
            "etcd": [etcd],
            "lease_ttl": 3,
            "load_interval": 0.2,
            "handoff_listen": f"{spec.ip}:0",
            "reservation_ttl": 10,
        },
    }


# --------------------------------------------------------------------------------------------
# the site process (child side)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _control(gw: Any, req: Mapping[str, Any]) -> Any:
    """One control request, run on the gateway's loop."""
    cmd = req.get("cmd")
    cc = gw.cc
    if cmd == "info":
        mesh = gw.mesh
        view = mesh.view() if mesh is not None else None
        other = [s for s in SITES if s != gw.cfg.name]
        return {
            "site": gw.cfg.name,
            "sip_port": gw.sip_port,
            "http_port": gw.http_port,
            "remote_queues": [r.site for r in mesh.remote_queues(QUEUE)] if mesh else [],
            "alive": [s for s in other if view is not None and view.alive(s)],
        }
    if cmd == "agent":
        view = cc.agent_command(str(req["ext"]), str(req["command"]))
        return str(getattr(view, "state", ""))
    if cmd == "queue":
        q = cc.queues[QUEUE]
        logged_in, available = cc._staffing(QUEUE)
        return {"waiting": q.line.live_count(), "logged_in": logged_in, "available": available}
    if cmd == "mesh":
        side = cc.mesh
        return {
            "decisions": dict(getattr(side, "decisions", {}) or {}),
            "reserve_ms": list(gw.mesh.reserve_ms) if gw.mesh is not None else [],
            "overflowed_out": side.overflowed_out,
            "overflowed_in": side.overflowed_in,
            "refused": side.refused,
        }
    if cmd == "interactions":
        return gw.store.interactions(int(req.get("limit", 100000)))
    raise ValueError(f"unknown command {cmd!r}")


async def _serve_site(config: Path, sip_port: int, ctl_port: int) -> int:
    from gateway.app import SiteGateway
    from gateway.cli import tune_gc
    from gateway.config import parse_config

    doc = json.loads(config.read_text())
    cfg = parse_config(doc, source=str(config), env={})
    gw = SiteGateway(cfg, sip_port=sip_port, http_port=0)
    await gw.start()
    tune_gc()
    stop = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                req = json.loads(line)
                try:
                    if req.get("cmd") == "stop":
                        stop.set()
                        out: dict[str, Any] = {"ok": True, "result": None}
                    else:
                        out = {"ok": True, "result": _jsonable(_control(gw, req))}
                except Exception as exc:  # reported to the bench, the gateway goes on
                    out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(out).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, CALLER_HOST, ctl_port)
    print(f"ready site={cfg.name} sip={cfg.sip.listen}:{gw.sip_port}", flush=True)
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await gw.stop()
    return 0


def _site_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.mesh_common site")
    ap.add_argument("--config", type=Path, required=True, help="the site config as JSON")
    ap.add_argument("--sip-port", type=int, required=True)
    ap.add_argument("--ctl-port", type=int, required=True)
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    from gateway.cli import _run

    return _run(_serve_site(args.config, args.sip_port, args.ctl_port))


# --------------------------------------------------------------------------------------------
# the site process (bench side)


class SiteProc:
    """A site gateway child process and its control socket."""

    def __init__(self, spec: SiteSpec, doc: dict[str, Any], workdir: Path, cpus: str | None):
        self.spec = spec
        self.sip_port = int(doc["sip"]["port"])
        self.ctl_port = free_udp_port(CALLER_HOST, tcp=True)
        cfg = workdir / f"{spec.name}.json"
        cfg.write_text(json.dumps(doc, indent=1))
        argv = [python_bin(), "-m", "tools.bench.mesh_common", "site", "--config", str(cfg)]
        argv += ["--sip-port", str(self.sip_port), "--ctl-port", str(self.ctl_port)]
        env = {"PYTHONPATH": str(REPO)}
        self.child = Child(f"gw-{spec.name}", argv, workdir, cpus=cpus, env=env)
        self._sock: socket.socket | None = None
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def sip(self) -> str:
        return f"{self.spec.ip}:{self.sip_port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        ch = self.child
        if not wait_for(lambda: "ready site=" in ch.stdout() or not ch.running(), timeout, 0.1):
            raise RuntimeError(f"{self.spec.name} did not start in {timeout} s:\n{ch.tail()}")
        if not ch.running():
            raise RuntimeError(f"{self.spec.name} exited at start:\n{ch.tail()}")
        self._sock = socket.create_connection((CALLER_HOST, self.ctl_port), timeout=30)

    def ctl(self, cmd: str, **kw: Any) -> Any:
        """One request over the control socket; its result (RuntimeError on an error)."""
        if self._sock is None:
            raise RuntimeError(f"{self.spec.name} is not ready")
        self._sock.sendall(json.dumps({"cmd": cmd, **kw}).encode() + b"\n")
        while b"\n" not in self._buf:
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError(f"{self.spec.name}: control socket closed\n{self.child.tail()}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        out = json.loads(line)
        if not out.get("ok"):
            raise RuntimeError(f"{self.spec.name}: {cmd}: {out.get('error')}")
        return out.get("result")

    def stop(self) -> None:
        """A graceful stop over the control socket, then by PID (SIGTERM, SIGKILL)."""
        if self._sock is not None:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self._sock.settimeout(5)
                self.ctl("stop")
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
            self.child.wait(10)
        self.child.stop(grace=5)


class Etcd:
    """A single-member etcd on free 127.0.0.1 ports, pinned, ended by PID."""

    def __init__(self, workdir: Path, cpus: str | None) -> None:
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
        self.client_port = free_udp_port(CALLER_HOST, tcp=True)
        peer_port = free_udp_port(CALLER_HOST, tcp=True)
        url = f"http://{CALLER_HOST}:{self.client_port}"
        peer = f"http://{CALLER_HOST}:{peer_port}"
        argv = [binary, "--name", "bench", "--data-dir", str(workdir / "etcd-data")]
        argv += ["--listen-client-urls", url, "--advertise-client-urls", url]
        argv += ["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer]
        argv += ["--initial-cluster", f"bench={peer}", "--log-level", "warn"]
        self.url = url
        self.child = Child("etcd", argv, workdir, cpus=cpus)
        if not wait_for(lambda: self._healthy() or not self.child.running(), 20, 0.1):
            self.child.stop()
            raise RuntimeError(f"etcd not healthy in 20 s:\n{self.child.tail()}")
        if not self.child.running():
            raise RuntimeError(f"etcd exited:\n{self.child.tail()}")

    @property
    def endpoint(self) -> str:
        return f"{CALLER_HOST}:{self.client_port}"

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1.0) as resp:
                return resp.status == 200 and b'"true"' in resp.read()
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def stop(self) -> None:
        self.child.stop()


# --------------------------------------------------------------------------------------------
# the pair


@dataclass
class MeshPair:
    """etcd + two site gateways + one SIPp agent uas per site with phones.

    ``agent_scenario`` is a path to a SIPp uas scenario; ``agent_keys`` its ``-key`` values.
    Use as a context manager: everything it started is ended by PID at exit.
    """

    specs: tuple[SiteSpec, SiteSpec]
    workdir: Path
    agent_scenario: Path
    agent_keys: Mapping[str, str] = field(default_factory=dict)
    sut_cpus: str | None = "0"
    gen_cpus: str | None = "1"
    sipp: str = "sipp"
    bound_s: float = 600.0
    """Upper bound of the whole run (SIPp -timeout of the agents)."""
    sites: dict[str, SiteProc] = field(default_factory=dict)
    carrier_ports: dict[str, int] = field(default_factory=dict)
    agent_logs: dict[str, Path] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    etcd: Etcd | None = None

    def __enter__(self) -> MeshPair:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        wd = self.workdir
        self.etcd = Etcd(wd, self.sut_cpus)
        sip_ports = {s.name: free_udp_port(s.ip) for s in self.specs}
        self.carrier_ports = {s.name: free_udp_port(CALLER_HOST) for s in self.specs}
        for spec in self.specs:
            other = next(o for o in self.specs if o.name != spec.name)
            doc = site_doc(
                spec,
                sip_port=sip_ports[spec.name],
                other=other,
                other_sip_port=sip_ports[other.name],
                carrier_ports=[self.carrier_ports[spec.name]],
                etcd=self.etcd.endpoint,
                workdir=wd,
            )
            self.sites[spec.name] = SiteProc(spec, doc, wd, self.sut_cpus)
        for site in self.sites.values():
            site.wait_ready()
        log(f"mesh: etcd {self.etcd.endpoint}, " + ", ".join(s.sip for s in self.sites.values()))
        for spec in self.specs:
            site = self.sites[spec.name]
            if not spec.phones:
                for ext in spec.agents:
                    site.ctl("agent", ext=ext, command="logout")
        # each site sees the other in etcd (alive, and its queue's load when it has agents)
        for spec in self.specs:
            site = self.sites[spec.name]
            other = next(o for o in self.specs if o.name != spec.name)

            def sees(site: SiteProc = site, other: SiteProc = self.sites[other.name]) -> bool:
                info = site.ctl("info")
                want = other.spec.phones
                return other.spec.name in (info["remote_queues"] if want else info["alive"])

            if not wait_for(sees, 20, 0.1):
                raise RuntimeError(
                    f"{spec.name} does not see {other.name} in etcd:\n{site.ctl('info')}"
                )
        for spec in self.specs:
            if spec.phones:
                self._phones(spec)

    def _phones(self, spec: SiteSpec) -> None:
        """Register every agent of ``spec`` from one port, then start one uas there."""
        wd = self.workdir
        site = self.sites[spec.name]
        port = free_udp_port(CALLER_HOST)
        reg_mp = free_udp_port(CALLER_HOST, span=4, even=True, within=SIPP_MEDIA_RANGE)
        for ext in spec.agents:
            argv = [self.sipp, site.sip, "-sf", str(SIPP_DIR / "register.xml"), "-s", ext]
            argv += ["-au", ext, "-ap", f"pw-{ext}", "-auth_uri", site.sip]
            argv += ["-i", CALLER_HOST, "-p", str(port), "-mp", str(reg_mp), "-m", "1"]
            argv += ["-key", "expires", "3600", "-nostdin", "-timeout", "15s", "-timeout_error"]
            reg = Child(f"register-{spec.name}-{ext}", argv, wd, cpus=self.gen_cpus)
            rc = reg.wait(20)
            if rc is None:
                reg.stop()
            if rc != 0:
                raise RuntimeError(f"REGISTER of {ext} at {spec.name} failed ({rc}):\n{reg.tail()}")
            wait_for(lambda: not udp_bound(port), 5)
        mp = free_udp_port(CALLER_HOST, span=4, even=True, within=SIPP_MEDIA_RANGE)
        msg_log = wd / f"agents-{spec.name}_msg.log"
        argv = [self.sipp, "-sf", str(self.agent_scenario), "-i", CALLER_HOST, "-p", str(port)]
        argv += ["-mp", str(mp), "-nostdin", "-buff_size", "4194304"]
        argv += ["-trace_msg", "-message_file", str(msg_log)]
        argv += ["-trace_logs", "-log_file", str(wd / f"agents-{spec.name}_logs.log")]
        argv += ["-trace_err", "-error_file", str(wd / f"agents-{spec.name}_err.log")]
        argv += ["-timeout", f"{self.bound_s:.0f}s"]
        for k, v in {"sdp_port": str(mp), **self.agent_keys}.items():
            argv += ["-key", k, v]
        uas = Child(f"agents-{spec.name}", argv, wd, cpus=self.gen_cpus)
        self.children.append(uas)
        if not wait_for(lambda: udp_bound(port) or not uas.running(), 10):
            raise RuntimeError(f"agent uas of {spec.name} did not start:\n{uas.tail()}")
        if not uas.running():
            raise RuntimeError(f"agent uas of {spec.name} exited:\n{uas.tail()}")
        self.agent_logs[spec.name] = msg_log
        q = site.ctl("queue")
        if q["available"] != len(spec.agents):
            raise RuntimeError(f"{spec.name}: {q} after registering {len(spec.agents)} agents")

    def callers(
        self,
        site: str,
        scenario: Path,
        *,
        rate: float,
        calls: int,
        keys: Mapping[str, str] | None = None,
        timeout_s: float,
        name: str | None = None,
        limit: int = 100000,
    ) -> Child:
        """Start a SIPp uac placing ``calls`` calls at ``rate``/s to ``site``'s DID from its
        carrier trunk's port (message trace and stats in the work directory)."""
        wd = self.workdir
        name = name or f"callers-{site}"
        mp = free_udp_port(CALLER_HOST, span=4, even=True, within=SIPP_MEDIA_RANGE)
        argv = [self.sipp, self.sites[site].sip, "-sf", str(scenario), "-s", DID]
        argv += ["-i", CALLER_HOST, "-p", str(self.carrier_ports[site]), "-mp", str(mp)]
        argv += ["-r", f"{rate:g}", "-rp", "1000", "-m", str(calls), "-l", str(limit)]
        argv += ["-buff_size", "4194304", "-nostdin", "-trace_stat", "-fd", "1"]
        argv += ["-stf", str(wd / f"{name}_stat.csv")]
        argv += ["-trace_msg", "-message_file", str(wd / f"{name}_msg.log")]
        argv += ["-trace_err", "-error_file", str(wd / f"{name}_err.log")]
        argv += ["-timeout", f"{timeout_s:.0f}s"]
        for k, v in {"sdp_port": str(mp), **(keys or {})}.items():
            argv += ["-key", k, v]
        uac = Child(name, argv, wd, cpus=self.gen_cpus)
        self.children.append(uac)
        return uac

    def close(self) -> None:
        """End every process started, by PID, last started first."""
        for c in reversed(self.children):
            c.stop()
        for site in reversed(list(self.sites.values())):
            site.stop()
        if self.etcd is not None:
            self.etcd.stop()


# --------------------------------------------------------------------------------------------
# load


def _reaped_and_own_cpu() -> float:
    """CPU seconds of this process and of its children already waited for (finished SIPp)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class LoadMeter:
    """CPU over a measurement: the system under test (both gateways + etcd), the generator
    (SIPp + this process) and what else ran on the cores (other people's jobs on a shared
    machine), each in % of one core; and each core's busy %."""

    def __init__(self, pair: MeshPair, cores: list[int]) -> None:
        self.sut = [s.pid for s in pair.sites.values()]
        if pair.etcd is not None:
            self.sut.append(pair.etcd.child.pid)
        self.pair = pair
        self.cores = cores
        self.gen = [c.pid for c in pair.children]  # running now; finished ones: rusage
        self.t0 = time.monotonic()
        self.ct0 = core_times()
        self.sut0 = cpu_seconds(self.sut)
        self.gen0 = cpu_seconds(self.gen) + _reaped_and_own_cpu()

    def stop(self) -> dict[str, Any]:
        """The figures since construction (call before the children are ended)."""
        wall = max(time.monotonic() - self.t0, 1e-9)
        ct1 = core_times()
        sut = 100.0 * (cpu_seconds(self.sut) - self.sut0) / wall
        gen = 100.0 * (cpu_seconds(self.gen) + _reaped_and_own_cpu() - self.gen0) / wall
        busy = {str(c): cores_busy_percent(self.ct0, ct1, [c]) for c in self.cores}
        return {
            "sut_cpu_pct_of_one_core": round(sut, 1),
            "generator_cpu_pct_of_one_core": round(gen, 1),
            "core_busy_pct": busy,
            "other_load_pct_of_one_core": round(max(0.0, sum(busy.values()) - sut - gen), 1),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }


# --------------------------------------------------------------------------------------------
# SIPp message traces


@dataclass(frozen=True, slots=True)
class SipMsg:
    """One message of a SIPp ``-trace_msg`` file."""

    t: float
    """Wall clock (Unix s) SIPp stamped it with."""
    sent: bool
    first: str
    """Request or status line."""
    headers: Mapping[str, str]
    """Header name (lower case) → first value."""


_STAMP = re.compile(r"^-{5,} (\d{4}-\d\d-\d\d[ \t]\d\d:\d\d:\d\d\.\d+)")


def _stamp(text: str) -> float:
    return datetime.strptime(text.replace("\t", " "), "%Y-%m-%d %H:%M:%S.%f").timestamp()


def parse_trace(path: Path) -> Iterator[SipMsg]:
    """The messages of a SIPp ``-trace_msg`` file, in order: each is preceded by a line
    ``----- YYYY-MM-DD HH:MM:SS.ffffff`` and a ``... message sent/received ...`` line."""
    try:
        lines = path.read_text("utf-8", "replace").splitlines()
    except OSError:
        return
    i, n = 0, len(lines)
    while i < n:
        m = _STAMP.match(lines[i])
        if not m:
            i += 1
            continue
        t = _stamp(m.group(1))
        i += 1
        sent = i < n and " sent" in lines[i]
        i += 1
        while i < n and not lines[i].strip():
            i += 1
        if i >= n:
            break
        first = lines[i].strip()
        hdr: dict[str, str] = {}
        i += 1
        while i < n and lines[i].strip() and not _STAMP.match(lines[i]):
            name, _, value = lines[i].partition(":")
            hdr.setdefault(name.strip().lower(), value.strip())
            i += 1
        yield SipMsg(t, sent, first, hdr)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "site":
        sys.exit(_site_main(sys.argv[2:]))
    print("usage: python -m tools.bench.mesh_common site --config F --sip-port N --ctl-port M")
    sys.exit(2)
