"""``overflow``: time from a site's overflow decision to the remote agent's phone ringing with the
caller's context (target: p99 < 100 ms on loopback).

    SIPp callers ──► shanghai (queue "support": max_waiting = 0, its agent logged out)
                        │ decision (tick) → gRPC Reserve → SIP INVITE over the inter-site trunk
                        ▼
                     guangzhou (queue "support", N agents) ──► SIPp agents (agent_uas.xml)

Every caller joins Shanghai's queue, which overflows at once (``max_waiting = 0``: more than 0
callers waiting); Guangzhou has free agents, so its ACD rings one as soon as the overflow INVITE
is queued there, with the context headers (``X-Ccgw-Handoff``, ``X-Ccgw-From-Site``, ...).

- **Decision**: Shanghai's ``cc.mesh.decisions`` (handoff id → ``time.time()`` when the policy
  chose to overflow the call), read over the site process's control socket.
- **Ring**: the time SIPp stamped on the INVITE carrying ``X-Ccgw-Handoff: <id>`` in the agents'
  ``-trace_msg`` log (same machine, same wall clock).
- **Breakdown** per handoff: the Reserve round trip (Shanghai's ``mesh.reserve_ms``, in the same
  order as the decisions when no reservation was refused), reserve → queued at Guangzhou (its
  interaction record's ``queued_ts``: Shanghai's INVITE sent, received, answered, queued with the
  context), queued → ring (Guangzhou's dispatch and INVITE to the agent).

Both gateways and etcd are pinned to ``--sut-cpus`` (core 0), SIPp and this process to
``--gen-cpus`` (core 1). One JSON object to stdout (and ``tools/bench/results/overflow-DATE.json``).

    .venv/bin/python -m tools.bench.overflow [--rate 4 --duration 60 --agents 16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python tools/bench/overflow.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.bench.common import cpu_list, read_sipp_stats
from tools.bench.mesh_common import (
    TEST_SIPP_DIR,
    LoadMeter,
    MeshPair,
    SiteSpec,
    dist_ms,
    log,
    parse_trace,
    save_report,
)

TARGET_P99_MS = 100.0


def ring_times(agent_log: Path) -> dict[str, tuple[float, bool]]:
    """Handoff id → (first time an INVITE with it reached an agent, context complete)."""
    out: dict[str, tuple[float, bool]] = {}
    for m in parse_trace(agent_log):
        if m.sent or not m.first.startswith("INVITE "):
            continue
        hid = m.headers.get("x-ccgw-handoff")
        if not hid or hid in out:
            continue
        ctx = bool(
            m.headers.get("x-ccgw-from-site") == "shanghai"
            and m.headers.get("x-ccgw-caller")
            and m.headers.get("x-ccgw-arrival")
        )
        out[hid] = (m.t, ctx)
    return out


def driven_rate(caller_log: Path) -> float | None:
    """Calls per second the callers placed: initial INVITEs sent, (n - 1) / (last - first)."""
    seen: set[str] = set()
    times: list[float] = []
    for m in parse_trace(caller_log):
        cid = m.headers.get("call-id", "")
        if m.sent and m.first.startswith("INVITE ") and cid not in seen:
            seen.add(cid)
            times.append(m.t)
    if len(times) < 2:
        return None
    return round((len(times) - 1) / (max(times) - min(times)), 2)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    calls = max(1, round(args.rate * args.duration))
    if calls > 1000:
        log("note: the sending site keeps the last 1000 decisions: calls capped at 1000")
        calls = 1000
    sh = SiteSpec(
        "shanghai",
        agents=("2001",),
        overflow={"max_waiting": 0, "targets": ["guangzhou"]},
        phones=False,
        aht_s=args.talk_s,
    )
    gz = SiteSpec(
        "guangzhou",
        agents=tuple(str(3001 + i) for i in range(args.agents)),
        aht_s=args.talk_s,
    )
    silence = workdir / "silence.ulaw"
    silence.write_bytes(b"\xff" * 160)
    bound = calls / args.rate + args.talk_s + 60
    pair = MeshPair(
        (sh, gz),
        workdir,
        TEST_SIPP_DIR / "agent_uas.xml",
        {"ring_ms": "0", "answer_pt": "0", "answer_codec": "PCMU"},
        sut_cpus=args.sut_cpus,
        gen_cpus=args.gen_cpus,
        sipp=args.sipp,
        bound_s=bound + 60,
    )
    out: dict[str, Any] = {}
    with pair:
        keys = {
            "caller": "+8613800138000",
            "talk_ms": str(int(args.talk_s * 1000)),
            "d1_ms": "0",
            "digit1": "-",
            "d2_ms": "0",
            "digit2": "-",
            "audio": f"{silence},0,0",  # loop count 0: no RTP
        }
        log(f"overflow: {calls} callers at {args.rate}/s to shanghai, {args.agents} agents at gz")
        cores = sorted(set(cpu_list(args.sut_cpus)) | set(cpu_list(args.gen_cpus)))
        meter = LoadMeter(pair, cores)
        t0 = time.monotonic()
        uac = pair.callers(
            "shanghai",
            TEST_SIPP_DIR / "caller_ivr.xml",
            rate=args.rate,
            calls=calls,
            keys=keys,
            timeout_s=bound,
        )
        if uac.wait(bound + 10) is None:
            log("callers did not finish in time: stopped")
            uac.stop()
        wall = time.monotonic() - t0
        load = meter.stop()
        time.sleep(1.0)  # the last records reach the stores
        mesh = pair.sites["shanghai"].ctl("mesh")
        gz_mesh = pair.sites["guangzhou"].ctl("mesh")
        gz_records = pair.sites["guangzhou"].ctl("interactions", limit=100000)
        sh_records = pair.sites["shanghai"].ctl("interactions", limit=100000)
        rings = ring_times(pair.agent_logs["guangzhou"])
        st = read_sipp_stats(workdir / "callers-shanghai_stat.csv")
        if st is None or st.created == 0:
            raise RuntimeError(f"the callers placed no call:\n{uac.tail()}")
    decisions: dict[str, float] = mesh["decisions"]
    reserve_ms: list[float] = mesh["reserve_ms"]
    queued = {r["handoff_id"]: r.get("queued_ts") for r in gz_records if r.get("handoff_id")}
    latencies: list[float] = []
    no_ring: list[str] = []
    no_context = 0
    for hid, t_dec in decisions.items():
        ring = rings.get(hid)
        if ring is None:
            no_ring.append(hid)
            continue
        latencies.append(ring[0] - t_dec)
        no_context += not ring[1]
    # Reserve round trips pair with decisions in order when every reservation led to one.
    paired = len(reserve_ms) == len(decisions)
    rest: list[float] = []
    reserve_to_queued: list[float] = []
    queued_to_ring: list[float] = []
    if paired:
        for (hid, t_dec), r_ms in zip(decisions.items(), reserve_ms, strict=True):
            ring = rings.get(hid)
            if ring is None:
                continue
            rest.append(ring[0] - t_dec - r_ms / 1e3)
            q = queued.get(hid)
            if q is not None:
                reserve_to_queued.append(q - t_dec - r_ms / 1e3)
                queued_to_ring.append(ring[0] - q)
    outcomes: dict[str, int] = {}
    for r in sh_records:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    created = st.created if st else 0
    lat = dist_ms(latencies)
    out.update(
        {
            "calls_intended": calls,
            "calls_created": created,
            "calls_successful": st.successful if st else None,
            "calls_failed": st.failed if st else None,
            "caller_failures": st.failures if st else None,
            "rate_intended_per_s": args.rate,
            "rate_driven_per_s": driven_rate(workdir / "callers-shanghai_msg.log"),
            "wall_s": round(wall, 1),
            "decisions": len(decisions),
            "overflowed_out": mesh["overflowed_out"],
            "overflowed_in": gz_mesh["overflowed_in"],
            "refused": mesh["refused"],
            "shanghai_outcomes": outcomes,
            "failures": {
                "decided_but_never_rang": len(no_ring),
                "rang_without_context": no_context,
                "callers_failed": st.failed if st else None,
                "not_overflowed": created - len(decisions),
            },
            "decision_to_ring": lat,
            "breakdown": {
                "reserve_rtt": dist_ms([r / 1e3 for r in reserve_ms]),
                "rest_after_reserve": dist_ms(rest) if paired else None,
                "reserve_done_to_queued_at_gz": dist_ms(reserve_to_queued) if paired else None,
                "queued_at_gz_to_ring": dist_ms(queued_to_ring) if paired else None,
                "paired": paired,
            },
            "load": load,
            "p99_ms": lat["p99_ms"],
            "target_p99_ms": TARGET_P99_MS,
            "target_met": None if lat["p99_ms"] is None else lat["p99_ms"] < TARGET_P99_MS,
        }
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.bench.overflow", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--rate", type=float, default=4.0, help="callers per second (default 4)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals")
    ap.add_argument("--agents", type=int, default=16, help="SIPp agents at guangzhou")
    ap.add_argument("--talk-s", type=float, default=2.0, help="seconds from answer to BYE")
    ap.add_argument("--sut-cpus", default="0", help="taskset list: gateways + etcd")
    ap.add_argument("--gen-cpus", default="1", help="taskset list: SIPp + this process")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--out", type=Path, default=None, help="results file (default dated)")
    args = ap.parse_args(argv)
    sipp = shutil.which("sipp")
    if sipp is None or shutil.which("etcd") is None:
        print(json.dumps({"bench": "overflow", "error": "sipp and etcd are needed"}))
        return 2
    args.sipp = sipp
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, cpu_list(args.gen_cpus))

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    report: dict[str, Any] = {
        "bench": "overflow",
        "params": {k: v for k, v in vars(args).items() if k not in ("sipp", "keep", "out")},
        "setup": "two site gateways as separate processes (python -m tools.bench.mesh_common "
        "site), real etcd, gRPC handoff, SIPp callers and agents",
        "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    report["params"]["out"] = str(args.out) if args.out else None
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="ccgw-bench-overflow-"))
    try:
        report.update(run(args, workdir))
    except KeyboardInterrupt:
        report["error"] = "interrupted"
    except RuntimeError as exc:
        report["error"] = str(exc)[-4000:]
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    return save_report(report, "overflow", args.out)


if __name__ == "__main__":
    sys.exit(main())
