"""A site gateway running in a background thread on its own event loop, for integration tests.

The gateway binds loopback on free ports; tests drive it with real peers (SIPp, baresip) and read
its state through :meth:`GatewayThread.call` (a function run on the gateway's loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from gateway.app import SiteGateway
from gateway.config import parse_config
from gateway.hq.app import HqApp

T = TypeVar("T")

AGENTS = {"1001": "pw-1001", "1002": "pw-1002", "1003": "pw-1003"}


def rtp_range(span: int = 200) -> tuple[int, int]:
    """A random RTP port range below the kernel's ephemeral range (the relay skips busy ports)."""
    base = 20000 + 2 * random.randrange(0, (32000 - 20000 - span) // 2)
    return base, base + span - 1


def site_config(
    carrier: tuple[str, int],
    store: Path,
    *,
    rtp_range: tuple[int, int] | None = None,
    agents: dict[str, str] | None = None,
    stall_timeout: float = 30.0,
    no_answer_timeout: float = 30.0,
    ring_timeout: float = 20.0,
    inbound_auth: bool = False,
    queues: list[dict[str, Any]] | None = None,
    ivr: dict[str, Any] | None = None,
    skills: dict[str, dict[str, int]] | None = None,
    more_carriers: list[int] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A test site: one carrier trunk, agents 1001-1003, DIDs for an agent and two groups."""
    agents = agents or AGENTS
    rtp_range = rtp_range or globals()["rtp_range"]()
    doc: dict[str, Any] = {
        "site": {"name": "testsite"},
        "sip": {"listen": "127.0.0.1", "port": 0, "T1": 0.5, "options_ping_interval": 0},
        "media": {
            "rtp_port_min": rtp_range[0],
            "rtp_port_max": rtp_range[1],
            "stall_timeout": stall_timeout,
        },
        "http": {"listen": "127.0.0.1", "port": 0},
        "store": {"path": str(store)},
        "security": {"rate_limit": 1000, "fail_limit": 3, "ban_time": 60},
        "trunks": [
            {
                "name": "carrier",
                "peers": [f"{carrier[0]}:{carrier[1]}"]
                + [f"{carrier[0]}:{p}" for p in more_carriers or []],
                "username": "gw",
                "password": "trunk-secret",
                "dids": {
                    "+861000": "agent:1001",
                    "+861002": "agent:1002",
                    "+862000": "group:all",
                    "+863000": "group:hunt",
                },
                "default_destination": "agent:1001",
                "inbound_auth": inbound_auth,
            }
        ],
        "agents": [
            {"extension": e, "password": p, "skills": (skills or {}).get(e, {})}
            for e, p in agents.items()
        ],
        "groups": [
            {"name": "all", "number": "600", "members": list(agents), "ring_timeout": ring_timeout},
            {
                "name": "hunt",
                "number": "601",
                "strategy": "hunt",
                "members": list(agents),
                "ring_timeout": ring_timeout,
            },
        ],
        "dialplan": {"outbound_trunk": "carrier", "no_answer_timeout": no_answer_timeout},
    }
    if queues:
        doc["queues"] = queues
        doc["trunks"][0]["dids"].update({"+864000": "queue:support", "+865000": "flow:main"})
        doc["cc"] = {"voicemail_dir": str(store.parent / "voicemail")}
    if ivr:
        doc["ivr"] = ivr
    for k, v in (extra or {}).items():
        doc.setdefault(k, {}).update(v)
    return doc


class GatewayThread:
    """Start a :class:`SiteGateway` on a private loop in a thread; stop it at exit."""

    def __init__(self, config: dict[str, Any], *, sip_port: int = 0) -> None:
        self.cfg = parse_config(config, source="<test>", env={})
        self.loop = uvloop.new_event_loop()
        self.gw = SiteGateway(self.cfg, sip_port=sip_port, http_port=0)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        self.run(self.gw.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.gw.stop(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.loop.close()

    @property
    def sip(self) -> str:
        """``host:port`` of the gateway's SIP endpoint."""
        return f"{self.cfg.sip.listen}:{self.gw.sip_port}"

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the gateway's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run ``fn`` on the gateway's loop (to read state safely)."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def _do() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # pragma: no cover - surfaced to the test
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(_do)
        return fut.result(timeout)

    def wait_for(self, cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        """Poll ``cond`` on the gateway's loop until true; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.call(cond):
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or cond}")

    def metrics(self) -> str:
        """The /metrics text."""
        return self.call(self.gw.registry.render)


TEST_IVR: dict[str, Any] = {
    "entry": "main",
    "languages": ["en", "cmn"],
    "default_language": "en",
    "flows": {
        "main": {
            "start": "welcome",
            "welcome": {"kind": "play", "prompts": ["welcome"], "barge_in": True, "next": "menu"},
            "menu": {
                "kind": "menu",
                "prompts": ["menu_main"],
                "options": {
                    "1": "sales",
                    "2": "support",
                    "3": "vip",
                    "7": "message",
                    "9": "call_me",
                },
                "tries": 2,
                "timeout": 4,
                "fallback": "support",
            },
            "sales": {"kind": "queue", "queue": "sales"},
            "support": {"kind": "queue", "queue": "support"},
            "vip": {"kind": "queue", "queue": "support", "priority": 10},
            "message": {"kind": "voicemail", "box": "sales"},
            "call_me": {"kind": "callback", "queue": "support"},
        }
    },
}


class HqThread:
    """:class:`HqApp` on its own loop in a thread (stop() and start() again: a restart)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.cfg = parse_config(doc, source="<hq>", env={})
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.app: HqApp | None = None
        self.listen = "127.0.0.1:0"

    def run(self, coro: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> HqThread:
        self.app = HqApp(self.cfg, listen=self.listen, http_port=0)
        self.run(self.app.start())
        self.listen = f"127.0.0.1:{self.app.port}"  # a restart binds the same port
        return self

    def stop(self) -> None:
        if self.app is not None:
            self.run(self.app.stop())
            self.app = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def counts(self) -> dict[str, int]:
        assert self.app is not None and self.app.store is not None
        return dict(self.run(self.app.store.counts()))

    def api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self.app is not None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.app.http_port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())
