"""Versioned schema migrations: ``migrations/NNNN_name.sql`` applied in order at open.

The ``schema_version`` table records each applied version with a checksum of its SQL; opening a
database applies only the versions it lacks, each in its own transaction. A database whose version
is newer than every known migration is refused (:class:`SchemaTooNewError`), as is one whose
applied migration no longer matches its file.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from gateway.store.base import SchemaTooNewError, StoreError

__all__ = [
    "Migration",
    "apply_migrations",
    "load_migrations",
    "pending_migrations",
    "schema_version",
]

_FILE_RE: Final = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Read ``NNNN_name.sql`` files (default: the package's ``migrations/``); versions must run
    1, 2, 3, ... without gaps or repeats."""
    root = (
        resources.files("gateway.store").joinpath("migrations") if directory is None else directory
    )
    found: list[Migration] = []
    for entry in root.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        m = _FILE_RE.fullmatch(entry.name)
        if m is None:
            raise StoreError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    for expected, mig in enumerate(found, start=1):
        if mig.version != expected:
            raise StoreError(
                f"migrations must be numbered 1..n: expected {expected:04d}, got {mig.version:04d}"
            )
    return found


_VERSION_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_ts REAL NOT NULL
)
"""


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest applied version (0 for a new database)."""
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0])


def pending_migrations(
    applied: Mapping[int, str], migrations: Sequence[Migration], who: str
) -> list[Migration]:
    """The migrations still to apply, given ``applied`` (version → checksum). Refuses a
    database newer than ``migrations`` (:class:`SchemaTooNewError`, naming ``who``: "this
    gateway", "this HQ") or one whose applied step no longer matches its file."""
    known = {m.version: m for m in migrations}
    newest = max(applied, default=0)
    if newest > max(known, default=0):
        raise SchemaTooNewError(
            f"database schema version {newest} is newer than {who} knows "
            f"({max(known, default=0)}); upgrade it"
        )
    for version, checksum in applied.items():
        if known[version].checksum != checksum:
            raise StoreError(
                f"migration {version:04d} changed after it was applied to this database"
            )
    return [m for m in migrations if m.version not in applied]


def apply_migrations(conn: sqlite3.Connection, migrations: list[Migration]) -> list[int]:
    """Bring ``conn`` (autocommit mode) up to the last of ``migrations``; return the versions
    applied now (empty when already current)."""
    conn.execute(_VERSION_TABLE)
    applied = {
        int(v): checksum
        for v, checksum in conn.execute("SELECT version, checksum FROM schema_version")
    }
    done: list[int] = []
    for mig in pending_migrations(applied, migrations, "this gateway"):
        # executescript() runs the whole script; BEGIN/COMMIT make it one transaction.
        script = (
            f"BEGIN IMMEDIATE;\n{mig.sql}\n;\n"
            "INSERT INTO schema_version (version, name, checksum, applied_ts) "
            f"VALUES ({mig.version}, '{mig.name}', '{mig.checksum}', {time.time()!r});\n"
            "COMMIT;"
        )
        try:
            conn.executescript(script)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"migration {mig.version:04d}_{mig.name} failed: {exc}") from exc
        done.append(mig.version)
    return done
