"""Site side of the HQ link: outbox -> HQ sync stream, customer look-up, customer change feed.

:class:`SyncClient` drains the site outbox to HQ over the ``Hq.Sync`` stream
(``protos/ccgw/v1/sync.proto``). It sends batches (default 500 entries) without waiting for each
ack, keeping at most ``window`` batches in flight, and trims the outbox up to each ack's high-water
mark. On every (re)connect HQ first tells it the high water it has applied; the client trims up to
it and resends from there, so a restart or ``kill -9`` of either side loses nothing, and HQ (which
applies idempotently by site and sequence) applies nothing twice.

The outbox is reached through async callables (``peek``, ``trim``, ``depth``) because the site runs
SQLite calls on its writer thread; :class:`StoreOutbox` adapts a
:class:`~gateway.store.sqlite.SqliteSiteStore` with :func:`asyncio.to_thread`.

:func:`lookup` asks HQ about a customer with a strict time budget (gRPC deadline and
:func:`asyncio.wait_for`): it returns ``None`` rather than wait longer. :class:`CustomerFeed`
follows HQ's customer change feed and resumes from the last revision after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import grpc

from gateway.protos import load
from gateway.store.model import OutboxEntry

__all__ = [
    "Backoff",
    "CustomerFeed",
    "OutboxSource",
    "StoreOutbox",
    "SyncClient",
    "lookup",
    "make_channel",
]

logger = logging.getLogger(__name__)

pb2, pb2_grpc = load("sync")

Peek = Callable[[int, int], Awaitable[Sequence[OutboxEntry]]]
"""``peek(after_seq, limit)``: up to ``limit`` entries with ``seq > after_seq``, oldest first."""
Trim = Callable[[int], Awaitable[int]]
"""``trim(upto_seq)``: delete entries with ``seq <= upto_seq``; return how many went."""
Depth = Callable[[], Awaitable[int]]
"""``depth()``: entries in the outbox."""

# One encoder for every entry: json.dumps() with arguments builds a new one per call.
_encode_json: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_MAX_MESSAGE: Final = 32 * 1024 * 1024
_HELLO_TIMEOUT_S: Final = 10.0


class OutboxSource(Protocol):
    """The synchronous outbox calls of :class:`~gateway.store.sqlite.SqliteSiteStore`."""

    def outbox_peek(
        self, after_seq: int = 0, limit: int = 100, *, raw: bool = False
    ) -> list[OutboxEntry]: ...

    def outbox_trim(self, upto_seq: int) -> int: ...

    def outbox_depth(self) -> int: ...


class StoreOutbox:
    """Async ``peek`` / ``trim`` / ``depth`` over a synchronous store, each call in a thread
    (not behind the writes queued on the site's writer thread: a busy writer must not starve
    the sync). ``raw``: payloads as the stored JSON text, sent without decoding them."""

    def __init__(self, store: OutboxSource, *, raw: bool = False) -> None:
        self._store = store
        self._raw = raw

    async def peek(self, after_seq: int, limit: int) -> list[OutboxEntry]:
        """See :data:`Peek`."""
        return await asyncio.to_thread(self._store.outbox_peek, after_seq, limit, raw=self._raw)

    async def trim(self, upto_seq: int) -> int:
        """See :data:`Trim`."""
        return await asyncio.to_thread(self._store.outbox_trim, upto_seq)

    async def depth(self) -> int:
        """See :data:`Depth`."""
        return await asyncio.to_thread(self._store.outbox_depth)


class Backoff:
    """Exponential back-off with full jitter (pure: ``rand`` is injected).

    Delays start at ``initial_s``, double per failure up to ``max_s``; :meth:`reset` after a
    success. Each delay is drawn uniformly from ``[delay / 2, delay]``.
    """

    def __init__(
        self,
        initial_s: float = 0.1,
        max_s: float = 5.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max(max_s, initial_s)
        self._rand = rand
        self._next = initial_s

    def reset(self) -> None:
        """Forget past failures."""
        self._next = self.initial_s

    def next_delay(self) -> float:
        """The delay before the next attempt (seconds)."""
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        return delay * (0.5 + 0.5 * self._rand())


def make_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    *,
    backoff_max: float = 5.0,
    server_name: str | None = None,
) -> grpc.aio.Channel:
    """A channel to HQ that reconnects within ``backoff_max`` and notices a dead link by keepalive.

    ``server_name`` overrides the name checked against HQ's certificate (default: the host of
    ``target``, which must be in its SAN).
    """
    options: list[tuple[str, Any]] = [
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", max(100, int(backoff_max * 1000))),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", _MAX_MESSAGE),
        ("grpc.max_send_message_length", _MAX_MESSAGE),
    ]
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(target, credentials, options=options)


@dataclass(frozen=True, slots=True)
class _Flight:
    """A batch sent and not yet acked."""

    last_seq: int
    count: int
    first_ts: float


class _StreamEnded(Exception):
    pass


class SyncClient:
    """Drains a site outbox to HQ (see the module docstring).

    ``target`` is HQ's ``host:port``; ``credentials`` from
    :func:`gateway.mesh.tls.channel_credentials` (``None``: plaintext, tests only). ``batch``
    entries per message, at most ``window`` messages unacked. Reconnects wait ``0.1 s`` doubling
    to ``backoff_max``. ``idle_poll_s`` is how often an empty outbox is re-read (:meth:`notify`
    wakes the sender at once after a write). ``stats_interval_s``: how often ``depth()`` is
    refreshed. ``clock`` is wall-clock time (Unix seconds, like ``created_ts``).
    """

    def __init__(
        self,
        site: str,
        target: str,
        credentials: grpc.ChannelCredentials | None,
        *,
        peek: Peek,
        trim: Trim,
        depth: Depth,
        batch: int = 500,
        window: int = 8,
        backoff_max: float = 5.0,
        clock: Callable[[], float] = time.time,
        idle_poll_s: float = 0.05,
        stats_interval_s: float = 0.5,
        rate_window_s: float = 2.0,
        server_name: str | None = None,
    ) -> None:
        if batch < 1 or window < 1:
            raise ValueError("batch and window must be at least 1")
        self.site = site
        self.target = target
        self._credentials = credentials
        self._peek = peek
        self._trim = trim
        self._depth_fn = depth
        self._batch = batch
        self._window = window
        self._backoff = Backoff(0.1, backoff_max)
        self._backoff_max = backoff_max
        self._clock = clock
        self._idle_poll_s = idle_poll_s
        self._stats_interval_s = stats_interval_s
        self._rate_window_s = rate_window_s
        self._server_name = server_name

        self._channel: grpc.aio.Channel | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._connected = False
        self._acked = 0
        self._trimmed = 0
        self._sent = 0
        self._inflight: deque[_Flight] = deque()
        self._staged: Sequence[OutboxEntry] = ()
        self._head: tuple[int, float] | None = None  # (seq, created_ts) of the oldest unacked
        self._depth = 0
        self._acks: deque[tuple[float, int]] = deque()
        self._room = asyncio.Event()
        self._wake = asyncio.Event()
        self._trim_wake = asyncio.Event()
        self.acked_total = 0
        """Entries acked by HQ since start."""
        self.reconnects = 0
        """Sessions that ended in an error."""
        self.last_error = ""
        self.lag_samples: deque[float] = deque(maxlen=4096)
        """Sync lag (seconds) of each acked batch: ack time minus its oldest entry's created_ts."""

    # -- public state --------------------------------------------------------------------------

    @property
    def channel(self) -> grpc.aio.Channel | None:
        """The channel to HQ (for :func:`lookup`); ``None`` before :meth:`start`."""
        return self._channel

    @property
    def connected(self) -> bool:
        """The Sync stream is up (hello answered)."""
        return self._connected

    @property
    def acked_seq(self) -> int:
        """Highest outbox sequence HQ has confirmed (its high-water mark for this site)."""
        return self._acked

    @property
    def outbox_depth(self) -> int:
        """Outbox entries (last known: refreshed every ``stats_interval_s``)."""
        return self._depth

    @property
    def lag_s(self) -> float:
        """Age of the oldest outbox entry HQ has not acked (seconds); 0 when there is none."""
        ts: float | None = None
        if self._inflight:
            ts = self._inflight[0].first_ts
        elif self._staged:
            ts = self._staged[0].created_ts
        elif self._head is not None and self._head[0] > self._acked:
            ts = self._head[1]
        return 0.0 if ts is None else max(0.0, self._clock() - ts)

    @property
    def applied_rate(self) -> float:
        """Entries acked per second over the last ``rate_window_s``."""
        now = self._clock()
        self._prune_acks(now)
        return sum(n for _, n in self._acks) / self._rate_window_s

    def lag_quantile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of :attr:`lag_samples`; 0 when there are none."""
        if not self.lag_samples:
            return 0.0
        ordered = sorted(self.lag_samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def notify(self) -> None:
        """Tell the sender the outbox has new entries (optional: it also polls)."""
        self._wake.set()

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the channel and start syncing in the background (returns at once)."""
        if self._tasks:
            return
        self._stopping = False
        self._channel = make_channel(
            self.target,
            self._credentials,
            backoff_max=self._backoff_max,
            server_name=self._server_name,
        )
        self._tasks = [
            asyncio.create_task(self._run(), name=f"sync-{self.site}"),
            asyncio.create_task(self._stats_loop(), name=f"sync-stats-{self.site}"),
        ]

    async def stop(self) -> None:
        """Stop syncing, trim what HQ has acked, close the channel."""
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._connected = False
        with contextlib.suppress(Exception):
            await self._trim_acked()
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def refresh(self) -> None:
        """Re-read the outbox depth and the oldest unacked entry (for :attr:`lag_s`)."""
        self._depth = await self._depth_fn()
        acked = self._acked
        head = await self._peek(acked, 1)
        self._head = (head[0].seq, head[0].created_ts) if head else None

    def register_metrics(self, registry: Any) -> None:
        """Export lag, depth, rate and acks into a :class:`gateway.metrics.Registry`."""
        registry.gauge(
            "ccgw_sync_lag_seconds",
            "Age of the oldest outbox entry not yet applied at HQ",
            callback=lambda: self.lag_s,
        )
        registry.gauge(
            "ccgw_sync_outbox_depth", "Outbox entries waiting for HQ", callback=lambda: self._depth
        )
        registry.gauge(
            "ccgw_sync_apply_rate",
            "Entries applied at HQ per second (recent)",
            callback=lambda: self.applied_rate,
        )
        registry.gauge(
            "ccgw_sync_connected", "1 when the sync stream to HQ is up", callback=self._up
        )
        registry.counter(
            "ccgw_sync_acked_total",
            "Outbox entries HQ has acked",
            callback=lambda: float(self.acked_total),
        )

    def _up(self) -> float:
        return 1.0 if self._connected else 0.0

    # -- internals -----------------------------------------------------------------------------

    def _prune_acks(self, now: float) -> None:
        while self._acks and self._acks[0][0] < now - self._rate_window_s:
            self._acks.popleft()

    async def _stats_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is busy or closing: try again later
                logger.debug("sync %s: refresh failed: %s", self.site, exc)
            await asyncio.sleep(self._stats_interval_s)

    async def _run(self) -> None:
        while not self._stopping:
            acked_before = self.acked_total
            error = ""
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                error = f"{exc.code().name}: {exc.details()}"
            except Exception as exc:
                error = repr(exc)
            finally:
                self._connected = False
                self._inflight.clear()
                self._staged = ()
                self._room.set()
            # Say it once per outage; repeats go to debug.
            log = logger.debug if error == self.last_error else logger.warning
            log("sync %s -> %s: %s", self.site, self.target, error)
            self.last_error = error
            self.reconnects += 1
            if self.acked_total > acked_before:
                self._backoff.reset()  # the link worked for a while: retry soon
            await asyncio.sleep(self._backoff.next_delay())

    async def _session(self) -> None:
        """One Sync stream, until it breaks (always raises)."""
        assert self._channel is not None
        stub = pb2_grpc.HqStub(self._channel)
        call = stub.Sync()
        try:
            await call.write(pb2.SyncBatch(site=self.site))
            ack = await asyncio.wait_for(call.read(), _HELLO_TIMEOUT_S)
            if ack is grpc.aio.EOF:
                raise _StreamEnded("HQ closed the stream before the hello")
            hw = int(ack.high_water)
            if hw < self._acked:
                logger.warning(
                    "sync %s: HQ high water %d is below what it acked before (%d)",
                    self.site,
                    hw,
                    self._acked,
                )
            self._acked = max(self._acked, hw)
            await self._trim_acked()
            self._sent = hw
            self._inflight.clear()
            self._connected = True
            self._backoff.reset()
            self.last_error = ""
            logger.info("sync %s: connected to %s, resuming after %d", self.site, self.target, hw)
            tasks = [
                asyncio.create_task(self._send_loop(call)),
                asyncio.create_task(self._ack_loop(call)),
                asyncio.create_task(self._trim_loop()),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()  # raise what ended the session
                raise _StreamEnded("sync stream ended")
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t
        finally:
            call.cancel()

    async def _send_loop(self, call: Any) -> None:
        while True:
            entries = await self._peek(self._sent, self._batch)
            if not entries:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle_poll_s)
                continue
            self._staged = entries
            while len(self._inflight) >= self._window:
                self._room.clear()
                await self._room.wait()
            msg = pb2.SyncBatch(
                entries=[
                    pb2.SyncEntry(
                        seq=e.seq,
                        kind=e.kind,
                        payload_json=(
                            e.payload if isinstance(e.payload, str) else _encode_json(e.payload)
                        ).encode(),
                        created_ts=e.created_ts,
                    )
                    for e in entries
                ],
                outbox_depth=self._depth,
            )
            self._inflight.append(_Flight(entries[-1].seq, len(entries), entries[0].created_ts))
            self._staged = ()
            self._sent = entries[-1].seq
            await call.write(msg)
            await asyncio.sleep(0)  # let live traffic run between batches

    async def _ack_loop(self, call: Any) -> None:
        while True:
            ack = await call.read()
            if ack is grpc.aio.EOF:
                raise _StreamEnded("HQ ended the sync stream")
            hw = int(ack.high_water)
            now = self._clock()
            count = 0
            while self._inflight and self._inflight[0].last_seq <= hw:
                flight = self._inflight.popleft()
                count += flight.count
                self.lag_samples.append(max(0.0, now - flight.first_ts))
            self._room.set()
            if hw > self._acked:
                self._acked = hw
                self.acked_total += count
                self._acks.append((now, count))
                self._prune_acks(now)
                self._trim_wake.set()

    async def _trim_loop(self) -> None:
        while True:
            await self._trim_wake.wait()
            self._trim_wake.clear()
            await self._trim_acked()

    async def _trim_acked(self) -> None:
        upto = self._acked
        if upto > self._trimmed:
            removed = await self._trim(upto)
            self._trimmed = max(self._trimmed, upto)
            self._depth = max(0, self._depth - removed)


def _channel_of(target: Any) -> grpc.aio.Channel | None:
    if isinstance(target, grpc.aio.Channel):
        return target
    channel = getattr(target, "channel", None)
    return channel if isinstance(channel, grpc.aio.Channel) else None


async def lookup(
    channel_or_client: grpc.aio.Channel | SyncClient | Any,
    *,
    phone: str | None = None,
    customer_id: str | None = None,
    region: str | None = None,
    name: str | None = None,
    limit: int = 10,
    site: str = "",
    budget_s: float = 0.05,
) -> list[dict[str, Any]] | None:
    """Ask HQ for customers matching all the given fields; ``None`` if it cannot answer in time.

    Never waits longer than ``budget_s`` (seconds): the RPC carries it as its deadline and is
    also bounded locally with :func:`asyncio.wait_for`. ``None`` also when HQ is unreachable or
    answers with an error; ``[]`` when HQ found nobody. ``site`` names the caller (checked against
    its certificate at HQ).
    """
    channel = _channel_of(channel_or_client)
    if channel is None or budget_s <= 0:
        return None
    request = pb2.LookupRequest(
        phone=phone or "",
        customer_id=customer_id or "",
        region=region or "",
        name=name or "",
        limit=max(0, limit),
        site=site,
    )
    call = pb2_grpc.HqStub(channel).Lookup(request, timeout=budget_s, wait_for_ready=False)

    async def answer() -> Any:
        return await call

    try:
        reply = await asyncio.wait_for(answer(), budget_s)
    except TimeoutError:
        call.cancel()
        return None
    except grpc.aio.AioRpcError as exc:
        logger.debug("lookup failed: %s %s", exc.code().name, exc.details())
        return None
    return [json.loads(raw) for raw in reply.customers_json]


class CustomerFeed:
    """Follows HQ's customer change feed (``Hq.Changes``) and hands each update to ``on_update``.

    ``on_update(rev, customer)`` may be a plain or an async function; :attr:`last_rev` moves past
    an update once it returns, and a reconnect resumes after :attr:`last_rev` (give ``after_rev``
    to resume across restarts). Pass ``channel`` to share one (e.g. ``SyncClient.channel``);
    otherwise the feed opens its own to ``target``.
    """

    def __init__(
        self,
        site: str,
        target: str,
        credentials: grpc.ChannelCredentials | None,
        *,
        on_update: Callable[[int, dict[str, Any]], Awaitable[None] | None],
        after_rev: int = 0,
        backoff_max: float = 5.0,
        channel: grpc.aio.Channel | None = None,
        server_name: str | None = None,
    ) -> None:
        self.site = site
        self.target = target
        self._credentials = credentials
        self._on_update = on_update
        self.last_rev = after_rev
        self._backoff = Backoff(0.1, backoff_max)
        self._backoff_max = backoff_max
        self._server_name = server_name
        self._channel = channel
        self._own_channel = channel is None
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self.updates_total = 0
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        """The Changes stream is open."""
        return self._connected

    async def start(self) -> None:
        """Start following the feed in the background."""
        if self._task is not None:
            return
        if self._channel is None:
            self._channel = make_channel(
                self.target,
                self._credentials,
                backoff_max=self._backoff_max,
                server_name=self._server_name,
            )
        self._task = asyncio.create_task(self._run(), name=f"feed-{self.site}")

    async def stop(self) -> None:
        """Stop following; close the channel if the feed opened it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._connected = False
        if self._own_channel and self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _run(self) -> None:
        assert self._channel is not None
        stub = pb2_grpc.HqStub(self._channel)
        while True:
            call = stub.Changes(pb2.ChangesRequest(site=self.site, after_rev=self.last_rev))
            try:
                self._connected = True
                async for update in call:
                    customer = json.loads(update.customer_json)
                    result = self._on_update(int(update.rev), customer)
                    if result is not None:
                        await result
                    self.last_rev = max(self.last_rev, int(update.rev))
                    self.updates_total += 1
                    self._backoff.reset()
            except asyncio.CancelledError:
                call.cancel()
                raise
            except grpc.aio.AioRpcError as exc:
                logger.warning("feed %s: %s %s", self.site, exc.code().name, exc.details())
            except Exception as exc:
                logger.warning("feed %s: %r", self.site, exc)
                call.cancel()
            finally:
                self._connected = False
            self.reconnects += 1
            await asyncio.sleep(self._backoff.next_delay())
