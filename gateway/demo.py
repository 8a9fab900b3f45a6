"""``ccgw demo``: one site gateway with a simulated carrier (SIPp) and agents (baresip phones).

Until the multi-site mesh lands this shows one site end to end: real agent phones register with
digest auth, the carrier calls the site's DID at a steady rate, the ring group rings, the phones
answer and audio flows through the relay. A live summary is refreshed in place; Ctrl-C stops
everything, every child process killed by its own PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
import wave
from pathlib import Path

from gateway.app import SiteGateway
from gateway.config import HostPort, load_config
from gateway.media.g711 import ulaw_encode
from gateway.media.player import tone

ROOT = Path(__file__).resolve().parent.parent
SITE_CONFIG = ROOT / "sites" / "shanghai.toml"
CALLER_SCENARIO = ROOT / "tests" / "data" / "sipp" / "caller_ivr.xml"


def free_port(host: str, kind: int = socket.SOCK_DGRAM) -> int:
    """A port free on ``host`` right now."""
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
        while port % 2 or not _udp_free(port + 1):
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


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def run_demo(seconds: float, rate: float) -> int:
    """Run the demo for ``seconds`` (0: until Ctrl-C) with carrier calls at ``rate`` per second."""
    for tool in ("sipp", "baresip"):
        if shutil.which(tool) is None:
            print(f"ccgw demo: {tool} is not installed (./ccgw demo installs it as root)")
            return 1
    work = Path(tempfile.mkdtemp(prefix="ccgw-demo-"))
    cfg = load_config(SITE_CONFIG)
    host = "127.0.0.1"
    carrier_port = free_port(host)
    trunk = dataclasses.replace(cfg.trunks[0], peers=(HostPort(host, carrier_port),))
    cfg = dataclasses.replace(
        cfg,
        sip=dataclasses.replace(cfg.sip, listen=host),
        media=dataclasses.replace(cfg.media, host=host),
        http=dataclasses.replace(cfg.http, listen=host),
        trunks=(trunk, *cfg.trunks[1:]),
    )
    gw = SiteGateway(cfg, sip_port=0, http_port=0, store_path=str(work / "site.db"))
    await gw.start()
    gw_addr = f"{host}:{gw.sip_port}"
    # The sales hotline (straight into a queue) shows the ACD best; else the first DID.
    dids = list(trunk.dids.items())
    did = next((n for n, d in dids if d.kind == "queue"), dids[0][0] if dids else "+862150000000")
    phones = [
        Phone(work, a.extension, a.password, gw_addr, 300.0 + 100 * i)
        for i, a in enumerate(cfg.agents)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    sipp: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 10
        while gw.registrar.bindings_count() < len(phones) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        total = int(rate * seconds) if seconds > 0 else 0
        media_port = free_port(host)
        while media_port % 2 or not _udp_free(media_port + 1):
            media_port = free_port(host)
        tone_file = work / "caller.ulaw"
        tone_file.write_bytes(ulaw_encode(tone([700], 2.0)).tobytes())
        args = ["sipp", gw_addr, "-sf", str(CALLER_SCENARIO), "-s", did]
        args += ["-i", host, "-p", str(carrier_port), "-mi", host, "-mp", str(media_port)]
        args += ["-r", str(rate), "-nostdin"]
        keys = {
            "caller": "+8613800138000",
            "audio": f"{tone_file},-1,0",
            "talk_ms": "8000",
            "d1_ms": "0",
            "digit1": "-",
            "d2_ms": "0",
            "digit2": "-",
            "sdp_port": str(media_port),
        }
        for k, v in keys.items():
            args += ["-key", k, v]
        if total:
            args += ["-m", str(total), "-timeout", f"{seconds + 30}s"]
        sipp = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=work,
        )
        started = time.monotonic()
        while not stop.is_set():
            elapsed = time.monotonic() - started
            _show(gw, elapsed, len(phones))
            if seconds > 0 and (elapsed > seconds + 16 or sipp.poll() is not None):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        _show(gw, time.monotonic() - started, len(phones))
        print()
        summary = _queues_line(gw)
    finally:
        if sipp is not None and sipp.poll() is None:
            sipp.send_signal(signal.SIGUSR1)  # SIPp: stop placing calls and exit
            try:
                sipp.wait(5)
            except subprocess.TimeoutExpired:
                sipp.kill()
                sipp.wait()
        for p in phones:
            p.stop()
        await gw.stop()
        if not os.environ.get("CCGW_KEEP_DEMO"):
            shutil.rmtree(work, ignore_errors=True)
    b = gw.b2bua.counters
    ok = b.answered > 0
    print(summary)
    print(
        f"demo: {b.offered} calls offered, {b.answered} answered by agents, {b.failed} failed; "
        f"{gw.cdrs_written} CDRs written"
    )
    return 0 if ok else 1


def _queues_line(gw: SiteGateway) -> str:
    cc = gw.cc
    if cc is None:
        return ""
    parts = []
    for name in cc.queues:
        q = cc.queue_snapshot(name)
        day = q["day"]
        sl = day.get("service_level")
        parts.append(
            f"{name}: waiting {q['waiting']} avail {q['available']}/{q['logged_in']}"
            f" answered {day.get('answered', 0)} abandoned {day.get('abandoned', 0)}"
            f" SL {'-' if sl is None else f'{100 * sl:.0f}%'}"
        )
    return " | ".join(parts)


def _show(gw: SiteGateway, elapsed: float, phones: int) -> None:
    b = gw.b2bua.counters
    rtp = gw.relay_totals()
    line = (
        f"\r[{gw.cfg.site.name} {elapsed:5.0f}s] agents {gw.registrar.bindings_count()}/{phones}"
        f" | active {gw.b2bua.active_calls:3d} | offered {b.offered:4d} answered {b.answered:4d}"
        f" failed {b.failed:3d} | rtp in {rtp['in']:7d} out {rtp['out']:7d}"
        f" | cdrs {gw.cdrs_written:4d} | {_queues_line(gw)} "
    )
    sys.stdout.write(line)
    sys.stdout.flush()
