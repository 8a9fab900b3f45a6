"""A throw-away PostgreSQL server for tests: its own data directory and socket directory, TCP on
a free 127.0.0.1 port, stopped by its PID.

PostgreSQL refuses to run as root, so under root the server (and ``initdb``) run as the
``postgres`` user through ``setpriv`` (which execs in place: the PID we hold is the postmaster's),
in a temporary directory that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PgServer", "find_pg_bin", "serve_pg"]


def find_pg_bin() -> Path | None:
    """The directory with ``initdb`` and ``postgres`` (``$PATH`` first, then the newest
    ``/usr/lib/postgresql/*/bin``), or ``None``."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(d, "initdb").exists() and Path(d, "postgres").exists():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL server; :meth:`start`, :meth:`create_database`, :meth:`stop`.

    ``fsync``: ``False`` (default) makes tests fast; pass ``True`` to measure with durable
    commits.
    """

    def __init__(self, bin_dir: Path, *, fsync: bool = False) -> None:
        self.bin_dir = bin_dir
        self.fsync = fsync
        self.port = 0
        self.base = Path(tempfile.mkdtemp(prefix="ccgw-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sock"
        self.log_path = self.base / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._prefix: list[str] = []
        self.user = "postgres"
        self._ids = 0
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise RuntimeError("running as root needs setpriv to drop to the postgres user")
            pw = pwd.getpwnam("postgres")
            self._prefix = [
                setpriv,
                f"--reuid={pw.pw_uid}",
                f"--regid={pw.pw_gid}",
                "--clear-groups",
                "--",
            ]
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self.sockets.mkdir()
        if os.geteuid() == 0:
            os.chown(self.sockets, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self._prefix, *args],
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
            cwd=self.base,
        )

    def start(self, timeout: float = 30.0) -> None:
        """initdb, start the postmaster on a free port, wait until it accepts connections."""
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        last_error = ""
        for _ in range(3):  # the free port may be taken between probe and bind: retry
            self.port = _free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        *self._prefix,
                        str(self.bin_dir / "postgres"),
                        "-D",
                        str(self.data),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(self.port),
                        "-k",
                        str(self.sockets),
                        "-c",
                        f"fsync={'on' if self.fsync else 'off'}",
                        "-c",
                        f"synchronous_commit={'on' if self.fsync else 'off'}",
                        "-c",
                        f"full_page_writes={'on' if self.fsync else 'off'}",
                        "-c",
                        "max_connections=50",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.base,
                )
            try:
                self._wait_ready(timeout)
                return
            except RuntimeError as exc:
                last_error = str(exc)
                self._kill()
        raise RuntimeError(f"postgres did not start: {last_error}\n{self.log()}")

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}")
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres not ready after {timeout} s: {exc}") from exc
                time.sleep(0.05)

    def dsn(self, dbname: str) -> str:
        """A libpq URL for database ``dbname`` over TCP."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """Create a new empty database (a fresh name if none given); return its URL."""
        import psycopg

        if name is None:
            self._ids += 1
            name = f"t{os.getpid()}_{self._ids}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def log(self) -> str:
        """The server's log so far (for failure reports)."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # "fast shutdown" of the postmaster
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop(self) -> None:
        """Stop the server by its PID and delete its directory (idempotent)."""
        self._kill()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.base)


def serve_pg() -> Iterator[PgServer]:
    """A module fixture's body: a started server (the test is skipped without PostgreSQL's
    binaries), stopped by its PID afterwards, pass or fail. ``yield from serve_pg()``."""
    import pytest

    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries (initdb, postgres) not found")
    server = PgServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
