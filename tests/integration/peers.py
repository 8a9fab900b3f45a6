"""Real SIP peers for integration tests: SIPp (carrier, load, simple agents) and baresip (phones).

Every process is started with its stdout/stderr in files under the test's work directory, is
registered with a :class:`ProcessRegistry` and is ended by its own PID (SIGTERM, then SIGKILL) at
fixture teardown, whatever the test did. Every wait has a timeout.

Typical use (see tests/integration/conftest.py for the fixtures)::

    uas = sipp_factory("agent_uas.xml", local_port=free_port(), rtp_echo=True)
    uas.start()
    uac = sipp_factory("carrier_uac.xml", remote=uas.address, keys={"talk_ms": "1000"})
    res = uac.run()
    assert res.ok, res.describe()
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

try:  # a package when tests/integration has an __init__.py, plain modules otherwise
    from . import audio
except ImportError:
    import audio  # type: ignore[no-redef]

__all__ = [
    "BARESIP_BIN",
    "SIPP_BIN",
    "SIPP_DIR",
    "Baresip",
    "ManagedProcess",
    "ProcessRegistry",
    "RtpPeer",
    "Sipp",
    "SippResult",
    "free_port",
    "tail",
]

SIPP_BIN = shutil.which("sipp")
BARESIP_BIN = shutil.which("baresip")
SIPP_DIR = Path(__file__).resolve().parents[1] / "data" / "sipp"
BARESIP_MODULES = Path("/usr/lib/baresip/modules")
LOCALHOST = "127.0.0.1"

# --------------------------------------------------------------------------------------------
# ports


_handed_out: set[int] = set()
_port_lock = threading.Lock()


def _can_bind(host: str, port: int, kind: str) -> bool:
    kinds = {"udp": [socket.SOCK_DGRAM], "tcp": [socket.SOCK_STREAM]}.get(
        kind, [socket.SOCK_DGRAM, socket.SOCK_STREAM]
    )
    for k in kinds:
        with socket.socket(socket.AF_INET, k) as s:
            if k == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(
    host: str = LOCALHOST,
    kind: Literal["udp", "tcp", "both"] = "udp",
    *,
    even: bool = False,
    span: int = 1,
    step: int = 1,
) -> int:
    """A port that is free now on ``host`` (bind port 0, read it, close).

    ``kind="both"`` checks UDP and TCP. ``span``/``step``: the ports ``p, p+step, ...``
    (``span`` of them) must all be free, e.g. ``span=2`` for baresip (SIP on p, TLS on p+1) or
    ``even=True, span=2, step=2`` for a SIPp media port (SIPp binds -mp and -mp+2).
    Ports handed out before in this process are never returned again, so two peers started
    back to back do not collide; a race with unrelated processes remains possible.
    """
    for _ in range(200):
        with socket.socket(
            socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
        ) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if even and port % 2:
            port += 1
        ports = [port + i * step for i in range(span)]
        if ports[-1] > 65535:
            continue
        with _port_lock:
            if any(p in _handed_out for p in ports):
                continue
            if all(_can_bind(host, p, kind) for p in ports):
                _handed_out.update(ports)
                return port
    raise RuntimeError(f"no free {kind} port range (span={span}) found on {host}")


def _port_in_use(host: str, port: int, kind: str) -> bool:
    return not _can_bind(host, port, kind)


def tail(path: Path | str | None, max_chars: int = 4000) -> str:
    """The end of a text file (for assertion messages); '' if it does not exist."""
    if path is None:
        return ""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError:
        return ""
    text = data[-max_chars:].decode("utf-8", "replace")
    return ("...\n" if len(data) > max_chars else "") + text


# --------------------------------------------------------------------------------------------
# process bookkeeping


class ManagedProcess:
    """One child process: output to files, ended by its own PID, never outlives the test."""

    def __init__(self, name: str, workdir: Path, registry: ProcessRegistry | None) -> None:
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.workdir / f"{name}.stdout"
        self.stderr_path = self.workdir / f"{name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.registry = registry
        if registry is not None:
            registry.track(self)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _spawn(self, argv: list[str], cwd: Path | None = None) -> None:
        if self.proc is not None:
            raise RuntimeError(f"{self.name} already started")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=str(cwd or self.workdir),
                start_new_session=True,  # no controlling tty: SIPp would stop on SIGTTOU
            )
        (self.workdir / f"{self.name}.cmdline").write_text(" ".join(argv) + "\n")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this process (by its PID) if it still runs."""
        if self.running():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill(self, grace: float = 2.0) -> int | None:
        """SIGTERM, wait up to ``grace`` s, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)
        return self.proc.returncode

    def stdout_text(self) -> str:
        return self.stdout_path.read_text("utf-8", "replace") if self.stdout_path.exists() else ""

    def stderr_text(self) -> str:
        return self.stderr_path.read_text("utf-8", "replace") if self.stderr_path.exists() else ""

    def describe(self) -> str:
        """Command line, exit status and output tails, for assertion messages."""
        rc = self.proc.poll() if self.proc else "not started"
        cmd = (self.workdir / f"{self.name}.cmdline").read_text().strip() if self.proc else ""
        return (
            f"--- {self.name} (pid {self.pid}, exit {rc}) ---\n{cmd}\n"
            f"[stdout]\n{tail(self.stdout_path)}\n[stderr]\n{tail(self.stderr_path, 2000)}\n"
        )


class ProcessRegistry:
    """Everything a test started; :meth:`cleanup` ends it all by PID and runs cleanup hooks."""

    def __init__(self) -> None:
        self.processes: list[ManagedProcess] = []
        self._hooks: list[Callable[[], None]] = []

    def track(self, p: ManagedProcess) -> None:
        self.processes.append(p)

    def on_cleanup(self, fn: Callable[[], None]) -> None:
        self._hooks.append(fn)

    def describe(self) -> str:
        return "\n".join(p.describe() for p in self.processes)

    def cleanup(self) -> None:
        for p in reversed(self.processes):
            stop = getattr(p, "stop", None)
            try:
                if callable(stop):
                    stop()
            except Exception:
                pass
            p.kill()
        for fn in reversed(self._hooks):
            with contextlib.suppress(Exception):
                fn()
        self._hooks.clear()


# --------------------------------------------------------------------------------------------
# SIPp


@dataclass
class SippResult:
    """What a SIPp run left behind. ``returncode``: 0 all calls succeeded, 1 some failed,
    97 stopped by internal command, 99 ended without processing a call, 255/254 fatal errors,
    None if it had to be killed."""

    name: str
    returncode: int | None
    successful: int
    failed: int
    killed: bool
    workdir: Path
    message_log: Path
    error_log: Path
    log_file: Path
    screen_file: Path
    stat_file: Path
    stdout_file: Path
    log_lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful > 0 and not self.killed

    @property
    def final_statuses(self) -> list[int]:
        """Codes logged as ``FINAL_STATUS nnn`` by the scenario (expect_error, register)."""
        out = []
        for line in self.log_lines:
            m = re.search(r"FINAL_STATUS (\d{3})", line)
            if m:
                out.append(int(m.group(1)))
        return out

    def logged(self, prefix: str) -> list[str]:
        """Values of ``<log message="PREFIX value ...">`` lines (first word after the prefix)."""
        out = []
        for line in self.log_lines:
            i = line.find(prefix + " ")
            if i >= 0:
                out.append(line[i + len(prefix) + 1 :].split(" ")[0].strip())
        return out

    def messages(self) -> str:
        return self.message_log.read_text("utf-8", "replace") if self.message_log.exists() else ""

    def describe(self) -> str:
        return (
            f"--- SIPp {self.name}: exit {self.returncode}, successful {self.successful}, "
            f"failed {self.failed}{', KILLED' if self.killed else ''} ({self.workdir}) ---\n"
            f"[errors]\n{tail(self.error_log, 3000)}\n[screen]\n{tail(self.screen_file, 2500)}\n"
            f"[messages]\n{tail(self.message_log, 5000)}\n"
        )


def _scenario_defaults(scenario: str) -> dict[str, str]:
    return {
        "caller": "+8613800138000",
        "talk_ms": "1000",
        "hold_ms": "500",
        "ring_ms": "0",
        "ring_wait_ms": "200",
        "answer_pt": "0",
        "answer_codec": "PCMU",
        "expect_status": "200" if Path(scenario).stem == "register" else "any",
        "expires": "60",
        "dtmf_ms": "1500",
        "info_digit": "5",
        "reg_user": "1001",
        "reg_pass": "secret",
        "realm": "ccgw",
    }


class Sipp(ManagedProcess):
    """One SIPp run of a scenario, in the foreground as a subprocess.

    ``scenario``: a file name in tests/data/sipp, a path, or a built-in name ("uac", "uas", ...).
    ``remote``: "host:port" to send to (None for a pure UAS). ``service``: the -s user.
    ``keys``: -key values (scenario [keywords]) over the defaults every scenario here needs
    (``_scenario_defaults`` plus ``audio`` = a generated ``tone_hz`` μ-law file looped,
    ``sdp_port`` = the media port, ``dtmf_pcap`` = a pcap of ``dtmf_digits``); ``audio="off"``
    keeps rtp_stream scenarios silent (use it when a RtpPeer is the media instead).
    ``variables``: -set global variables. ``auth``: (user, password) for [authentication].
    ``timeout``: SIPp's own -timeout (s); :meth:`wait` forces an end a little after it.
    """

    def __init__(
        self,
        scenario: str,
        remote: str | None = None,
        *,
        workdir: Path,
        local_host: str = LOCALHOST,
        local_port: int | None = None,
        service: str = "2000",
        calls: int = 1,
        rate: float | None = None,
        rate_period_ms: int | None = None,
        keys: Mapping[str, str] | None = None,
        variables: Mapping[str, str] | None = None,
        media_port: int | None = None,
        rtp_echo: bool = False,
        auth: tuple[str, str] | None = None,
        transport: str = "u1",
        timeout: float = 30.0,
        tone_hz: float = 1000.0,
        dtmf_digits: str = "5",
        extra_args: Iterable[str] = (),
        name: str | None = None,
        registry: ProcessRegistry | None = None,
    ) -> None:
        path = Path(scenario)
        if not path.is_absolute() and (SIPP_DIR / scenario).exists():
            path = SIPP_DIR / scenario
        self.builtin = path.suffix != ".xml"
        self.scenario = scenario if self.builtin else str(path)
        stem = scenario if self.builtin else path.stem
        super().__init__(name or f"sipp-{stem}-{os.getpid()}-{id(self) % 10000}", workdir, registry)
        self.remote = remote
        self.local_host = local_host
        self.transport = transport
        kind = "tcp" if transport.startswith("t") else "udp"
        self.local_port = local_port or free_port(local_host, kind)  # type: ignore[arg-type]
        self.media_port = media_port or free_port(local_host, "udp", even=True, span=2, step=2)
        self.service = service
        self.calls = calls
        self.rate = rate
        self.rate_period_ms = rate_period_ms
        self.rtp_echo = rtp_echo
        self.auth = auth
        self.timeout = timeout
        self.tone_hz = tone_hz
        self.dtmf_digits = dtmf_digits
        self.extra_args = list(extra_args)
        self.variables = dict(variables or {})
        self.keys = _scenario_defaults(stem)
        self.keys.update(keys or {})
        self.message_log = self.workdir / f"{self.name}_messages.log"
        self.error_log = self.workdir / f"{self.name}_errors.log"
        self.log_file = self.workdir / f"{self.name}_logs.log"
        self.screen_file = self.workdir / f"{self.name}_screen.log"
        self.stat_file = self.workdir / f"{self.name}_stat.csv"
        self.killed = False
        self._result: SippResult | None = None

    @property
    def address(self) -> str:
        """``host:port`` where this SIPp receives SIP (give it to the other side as remote)."""
        return f"{self.local_host}:{self.local_port}"

    def _media_files(self) -> None:
        if self.keys.get("audio") == "off":  # SIPp caches the file at load: it must exist
            quiet = self.workdir / "silence.ulaw"
            quiet.write_bytes(b"\xff" * 160)
            self.keys["audio"] = f"{quiet},0,0"  # loop count 0: never sent
        if "audio" not in self.keys:
            tone = self.workdir / f"tone_{int(self.tone_hz)}.ulaw"
            if not tone.exists():
                audio.write_ulaw_raw(tone, self.tone_hz, seconds=1.0)
            self.keys["audio"] = f"{tone},-1,0"
        if "dtmf_pcap" not in self.keys:
            safe = self.dtmf_digits.replace("*", "s").replace("#", "p")
            pcap = self.workdir / f"dtmf_{safe}.pcap"
            audio.write_dtmf_pcap(pcap, self.dtmf_digits)
            self.keys["dtmf_pcap"] = str(pcap)
        self.keys.setdefault("sdp_port", str(self.media_port))

    def argv(self) -> list[str]:
        if SIPP_BIN is None:
            raise RuntimeError("sipp is not installed")
        self._media_files()
        argv = [SIPP_BIN]
        if self.remote:
            argv.append(self.remote)
        argv += ["-sn", self.scenario] if self.builtin else ["-sf", self.scenario]
        argv += [
            "-i", self.local_host, "-p", str(self.local_port), "-bind_local",
            "-mi", self.local_host, "-mp", str(self.media_port),
            "-t", self.transport, "-s", self.service, "-m", str(self.calls),
            "-nostdin", "-timeout", f"{max(1, round(self.timeout))}s",
            "-trace_err", "-error_file", str(self.error_log),
            "-trace_msg", "-message_file", str(self.message_log),
            "-trace_logs", "-log_file", str(self.log_file),
            "-trace_screen", "-screen_file", str(self.screen_file),
            "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
        ]  # fmt: skip
        if self.rate is not None:
            argv += ["-r", str(self.rate)]
        if self.rate_period_ms is not None:
            argv += ["-rp", str(self.rate_period_ms)]
        if self.rtp_echo:
            argv.append("-rtp_echo")
        if self.auth:
            argv += ["-au", self.auth[0], "-ap", self.auth[1]]
        for k, v in self.keys.items():
            argv += ["-key", k, str(v)]
        for k, v in self.variables.items():
            argv += ["-set", k, str(v)]
        return argv + self.extra_args

    def start(self, wait_bound: float = 5.0) -> Sipp:
        """Start SIPp; returns once its SIP socket is bound (so a UAS is ready for calls)."""
        self._spawn(self.argv())
        kind = "tcp" if self.transport.startswith("t") else "udp"
        deadline = time.monotonic() + wait_bound
        while time.monotonic() < deadline and self.running():
            if _port_in_use(self.local_host, self.local_port, kind):
                return self
            time.sleep(0.02)
        if not self.running():
            return self  # ended at once (bad scenario, ...): wait() reports it
        raise RuntimeError(f"SIPp did not bind {self.address}\n{self.describe()}")

    def stop(self) -> None:
        """End the run now. Two SIGUSR1 ask SIPp to abort its calls and exit (one only stops
        new calls), but with an INVITE still retransmitting 3.6.1 keeps running; SIGTERM then
        exits at once through sipp_exit(), which still writes the final stats. SIGKILL last."""
        if not self.running():
            return
        self.killed = True
        assert self.proc is not None
        for sig, wait in ((signal.SIGUSR1, 0.05), (signal.SIGUSR1, 0.5), (signal.SIGTERM, 2.0)):
            self.signal(sig)
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                pass
        self.kill(0.5)

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to end (default: its -timeout plus 5 s), forcing it if needed."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} not started")
        try:
            self.proc.wait(self.timeout + 5 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.stop()
        return self.result()

    def run(self, timeout: float | None = None) -> SippResult:
        """start() then wait()."""
        self.start()
        return self.wait(timeout)

    def result(self) -> SippResult:
        rc = self.proc.returncode if self.proc else None
        successful, failed = self._parse_stats()
        log_lines = []
        if self.log_file.exists():
            log_lines = self.log_file.read_text("utf-8", "replace").splitlines()
        self._result = SippResult(
            name=self.name,
            returncode=None if self.killed and rc is not None and rc < 0 else rc,
            successful=successful,
            failed=failed,
            killed=self.killed,
            workdir=self.workdir,
            message_log=self.message_log,
            error_log=self.error_log,
            log_file=self.log_file,
            screen_file=self.screen_file,
            stat_file=self.stat_file,
            stdout_file=self.stdout_path,
            log_lines=log_lines,
        )
        return self._result

    def _parse_stats(self) -> tuple[int, int]:
        # -trace_stat: ';'-separated CSV, one row per -fd period plus the final one
        if self.stat_file.exists():
            with open(self.stat_file, newline="", encoding="utf-8", errors="replace") as f:
                rows = list(csv.reader(f, delimiter=";"))
            if len(rows) >= 2:
                head, last = rows[0], rows[-1]
                try:
                    return (
                        int(last[head.index("SuccessfulCall(C)")]),
                        int(last[head.index("FailedCall(C)")]),
                    )
                except (ValueError, IndexError):
                    pass
        text = self.screen_file.read_text("utf-8", "replace") if self.screen_file.exists() else ""
        ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", text)
        ko = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", text)
        return (int(ok[-1]) if ok else 0, int(ko[-1]) if ko else 0)

    def describe(self) -> str:
        res = self._result or self.result()
        return super().describe() + res.describe()

    def __enter__(self) -> Sipp:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.kill()


# --------------------------------------------------------------------------------------------
# baresip


class Baresip(ManagedProcess):
    """A headless baresip phone driven over ``ctrl_tcp`` (netstring JSON), audio checkable.

    Plays an 8 kHz sine of ``tone_hz`` through ``aufile``; ``sndfile`` records what it received
    (``*-dec.wav``) and sent (``*-enc.wav``) per call. ``registrar`` "host:port" makes the AoR
    ``sip:EXT@host:port`` registered every ``regint`` s (default 60) with ``password``;
    without it the AoR is the phone's own address and ``regint=0``.
    """

    def __init__(
        self,
        *,
        workdir: Path,
        ext: str = "1001",
        registrar: str | None = None,
        password: str | None = None,
        answermode: Literal["auto", "manual"] = "auto",
        regint: int | None = None,
        codecs: Iterable[str] = ("PCMU",),
        tone_hz: float = 440.0,
        tone_seconds: float = 30.0,
        sip_port: int | None = None,
        ctrl_port: int | None = None,
        account_params: str = "",
        timeout: float = 60.0,
        name: str | None = None,
        registry: ProcessRegistry | None = None,
    ) -> None:
        super().__init__(name or f"baresip-{ext}", workdir, registry)
        self.ext = ext
        self.registrar = registrar
        self.password = password
        self.answermode = answermode
        self.regint = regint if regint is not None else (60 if registrar else 0)
        self.codecs = list(codecs)
        self.tone_hz = tone_hz
        self.tone_seconds = tone_seconds
        # SIP on sip_port (UDP+TCP), TLS on sip_port+1: leave the gap free
        self.sip_port = sip_port or free_port(LOCALHOST, "both", span=2)
        self.ctrl_port = ctrl_port or free_port(LOCALHOST, "tcp")
        self.account_params = account_params
        self.timeout = timeout
        # sndfile builds "<snd_path>/dump-<date>-dec.wav" in a 128-byte buffer: keep paths short
        self.confdir = Path(tempfile.mkdtemp(prefix="ccgwbs"))
        self.rec_dir = self.confdir / "rec"
        self.rec_dir.mkdir()
        if registry is not None:
            registry.on_cleanup(lambda: shutil.rmtree(self.confdir, ignore_errors=True))
        link = self.workdir / f"{self.name}.conf"
        with contextlib.suppress(OSError):
            link.symlink_to(self.confdir)
        self.tone_path = self.confdir / f"tone{int(tone_hz)}.wav"
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._responses: queue.Queue[dict[str, Any]] = queue.Queue()
        self._events: list[dict[str, Any]] = []
        self._events_cv = threading.Condition()
        self._token = 0
        self._cmd_lock = threading.Lock()

    # -- configuration

    @property
    def aor(self) -> str:
        host = self.registrar or f"{LOCALHOST}:{self.sip_port}"
        return f"sip:{self.ext}@{host}"

    @property
    def uri(self) -> str:
        """Where to send a call straight to this phone."""
        return f"sip:{self.ext}@{LOCALHOST}:{self.sip_port}"

    def account_line(self) -> str:
        parts = [f"<{self.aor}>"]
        if self.password is not None:
            parts.append(f"auth_pass={self.password}")
        parts += [
            f"answermode={self.answermode}",
            f"regint={self.regint}",
            f"audio_codecs={','.join(self.codecs)}",
        ]
        if self.account_params:
            parts.append(self.account_params.lstrip(";"))
        return ";".join(parts)

    def write_config(self) -> None:
        audio.write_tone_wav(self.tone_path, self.tone_hz, self.tone_seconds)
        config = f"""\
poll_method epoll
sip_listen {LOCALHOST}:{self.sip_port}
net_interface {LOCALHOST}
audio_source aufile,{self.tone_path}
audio_player aufile,{self.confdir / "heard.wav"}
audio_alert aufile,/dev/null
audio_srate 8000
audio_channels 1
rtp_ports 10000-60000
module_path {BARESIP_MODULES}
module g711.so
module aufile.so
module sndfile.so
snd_path {self.rec_dir}
module ctrl_tcp.so
ctrl_tcp_listen {LOCALHOST}:{self.ctrl_port}
module_app account.so
module_app menu.so
"""
        (self.confdir / "config").write_text(config)
        (self.confdir / "accounts").write_text(self.account_line() + "\n")
        (self.confdir / "contacts").write_text("")

    # -- lifecycle

    def start(self, ready_timeout: float = 10.0) -> Baresip:
        """Write the config, start baresip, connect to ctrl_tcp (bounded by ``ready_timeout``)."""
        if BARESIP_BIN is None:
            raise RuntimeError("baresip is not installed")
        self.write_config()
        self._spawn([BARESIP_BIN, "-f", str(self.confdir), "-t", str(int(self.timeout))])
        deadline = time.monotonic() + ready_timeout
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"baresip exited at start\n{self.describe()}")
            try:
                self._sock = socket.create_connection((LOCALHOST, self.ctrl_port), timeout=1.0)
                break
            except OSError as e:
                last_err = e
                time.sleep(0.05)
        else:
            raise RuntimeError(f"ctrl_tcp not reachable: {last_err}\n{self.describe()}")
        self._reader = threading.Thread(target=self._read_loop, name=self.name, daemon=True)
        self._reader.start()
        # menu and ctrl_tcp are up once a command gets an answer
        self.command("about", timeout=max(1.0, deadline - time.monotonic()))
        return self

    def stop(self) -> None:
        """``quit`` over ctrl_tcp, then end the process by PID if it is still there."""
        if self.running() and self._sock is not None:
            with contextlib.suppress(Exception):
                self._send({"command": "quit"})
            assert self.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(1.0)  # longer only if it is unregistering from a dead registrar
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        self.kill(0.5)

    def __enter__(self) -> Baresip:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- ctrl_tcp

    def _send(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        assert self._sock is not None
        self._sock.sendall(str(len(data)).encode() + b":" + data + b",")

    def _read_loop(self) -> None:
        buf = b""
        sock = self._sock
        assert sock is not None
        sock.settimeout(None)
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while True:  # netstrings: <len>:<json>,
                colon = buf.find(b":")
                if colon < 0:
                    break
                try:
                    n = int(buf[:colon])
                except ValueError:
                    buf = b""
                    break
                if len(buf) < colon + 1 + n + 1:
                    break
                payload = buf[colon + 1 : colon + 1 + n]
                buf = buf[colon + 1 + n + 1 :]
                try:
                    msg = json.loads(payload)
                except ValueError:
                    continue
                if msg.get("response"):
                    self._responses.put(msg)
                elif msg.get("event"):
                    with self._events_cv:
                        msg["_t"] = time.monotonic()
                        self._events.append(msg)
                        self._events_cv.notify_all()

    def command(self, name: str, params: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Run a menu command (``dial``, ``hangup``, ``accept``, ``reginfo``, ``listcalls`` ...);
        returns ctrl_tcp's response ``{"response": true, "ok": bool, "data": str, ...}``."""
        if self._sock is None:
            raise RuntimeError(f"{self.name} not started")
        with self._cmd_lock:
            self._token += 1
            token = f"t{self._token}"
            msg: dict[str, Any] = {"command": name, "token": token}
            if params is not None:
                msg["params"] = params
            self._send(msg)
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name}: no reply to {name!r}\n{self.describe()}")
                try:
                    resp = self._responses.get(timeout=left)
                except queue.Empty:
                    continue
                if resp.get("token") == token:
                    return resp

    def dial(self, uri: str) -> dict[str, Any]:
        return self.command("dial", uri)

    def hangup(self) -> dict[str, Any]:
        return self.command("hangup")

    def accept(self) -> dict[str, Any]:
        return self.command("accept")

    def reginfo(self) -> str:
        data = str(self.command("reginfo").get("data", ""))
        return re.sub(r"\x1b\[[0-9;]*m", "", data)

    def is_registered(self) -> bool:
        """``reginfo`` shows ``OK`` after the AoR once the last REGISTER got a 200."""
        info = self.reginfo()
        return any(self.ext in line and re.search(r"\bOK\b", line) for line in info.splitlines())

    def wait_registered(self, timeout: float = 5.0) -> None:
        """Poll ``reginfo`` (reliable even if the REGISTER_OK event came before we connected)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_registered():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not registered:\n{self.reginfo()}\n{self.describe()}")

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._events_cv:
            return list(self._events)

    def wait_event(self, type_: str, timeout: float = 5.0, since: int = 0) -> dict[str, Any]:
        """First event of ``type_`` (``CALL_INCOMING``, ``CALL_ESTABLISHED``, ``CALL_CLOSED``,
        ``REGISTER_OK``, ...) at index >= ``since`` in :attr:`events`."""
        deadline = time.monotonic() + timeout
        with self._events_cv:
            while True:
                for ev in self._events[since:]:
                    if ev.get("type") == type_:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [e.get("type") for e in self._events]
                    raise TimeoutError(f"{self.name}: no {type_} (saw {seen})\n{self.describe()}")
                self._events_cv.wait(left)

    # -- results

    def recordings(self, kind: Literal["dec", "enc"] | None = None) -> list[Path]:
        """WAVs written by sndfile, oldest first: ``dump-<time>-dec.wav`` is what the phone
        received, ``-enc.wav`` what it sent. One pair per call (names have 1 s resolution).
        The WAV header is finalised when the call ends; audio.read_wav copes before that."""
        pattern = f"*-{kind}.wav" if kind else "*.wav"
        return sorted(self.rec_dir.glob(pattern), key=lambda p: (p.stat().st_mtime, p.name))

    def describe(self) -> str:
        events = [e.get("type") for e in self.events]
        return super().describe() + f"[events] {events}\n[accounts] {self.account_line()}\n"


# --------------------------------------------------------------------------------------------
# a Python RTP endpoint


class RtpPeer:
    """A UDP socket standing in as a media endpoint: records what arrives, can echo it back
    and/or send a PCMU tone (symmetric RTP from the same socket), with analysis helpers.

    Put ``peer.port`` in an SDP (SIPp ``-key sdp_port``) to see exactly what a far end sends.
    """

    def __init__(
        self,
        host: str = LOCALHOST,
        port: int = 0,
        *,
        echo: bool = False,
        registry: ProcessRegistry | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.1)
        self.host, self.port = self.sock.getsockname()
        self.echo = echo
        self.packets: list[tuple[float, tuple[str, int], bytes]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"rtp-{self.port}", daemon=True)
        self._sender: threading.Thread | None = None
        self.remote: tuple[str, int] | None = None
        self._thread.start()
        if registry is not None:
            registry.on_cleanup(self.close)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            with self._lock:
                self.packets.append((time.monotonic(), addr, data))
            if self.echo:
                with contextlib.suppress(OSError):
                    self.sock.sendto(data, addr)

    def send_tone(
        self, remote: tuple[str, int], freq_hz: float, seconds: float, payload_type: int = 0
    ) -> None:
        """Send a G.711 tone to ``remote`` in 20 ms packets, in the background."""
        self.remote = remote
        samples = audio.tone_samples(freq_hz, seconds)
        data = audio.alaw_encode(samples) if payload_type == 8 else audio.ulaw_encode(samples)

        def run() -> None:
            seq, ts, ssrc = 1, 0, 0x5A5A0001
            start = time.monotonic()
            for i in range(0, len(data) - 159, 160):
                if self._stop.is_set():
                    return
                hdr = bytes([0x80, payload_type & 0x7F]) + seq.to_bytes(2, "big")
                pkt = hdr + ts.to_bytes(4, "big") + ssrc.to_bytes(4, "big") + data[i : i + 160]
                with contextlib.suppress(OSError):
                    self.sock.sendto(pkt, remote)
                seq, ts = (seq + 1) & 0xFFFF, ts + 160
                delay = start + (i // 160 + 1) * 0.02 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

        self._sender = threading.Thread(target=run, daemon=True)
        self._sender.start()

    def rtp(self) -> list[tuple[int, int, int, bool, bytes]]:
        """Received packets parsed as RTP: (payload_type, seq, timestamp, marker, payload)."""
        out = []
        with self._lock:
            pkts = list(self.packets)
        for _, _, d in pkts:
            if len(d) < 12 or d[0] >> 6 != 2:
                continue
            cc = d[0] & 0x0F
            off = 12 + 4 * cc
            if d[0] & 0x10 and len(d) >= off + 4:  # header extension
                off += 4 + 4 * int.from_bytes(d[off + 2 : off + 4], "big")
            payload = d[off:]
            if d[0] & 0x20 and payload:  # padding
                payload = payload[: -payload[-1]]
            out.append(
                (
                    d[1] & 0x7F,
                    int.from_bytes(d[2:4], "big"),
                    int.from_bytes(d[4:8], "big"),
                    bool(d[1] & 0x80),
                    payload,
                )
            )
        return out

    def count(self, payload_type: int | None = None) -> int:
        return sum(1 for p in self.rtp() if payload_type is None or p[0] == payload_type)

    def wait_packets(self, n: int, timeout: float = 5.0, payload_type: int | None = None) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.count(payload_type)
            if c >= n:
                return c
            time.sleep(0.02)
        return self.count(payload_type)

    def samples(self, payload_type: int = 0) -> np.ndarray:
        """Received G.711 audio of ``payload_type`` (0 PCMU, 8 PCMA) decoded to int16, in
        arrival order."""
        raw = b"".join(p[4] for p in self.rtp() if p[0] == payload_type)
        return audio.alaw_decode(raw) if payload_type == 8 else audio.ulaw_decode(raw)

    def dominant_frequency(self, payload_type: int = 0, skip_s: float = 0.1) -> float:
        samples = self.samples(payload_type)
        return audio.dominant_frequency_of(samples, 8000, skip_s)

    def dtmf_digits(self, payload_type: int = 101) -> str:
        """Digits of RFC 4733 events received (one per event, keyed by RTP timestamp)."""
        names = {v: k for k, v in audio.DTMF_EVENTS.items()}
        seen: dict[int, str] = {}
        for pt, _seq, ts, _m, payload in self.rtp():
            if pt == payload_type and len(payload) >= 4 and ts not in seen:
                seen[ts] = names.get(payload[0], "?")
        return "".join(seen[t] for t in sorted(seen))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        if self._sender is not None:
            self._sender.join(1)
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RtpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
