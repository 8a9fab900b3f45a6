"""A private WAN for integration tests: one Linux network namespace per node, joined by a core.

::

    lab = WanLab(("hq", "sh")).setup()       # raises NetnsUnavailable(reason) if it can't
    try:
        lab.netem(20, 1.0, "sh")             # sh's WAN link: +20 ms and 1 % loss each way
        argv = lab.exec_prefix("sh") + ["sipp", ...]
        lab.partition("sh")                  # sh's link cut (the core side goes down)
        lab.heal("sh")
        text = lab.call("sh", lambda: urllib.request.urlopen(url).read())
    finally:
        lab.teardown()                       # kills what still runs inside, deletes everything

Topology (every name carries this process's PID, so runs never share anything)::

    ccgw-<pid>-hq  [wan 10.250.1.1/24] ──veth── [c-hq 10.250.1.254/24]
                                                         ccgw-<pid>-core (router)
    ccgw-<pid>-sh  [wan 10.250.2.1/24] ──veth── [c-sh 10.250.2.254/24]

Node *i* (in the order given) gets ``10.250.<i+1>.1``; each node routes ``10.250.0.0/16`` via
the core, which forwards between the links. Nothing is created in, or moved out of, the host's
namespace: ``ip -n`` makes each veth pair inside its namespaces, so the host's interfaces,
routes and addresses are never touched. Processes run inside with :meth:`WanLab.exec_prefix`
(``ip netns exec`` execs the program, so its PID is the program's own) and code in this process
reaches a namespace through :meth:`WanLab.call` (a thread that ``setns(2)``s into it).

Impairment. With ``sch_netem`` in the kernel, :meth:`WanLab.netem` puts ``tc qdisc ... netem
delay D loss L`` on both ends of a node's veth pair (the node's ``wan`` egress and the core's
``c-<node>`` egress), so the link adds D ms and L % loss in each direction. Many kernels
(containers, minimal VMs) ship without ``sch_netem``; then the core sends all forwarded traffic
through a TUN device (policy routing: ``ip rule iif c-<node> lookup 100``, ``default dev wan0
table 100``) and a thread in this process (:class:`_TunShaper`) holds each packet for the sum of
the delays of the links it crosses and drops it with their combined loss, then writes it back
for the kernel to forward: the same per-link semantics in user space. ``CCGW_WAN_SHAPER=netem``
or ``=tun`` forces one; :attr:`WanLab.mode` says which is in use.

A partition is ``ip link set c-<node> down`` in the core: the node's own interface stays up
(no carrier), its addresses and routes stay, and packets to or from it vanish, as on a cut WAN
link. :meth:`WanLab.heal` sets it up again.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import heapq
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Literal, TypeVar

__all__ = ["NetnsUnavailable", "WanLab", "unavailable_reason"]

T = TypeVar("T")

IP_BIN: Final = shutil.which("ip")
TC_BIN: Final = shutil.which("tc")
NETNS_DIR: Final = Path("/run/netns")
CLONE_NEWNET: Final = 0x40000000  # <linux/sched.h>
TUNSETIFF: Final = 0x400454CA  # <linux/if_tun.h> _IOW('T', 202, int)
IFF_TUN: Final = 0x0001
IFF_NO_PI: Final = 0x1000
SHAPER_TABLE: Final = 100
"""Routing table (in the core) that sends forwarded traffic to the TUN shaper."""

Mode = Literal["netem", "tun"]


class NetnsUnavailable(RuntimeError):
    """This machine cannot build the lab; ``str(exc)`` says why (use it as a skip reason)."""


def unavailable_reason() -> str | None:
    """Why :class:`WanLab` cannot run here (not root, ``ip`` missing), or ``None``.

    Cheap checks only; :meth:`WanLab.setup` still raises :class:`NetnsUnavailable` when the
    kernel refuses a namespace, a veth pair or both ways of shaping.
    """
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if IP_BIN is None:
        return "the ip command (iproute2) is not installed"
    if not hasattr(ctypes.CDLL(None, use_errno=True), "setns"):
        return "libc has no setns(2)"
    return None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _enter(ns_path: Path) -> None:
    """Move the calling *thread* into the network namespace at ``ns_path`` (setns(2))."""
    fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc().setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns_path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class WanLab:
    """Network namespaces for ``nodes`` joined by a core router (see the module docstring).

    ``nodes``: short names (letters, digits; at most 8 characters), e.g. ``("hq", "sh")``.
    ``seed``: the TUN shaper's loss draws. ``mode``: ``"netem"`` / ``"tun"``; default
    ``$CCGW_WAN_SHAPER`` or, when unset, netem if the kernel has it, else tun.
    """

    def __init__(
        self,
        nodes: Sequence[str] = ("hq", "sh"),
        *,
        seed: int = 7,
        mode: Mode | None = None,
    ) -> None:
        if not nodes or len(set(nodes)) != len(nodes) or len(nodes) > 200:
            raise ValueError(f"nodes must be distinct and between 1 and 200: {nodes!r}")
        for n in nodes:
            if not (n.isascii() and n.isalnum() and len(n) <= 8):
                raise ValueError(f"node name {n!r}: letters and digits, at most 8")
        self.nodes = tuple(nodes)
        self.tag = f"ccgw-{os.getpid()}"
        self.seed = seed
        self._want: Mode | None = mode or _mode_from_env()
        self.mode: Mode | None = None
        """``"netem"`` or ``"tun"`` once :meth:`setup` chose."""
        self._made: list[str] = []
        self._shaper: _TunShaper | None = None
        self._impair: dict[str, tuple[float, float]] = {}
        self._down: set[str] = set()

    # -- names and addresses ----------------------------------------------------------------

    def ns(self, node: str) -> str:
        """The namespace name of ``node`` (``"core"`` for the router)."""
        if node != "core" and node not in self.nodes:
            raise KeyError(node)
        return f"{self.tag}-{node}"

    def addr(self, node: str) -> str:
        """``node``'s address on its WAN link (inside its namespace only)."""
        return f"10.250.{self.nodes.index(node) + 1}.1"

    def gateway_addr(self, node: str) -> str:
        """The core's address on ``node``'s link."""
        return f"10.250.{self.nodes.index(node) + 1}.254"

    def exec_prefix(self, node: str) -> list[str]:
        """argv prefix that runs a program inside ``node``'s namespace (``ip netns exec``)."""
        assert IP_BIN is not None
        return [IP_BIN, "netns", "exec", self.ns(node)]

    def ns_path(self, node: str) -> Path:
        return NETNS_DIR / self.ns(node)

    # -- life cycle ----------------------------------------------------------------------------

    def setup(self) -> WanLab:
        """Build the namespaces, links and routes; :class:`NetnsUnavailable` if it can't (then
        whatever was made is removed again)."""
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        try:
            self._build()
        except NetnsUnavailable:
            self.teardown()
            raise
        except (OSError, subprocess.SubprocessError) as exc:
            self.teardown()
            raise NetnsUnavailable(f"could not build the WAN lab: {exc}") from exc
        return self

    def _build(self) -> None:
        core = self.ns("core")
        for node in ("core", *self.nodes):
            name = self.ns(node)
            res = self._ip("netns", "add", name, check=False)
            if res.returncode != 0:
                raise NetnsUnavailable(f"ip netns add {name} failed: {res.stderr.strip()}")
            self._made.append(name)
            self._ip("-n", name, "link", "set", "lo", "up")
        self._sysctl("core", "net.ipv4.ip_forward", "1")
        for key in ("all", "default"):
            self._sysctl("core", f"net.ipv4.conf.{key}.rp_filter", "0")
        for node in self.nodes:
            ns, link = self.ns(node), f"c-{node}"
            res = self._ip(
                "-n", core, "link", "add", link, "type", "veth", "peer", "name", "wan", "netns", ns,
                check=False,
            )  # fmt: skip
            if res.returncode != 0:
                raise NetnsUnavailable(f"cannot create a veth pair: {res.stderr.strip()}")
            self._ip("-n", core, "addr", "add", f"{self.gateway_addr(node)}/24", "dev", link)
            self._ip("-n", ns, "addr", "add", f"{self.addr(node)}/24", "dev", "wan")
            self._sysctl("core", f"net.ipv4.conf.{link}.rp_filter", "0")
            self._ip("-n", core, "link", "set", link, "up")
            self._ip("-n", ns, "link", "set", "wan", "up")
            self._ip("-n", ns, "route", "add", "10.250.0.0/16", "via", self.gateway_addr(node))
        self.mode = self._choose_mode()
        if self.mode == "tun":
            self._start_shaper()

    def _choose_mode(self) -> Mode:
        netem = self._netem_works()
        if self._want == "netem" and not netem:
            raise NetnsUnavailable("CCGW_WAN_SHAPER=netem but the kernel has no sch_netem")
        if self._want == "netem" or (self._want is None and netem):
            return "netem"
        if not os.path.exists("/dev/net/tun"):
            raise NetnsUnavailable("neither sch_netem (tc qdisc netem) nor /dev/net/tun")
        return "tun"

    def _netem_works(self) -> bool:
        if TC_BIN is None:
            return False
        core = self.ns("core")
        res = _run([TC_BIN, "-n", core, "qdisc", "add", "dev", "lo", "root", "netem"])
        if res.returncode != 0:
            return False
        _run([TC_BIN, "-n", core, "qdisc", "del", "dev", "lo", "root"])
        return True

    def _start_shaper(self) -> None:
        core = self.ns("core")
        subnets = {node: self.nodes.index(node) + 1 for node in self.nodes}
        self._shaper = _TunShaper(self.ns_path("core"), "wan0", subnets, seed=self.seed)
        self._shaper.start_and_wait()
        self._ip("-n", core, "link", "set", "wan0", "up")
        self._sysctl("core", "net.ipv4.conf.wan0.rp_filter", "0")
        self._ip("-n", core, "route", "add", "default", "dev", "wan0", "table", str(SHAPER_TABLE))
        for node in self.nodes:
            self._ip("-n", core, "rule", "add", "iif", f"c-{node}", "lookup", str(SHAPER_TABLE))

    def teardown(self) -> None:
        """End every process still inside a namespace (by PID), stop the shaper and delete
        the namespaces (their veths go with them). Safe to call twice, and after a failure."""
        for name in reversed(self._made):
            self._kill_inside(name)
        if self._shaper is not None:
            self._shaper.stop()
            self._shaper = None
        for name in reversed(self._made):
            self._ip("netns", "del", name, check=False)
        self._made.clear()

    def _kill_inside(self, name: str) -> None:
        """Processes left in our own namespace were started by this test: end them by PID."""
        res = self._ip("netns", "pids", name, check=False)
        pids = [int(p) for p in res.stdout.split() if p.isdigit() and int(p) != os.getpid()]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 2.0
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if _alive(p)]
                time.sleep(0.05)
            if not pids:
                return

    def __enter__(self) -> WanLab:
        return self.setup()

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    # -- faults --------------------------------------------------------------------------------

    def netem(self, delay_ms: float, loss_pct: float, *nodes: str) -> None:
        """Give each of ``nodes``' links (default: all) ``delay_ms`` and ``loss_pct`` % loss in
        each direction; ``netem(0, 0)`` clears. Two nodes with 20 ms links: 80 ms RTT between
        them; one 20 ms link and one clean: 40 ms RTT."""
        if not 0 <= loss_pct <= 100 or delay_ms < 0:
            raise ValueError(f"delay {delay_ms} ms, loss {loss_pct} %")
        for node in nodes or self.nodes:
            self._impair[node] = (delay_ms / 1000.0, loss_pct / 100.0)
            if self.mode == "netem":
                assert TC_BIN is not None
                for ns, dev in ((self.ns("core"), f"c-{node}"), (self.ns(node), "wan")):
                    _run([TC_BIN, "-n", ns, "qdisc", "del", "dev", dev, "root"])
                    if delay_ms or loss_pct:
                        _check(
                            [TC_BIN, "-n", ns, "qdisc", "add", "dev", dev, "root", "netem",
                             "delay", f"{delay_ms:g}ms", "loss", f"{loss_pct:g}%",
                             "limit", "10000"]
                        )  # fmt: skip
        if self._shaper is not None:
            self._shaper.configure(dict(self._impair))

    def partition(self, *nodes: str) -> None:
        """Cut ``nodes``' links (default: all) at the core."""
        for node in nodes or self.nodes:
            self._ip("-n", self.ns("core"), "link", "set", f"c-{node}", "down")
            self._down.add(node)

    def heal(self, *nodes: str) -> None:
        """Restore links cut by :meth:`partition` (default: all)."""
        for node in nodes or self.nodes:
            self._ip("-n", self.ns("core"), "link", "set", f"c-{node}", "up")
            self._down.discard(node)

    def stats(self) -> dict[str, object]:
        """How the WAN is shaped and, for the TUN shaper, packets forwarded and dropped."""
        out: dict[str, object] = {"mode": self.mode, "links": dict(self._impair)}
        if self._shaper is not None:
            out["forwarded"], out["dropped"] = self._shaper.forwarded, self._shaper.dropped
        out["down"] = sorted(self._down)
        return out

    # -- reaching inside -----------------------------------------------------------------------

    def call(self, node: str, fn: Callable[[], T], timeout: float = 15.0) -> T:
        """Run ``fn`` in a fresh thread inside ``node``'s namespace (sockets it opens live
        there) and return its result or raise its exception."""
        box: dict[str, object] = {}
        path = self.ns_path(node)

        def run() -> None:
            try:
                _enter(path)
                box["value"] = fn()
            except BaseException as exc:  # surfaced to the caller below
                box["error"] = exc

        t = threading.Thread(target=run, name=f"netns-{node}", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            raise TimeoutError(f"{fn!r} in {self.ns(node)} took more than {timeout} s")
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]  # type: ignore[return-value]

    def bound(self, node: str, host: str, port: int, kind: Literal["udp", "tcp"]) -> bool:
        """Whether something in ``node``'s namespace has ``host:port`` bound (UDP or TCP)."""

        def probe() -> bool:
            typ = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
            with socket.socket(socket.AF_INET, typ) as s:
                if kind == "tcp":
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host, port))
                except OSError as exc:
                    return exc.errno == errno.EADDRINUSE
                return False

        return self.call(node, probe)

    def connect_rtt(self, node: str, host: str, port: int, samples: int = 5) -> float:
        """Median TCP connect time (s) from ``node`` to ``host:port``: one round trip."""

        def measure() -> float:
            times = []
            for _ in range(samples):
                t0 = time.monotonic()
                with socket.create_connection((host, port), timeout=5):
                    times.append(time.monotonic() - t0)
            return sorted(times)[len(times) // 2]

        return self.call(node, measure, timeout=30)

    # -- helpers -------------------------------------------------------------------------------

    def _ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert IP_BIN is not None
        argv = [IP_BIN, *args]
        return _check(argv) if check else _run(argv)

    def _sysctl(self, node: str, key: str, value: str) -> None:
        path = "/proc/sys/" + key.replace(".", "/")

        def write() -> None:
            with open(path, "w") as f:  # /proc/sys/net is per network namespace
                f.write(value)

        self.call(node, write)


def _mode_from_env() -> Mode | None:
    raw = os.environ.get("CCGW_WAN_SHAPER", "").strip()
    if raw in ("netem", "tun"):
        return raw  # type: ignore[return-value]
    return None


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)


def _check(argv: list[str]) -> subprocess.CompletedProcess[str]:
    res = _run(argv)
    if res.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {res.stderr.strip() or res.returncode}")
    return res


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class _TunShaper:
    """User-space netem for the core: packets routed into the TUN ``ifname`` come out again
    after the delays of the links they cross (source and destination node, by their
    ``10.250.<n>.0/24`` subnet), or not at all (each link's loss drawn independently)."""

    def __init__(self, ns_path: Path, ifname: str, subnets: dict[str, int], *, seed: int) -> None:
        self._ns_path = ns_path
        self._ifname = ifname
        self._node_of = {n: node for node, n in subnets.items()}
        self._impair: dict[str, tuple[float, float]] = {}
        self._rand = random.Random(seed)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._main, name="wan-shaper", daemon=True)
        self.forwarded = 0
        self.dropped = 0

    def configure(self, impair: dict[str, tuple[float, float]]) -> None:
        """``node → (one-way delay s, loss 0..1)``; nodes not named are clean."""
        with self._lock:
            self._impair = impair

    def start_and_wait(self) -> None:
        self._thread.start()
        if not self._ready.wait(5):
            raise NetnsUnavailable("the TUN shaper did not start")
        if self._error is not None:
            raise NetnsUnavailable(f"cannot open a TUN device: {self._error}")

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _cost(self, packet: bytes) -> tuple[float, float]:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return 0.0, 0.0
        delay, keep = 0.0, 1.0
        with self._lock:
            impair = self._impair
        for addr in (packet[12:16], packet[16:20]):  # RFC 791 §3.1: source, destination
            if addr[0] == 10 and addr[1] == 250:
                node = self._node_of.get(addr[2])
                d, loss = impair.get(node, (0.0, 0.0)) if node else (0.0, 0.0)
                delay += d
                keep *= 1.0 - loss
        return delay, 1.0 - keep

    def _main(self) -> None:
        try:
            _enter(self._ns_path)
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
            ifr = struct.pack("16sH", self._ifname.encode(), IFF_TUN | IFF_NO_PI)
            fcntl.ioctl(fd, TUNSETIFF, ifr)
            os.set_blocking(fd, False)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        pending: list[tuple[float, int, bytes]] = []  # (due, order, packet)
        order = 0
        try:
            while True:
                now = time.monotonic()
                while pending and pending[0][0] <= now:
                    _, _, pkt = heapq.heappop(pending)
                    with contextlib.suppress(OSError):
                        os.write(fd, pkt)
                    self.forwarded += 1
                wait = max(0.0, pending[0][0] - now) if pending else 1.0
                ready, _, _ = select.select([fd, self._stop_r], [], [], wait)
                if self._stop_r in ready:
                    return
                if fd not in ready:
                    continue
                for _ in range(256):
                    try:
                        pkt = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    delay, loss = self._cost(pkt)
                    if loss and self._rand.random() < loss:
                        self.dropped += 1
                        continue
                    order += 1
                    heapq.heappush(pending, (time.monotonic() + delay, order, pkt))
        finally:
            os.close(fd)
