"""`rtp` benchmark: how many concurrent relayed G.711 calls one core holds.

``python -m tools.bench.rtp [--quick]`` builds ``tools/bench/rtpgen.c`` into a temporary
directory, then for each step N runs

* the system under test, ``python -m tools.bench.rtp serve --calls N`` pinned to one core
  (uvloop, the real :class:`gateway.media.relay.MediaRelay` on 127.0.0.1 with N sessions,
  forwarding with ``--engine python`` (asyncio protocols) or ``native`` (the C worker thread of
  :mod:`gateway.media.fastpath`, the default where it is built)), and
* ``rtpgen`` pinned to another core: two phones per call sending 160-octet PCMU every 20 ms
  (50 packets/s each way), measuring loss per stream and one-way latency;

and beside it the generator alone (``rtpgen -m direct``, phone to phone, no relay) for its own
ceiling and loopback baseline. A step passes with loss < 0.1 % and p99 added latency (relay p99
minus direct p99) < 5 ms; the answer is the largest passing N. The JSON report goes to stdout.
See ``tools/bench/rtp_README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
GEN_SOURCE = Path(__file__).with_name("rtpgen.c")

LOSS_LIMIT_PCT = 0.1
P99_ADDED_LIMIT_US = 5000.0
TARGET_CALLS = 500
DEFAULT_STEPS = (100, 200, 300, 500, 700, 1000, 1300, 1600, 2000)
DEFAULT_PORTS = (20000, 31999)


# --------------------------------------------------------------------------------------------
# System under test: `python -m tools.bench.rtp serve`
# --------------------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    """utime + stime of this process from /proc/self/stat (proc(5) fields 14 and 15)."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "nonvoluntary_ctxt_switches", "voluntary_ctxt_switches"):
                out[key] = int(value.split()[0])
    return out


def _udp_drops(ports: set[int]) -> int:
    """Kernel receive-buffer drops of our 127.0.0.1 UDP sockets (/proc/net/udp ``drops``)."""
    total = 0
    try:
        with open("/proc/self/net/udp") as f:
            next(f)
            for line in f:
                cols = line.split()
                addr, _, port = cols[1].partition(":")
                if addr == "0100007F" and int(port, 16) in ports:
                    total += int(cols[-1])
    except OSError:
        return -1
    return total


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _serve(
    calls: int, ports: tuple[int, int], stall_timeout: float | None, engine: str, coalesce_us: int
) -> None:
    from gateway.media.relay import MediaRelay

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    base = _status()
    relay = MediaRelay("127.0.0.1", ports, stall_timeout, engine=engine, coalesce_us=coalesce_us)
    sessions = [await relay.open_session(f"bench-{i}") for i in range(calls)]
    local = [[s.leg("a").local_port, s.leg("b").local_port] for s in sessions]
    rtp_ports = {p for pair in local for p in pair}
    _emit(
        {
            "ports": local,
            "engine": relay.engine,
            "rss_kb_base": base["VmRSS"],
            "rss_kb_open": _status()["VmRSS"],
        }
    )
    mark: dict[str, Any] = {}
    while line := await reader.readline():
        cmd = json.loads(line)
        what = cmd["cmd"]
        if what == "phones":
            for session, (pa, pb) in zip(sessions, cmd["phones"], strict=True):
                session.set_remote("a", "127.0.0.1", pa, 0)
                session.set_remote("b", "127.0.0.1", pb, 0)
            _emit({"ready": True})
        elif what == "mark":
            mark = {
                "wall": time.monotonic(),
                "cpu": _cpu_seconds(),
                "totals": relay.totals,
                "status": _status(),
                "drops": _udp_drops(rtp_ports),
            }
            _emit({"marked": True})
        elif what == "stop":
            wall = time.monotonic() - mark["wall"]
            cpu = _cpu_seconds() - mark["cpu"]
            status = _status()
            totals = relay.totals
            delta = {
                k: totals[k] - mark["totals"][k]
                for k in ("packets_in", "packets_relayed", "packets_dropped", "packets_foreign")
            }
            lost_rfc3550 = sum(s.stats(leg)["lost"] for s in sessions for leg in ("a", "b"))
            queue_delay = None
            if relay._fast is not None:  # native: how long packets sat in the relay's sockets
                n, n1, n5, longest = relay._fast.queue_delay()
                queue_delay = {
                    "packets": n,
                    "waited_1ms": n1,
                    "waited_5ms": n5,
                    "longest_us": round(longest * 1e6, 1),
                }
            _emit(
                {
                    "calls": calls,
                    "wall_s": round(wall, 3),
                    "cpu_s": round(cpu, 3),
                    "cpu_pct": round(100.0 * cpu / wall, 2),
                    "rss_kb_base": base["VmRSS"],
                    "rss_kb": status["VmRSS"],
                    "rss_kb_peak": status["VmHWM"],
                    "involuntary_ctx_switches": status["nonvoluntary_ctxt_switches"]
                    - mark["status"]["nonvoluntary_ctxt_switches"],
                    "socket_drops": _udp_drops(rtp_ports) - mark["drops"],
                    "lost_rfc3550_total": lost_rfc3550,
                    "native_queue_delay": queue_delay,
                    "totals": delta,
                    "sessions_active": totals["sessions_active"],
                }
            )
            break
    await relay.close()


def serve_main(argv: list[str]) -> int:
    """Entry point of the system under test (run by the benchmark, not by hand)."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench.rtp serve")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--ports", default=f"{DEFAULT_PORTS[0]}-{DEFAULT_PORTS[1]}")
    parser.add_argument("--stall-timeout", type=float, default=30.0)
    parser.add_argument("--asyncio", action="store_true", help="stdlib loop instead of uvloop")
    parser.add_argument("--engine", choices=("python", "native"), default="native")
    parser.add_argument("--coalesce-us", type=int, default=100)
    args = parser.parse_args(argv)
    lo, _, hi = args.ports.partition("-")
    _raise_nofile()
    coro = _serve(args.calls, (int(lo), int(hi)), args.stall_timeout, args.engine, args.coalesce_us)
    if args.asyncio:
        asyncio.run(coro)
    else:
        import uvloop

        uvloop.run(coro)
    return 0


# --------------------------------------------------------------------------------------------
# Orchestrator
# --------------------------------------------------------------------------------------------


class BenchError(RuntimeError):
    """A child process died, said something unexpected or took too long."""


class _Child:
    """A child process spoken to in JSON lines, with deadlines; killed by its own PID."""

    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.name = name
        self.err_path = workdir / f"{name}.stderr"
        self._err: IO[bytes] = open(self.err_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._buf = b""
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._fd, selectors.EVENT_READ)

    def line(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no answer within {timeout:.0f} s{self._tail()}")
            if not self._sel.select(left):
                continue
            chunk = os.read(self._fd, 1 << 20)
            if not chunk:
                raise BenchError(f"{self.name}: exited ({self.proc.poll()}){self._tail()}")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\n", 1)
        try:
            obj: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise BenchError(f"{self.name}: not JSON: {raw[:200]!r}") from None
        return obj

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        obj = self.line(timeout)
        if key not in obj and obj.get("event") != key:
            raise BenchError(f"{self.name}: expected {key!r}, got {str(obj)[:200]}")
        return obj

    def send(self, data: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data.encode())
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def _tail(self) -> str:
        self._err.flush()
        try:
            text = self.err_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        return f": {text[-600:]}" if text else ""

    def close(self, timeout: float = 5.0) -> None:
        """Wait for the process to end, else kill it by its PID."""
        try:
            self.close_stdin()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # SIGKILL to self.proc.pid only
            self.proc.wait(5)
        self._sel.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()


def _pinned(core: int | None, argv: list[str], priority: str = "normal") -> list[str]:
    """``taskset -c core`` (and ``nice -n -10`` or ``chrt -f 10``) in front of ``argv``."""
    if priority == "nice" and shutil.which("nice"):
        argv = ["nice", "-n", "-10", *argv]
    elif priority == "fifo" and shutil.which("chrt"):
        argv = ["chrt", "-f", "10", *argv]
    if core is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", str(core), *argv]
    return argv  # no taskset: unpinned, reported in env


def _build(workdir: Path, cc: str) -> Path:
    out = workdir / "rtpgen"
    subprocess.run([cc, "-O2", "-o", str(out), str(GEN_SOURCE)], check=True, timeout=120)
    return out


def _gen_argv(gen: Path, mode: str, calls: int, opt: argparse.Namespace) -> list[str]:
    argv = [str(gen), "-m", mode, "-n", str(calls), "-w", str(opt.warmup), "-d", str(opt.duration)]
    if opt.spin:
        argv.append("-s")
    return _pinned(opt.gen_core, argv, opt.priority)


def _run_direct(gen: Path, calls: int, opt: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    child = _Child(
        "rtpgen-direct",
        _gen_argv(gen, "direct", calls, opt),
        workdir,
    )
    try:
        child.expect("phones", 30)
        child.expect("measure", opt.warmup + 30)
        child.expect("end", opt.duration + 30)
        return child.expect("mode", 30)
    finally:
        child.close()


def _run_relay(gen: Path, calls: int, opt: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    serve_argv = [
        sys.executable,
        "-m",
        "tools.bench.rtp",
        "serve",
        "--calls",
        str(calls),
        "--ports",
        opt.ports,
        "--engine",
        opt.engine,
        "--coalesce-us",
        str(opt.coalesce_us),
    ]
    if opt.asyncio:
        serve_argv.append("--asyncio")
    server = _Child("serve", _pinned(opt.relay_core, serve_argv, opt.priority), workdir)
    child: _Child | None = None
    try:
        ports = server.expect("ports", 60 + calls / 50)["ports"]
        child = _Child(
            "rtpgen-relay",
            _gen_argv(gen, "relay", calls, opt),
            workdir,
        )
        phones = child.expect("phones", 30)["phones"]
        server.send(json.dumps({"cmd": "phones", "phones": phones}) + "\n")
        server.expect("ready", 30)
        child.send("".join(f"{a} {b}\n" for a, b in ports))
        child.close_stdin()
        child.expect("measure", opt.warmup + 30)
        server.send('{"cmd": "mark"}\n')
        server.expect("marked", 10)
        child.expect("end", opt.duration + 30)
        server.send('{"cmd": "stop"}\n')
        sut = server.expect("cpu_s", 30)
        gen_result = child.expect("mode", 30)
    finally:
        if child is not None:
            child.close()
        server.close(timeout=15)
    return {"gen": gen_result, "sut": sut}


def _lat(result: dict[str, Any]) -> dict[str, float]:
    lat = result["latency_us"]
    return {k: lat[k] for k in ("p50", "p90", "p99", "p999", "max")}


def _step(gen: Path, calls: int, opt: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    direct = _run_direct(gen, calls, opt, workdir)
    run = _run_relay(gen, calls, opt, workdir)
    g, sut = run["gen"], run["sut"]
    added = {k: round(g["latency_us"][k] - direct["latency_us"][k], 1) for k in ("p50", "p99")}
    passed = g["loss_pct"] < LOSS_LIMIT_PCT and added["p99"] < P99_ADDED_LIMIT_US
    direct_ok = (
        direct["loss_pct"] < LOSS_LIMIT_PCT and direct["latency_us"]["p99"] < P99_ADDED_LIMIT_US
    )
    return {
        "calls": calls,
        "pass": passed,
        "packets_per_s_relayed": round(sut["totals"]["packets_relayed"] / sut["wall_s"], 1),
        "loss_pct": round(g["loss_pct"], 4),
        "latency_us": _lat(g),
        "added_latency_us": added,
        "relay_cpu_pct": sut["cpu_pct"],
        "cpu_per_call_pct": round(sut["cpu_pct"] / calls, 4),
        "rss_per_call_kb": round((sut["rss_kb_peak"] - sut["rss_kb_base"]) / calls, 2),
        "relay": {
            "rss_kb_base": sut["rss_kb_base"],
            "rss_kb_peak": sut["rss_kb_peak"],
            "socket_drops": sut["socket_drops"],
            "involuntary_ctx_switches": sut["involuntary_ctx_switches"],
            "packets_dropped": sut["totals"]["packets_dropped"],
            "packets_foreign": sut["totals"]["packets_foreign"],
            "lost_rfc3550_total": sut["lost_rfc3550_total"],
            "native_queue_delay": sut.get("native_queue_delay"),
        },
        "generator": {
            "streams_with_loss": g["streams_with_loss"],
            "misrouted": g["misrouted"],
            "reordered": g["reordered"],
            "send_late_max_us": g["send"]["late_max_us"],
            "cpu_pct": g["cpu_pct"],
        },
        "direct": {
            "ok": direct_ok,
            "loss_pct": round(direct["loss_pct"], 4),
            "latency_us": _lat(direct),
            "send_late_max_us": direct["send"]["late_max_us"],
            "send_pps": direct["send"]["pps"],
            "cpu_pct": direct["cpu_pct"],
        },
    }


def _env(opt: argparse.Namespace) -> dict[str, Any]:
    try:
        from importlib.metadata import version

        uv = version("uvloop")
    except Exception:  # PackageNotFoundError: reported as None
        uv = None
    return {
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "loop": "asyncio" if opt.asyncio else f"uvloop {uv}",
        "engine": opt.engine,
        "coalesce_us": opt.coalesce_us if opt.engine == "native" else None,
        "kernel": platform.release(),
        "relay_core": opt.relay_core,
        "generator_core": opt.gen_core,
        "pinned": shutil.which("taskset") is not None,
        "priority": opt.priority,
        "generator_busy_poll": opt.spin,
    }


def bench_main(argv: list[str]) -> int:
    """Run the steps and print the JSON report; exit status 0 if the target is met."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench.rtp", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 s steps, 2 s warm-up")
    parser.add_argument(
        "--steps",
        help="comma-separated call counts (default %(default)s)",
        default=",".join(map(str, DEFAULT_STEPS)),
    )
    parser.add_argument("--duration", type=float, help="measured seconds per step (20; quick 5)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per step (3; quick 2)")
    parser.add_argument(
        "--refine",
        type=int,
        default=1,
        help="bisection steps between the last pass and the first failure",
    )
    parser.add_argument("--keep-going", action="store_true", help="run every step")
    parser.add_argument("--relay-core", type=int, default=0)
    parser.add_argument("--gen-core", type=int, default=1)
    parser.add_argument(
        "--ports",
        default=f"{DEFAULT_PORTS[0]}-{DEFAULT_PORTS[1]}",
        help="relay RTP port range lo-hi",
    )
    parser.add_argument("--asyncio", action="store_true", help="serve on the stdlib loop")
    parser.add_argument(
        "--engine",
        choices=("python", "native"),
        default=None,
        help="who forwards RTP in the relay: its asyncio protocols or the native worker thread "
        "of gateway.media.fastpath (default: native where it is built)",
    )
    parser.add_argument(
        "--coalesce-us",
        type=int,
        default=100,
        help="native engine: pause after a busy round so one wake-up serves many packets "
        "(MediaRelay coalesce_us, default %(default)s)",
    )
    parser.add_argument(
        "--priority",
        choices=("normal", "nice", "fifo"),
        default="normal",
        help="run relay and generator at nice -10 or SCHED_FIFO 10 (needs root) "
        "to shield them from other load on a shared machine",
    )
    parser.add_argument(
        "--spin",
        action="store_true",
        help="generator busy-polls its core instead of sleeping between sends, so the relay "
        "does not pay a cross-core wake-up per packet it sends (not with --priority fifo: "
        "RT throttling stalls a spinning FIFO task)",
    )
    parser.add_argument(
        "--max-time", type=float, default=900.0, help="start no step after this many seconds"
    )
    parser.add_argument("--cc", default=os.environ.get("CC", "cc"))
    opt = parser.parse_args(argv)
    if opt.engine is None:
        from gateway.media import fastpath

        opt.engine = "native" if fastpath.AVAILABLE else "python"
    opt.duration = opt.duration or (5.0 if opt.quick else 20.0)
    opt.warmup = opt.warmup if opt.warmup is not None else (2.0 if opt.quick else 3.0)
    steps = sorted({int(s) for s in opt.steps.split(",") if s.strip()})
    lo, _, hi = opt.ports.partition("-")
    capacity = (int(hi) - int(lo) + 1) // 4
    _raise_nofile()

    started = time.monotonic()
    env = _env(opt)
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ccgw-rtp-") as tmp:
        workdir = Path(tmp)
        gen = _build(workdir, opt.cc)

        def run(calls: int) -> dict[str, Any] | None:
            if calls > capacity:
                errors.append(f"{calls} calls need more than the {opt.ports} port range")
                return None
            print(f"rtp: {calls} calls ...", file=sys.stderr, flush=True)
            try:
                step = _step(gen, calls, opt, workdir)
            except BenchError as e:
                errors.append(f"{calls} calls: {e}")
                return None
            results.append(step)
            print(
                f"rtp: {calls} calls: loss {step['loss_pct']} %, p99 added "
                f"{step['added_latency_us']['p99']} µs, relay cpu {step['relay_cpu_pct']} %",
                file=sys.stderr,
                flush=True,
            )
            return step

        first_fail: int | None = None
        last_pass: int | None = None
        for calls in steps:
            if time.monotonic() - started > opt.max_time:
                errors.append(f"stopped before {calls} calls: --max-time {opt.max_time} s")
                break
            step = run(calls)
            if step is not None and step["pass"]:
                last_pass = calls
            elif first_fail is None:
                first_fail = calls
                if not opt.keep_going:
                    break
        lo_n = last_pass or 0
        for _ in range(opt.refine if first_fail is not None else 0):
            assert first_fail is not None
            mid = (lo_n + first_fail) // 2 // 50 * 50
            if mid <= lo_n or mid >= first_fail:
                break
            if time.monotonic() - started > opt.max_time:
                break
            step = run(mid)
            if step is not None and step["pass"]:
                lo_n = last_pass = mid
            else:
                first_fail = mid

    results.sort(key=lambda s: s["calls"])
    best = max((s for s in results if s["pass"]), key=lambda s: s["calls"], default=None)
    report = {
        "benchmark": "rtp",
        "engine": opt.engine,
        "criteria": {
            "loss_pct_below": LOSS_LIMIT_PCT,
            "p99_added_latency_us_below": P99_ADDED_LIMIT_US,
            "packets_per_s_per_call": 100,
            "codec": "PCMU",
            "payload_octets": 160,
        },
        "quick": opt.quick,
        "duration_s": opt.duration,
        "warmup_s": opt.warmup,
        "target_calls": TARGET_CALLS,
        "max_calls": best["calls"] if best else 0,
        "meets_target": bool(best and best["calls"] >= TARGET_CALLS),
        "first_failing_calls": first_fail,
        "cpu_per_call_pct_at_max": best["cpu_per_call_pct"] if best else None,
        "rss_per_call_kb_at_max": best["rss_per_call_kb"] if best else None,
        "generator_limited": [s["calls"] for s in results if not s["direct"]["ok"]],
        "steps": results,
        "errors": errors,
        "env": env,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report, indent=2))
    return 0 if report["meets_target"] and not errors else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        return serve_main(args[1:])
    return bench_main(args)


if __name__ == "__main__":
    sys.exit(main())
