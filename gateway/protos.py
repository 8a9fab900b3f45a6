"""The gRPC contract: ``protos/ccgw/v1/*.proto`` compiled on first use.

Generated code is built, never edited or committed. :func:`load` runs ``grpc_tools.protoc`` into
``gateway/_generated/<hash>/`` when the ``.proto`` files changed (the hash covers every file, so a
stale build is never imported) and returns the ``*_pb2`` and ``*_pb2_grpc`` modules::

    sync_pb2, sync_grpc = load("sync")
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

__all__ = ["PROTO_DIR", "ProtoBuildError", "load"]

PROTO_DIR = Path(__file__).resolve().parent.parent / "protos"
_PACKAGE = "ccgw/v1"
_OUT_ROOT = Path(__file__).resolve().parent / "_generated"
_lock = threading.Lock()
_built: Path | None = None


class ProtoBuildError(RuntimeError):
    """``protoc`` failed: the message carries its output."""


def _digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _build() -> Path:
    global _built
    with _lock:
        if _built is not None:
            return _built
        files = sorted((PROTO_DIR / _PACKAGE).glob("*.proto"))
        if not files:
            raise ProtoBuildError(f"no .proto files under {PROTO_DIR / _PACKAGE}")
        out = _OUT_ROOT / _digest(files)
        if not (out / ".complete").exists():
            from grpc_tools import protoc  # build-time only: imported when a build is needed

            _OUT_ROOT.mkdir(parents=True, exist_ok=True)
            # Build into a private directory and rename it into place: two processes starting
            # together never import a half-written module.
            tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=_OUT_ROOT))
            include = Path(protoc.__file__).parent / "_proto"
            args = [
                "protoc",
                f"-I{PROTO_DIR}",
                f"-I{include}",
                f"--python_out={tmp}",
                f"--grpc_python_out={tmp}",
                *(str(f.relative_to(PROTO_DIR)) for f in files),
            ]
            if protoc.main(args) != 0:
                raise ProtoBuildError(f"protoc failed on {[f.name for f in files]}")
            for d in (tmp / "ccgw", tmp / "ccgw" / "v1"):
                (d / "__init__.py").touch()
            (tmp / ".complete").touch()
            try:
                os.rename(tmp, out)
            except OSError:  # another process won the race: use its build
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        if str(out) not in sys.path:
            sys.path.insert(0, str(out))
        _built = out
        return out


def load(name: str) -> tuple[ModuleType, ModuleType]:
    """Return ``(name_pb2, name_pb2_grpc)`` for ``protos/ccgw/v1/<name>.proto``."""
    _build()
    pb2 = importlib.import_module(f"ccgw.v1.{name}_pb2")
    grpc_mod = importlib.import_module(f"ccgw.v1.{name}_pb2_grpc")
    return pb2, grpc_mod
