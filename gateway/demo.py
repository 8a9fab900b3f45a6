"""``ccgw demo``: the mesh on loopback — etcd, HQ and three sites with carriers and agents.

What runs: a real etcd (the registry), the HQ service (central database, gRPC sync over mutual
TLS, certificates made at start), and the site gateways of ``sites/hq.toml``,
``sites/shanghai.toml`` and ``sites/guangzhou.toml`` with their ports moved to free ones. Each
site's service agents are real baresip phones (digest registration, auto-answer). SIPp carriers
call Shanghai hard and Guangzhou lightly: Shanghai's queue backs up, waiting callers overflow to
Guangzhou and HQ with their context, records stream to HQ. A wallboard is refreshed in place;
Ctrl-C stops everything, every child process killed by its own PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
import wave
from pathlib import Path
from typing import Any

from gateway.app import SiteGateway
from gateway.config import parse_config
from gateway.media.g711 import ulaw_encode
from gateway.media.player import tone

ROOT = Path(__file__).resolve().parent.parent
SITES_DIR = ROOT / "sites"
CALLER_SCENARIO = ROOT / "tests" / "data" / "sipp" / "caller_ivr.xml"
SITES = {"hq": "127.0.0.1", "shanghai": "127.0.0.2", "guangzhou": "127.0.0.3"}
BUSY = "shanghai"  # the branch the demo swamps
LIGHT = "guangzhou"  # a branch with a little traffic of its own
SERVICE_DID = "+860000000000"  # not in any site's DID table: the default, queue:service


def free_port(host: str, kind: int = socket.SOCK_DGRAM) -> int:
    """A port free on ``host`` right now (``kind`` 0: free for both UDP and TCP)."""
    if kind == 0:
        for _ in range(50):
            port = free_port(host, socket.SOCK_DGRAM)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
                return port
        raise OSError(f"no port free for UDP and TCP on {host}")
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def write_tone(path: Path, freq: float, seconds: float = 30.0, rate: int = 8000) -> None:
    """An 8 kHz mono 16-bit sine (baresip's aufile source)."""
    n = int(seconds * rate)
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / rate))) for i in range(n)
    )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)


class Phone:
    """A baresip agent phone, auto-answering, registered to the gateway."""

    def __init__(self, workdir: Path, ext: str, password: str, gw: str, freq: float) -> None:
        self.dir = workdir / f"phone-{ext}"
        self.dir.mkdir(parents=True)
        port = free_port("127.0.0.1")
        while port % 2 or not _udp_free_on("127.0.0.1", port + 1):
            port = free_port("127.0.0.1")
        tone = self.dir / "tone.wav"
        write_tone(tone, freq)
        (self.dir / "config").write_text(
            "poll_method epoll\n"
            f"sip_listen 127.0.0.1:{port}\n"
            "net_interface 127.0.0.1\n"
            f"audio_source aufile,{tone}\n"
            "audio_player aufile,/dev/null\n"
            "audio_alert aufile,/dev/null\n"
            "module_path /usr/lib/baresip/modules\n"
            "module g711.so\nmodule aufile.so\n"
            "module_app account.so\nmodule_app menu.so\n"
        )
        (self.dir / "accounts").write_text(
            f"<sip:{ext}@{gw}>;auth_pass={password};answermode=auto;regint=300;audio_codecs=PCMU\n"
        )
        self.log = open(self.dir / "out.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["baresip", "-f", str(self.dir)],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        """Kill the phone by its PID."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class EtcdProcess:
    """A throwaway single-member etcd on free loopback ports (killed by its PID). With ``pki``
    (holding ``etcd.pem`` from the mesh CA) clients speak TLS and must show a mesh certificate."""

    def __init__(self, workdir: Path, pki: Path | None = None) -> None:
        self.dir = workdir / "etcd"
        self.dir.mkdir()
        self.port = free_port("127.0.0.1", socket.SOCK_STREAM)
        peer = free_port("127.0.0.1", socket.SOCK_STREAM)
        client = f"{'https' if pki else 'http'}://127.0.0.1:{self.port}"
        tls = []
        if pki is not None:
            tls = ["--cert-file", str(pki / "etcd.pem"), "--key-file", str(pki / "etcd-key.pem")]
            tls += ["--trusted-ca-file", str(pki / "ca.pem"), "--client-cert-auth"]
        peer_url = f"http://127.0.0.1:{peer}"
        self.log = open(self.dir / "etcd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                "etcd", "--name", "demo", "--data-dir", str(self.dir / "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"demo={peer_url}", *tls,
            ],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 15.0) -> bool:
        """Wait for ``/health``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return True
            except OSError:
                await asyncio.sleep(0.1)
        return False

    def stop(self) -> None:
        """Kill etcd by its PID."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _mesh_docs(
    work: Path,
    etcd: str,
    hq_port: int,
    sip: dict[str, int],
    carriers: dict[str, int],
    tls: dict[str, int],
) -> dict[str, dict[str, Any]]:
    """The three site files with their ports and paths moved into the demo's world."""
    docs: dict[str, dict[str, Any]] = {}
    for site, ip in SITES.items():
        with open(SITES_DIR / f"{site}.toml", "rb") as f:
            doc = tomllib.load(f)
        doc["sip"]["port"] = sip[site]
        doc["sip"]["tls_port"] = tls[site]
        doc["http"]["port"] = 0
        doc["store"]["path"] = str(work / f"{site}.db")
        doc.setdefault("cc", {})["voicemail_dir"] = str(work / f"{site}-voicemail")
        for trunk in doc["trunks"]:
            other = trunk.get("site")
            if other is None:  # the carrier: SIPp on the site's address
                trunk["peers"] = [f"{ip}:{carriers[site]}"]
            else:
                port = (tls if trunk.get("transport") == "tls" else sip)[other]
                trunk["peers"] = [f"{SITES[other]}:{port}"]
        doc["mesh"].update(
            etcd=[etcd],
            etcd_tls=True,
            pki=str(work / "pki"),
            hq=f"127.0.0.1:{hq_port}",
            handoff_listen=f"{ip}:0",
            load_interval=0.5,
        )
        for q in doc.get("queues", []):
            if q["name"] == "service":
                q["announce_every"] = 15
                if site == BUSY:  # show overflow within seconds, not minutes
                    q["overflow"] = {
                        "max_wait": 6,
                        "max_ewt": 20,
                        "when_no_skill": True,
                        "targets": ["guangzhou", "hq"],
                    }
        if "hq" in doc:
            doc["hq"].update(
                listen=f"127.0.0.1:{hq_port}",
                database=f"sqlite:///{work / 'central.db'}",
                pki=str(work / "pki"),
                http="127.0.0.1:0",
            )
        docs[site] = doc
    return docs


class _Carrier:
    """A SIPp carrier calling one site's service number at a steady rate."""

    def __init__(
        self, work: Path, site: str, port: int, gw: str, rate: float, total: int, talk_ms: int
    ) -> None:
        host = SITES[site]
        media = free_port(host)
        while media % 2 or not _udp_free_on(host, media + 1):
            media = free_port(host)
        tone_file = work / f"caller-{site}.ulaw"
        tone_file.write_bytes(ulaw_encode(tone([700], 2.0)).tobytes())
        args = ["sipp", gw, "-sf", str(CALLER_SCENARIO), "-s", SERVICE_DID]
        args += ["-i", host, "-p", str(port), "-mi", host, "-mp", str(media)]
        args += ["-r", f"{rate:g}", "-l", "1000", "-nostdin"]  # -l: long calls must not throttle
        keys = {
            "caller": "+8613800138000",
            "audio": f"{tone_file},-1,0",
            "talk_ms": str(talk_ms),
            "d1_ms": "0",
            "digit1": "-",
            "d2_ms": "0",
            "digit2": "-",
            "sdp_port": str(media),
        }
        for k, v in keys.items():
            args += ["-key", k, v]
        if total:
            args += ["-m", str(total), "-timeout", f"{total / rate + talk_ms / 1000 + 20:.0f}s"]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=work,
        )

    def done(self) -> bool:
        """SIPp placed its calls and exited."""
        return self.proc.poll() is not None

    def stop(self) -> None:
        """Stop placing calls (SIGUSR1), then kill by PID if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _udp_free_on(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


async def run_demo(seconds: float, rate: float) -> int:
    """Run the mesh for ``seconds`` (0: until Ctrl-C); Shanghai's carrier calls at ``rate``/s,
    Guangzhou's at a fifth of it."""
    for tool in ("sipp", "baresip", "etcd"):
        if shutil.which(tool) is None:
            print(f"ccgw demo: {tool} is not installed (./ccgw demo installs it as root)")
            return 1
    from gateway.hq.app import HqApp
    from gateway.mesh.tls import issue, make_ca

    work = Path(tempfile.mkdtemp(prefix="ccgw-demo-"))
    make_ca(work / "pki")
    for site, ip in SITES.items():
        issue(work / "pki", site, ips=[ip])
    issue(work / "pki", "etcd", ips=["127.0.0.1"])
    etcd = EtcdProcess(work, work / "pki")
    hq: HqApp | None = None
    gws: dict[str, SiteGateway] = {}
    phones: list[Phone] = []
    carriers: list[_Carrier] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    summary = ""
    try:
        if not await etcd.ready():
            print(f"ccgw demo: etcd did not start (see {etcd.dir / 'etcd.log'})")
            return 1
        sip = {site: free_port(ip, 0) for site, ip in SITES.items()}
        carrier_ports = {site: free_port(ip) for site, ip in SITES.items()}
        tls = {site: free_port(ip, socket.SOCK_STREAM) for site, ip in SITES.items()}
        hq_port = free_port("127.0.0.1", 0)
        docs = _mesh_docs(work, etcd.endpoint, hq_port, sip, carrier_ports, tls)
        cfgs = {
            site: parse_config(doc, str(SITES_DIR / f"{site}.toml"), base_dir=SITES_DIR)
            for site, doc in docs.items()
        }
        hq = HqApp(cfgs["hq"])
        await hq.start()
        for site, cfg in cfgs.items():
            gw = SiteGateway(cfg, sip_port=sip[site], http_port=0)
            await gw.start()
            gws[site] = gw
        for i, (site, cfg) in enumerate(cfgs.items()):
            service = cfg.queue("service")
            members = set(service.members) if service is not None else set()
            for a in cfg.agents:
                if a.extension in members:
                    addr = f"{SITES[site]}:{sip[site]}"
                    phones.append(Phone(work, a.extension, a.password, addr, 300.0 + 50 * i))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sum(gw.registrar.bindings_count() for gw in gws.values()) >= len(phones):
                break
            await asyncio.sleep(0.2)
        total = int(rate * seconds) if seconds > 0 else 0
        light = rate / 5
        carriers.append(
            _Carrier(
                work, BUSY, carrier_ports[BUSY], f"{SITES[BUSY]}:{sip[BUSY]}", rate, total, 20000
            )
        )
        light_total = int(light * seconds) if seconds > 0 else 0
        if light_total or seconds <= 0:
            carriers.append(
                _Carrier(
                    work, LIGHT, carrier_ports[LIGHT], f"{SITES[LIGHT]}:{sip[LIGHT]}", light,
                    light_total, 15000,
                )
            )  # fmt: skip
        board = _Wallboard(hq, gws, etcd)
        started = time.monotonic()
        while not stop.is_set():
            elapsed = time.monotonic() - started
            board.show(elapsed)
            # A timed run ends when the carriers have placed their calls and the last caller
            # has hung up (callers talk up to 20 s), with a bound.
            if seconds > 0 and (elapsed > seconds + 40 or all(c.done() for c in carriers)):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        await asyncio.gather(*(asyncio.to_thread(c.stop) for c in carriers))
        deadline = time.monotonic() + 5  # the last records reach HQ
        while time.monotonic() < deadline and any(
            gw.mesh is not None and gw.mesh.sync is not None and gw.mesh.sync.outbox_depth
            for gw in gws.values()
        ):
            await asyncio.sleep(0.2)
        board.show(time.monotonic() - started, final=True)
        summary = board.summary()
    finally:
        # Children are stopped in threads: a phone that takes seconds to unregister must not
        # stall the gateways' event loop (the sites' etcd leases would lapse meanwhile).
        await asyncio.gather(*(asyncio.to_thread(c.stop) for c in carriers))
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in phones))
        for gw in gws.values():
            await gw.stop()
        if hq is not None:
            await hq.stop()
        etcd.stop()
        if not os.environ.get("CCGW_KEEP_DEMO"):
            shutil.rmtree(work, ignore_errors=True)
    print(summary)
    answered = sum(gw.b2bua.counters.answered for gw in gws.values())
    return 0 if answered > 0 else 1


class _Wallboard:
    """Per site: waiting, agents by state, service level, answered, overflow out/in, outbox
    depth and sync lag; HQ: records applied. Refreshed in place on a terminal."""

    def __init__(self, hq: Any, gws: dict[str, SiteGateway], etcd: EtcdProcess) -> None:
        self.hq = hq
        self.gws = gws
        self.etcd = etcd
        self.tty = sys.stdout.isatty()
        self.lines = 0
        self.last_plain = -10.0

    def rows(self, elapsed: float) -> list[str]:
        server = self.hq.server
        applied = server.applied_total if server is not None else 0
        etcd_ok = "up" if self.etcd.proc.poll() is None else "DOWN"
        out = [
            f"ccgw demo {elapsed:5.0f}s | etcd {etcd_ok} | HQ: {applied} records applied, "
            f"sites syncing {len(server.high_water) if server is not None else 0}",
            f"{'site':<10} {'waiting':>7} {'avail':>5} {'ring':>4} {'talk':>4} {'wrap':>4} "
            f"{'answered':>8} {'SL':>5} {'ovf out':>7} {'ovf in':>6} {'outbox':>6} {'lag':>6}",
        ]
        for site, gw in self.gws.items():
            cc = gw.cc
            if cc is None:
                continue
            counts: dict[str, int] = {}
            for view in cc.agents.snapshot():
                counts[view.state.value] = counts.get(view.state.value, 0) + 1
            waiting = sum(q.line.live_count() for q in cc.queues.values())
            answered = 0
            met = 0.0
            for name in cc.queues:
                day = cc.queue_snapshot(name)["day"]
                n = day.get("answered", 0)
                answered += n
                met += (day.get("service_level") or 0.0) * n
            sl = f"{100 * met / answered:.0f}%" if answered else "-"
            mesh = cc.mesh
            sync = gw.mesh.sync if gw.mesh is not None else None
            out.append(
                f"{site:<10} {waiting:>7} {counts.get('available', 0):>5} "
                f"{counts.get('ringing', 0):>4} {counts.get('on_call', 0):>4} "
                f"{counts.get('wrap_up', 0):>4} {answered:>8} {sl:>5} "
                f"{mesh.overflowed_out if mesh else 0:>7} {mesh.overflowed_in if mesh else 0:>6} "
                f"{sync.outbox_depth if sync else 0:>6} "
                f"{f'{sync.lag_s:.1f}s' if sync else '-':>6}"
            )
        return out

    def show(self, elapsed: float, *, final: bool = False) -> None:
        rows = self.rows(elapsed)
        if self.tty:
            if self.lines:
                sys.stdout.write(f"\x1b[{self.lines}F")
            sys.stdout.write("".join(f"\x1b[2K{r}\n" for r in rows))
            self.lines = len(rows)
        elif final or elapsed - self.last_plain >= 5:
            sys.stdout.write("\n".join(rows) + "\n\n")
            self.last_plain = elapsed
        sys.stdout.flush()

    def summary(self) -> str:
        offered = sum(gw.b2bua.counters.offered for gw in self.gws.values())
        answered = sum(gw.b2bua.counters.answered for gw in self.gws.values())
        moved = sum(gw.cc.mesh.overflowed_out for gw in self.gws.values() if gw.cc and gw.cc.mesh)
        applied = self.hq.server.applied_total if self.hq.server is not None else 0
        return (
            f"demo: {offered} calls offered, {answered} answered by agents, "
            f"{moved} overflowed between sites, {applied} records at HQ"
        )
