"""A real etcd v3 server for integration tests, on free loopback ports in a temporary directory.

::

    with EtcdServer(tmp_path / "etcd") as etcd:   # started, healthy
        client = await gateway.mesh.etcd.connect([etcd.endpoint])
        ...
        etcd.stop()      # SIGTERM (kill=True: SIGKILL) by PID, data dir kept
        etcd.start()     # same ports, same data dir: the store survives

The process is ended by its own PID on :meth:`stop` / context exit, whatever the test did.
Every wait is bounded. ``ETCD_BIN`` is ``None`` when the binary is missing: skip then.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

try:
    from . import peers
except ImportError:
    import peers  # type: ignore[no-redef]

__all__ = ["ETCD_BIN", "EtcdServer"]

ETCD_BIN = shutil.which("etcd")
HOST = "127.0.0.1"


class EtcdServer:
    """One single-member etcd cluster bound to 127.0.0.1 (client and peer port chosen free).

    ``workdir`` holds the data dir (``data/``) and the server's output (``etcd.log``); a fresh
    temporary directory when omitted (removed on :meth:`cleanup` / context exit).
    """

    def __init__(
        self, workdir: Path | str | None = None, *, name: str = "t", pki: Path | None = None
    ) -> None:
        if ETCD_BIN is None:
            raise RuntimeError("etcd binary not found (apt-get install etcd-server)")
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="ccgw-etcd-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "etcd.log"
        self.name = name
        # With ``pki`` (a ``ccgw certs`` folder holding ca.pem and etcd.pem / etcd-key.pem):
        # clients speak TLS and must show a certificate from that CA (--client-cert-auth).
        self.pki = pki
        self.client_port = peers.free_port(kind="tcp")
        self.peer_port = peers.free_port(kind="tcp")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def endpoint(self) -> str:
        """``"127.0.0.1:PORT"``: what :func:`gateway.mesh.etcd.connect` takes."""
        return f"{HOST}:{self.client_port}"

    @property
    def url(self) -> str:
        scheme = "https" if self.pki is not None else "http"
        return f"{scheme}://{HOST}:{self.client_port}"

    def client_ssl(self) -> ssl.SSLContext | None:
        """A client context for the TLS server (the CA, and a client certificate "etcd")."""
        if self.pki is None:
            return None
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.pem"))
        ctx.load_cert_chain(str(self.pki / "etcd.pem"), str(self.pki / "etcd-key.pem"))
        return ctx

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self) -> list[str]:
        assert ETCD_BIN is not None
        peer = f"http://{HOST}:{self.peer_port}"
        return [
            ETCD_BIN,
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.url,
            "--advertise-client-urls",
            self.url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"{self.name}={peer}",
            "--initial-cluster-state",
            "new",
            "--log-level",
            "warn",
            *(
                [
                    "--cert-file", str(self.pki / "etcd.pem"),
                    "--key-file", str(self.pki / "etcd-key.pem"),
                    "--trusted-ca-file", str(self.pki / "ca.pem"),
                    "--client-cert-auth",
                ]
                if self.pki is not None
                else []
            ),
        ]  # fmt: skip

    def start(self, timeout: float = 15.0) -> EtcdServer:
        """Start (or restart, on the same ports and data dir) and wait for ``/health``."""
        if self.running():
            raise RuntimeError("etcd already running")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.starts}: {' '.join(self.argv())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(self.workdir),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"etcd exited at start:\n{peers.tail(self.log_path)}")
            if self.healthy():
                return self
            time.sleep(0.05)
        self.stop(kill=True)
        raise RuntimeError(f"etcd not healthy after {timeout}s:\n{peers.tail(self.log_path)}")

    def healthy(self) -> bool:
        """``GET /health`` answers ``{"health":"true"}``."""
        try:
            with urllib.request.urlopen(
                self.url + "/health", timeout=1.0, context=self.client_ssl()
            ) as resp:
                return resp.status == 200 and b'"true"' in resp.read()
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def stop(self, *, kill: bool = False, grace: float = 5.0) -> int | None:
        """End the server by its PID (SIGTERM, or SIGKILL with ``kill``); the data dir stays."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5.0)
        return proc.returncode

    def restart(self, *, kill: bool = False) -> EtcdServer:
        """:meth:`stop` then :meth:`start`: same ports, same data."""
        self.stop(kill=kill)
        return self.start()

    def cleanup(self) -> None:
        """Stop and, if the directory was ours, remove it."""
        self.stop(kill=True)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, max_chars: int = 4000) -> str:
        return peers.tail(self.log_path, max_chars)

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
