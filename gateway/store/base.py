"""The seam between the gateway and its site database."""

from __future__ import annotations

from typing import Protocol

from gateway.store.model import Cdr, OutboxEntry

__all__ = ["SchemaTooNewError", "SiteStore", "StoreError"]


class StoreError(Exception):
    """The store cannot be opened or used (bad migrations, schema, file)."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer gateway: its schema version is one we do not know."""


class SiteStore(Protocol):
    """A site's persistent store. Calls are synchronous, each one small transaction; a caller on
    the event loop may run them in a worker thread (one at a time)."""

    def write_cdr(self, cdr: Cdr) -> int:
        """Insert ``cdr`` and its ``"cdr"`` outbox entry atomically; return the CDR id."""
        ...

    def recent_cdrs(self, limit: int = 50) -> list[Cdr]:
        """The newest ``limit`` CDRs, newest first, with ``id`` set."""
        ...

    def outbox_peek(self, after_seq: int = 0, limit: int = 100) -> list[OutboxEntry]:
        """Up to ``limit`` outbox entries with ``seq > after_seq``, in ``seq`` order."""
        ...

    def outbox_trim(self, upto_seq: int) -> int:
        """Delete entries with ``seq <= upto_seq`` (acknowledged by HQ); return how many."""
        ...

    def outbox_depth(self) -> int:
        """How many entries wait in the outbox."""
        ...

    def close(self) -> None:
        """Release the database; further calls fail."""
        ...
