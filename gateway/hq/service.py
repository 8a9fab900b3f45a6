"""HQ's gRPC service (``protos/ccgw/v1/sync.proto``): outbox sync, customer look-up, change feed.

The servicer only translates messages to :class:`~gateway.hq.store.SyncEntry` and dicts and calls
the :class:`~gateway.hq.store.CentralStore`; exactly-once lives in the store (``apply_batch`` is
idempotent by site and sequence and moves the high-water mark in the same transaction).

Ordering per site: one Sync stream per site applies at a time. A new stream from a site
supersedes the old one (the old one is aborted before it can apply anything more), and the hello
reads the high-water mark under the same per-site lock, so a reconnecting site never races a
half-dead stream of its own.

Which customer changes a site receives (:func:`serves`) is a pure function of the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import grpc

from gateway.hq.store import CentralStore, SyncEntry
from gateway.mesh.tls import peer_name
from gateway.protos import load

__all__ = ["HqServer", "serves"]

logger = logging.getLogger(__name__)

pb2, pb2_grpc = load("sync")

_JSON_SEP: Final = (",", ":")
_decode_json: Final = json.JSONDecoder().decode
"""Hot path: one decoder for every entry (``json.loads`` adds per-call overhead)."""
_LOOKUP_MAX: Final = 100
_CHANGES_PAGE: Final = 500
_MAX_MESSAGE: Final = 32 * 1024 * 1024

SERVER_OPTIONS: Final = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    # Sites ping every 10 s to notice a dead WAN link; do not answer those pings with GOAWAY.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
)


EDITOR = "central"
"""The origin of changes made at HQ itself (``ccgw hq``'s REST API), not by a site; HQ's own
site gateway syncs as its site name, with its own sequence."""


def serves(site: str, customer: Mapping[str, Any], regions: Collection[str] = ()) -> bool:
    """Whether ``site`` should receive a change to ``customer`` (a merged record, see
    :mod:`gateway.store.merge`).

    A site serves a customer it has written to (a ``"site"`` in the record's ``"_stamps"``), one
    the record names (``"sites"`` list, ``"site"`` or ``"home_site"``), and one whose ``"region"``
    is the site's name or one of its ``regions``. A record with neither sites nor a region goes to
    every site (edits made at HQ itself, :data:`EDITOR`, name no site).
    """
    named: set[str] = set()
    sites = customer.get("sites")
    if isinstance(sites, list | tuple):
        named.update(str(s) for s in sites)
    for key in ("site", "home_site"):
        value = customer.get(key)
        if isinstance(value, str) and value:
            named.add(value)
    stamps = customer.get("_stamps")
    if isinstance(stamps, Mapping):
        for stamp in stamps.values():
            site_of = stamp.get("site") if isinstance(stamp, Mapping) else None
            if isinstance(site_of, str) and site_of != EDITOR:  # HQ's own edits name no site
                named.add(site_of)
    region = customer.get("region")
    if not named and not region:
        return True
    return site in named or (bool(region) and (region == site or region in regions))


@dataclass
class _SiteState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    generation: int = 0
    high_water: int = 0
    backlog: int = 0


class _Superseded(Exception):
    pass


class _Servicer:
    """``ccgw.v1.Hq``: see sync.proto for the contract of each RPC."""

    def __init__(self, owner: HqServer) -> None:
        self._hq = owner

    # -- helpers -------------------------------------------------------------------------------

    async def _check_site(self, context: grpc.aio.ServicerContext[Any, Any], site: str) -> None:
        if not self._hq.tls or not site:
            return
        name = peer_name(context)
        if name != site:
            logger.warning("refused: certificate is for %r but the request claims %r", name, site)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"certificate is for {name!r}, request claims site {site!r}",
            )

    # -- Sync ----------------------------------------------------------------------------------

    async def Sync(
        self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        hello = await context.read()
        if hello is grpc.aio.EOF:
            return
        site = hello.site
        if not site:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "first message must name the site"
            )
        if hello.entries:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the hello carries no entries")
        await self._check_site(context, site)
        hq = self._hq
        state = hq.site_state(site)
        async with state.lock:
            state.generation += 1
            generation = state.generation
            state.high_water = await hq.store.high_water(site)
        await context.write(pb2.SyncAck(high_water=state.high_water, hello=True))
        logger.info("site %r connected, high water %d", site, state.high_water)

        queue: asyncio.Queue[tuple[list[SyncEntry], int] | None] = asyncio.Queue(maxsize=64)
        reader = asyncio.create_task(self._read_batches(site, context, queue, state))
        try:
            eof = False
            while not eof:
                item = await self._next(queue, reader)
                if item is None:
                    break
                entries, received = item
                # Coalesce what is already queued into one store transaction.
                while len(entries) < hq.coalesce and not queue.empty():
                    more = queue.get_nowait()
                    if more is None:
                        eof = True
                        break
                    entries = entries + more[0]
                    received += more[1]
                await self._apply(site, state, generation, entries, context)
                await context.write(pb2.SyncAck(high_water=state.high_water, received=received))
        except _Superseded:
            await context.abort(
                grpc.StatusCode.ABORTED, "superseded by a newer stream from the site"
            )
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    @staticmethod
    async def _next(
        queue: asyncio.Queue[tuple[list[SyncEntry], int] | None], reader: asyncio.Task[None]
    ) -> tuple[list[SyncEntry], int] | None:
        """The next queued batch; ``None`` at the end of the stream; re-raises a reader error."""
        while True:
            if not queue.empty():
                return queue.get_nowait()
            if reader.done():
                reader.result()
                return None
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                return getter.result()
            getter.cancel()  # the reader ended: loop to drain what it queued last

    async def _read_batches(
        self,
        site: str,
        context: grpc.aio.ServicerContext[Any, Any],
        queue: asyncio.Queue[tuple[list[SyncEntry], int] | None],
        state: _SiteState,
    ) -> None:
        last = 0
        while True:
            msg = await context.read()
            if msg is grpc.aio.EOF:
                await queue.put(None)
                return
            if msg.site and msg.site != site:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"stream is for {site!r}, not {msg.site!r}"
                )
            entries: list[SyncEntry] = []
            for e in msg.entries:
                if e.seq <= last:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"seq {e.seq} after {last}: entries must increase strictly",
                    )
                last = e.seq
                try:
                    text = e.payload_json.decode()
                    payload = _decode_json(text)
                except ValueError as exc:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"entry {e.seq}: payload is not JSON: {exc}",
                    )
                if not isinstance(payload, dict):
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, f"entry {e.seq}: payload is not an object"
                    )
                entries.append(SyncEntry(e.seq, e.kind, payload, e.created_ts, text))
            state.backlog = msg.outbox_depth
            await queue.put((entries, len(entries)))

    async def _apply(
        self,
        site: str,
        state: _SiteState,
        generation: int,
        entries: list[SyncEntry],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        hq = self._hq
        async with state.lock:
            if state.generation != generation:
                raise _Superseded
            before = state.high_water
            fresh = sum(1 for e in entries if e.seq > before)
            apply = asyncio.ensure_future(hq.store.apply_batch(site, entries))
            cancelled = False
            try:
                await asyncio.shield(apply)
            except asyncio.CancelledError:
                # The site went away mid-apply. The store commits or not as one transaction
                # either way: wait for it under the lock, so a new stream's hello reads the
                # high water after it and the counters stay true.
                cancelled = True
                with contextlib.suppress(Exception):
                    await apply
            if apply.cancelled() or apply.exception() is not None:
                if cancelled:
                    raise asyncio.CancelledError
                apply.result()  # raise the store's error
            state.high_water = apply.result()
        hq.batches_total += 1
        hq.applied_total += fresh
        hq.duplicates_total += len(entries) - fresh
        if fresh and any(e.kind == "customer" for e in entries):
            hq.notify_changes()
        if cancelled:
            raise asyncio.CancelledError

    # -- Lookup --------------------------------------------------------------------------------

    async def Lookup(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await self._check_site(context, request.site)
        if not (request.phone or request.customer_id or request.region or request.name):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "give at least one of phone, customer_id, region, name",
            )
        limit = min(request.limit or 10, _LOOKUP_MAX)
        rows = await self._hq.store.lookup_customers(
            phone=request.phone or None,
            customer_id=request.customer_id or None,
            region=request.region or None,
            name=request.name or None,
            limit=limit,
        )
        self._hq.lookups_total += 1
        return pb2.LookupReply(
            customers_json=[
                json.dumps(r, separators=_JSON_SEP, ensure_ascii=False, default=str).encode()
                for r in rows[:limit]
            ]
        )

    # -- Changes -------------------------------------------------------------------------------

    async def Changes(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        site = request.site
        await self._check_site(context, site)
        hq = self._hq
        after = request.after_rev
        regions = hq.site_regions.get(site, ())
        while not hq.stopping:
            event = hq.change_event
            changes = await hq.store.customer_changes(after, limit=_CHANGES_PAGE)
            for rev, customer in changes:
                after = max(after, rev)
                if site and not serves(site, customer, regions):
                    continue
                await context.write(
                    pb2.CustomerUpdate(
                        rev=rev,
                        customer_json=json.dumps(
                            customer, separators=_JSON_SEP, ensure_ascii=False, default=str
                        ).encode(),
                    )
                )
            if len(changes) < _CHANGES_PAGE:  # caught up: wait for a change or the next poll
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), hq.poll_s)


class HqServer:
    """The HQ gRPC server.

    ``listen`` is ``"host:port"`` (port 0 picks a free one; :meth:`start` returns the bound port).
    With ``credentials`` (see :func:`gateway.mesh.tls.server_credentials`) every site must present
    a certificate of the mesh CA and may only speak for the name in it. ``grace_s`` is how long
    :meth:`stop` lets RPCs in progress finish. ``poll_s`` bounds how late a customer change made
    outside this process reaches the change feeds; :meth:`notify_changes` wakes them at once.
    ``site_regions`` maps a site to the customer regions it serves (see :func:`serves`).
    ``coalesce`` is the most entries applied in one store transaction.
    """

    def __init__(
        self,
        store: CentralStore,
        *,
        listen: str,
        credentials: grpc.ServerCredentials | None,
        grace_s: float = 2.0,
        poll_s: float = 0.5,
        site_regions: Mapping[str, Collection[str]] | None = None,
        coalesce: int = 2000,
    ) -> None:
        self.store = store
        self.listen = listen
        self.tls = credentials is not None
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.site_regions: Mapping[str, Collection[str]] = dict(site_regions or {})
        self.coalesce = max(1, coalesce)
        self.applied_total = 0
        """Entries applied for the first time (all sites)."""
        self.duplicates_total = 0
        """Entries received again and skipped (already at or below the high water)."""
        self.batches_total = 0
        """Store transactions (apply_batch calls)."""
        self.lookups_total = 0
        self.stopping = False
        self.change_event = asyncio.Event()
        self.port = 0
        self._credentials = credentials
        self._sites: dict[str, _SiteState] = {}
        self._server: grpc.aio.Server | None = None

    def site_state(self, site: str) -> _SiteState:
        """Per-site state (created on first use)."""
        state = self._sites.get(site)
        if state is None:
            state = self._sites[site] = _SiteState()
        return state

    @property
    def high_water(self) -> dict[str, int]:
        """Last known high-water mark per site that has connected since start."""
        return {site: s.high_water for site, s in self._sites.items()}

    @property
    def backlog(self) -> dict[str, int]:
        """Outbox depth each site last reported."""
        return {site: s.backlog for site, s in self._sites.items()}

    def notify_changes(self) -> None:
        """Wake every change feed now (a customer changed at HQ)."""
        event, self.change_event = self.change_event, asyncio.Event()
        event.set()

    async def start(self) -> int:
        """Bind and start serving; return the bound port."""
        server = grpc.aio.server(options=SERVER_OPTIONS)
        pb2_grpc.add_HqServicer_to_server(_Servicer(self), server)
        if self._credentials is not None:
            port = int(server.add_secure_port(self.listen, self._credentials))
        else:
            port = int(server.add_insecure_port(self.listen))
        if not port:
            raise OSError(f"cannot listen on {self.listen}")
        self.stopping = False
        await server.start()
        self._server = server
        self.port = port
        logger.info("HQ service on %s (port %d, tls=%s)", self.listen, port, self.tls)
        return port

    async def stop(self) -> None:
        """Stop accepting RPCs; let those in progress run up to ``grace_s``; then cancel them."""
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping = True
        self.notify_changes()  # change feeds see `stopping` and end their streams
        await server.stop(self.grace_s)

    def register_metrics(self, registry: Any) -> None:
        """Export the counters into a :class:`gateway.metrics.Registry`."""
        registry.counter(
            "ccgw_hq_sync_applied_total",
            "Outbox entries applied at HQ for the first time",
            callback=lambda: float(self.applied_total),
        )
        registry.counter(
            "ccgw_hq_sync_duplicates_total",
            "Outbox entries received again and skipped",
            callback=lambda: float(self.duplicates_total),
        )
        registry.counter(
            "ccgw_hq_sync_batches_total",
            "Store transactions applying site entries",
            callback=lambda: float(self.batches_total),
        )
        registry.gauge(
            "ccgw_hq_sync_high_water",
            "Highest outbox sequence applied per site",
            ["site"],
            callback=lambda: {(s,): float(v) for s, v in self.high_water.items()},
        )
        registry.gauge(
            "ccgw_hq_sync_site_backlog",
            "Outbox depth the site last reported (entries)",
            ["site"],
            callback=lambda: {(s,): float(v) for s, v in self.backlog.items()},
        )
