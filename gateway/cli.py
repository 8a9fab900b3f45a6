"""``ccgw``: run a site gateway, check a config, or run the demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from gateway.config import ConfigError, load_config


def _loop_factory() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()


def _run(coro: Coroutine[Any, Any, int]) -> int:
    with asyncio.Runner(loop_factory=_loop_factory) as runner:
        return runner.run(coro)


GC_FULL_EVERY = 600.0
"""Seconds between the full (oldest generation) collections we run ourselves."""


def tune_gc() -> None:
    """After start-up: tune the cycle collector for a gateway under load.

    What start-up built leaves the collector's sight (``gc.freeze``). Young objects are
    collected every 20,000 allocations, the middle generation every second young pass, so it
    never holds more than ~40,000 objects (with the default 20 passes it held ~400,000 — every
    call of the last seconds — and each pass stalled the loop ~300 ms at 300 calls/s, long enough
    for peers to retransmit). Calls linger 32 s for late retransmissions (RFC 3261 timers), so
    the oldest generation holds ~800,000 objects at that rate and a full pass takes ~0.6 s: the
    interpreter's own trigger (25 % growth) would run one every ~8 s. A call's objects are freed
    by reference counting when it is forgotten, so full passes are rare here instead:
    :func:`full_collections` runs one every :data:`GC_FULL_EVERY` seconds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 2, 1_000_000)


async def full_collections(on_pass: Callable[[float, int], None] | None = None) -> None:
    """Run a full collection every :data:`GC_FULL_EVERY` s (what cyclic garbage reached the
    oldest generation); ``on_pass(seconds, objects_freed)`` after each."""
    while True:
        await asyncio.sleep(GC_FULL_EVERY)
        started = time.perf_counter()
        freed = gc.collect(2)
        if on_pass is not None:
            on_pass(time.perf_counter() - started, freed)


def _stop_on_signals() -> asyncio.Event:
    """An event SIGINT and SIGTERM set (the process then stops cleanly)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _run_site(args: argparse.Namespace) -> int:
    from gateway.app import SiteGateway

    cfg = load_config(args.config)
    gw = SiteGateway(cfg, sip_port=args.sip_port, http_port=args.http_port)
    stop = _stop_on_signals()  # before start: a SIGTERM while starting still stops cleanly
    await gw.start()
    tune_gc()
    collector = asyncio.get_running_loop().create_task(full_collections(gw.on_gc_pass))
    print(
        f"ccgw site {cfg.site.name}: sip {cfg.sip.listen}:{gw.sip_port} "
        f"http {cfg.http.listen}:{gw.http_port}",
        flush=True,
    )
    await stop.wait()
    collector.cancel()
    await gw.stop()
    return 0


async def _run_hq(args: argparse.Namespace) -> int:
    from gateway.hq.app import HqApp

    cfg = load_config(args.config)
    if cfg.hq is None:
        raise ConfigError(cfg.source, "hq", "is required for `ccgw hq` (listen, database)")
    hq = HqApp(cfg, listen=args.listen, http_port=args.http_port)
    stop = _stop_on_signals()
    await hq.start()
    print(
        f"ccgw hq {cfg.site.name}: grpc {hq.listen.rpartition(':')[0]}:{hq.port} "
        f"http {cfg.hq.http.host if cfg.hq.http else '-'}:{hq.http_port}",
        flush=True,
    )
    await stop.wait()
    await hq.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ccgw`` console script."""
    parser = argparse.ArgumentParser(prog="ccgw", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one site gateway")
    run.add_argument("--config", required=True, help="sites/<site>.toml")
    run.add_argument("--sip-port", type=int, default=None, help="override sip.port (0 = free)")
    run.add_argument("--http-port", type=int, default=None, help="override http.port (0 = free)")
    hq = sub.add_parser("hq", help="run the HQ service (central database, gRPC sync)")
    hq.add_argument("--config", required=True, help="sites/hq.toml (needs an [hq] table)")
    hq.add_argument("--listen", default=None, help="override hq.listen (ip:port, 0 = free)")
    hq.add_argument("--http-port", type=int, default=None, help="override http.port (0 = free)")
    sub.add_parser(
        "certs", help="make a test CA and per-site certificates (ccgw certs --help)", add_help=False
    )
    check = sub.add_parser("check-config", help="validate a site config and exit")
    check.add_argument("config")
    demo = sub.add_parser("demo", help="a site with a simulated carrier and agents")
    demo.add_argument(
        "--seconds", type=float, default=60.0, help="how long to run (0 = until Ctrl-C)"
    )
    demo.add_argument("--rate", type=float, default=0.5, help="carrier calls per second")
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["certs"]:
        from gateway.mesh.tls import certs_command

        return certs_command(raw[1:])
    args = parser.parse_args(raw)
    quiet = args.command == "demo" and not args.verbose  # the demo's screen is its wallboard
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # -v is for ccgw's own debug lines: grpc's aio layer logs every stream cancelled at shutdown
    # as a debug traceback ("request_iterator raised exception: CancelledError"), which reads
    # like a crash and is not one.
    logging.getLogger("grpc").setLevel(logging.INFO)
    try:
        if args.command == "check-config":
            load_config(args.config)
            print("ok")
            return 0
        if args.command == "run":
            return _run(_run_site(args))
        if args.command == "hq":
            return _run(_run_hq(args))
        from gateway.demo import run_demo

        return _run(run_demo(args.seconds, args.rate))
    except ConfigError as exc:
        print(f"ccgw: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
