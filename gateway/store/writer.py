"""Group commit: the site's writes, queued from the event loop, committed on one writer thread.

Every write a call produces (a CDR, an interaction, a voicemail's metadata ...) is a row and its
outbox entry in one transaction. Committing each alone costs a commit (and now and then a WAL
checkpoint) per record; :class:`StoreWriter` commits whatever was queued while the previous
batch ran in one transaction, each write in its own savepoint (one that fails leaves the others
written). The event loop never waits for a commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from gateway.store.sqlite import SqliteSiteStore

__all__ = ["Result", "StoreWriter"]

log = logging.getLogger(__name__)

MAX_BATCH = 500
"""Writes per transaction at most: a backlog commits in steps, so readers see it progress."""

Result = tuple[Callable[..., Any], str, BaseException | None]
"""A write's function, what it wrote (for logs) and its error, ``None`` when committed."""


class StoreWriter:
    """Queue writes on the loop; commit them in groups on ``executor`` (one thread).

    ``on_committed(results)`` runs on the loop after each batch, in commit order.
    """

    def __init__(
        self,
        store: SqliteSiteStore,
        loop: asyncio.AbstractEventLoop,
        executor: Executor,
        on_committed: Callable[[list[Result]], None],
    ) -> None:
        self.store = store
        self.loop = loop
        self.executor = executor
        self.on_committed = on_committed
        self._pending: deque[tuple[Callable[..., Any], tuple[Any, ...], str]] = deque()
        self._queued = False
        self._closing = False
        self.batches = 0
        """Transactions committed (a figure: writes per batch = writes / batches)."""

    def write(self, fn: Callable[..., Any], *args: Any, what: str) -> None:
        """Queue ``fn(*args)`` (a store write that opens its own transaction)."""
        self._pending.append((fn, args, what))
        if not self._queued and not self._closing:
            self._schedule()

    def _schedule(self) -> None:
        self._queued = True
        fut = self.loop.run_in_executor(self.executor, self.flush)
        fut.add_done_callback(self._flushed)

    def flush(self) -> list[Result]:
        """On the writer thread (or at close): every queued write in one transaction."""
        batch: list[tuple[Callable[..., Any], tuple[Any, ...], str]] = []
        while self._pending and len(batch) < MAX_BATCH:
            batch.append(self._pending.popleft())
        if not batch:
            return []
        results: list[Result] = []
        try:
            with self.store.transaction():
                for fn, args, what in batch:
                    try:
                        fn(*args)  # its own transaction() is a savepoint inside this one
                    except Exception as exc:
                        results.append((fn, what, exc))
                    else:
                        results.append((fn, what, None))
        except Exception as exc:  # the commit itself failed: nothing of the batch is stored
            results = [(fn, what, exc) for fn, _, what in batch]
        self.batches += 1
        return results

    def _flushed(self, fut: asyncio.Future[list[Result]]) -> None:
        self._queued = False
        if fut.cancelled() or fut.exception() is not None:
            log.error("the store writer failed: %r", None if fut.cancelled() else fut.exception())
        else:
            self.on_committed(fut.result())
        if self._pending and not self._closing:
            self._schedule()

    def close(self) -> list[Result]:
        """After the executor has shut down: commit what is still queued, here."""
        self._closing = True
        return self.flush()
