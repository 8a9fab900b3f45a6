"""``pooling``: two sites under uneven load, the service level reached with overflow versus
without, beside Erlang C's prediction for separate queues and for one pooled queue.

    SIPp callers (λ_A) ──► shanghai: queue "support", N_A agents (ρ_A > 1)  ──► SIPp agents
                              ║ overflow (run "on" only): gRPC reserve + SIP INVITE
    SIPp callers (λ_B) ──► guangzhou: queue "support", N_B agents (ρ_B low) ──► SIPp agents

The same two-site setup (:mod:`tools.bench.mesh_common`: two gateway processes, real etcd, gRPC
handoff) runs twice with fresh processes: ``off`` (Shanghai's queue has no overflow policy) and
``on`` (``--overflow``, default ``max_wait=1``: a caller who has waited more than 1 s moves to
Guangzhou when an agent there is free or its expected wait is shorter).

- **Arrivals**: Poisson by default: SIPp places ``λ·D`` calls at once and each waits a uniform
  random time in ``[0, D)`` before its INVITE (n uniform points on ``[0, D)`` *are* a Poisson
  process conditioned on its count); ``--arrivals constant`` uses SIPp's fixed rate instead.
- **Agents** (tools/bench/sipp/acd_agent.xml) answer at once and hang up after an exponential
  talk time of mean ``--aht-s``: the M/M/N servers of Erlang C. Callers are patient
  (``--patience-s``).
- **Measured** from each site's interaction records (``store.interactions()``): a call is
  counted at its **origin** (an overflowed call's answered record is at Guangzhou, with the
  original ``arrived_ts``); service level = share of offered calls answered within ``--sl-s``
  seconds of arrival, ASA = mean ``answered_ts − arrived_ts`` of answered calls; per origin site
  and pooled.
- **Erlang C** (:mod:`gateway.cc.erlang`) for A = λ·AHT on N agents: Shanghai alone, Guangzhou
  alone, and one pooled queue of λ_A + λ_B on N_A + N_B; with the nominal AHT and the measured
  one. A queue with A ≥ N has no steady state: its figures are ``null`` ("unstable") and the
  measured ones then depend on the run's length (the line grows throughout).

Gateways and etcd are pinned to ``--sut-cpus``, SIPp and this process to ``--gen-cpus``. One JSON
object to stdout (and ``tools/bench/results/pooling-DATE.json``).

    .venv/bin/python -m tools.bench.pooling [--duration 75 --only off,on]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python tools/bench/pooling.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.cc.erlang import average_speed_of_answer, erlang_c, service_level
from tools.bench.common import SIPP_DIR, cpu_list, read_sipp_stats
from tools.bench.mesh_common import LoadMeter, MeshPair, SiteSpec, log, save_report

A, B = "shanghai", "guangzhou"


def parse_policy(text: str) -> dict[str, Any]:
    """``max_wait=1,max_ewt=3`` → an overflow table (targets: Guangzhou)."""
    out: dict[str, Any] = {"targets": [B]}
    for part in text.split(","):
        if not part.strip():
            continue
        key, _, value = part.partition("=")
        key = key.strip()
        out[key] = int(value) if key == "max_waiting" else float(value)
    return out


def scenario(name: str, workdir: Path, suffix: str, fill: Mapping[str, int], pause_ms: int) -> Path:
    """A bench SIPp scenario with its ``@KEY@`` filled in; with ``pause_ms``, a uniform random
    pause in ``[0, pause_ms)`` before the first message (Poisson arrivals)."""
    text = (SIPP_DIR / name).read_text()
    for key, value in fill.items():
        text = text.replace(f"@{key}@", str(int(value)))
    if pause_ms > 0:
        head, sep, rest = text.partition("<send")
        text = f'{head}<pause distribution="uniform" min="0" max="{pause_ms}" />\n  {sep}{rest}'
    out = workdir / f"{name.removesuffix('.xml')}{suffix}.xml"
    out.write_text(text)
    return out


# --------------------------------------------------------------------------------------------
# figures


def _calls_by_origin(
    records: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, list[Mapping[str, Any]]]:
    """Each call once, at its origin: an overflowed record is replaced by the receiving site's."""
    out: dict[str, list[Mapping[str, Any]]] = {A: [], B: []}
    for site, recs in records.items():
        for r in recs:
            if r.get("outcome") == "overflowed":
                continue  # the call's outcome is in the other site's record
            origin = r.get("from_site") or site
            out.setdefault(origin, []).append(r)
    return out


def figures(calls: Sequence[Mapping[str, Any]], sl_s: float, site: str) -> dict[str, Any]:
    """Offered, answered, service level within ``sl_s``, ASA, where they were answered."""
    answered = [r for r in calls if r.get("outcome") == "answered" and r.get("answered_ts")]
    waits = [float(r["answered_ts"]) - float(r["arrived_ts"]) for r in answered]
    outcomes: dict[str, int] = {}
    for r in calls:
        outcomes[str(r.get("outcome"))] = outcomes.get(str(r.get("outcome")), 0) + 1
    n = len(calls)
    waits_sorted = sorted(waits)
    return {
        "offered": n,
        "answered": len(answered),
        "outcomes": outcomes,
        "answered_elsewhere": sum(1 for r in answered if r.get("from_site") and site != "pooled"),
        "service_level": round(sum(w <= sl_s for w in waits) / n, 4) if n else None,
        "asa_s": round(sum(waits) / len(waits), 3) if waits else None,
        "wait_p90_s": round(waits_sorted[int(0.9 * (len(waits) - 1))], 2) if waits else None,
        "wait_max_s": round(waits_sorted[-1], 2) if waits else None,
        "mean_talk_s": round(sum(float(r["talk_s"]) for r in answered) / len(answered), 2)
        if answered
        else None,
    }


def erlang(rate: float, agents: int, aht_s: float, sl_s: float) -> dict[str, Any]:
    """Erlang C for ``rate`` calls/s of ``aht_s`` on ``agents``; null figures when unstable."""
    a = rate * aht_s
    stable = agents > a
    asa = average_speed_of_answer(a, agents, aht_s) if stable else math.inf
    return {
        "rate_per_s": round(rate, 3),
        "agents": agents,
        "traffic_erlangs": round(a, 2),
        "occupancy": round(a / agents, 3) if agents else None,
        "stable": stable,
        "p_wait": round(erlang_c(a, agents), 4) if stable else None,
        "service_level": round(service_level(a, agents, aht_s, sl_s), 4) if stable else None,
        "asa_s": round(asa, 3) if stable else None,
    }


def predictions(
    rates: Mapping[str, float], agents: Mapping[str, int], aht_s: float, sl_s: float
) -> dict[str, Any]:
    """Separate queues (A, B) and one pooled queue."""
    return {
        "aht_s": round(aht_s, 2),
        "separate": {s: erlang(rates[s], agents[s], aht_s, sl_s) for s in (A, B)},
        "pooled": erlang(sum(rates.values()), sum(agents.values()), aht_s, sl_s),
    }


# --------------------------------------------------------------------------------------------
# one run


def run_once(label: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    workdir = root / label
    workdir.mkdir()
    policy = parse_policy(args.overflow) if label == "on" else None
    n = {A: args.agents_a, B: args.agents_b}
    rates = {A: args.rho_a * n[A] / args.aht_s, B: args.rho_b * n[B] / args.aht_s}
    calls = {s: max(1, round(rates[s] * args.duration)) for s in (A, B)}
    specs = (
        SiteSpec(A, tuple(str(2001 + i) for i in range(n[A])), policy, aht_s=args.aht_s,
                 service_level_s=args.sl_s),
        SiteSpec(B, tuple(str(3001 + i) for i in range(n[B])), None, aht_s=args.aht_s,
                 service_level_s=args.sl_s),
    )  # fmt: skip
    agent = scenario("acd_agent.xml", workdir, "", {"TALK_MS": round(args.aht_s * 1000)}, 0)
    bound = args.duration + args.patience_s + 60
    pair = MeshPair(
        specs, workdir, agent, {}, sut_cpus=args.sut_cpus, gen_cpus=args.gen_cpus,
        sipp=args.sipp, bound_s=bound + 60,
    )  # fmt: skip
    out: dict[str, Any] = {"overflow_policy": policy}
    poisson = args.arrivals == "poisson"
    with pair:
        log(
            f"{label}: {calls[A]} callers to {A} ({rates[A]:.2f}/s, {n[A]} agents), "
            f"{calls[B]} to {B} ({rates[B]:.2f}/s, {n[B]} agents), AHT {args.aht_s} s, "
            f"{args.arrivals} arrivals over {args.duration:g} s"
        )
        cores = sorted(set(cpu_list(args.sut_cpus)) | set(cpu_list(args.gen_cpus)))
        meter = LoadMeter(pair, cores)
        t0 = time.monotonic()
        uacs = {}
        for k, site in enumerate((A, B), start=1):
            fill = {"PATIENCE_MS": round(args.patience_s * 1000), "STREAM": k}
            pause = round(args.duration * 1000) if poisson else 0
            scen = scenario("acd_caller.xml", workdir, f"-{site}", fill, pause)
            # Poisson: every call is created within ~2 s and then waits its random pause
            rate = max(calls[site] / 2.0, 1.0) if poisson else rates[site]
            uacs[site] = pair.callers(
                site, scen, rate=rate, calls=calls[site], timeout_s=bound,
                limit=calls[site] + 10,
            )  # fmt: skip
        deadline = time.monotonic() + bound + 10
        for site, uac in uacs.items():
            if uac.wait(max(1.0, deadline - time.monotonic())) is None:
                log(f"{label}: callers of {site} did not finish: stopped")
                uac.stop()
        wall = time.monotonic() - t0
        load = meter.stop()
        time.sleep(1.5)  # the last interaction records reach the stores
        records = {s: pair.sites[s].ctl("interactions", limit=100000) for s in (A, B)}
        mesh = {s: pair.sites[s].ctl("mesh") for s in (A, B)}
        stats = {s: read_sipp_stats(workdir / f"callers-{s}_stat.csv") for s in (A, B)}
    by_origin = _calls_by_origin(records)
    measured = {s: figures(by_origin.get(s, []), args.sl_s, s) for s in (A, B)}
    measured["pooled"] = figures(by_origin.get(A, []) + by_origin.get(B, []), args.sl_s, "pooled")
    answered = [r for recs in by_origin.values() for r in recs if r.get("outcome") == "answered"]
    aht_measured = (
        sum(float(r["talk_s"]) for r in answered) / len(answered) if answered else args.aht_s
    )
    out.update(
        {
            "calls": calls,
            "callers": {
                s: {
                    "created": st.created if st else None,
                    "successful": st.successful if st else None,
                    "failed": st.failed if st else None,
                    "failures": st.failures if st else None,
                }
                for s, st in stats.items()
            },
            "overflowed": mesh[A]["overflowed_out"],
            "overflowed_in_at_b": mesh[B]["overflowed_in"],
            "reserve_refused": mesh[A]["refused"],
            "measured": measured,
            "erlang_c_nominal_aht": predictions(rates, n, args.aht_s, args.sl_s),
            "erlang_c_measured_aht": predictions(rates, n, aht_measured, args.sl_s),
            "wall_s": round(wall, 1),
            "load": load,
        }
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.bench.pooling", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--duration", type=float, default=75.0, help="seconds of arrivals per run")
    ap.add_argument("--agents-a", type=int, default=10, help="agents at shanghai (loaded)")
    ap.add_argument("--agents-b", type=int, default=10, help="agents at guangzhou (light)")
    ap.add_argument("--aht-s", type=float, default=6.0, help="mean talk time (exponential)")
    ap.add_argument("--rho-a", type=float, default=1.15, help="offered load at shanghai, A/N")
    ap.add_argument("--rho-b", type=float, default=0.4, help="offered load at guangzhou, A/N")
    ap.add_argument("--sl-s", type=float, default=3.0, help="service level threshold, s")
    ap.add_argument("--overflow", default="max_wait=1", help="policy of run 'on' (key=value,...)")
    ap.add_argument("--arrivals", choices=("poisson", "constant"), default="poisson")
    ap.add_argument("--patience-s", type=float, default=120.0)
    ap.add_argument("--only", default="off,on", help="runs, in order: off, on")
    ap.add_argument("--sut-cpus", default="0", help="taskset list: gateways + etcd")
    ap.add_argument("--gen-cpus", default="1", help="taskset list: SIPp + this process")
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    ap.add_argument("--out", type=Path, default=None, help="results file (default dated)")
    args = ap.parse_args(argv)
    sipp = shutil.which("sipp")
    if sipp is None or shutil.which("etcd") is None:
        print(json.dumps({"bench": "pooling", "error": "sipp and etcd are needed"}))
        return 2
    args.sipp = sipp
    parse_policy(args.overflow)  # a bad policy fails before anything starts
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, cpu_list(args.gen_cpus))

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    params = {k: v for k, v in vars(args).items() if k not in ("sipp", "keep", "out")}
    report: dict[str, Any] = {
        "bench": "pooling",
        "params": params,
        "setup": "two site gateways as separate processes (python -m tools.bench.mesh_common "
        "site), real etcd, gRPC handoff, SIPp callers and agents",
        "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "loadavg_before": os.getloadavg(),
    }
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="ccgw-bench-pooling-"))
    try:
        for label in [s.strip() for s in args.only.split(",") if s.strip()]:
            if label not in ("off", "on"):
                raise SystemExit(f"--only: {label!r} is not off or on")
            try:
                report[label] = run_once(label, args, root)
            except RuntimeError as exc:
                report[label] = {"error": str(exc)[-4000:]}
    except KeyboardInterrupt:
        report["error"] = "interrupted: partial results"
    finally:
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    summary: dict[str, Any] = {"sl_threshold_s": args.sl_s}
    for label in ("off", "on"):
        run = report.get(label, {})
        if "measured" in run:
            summary[f"measured_{label}"] = {
                k: {"service_level": v["service_level"], "asa_s": v["asa_s"]}
                for k, v in run["measured"].items()
            }
    first = next(
        (report[k] for k in ("off", "on") if "erlang_c_nominal_aht" in report.get(k, {})), None
    )
    if first is not None:
        pred = first["erlang_c_nominal_aht"]
        summary["erlang_c"] = {
            "separate": {
                s: {"service_level": pred["separate"][s]["service_level"],
                    "asa_s": pred["separate"][s]["asa_s"]}
                for s in (A, B)
            },
            "pooled": {"service_level": pred["pooled"]["service_level"],
                       "asa_s": pred["pooled"]["asa_s"]},
        }  # fmt: skip
    report["summary"] = summary
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    return save_report(report, "pooling", args.out)


if __name__ == "__main__":
    sys.exit(main())
