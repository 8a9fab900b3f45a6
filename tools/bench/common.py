"""Shared plumbing of the benchmarks in ``tools/bench``: ports, pinned child processes, /proc
readings, SIPp runs and their statistics, and a small TOML writer for generated site configs.

Every child is started in its own session with output to files in a work directory, is pinned to a
core list with ``taskset`` when asked, and is ended by its own PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CLK_TCK",
    "REPO",
    "SIPP_DIR",
    "Child",
    "ProcSampler",
    "SippStats",
    "core_times",
    "cores_busy_percent",
    "cpu_list",
    "cpu_seconds",
    "free_udp_port",
    "process_tree",
    "read_sipp_stats",
    "rss_kb",
    "toml_dumps",
    "udp_bound",
    "wait_for",
    "wait_quiet",
]

REPO = Path(__file__).resolve().parents[2]
SIPP_DIR = Path(__file__).resolve().parent / "sipp"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOCALHOST = "127.0.0.1"

# --------------------------------------------------------------------------------------------
# ports

_handed_out: set[int] = set()


def _udp_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _tcp_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_udp_port(
    host: str = LOCALHOST,
    *,
    span: int = 1,
    even: bool = False,
    tcp: bool = False,
    within: tuple[int, int] | None = None,
) -> int:
    """A port ``p`` such that ``p .. p+span-1`` are free on ``host`` now (UDP, and TCP too when
    ``tcp``), from the kernel's ephemeral range or from ``within`` (lo, hi): outside the ephemeral
    range no other program's port-0 bind can race us. Never returns a port handed out before by
    this process."""
    for _ in range(500):
        if within is not None:
            port = random.randrange(within[0], within[1] - span)
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
        if even and port % 2:
            port += 1
        ports = range(port, port + span)
        if ports[-1] > 65535 or any(p in _handed_out for p in ports):
            continue
        if all(_udp_free(host, p) and (not tcp or _tcp_free(host, p)) for p in ports):
            _handed_out.update(ports)
            return port
    raise RuntimeError(f"no free UDP port range of {span} on {host}")


def udp_bound(port: int, host: str = LOCALHOST) -> bool:
    """True when some socket is bound to UDP ``host:port`` (read from /proc/net/udp)."""
    want = f"{socket.htonl(int.from_bytes(socket.inet_aton(host), 'big')):08X}:{port:04X}"
    any_addr = f"00000000:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return not _udp_free(host, port)
    return any(line.split()[1] in (want, any_addr) for line in lines if len(line.split()) > 1)


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


# --------------------------------------------------------------------------------------------
# /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now (Kamailio forks its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of ``pids`` (all threads), in seconds; a vanished PID counts 0."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # proc(5): utime is field 14, stime 15 (1-based; fields[0] here is field 3)
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def core_times() -> dict[int, tuple[int, int]]:
    """Per core: (busy, total) jiffies since boot, from /proc/stat. Busy is user + nice + system
    time of processes: irq/softirq time is left out, since on loopback the kernel's packet
    processing of the bench's own traffic lands there, charged to no process."""
    out: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            v = [int(x) for x in vals[:8]]  # user nice system idle iowait irq softirq steal
            out[int(name[3:])] = (v[0] + v[1] + v[2], sum(v))
    return out


def cores_busy_percent(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cores: Iterable[int]
) -> float:
    """Mean busy % of ``cores`` between two :func:`core_times` snapshots (100 = one full core)."""
    busy = total = 0
    for c in cores:
        if c in before and c in after:
            busy += after[c][0] - before[c][0]
            total += after[c][1] - before[c][1]
    return round(100.0 * busy / total, 1) if total else 0.0


def wait_quiet(
    cores: Iterable[int], *, busy_below: float, timeout: float, window: float = 2.0
) -> tuple[float, float]:
    """Wait until ``cores`` are less than ``busy_below`` % busy over ``window`` s (other jobs on a
    shared machine), at most ``timeout`` s. Returns (seconds waited, last busy %)."""
    cores = list(cores)
    start = time.monotonic()
    while True:
        before = core_times()
        time.sleep(window)
        busy = cores_busy_percent(before, core_times(), cores)
        waited = time.monotonic() - start
        if busy < busy_below or waited >= timeout:
            return round(waited, 1), busy


def cpu_list(text: str) -> list[int]:
    """A taskset CPU list (``"0"``, ``"0,2"``, ``"1-3"``) as core numbers."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    """A memory line of /proc/<pid>/status in kB (``VmRSS``, ``VmHWM`` = peak RSS); 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class ProcSampler:
    """Samples CPU time and RSS of a process (tree) every ``interval`` s in a thread, and an
    optional ``probe`` (e.g. the gateway's active calls) beside them."""

    def __init__(
        self,
        pid: int,
        *,
        tree: bool = False,
        interval: float = 0.5,
        probe: Callable[[], int | None] | None = None,
    ) -> None:
        self.pid = pid
        self.tree = tree
        self.interval = interval
        self.probe = probe
        self.samples: list[tuple[float, float, int, int | None]] = []  # t, cpu s, rss kB, probe
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pids(self) -> list[int]:
        return process_tree(self.pid) if self.tree else [self.pid]

    def sample(self) -> tuple[float, float, int, int | None]:
        pids = self._pids()
        value = None
        if self.probe is not None:
            with contextlib.suppress(Exception):
                value = self.probe()
        s = (time.monotonic(), cpu_seconds(pids), sum(rss_kb(p) for p in pids), value)
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> ProcSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()

    def cpu_percent(self) -> float:
        """Mean CPU use between the first and the last sample, % of one core."""
        if len(self.samples) < 2:
            return 0.0
        (t0, c0, *_), (t1, c1, *_) = self.samples[0], self.samples[-1]
        return round(100.0 * (c1 - c0) / max(t1 - t0, 1e-9), 1)

    def cpu_percent_peak(self, window: float = 5.0) -> float:
        """Highest CPU use over any ``window`` seconds, % of one core."""
        best = 0.0
        j = 0
        for i in range(len(self.samples)):
            while self.samples[i][0] - self.samples[j][0] > window:
                j += 1
            dt = self.samples[i][0] - self.samples[j][0]
            if dt >= window * 0.8:
                best = max(best, (self.samples[i][1] - self.samples[j][1]) / dt)
        return round(100.0 * best, 1)

    def rss_peak_kb(self) -> int:
        return max((s[2] for s in self.samples), default=0)

    def at_probe_peak(self) -> tuple[int, int] | None:
        """(probe value, RSS kB) of the sample with the highest probe value."""
        with_probe = [s for s in self.samples if s[3] is not None]
        if not with_probe:
            return None
        best = max(with_probe, key=lambda s: (s[3], s[2]))
        return int(best[3] or 0), best[2]


# --------------------------------------------------------------------------------------------
# child processes


class Child:
    """A child process with its output in ``workdir/<name>.{out,err}``, pinned with taskset when
    ``cpus`` is given, ended by its own PID."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        workdir: Path,
        *,
        cpus: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.argv = list(argv)
        if cpus is not None:
            taskset = shutil.which("taskset")
            if taskset is None:
                raise RuntimeError("taskset is not installed (util-linux)")
            # taskset execs the program: the PID we hold is the program's own
            self.argv = [taskset, "-c", cpus, *self.argv]
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        (workdir / f"{name}.cmd").write_text(" ".join(self.argv) + "\n")
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=str(workdir),
                env={**os.environ, **(env or {})},
                start_new_session=True,  # no controlling tty: SIPp stops on SIGTTOU otherwise
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 3.0, sig: int = signal.SIGTERM) -> int | None:
        """``sig`` to our PID, wait ``grace`` s, then SIGKILL. The exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            if self.wait(grace) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.wait(5)
        return self.proc.returncode

    def stdout(self) -> str:
        return self.out.read_text("utf-8", "replace") if self.out.exists() else ""

    def stderr(self) -> str:
        return self.err.read_text("utf-8", "replace") if self.err.exists() else ""

    def tail(self, n: int = 1500) -> str:
        return (self.stdout()[-n:] + "\n" + self.stderr()[-n:]).strip()


# --------------------------------------------------------------------------------------------
# SIPp statistics


@dataclass
class SippStats:
    """The cumulative counters of the last row of a SIPp ``-trace_stat`` file."""

    created: int = 0
    successful: int = 0
    failed: int = 0
    current: int = 0
    retransmissions: int = 0
    peak_current: int = 0
    elapsed_s: float = 0.0
    response_ms: dict[str, float] = field(default_factory=dict)  # rtd name → mean, ms
    failures: dict[str, int] = field(default_factory=dict)  # failure kind → count


def _duration_s(text: str) -> float:
    # SIPp writes durations as HH:MM:SS or HH:MM:SS:microseconds
    parts = text.strip().split(":")
    try:
        h, m, s = int(parts[0]), int(parts[1]), int(parts[2])
        us = int(parts[3]) if len(parts) > 3 else 0
    except (ValueError, IndexError):
        return 0.0
    return h * 3600 + m * 60 + s + us / 1e6


def read_sipp_stats(path: Path) -> SippStats | None:
    """Parse a ``-trace_stat`` CSV (semicolon separated); None if missing or empty."""
    try:
        rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
    except OSError:
        return None
    if len(rows) < 2:
        return None
    head = rows[0]
    data = [r for r in rows[1:] if len(r) >= len(head) - 1]
    if not data:
        return None
    last = dict(zip(head, data[-1], strict=False))

    def num(key: str) -> int:
        try:
            return int(float(last.get(key, "0") or 0))
        except ValueError:
            return 0

    st = SippStats(
        created=num("TotalCallCreated"),
        successful=num("SuccessfulCall(C)"),
        failed=num("FailedCall(C)"),
        current=num("CurrentCall"),
        retransmissions=num("Retransmissions(C)"),
        elapsed_s=_duration_s(last.get("ElapsedTime(C)", "0")),
    )
    idx = head.index("CurrentCall") if "CurrentCall" in head else -1
    if idx >= 0:
        st.peak_current = max(int(r[idx] or 0) for r in data if r[idx].isdigit())
    for key, value in last.items():
        if key.startswith("ResponseTime") and key.endswith("(C)") and "StDev" not in key:
            st.response_ms[key[len("ResponseTime") : -3]] = round(_duration_s(value) * 1e3, 2)
        elif key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)":
            n = num(key)
            if n:
                st.failures[key[len("Failed") : -3]] = n
    return st


# --------------------------------------------------------------------------------------------
# TOML


def _toml_key(key: str) -> str:
    bare = key and all(c.isalnum() or c in "-_" for c in key) and key.isascii()
    return key if bare else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def toml_dumps(doc: Mapping[str, Any]) -> str:
    """A TOML document for a mapping of tables and arrays of tables (nested tables inline)."""
    lines: list[str] = []
    for name, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"[{_toml_key(name)}]")
            lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
            lines.append("")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines.append(f"[[{_toml_key(name)}]]")
                lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items())
                lines.append("")
        else:
            lines.insert(0, f"{_toml_key(name)} = {_toml_value(value)}")
    return "\n".join(lines)
