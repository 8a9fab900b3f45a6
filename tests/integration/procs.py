"""``ccgw`` subcommands as real child processes, for crash tests.

:class:`CcgwProcess` runs ``python -m gateway.cli ARGS`` (``PYTHONPATH`` set to the repository),
with stdout/stderr in files under a work directory, and is ended by its own PID: gracefully
(:meth:`~CcgwProcess.stop`, SIGTERM then SIGKILL) or as a crash (:meth:`~CcgwProcess.crash`,
SIGKILL at once). One object is one incarnation: to restart, make a new one (its log files get
their own name, so the first run's tail survives for the failure report).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

try:  # a package when tests/integration has an __init__.py, plain modules otherwise
    from . import peers
except ImportError:
    import peers  # type: ignore[no-redef]

__all__ = ["ROOT", "CcgwProcess", "ccgw_argv", "ccgw_env", "metric", "to_toml", "wait_until"]

ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")


def ccgw_argv(*args: str) -> list[str]:
    """The command line of ``ccgw ARGS`` run from this checkout."""
    return [sys.executable, "-m", "gateway.cli", *args]


def ccgw_env() -> dict[str, str]:
    """The environment for a ``ccgw`` child: ours, with the repository on ``PYTHONPATH``."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


class CcgwProcess(peers.ManagedProcess):
    """One run of ``ccgw ARGS``; :meth:`start` returns once ``banner`` is on its stdout."""

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        workdir: Path,
        registry: peers.ProcessRegistry | None = None,
    ) -> None:
        super().__init__(name, workdir, registry)
        self.argv = ccgw_argv(*args)

    def start(self, banner: str, timeout: float = 30.0) -> CcgwProcess:
        """Spawn and wait (at most ``timeout`` s) for ``banner``; RuntimeError with the output
        tails if it exits or stays silent."""
        if self.proc is not None:
            raise RuntimeError(f"{self.name} already started: make a new one to restart")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=ROOT,
                env=ccgw_env(),
                start_new_session=True,
            )
        (self.workdir / f"{self.name}.cmdline").write_text(" ".join(self.argv) + "\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if banner in self.stdout_text():
                return self
            if not self.running():
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not print {banner!r}\n{self.describe()}")

    def crash(self) -> int | None:
        """``kill -9`` by PID, as a power cut would; waits (bounded) for the exit status."""
        if self.proc is None:
            return None
        self.signal(signal.SIGKILL)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired as exc:  # pragma: no cover - a kernel in trouble
            raise RuntimeError(f"{self.name} (pid {self.pid}) outlived SIGKILL") from exc
        return self.proc.returncode

    def pause(self) -> None:
        """SIGSTOP by PID: the process freezes (its sockets stay open; the kernel still accepts
        bytes into their buffers), as a machine stalled by swapping or a debugger would."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT by PID: undo :meth:`pause`."""
        self.signal(signal.SIGCONT)

    def stop(self, grace: float = 10.0) -> int | None:
        """A clean stop: SIGTERM (ccgw stops its servers and closes its stores), SIGKILL after
        ``grace`` s. Returns the exit status."""
        self.resume()  # a paused process would not see SIGTERM until continued
        return self.kill(grace)


# --------------------------------------------------------------------------------------------
# TOML for the configs a test writes (tomllib reads; nothing in the standard library writes)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string (JSON escapes are TOML escapes)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(doc: dict[str, Any]) -> str:
    """``doc`` as TOML: top-level tables as ``[name]`` with inline values, the rest inline
    (enough for :func:`tests.integration.gateway.site_config` documents)."""
    head = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    body = []
    for k, v in doc.items():
        if isinstance(v, dict):
            body.append(f"\n[{_toml_key(k)}]")
            body += [f"{_toml_key(kk)} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(head + body) + "\n"


def wait_until(
    cond: Callable[[], T],
    timeout: float,
    what: str,
    *,
    every: float = 0.25,
    errors: tuple[type[BaseException], ...] = (OSError, KeyError),
) -> T:
    """Poll ``cond`` until it returns something truthy and return that; ``errors`` it raises
    meanwhile (HTTP not up yet, a link down ...) count as "not yet". AssertionError naming
    ``what`` and the last value or error after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = cond()
        except errors as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(every)


def metric(text: str, name: str) -> float | None:
    """The value of metric ``name`` (any labels: the first sample) in Prometheus ``text``."""
    m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None
