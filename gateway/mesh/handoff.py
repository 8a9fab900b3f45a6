"""Site-to-site handoff of an overflowing call: reserve capacity, pass the call's context.

The contract is ``protos/ccgw/v1/handoff.proto``. Three layers:

- :class:`HandoffContext` (with :class:`Customer`): the call's context as a frozen dataclass,
  ``to_proto()`` / ``from_proto()`` (the latter validates and raises ``ValueError``).
- :class:`ReservationBook`: the receiving site's reservations. Pure (time is an argument):
  ``reserve`` → :class:`Reservation` or :class:`Refusal`, ``take`` (single use), ``release``,
  ``expire``.
- :class:`HandoffServer` (a ``grpc.aio`` server around the book and an ``admit(ctx)`` callback)
  and :class:`HandoffClient` (``reserve`` / ``release`` that never raise for network errors: a
  timeout or an unreachable site is a refusal, so the caller tries the next target or keeps the
  call).

The SIP side puts the reservation's id and the hop count into the overflow INVITE
(:data:`HANDOFF_HEADER`, :data:`HOPS_HEADER`, :func:`invite_headers`) and, on the receiving
side, calls :meth:`HandoffServer.take` with the id to get the context back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

import grpc

from gateway.protos import load

__all__ = [
    "HANDOFF_HEADER",
    "HOPS_HEADER",
    "Customer",
    "HandoffAttempts",
    "HandoffClient",
    "HandoffContext",
    "HandoffServer",
    "Refusal",
    "Reservation",
    "ReservationBook",
    "ReserveResult",
    "incoming_refusal",
    "invite_headers",
    "parse_handoff_id",
    "parse_hops",
]

logger = logging.getLogger(__name__)

HANDOFF_HEADER: Final = "X-Ccgw-Handoff"
"""SIP header of the overflow INVITE carrying the reservation's handoff id."""
HOPS_HEADER: Final = "X-Ccgw-Hops"
"""SIP header of the overflow INVITE carrying the site-to-site hop count (1 on the first hop)."""

_ID_RE: Final = re.compile(r"[A-Za-z0-9._~-]{1,64}")
# A subset of the RFC 3261 §25.1 ``token``: safe in a header value and in logs.
_MAX_LIST: Final = 64
_MAX_MAP: Final = 128
_MAX_MESSAGE: Final = 256 * 1024
"""Largest Reserve request accepted, bytes: a context is a few KiB at most."""


def _pb() -> tuple[Any, Any]:
    return load("handoff")


# --- the call's context ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Customer:
    """The customer's record as the sending site knows it (``ccgw.v1.Customer``)."""

    customer_id: str = ""
    name: str = ""
    region: str = ""
    tier: str = ""
    named_agent: str = ""
    """Extension or id of the customer's dedicated agent; empty = none."""
    phones: tuple[str, ...] = ()
    """E.164 numbers."""
    notes: str = ""
    vip: bool = False

    def to_proto(self) -> Any:
        """The ``ccgw.v1.Customer`` message."""
        pb2, _ = _pb()
        return pb2.Customer(
            customer_id=self.customer_id,
            name=self.name,
            region=self.region,
            tier=self.tier,
            named_agent=self.named_agent,
            phones=list(self.phones),
            notes=self.notes,
            vip=self.vip,
        )

    @classmethod
    def from_proto(cls, msg: Any) -> Customer:
        """From a ``ccgw.v1.Customer`` message."""
        if len(msg.phones) > _MAX_LIST:
            raise ValueError(f"customer.phones: more than {_MAX_LIST}")
        return cls(
            customer_id=msg.customer_id,
            name=msg.name,
            region=msg.region,
            tier=msg.tier,
            named_agent=msg.named_agent,
            phones=tuple(msg.phones),
            notes=msg.notes,
            vip=msg.vip,
        )


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class HandoffContext:
    """Everything the receiving site needs to serve the call (``ccgw.v1.CallContext``)."""

    from_site: str
    """The sending site."""
    queue: str
    """The queue at the target the call joins."""
    handoff_id: str = ""
    """Empty in a request (the target assigns one) or a sender-proposed token id."""
    caller: str = ""
    """Original caller number."""
    dialled: str = ""
    """Original dialled number (DID)."""
    arrival_unix_ms: int = 0
    """Original arrival at the first site, ms since the Unix epoch."""
    priority: int = 0
    language: str = ""
    """BCP 47 tag; empty = unknown."""
    ivr_path: tuple[str, ...] = ()
    """IVR choices so far, in order."""
    variables: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    customer: Customer | None = None
    notes: str = ""
    hops: int = 0
    """Site-to-site hops including this one (1 on the first overflow)."""
    required_skills: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Skill → minimum level 1..10."""
    call_id: str = ""
    """The sender's Call-ID (logs only)."""
    visited: frozenset[str] = frozenset()
    """Sites the call has been at or was refused by (including ``from_site``)."""

    def __post_init__(self) -> None:
        if not self.from_site:
            raise ValueError("from_site must not be empty")
        if not self.queue:
            raise ValueError("queue must not be empty")
        if self.handoff_id and not _ID_RE.fullmatch(self.handoff_id):
            raise ValueError(f"handoff_id {self.handoff_id!r} must be 1-64 of [A-Za-z0-9._~-]")
        if self.hops < 0:
            raise ValueError(f"hops must be >= 0, not {self.hops!r}")
        if len(self.ivr_path) > _MAX_LIST or len(self.visited) > _MAX_LIST:
            raise ValueError(f"ivr_path and visited: at most {_MAX_LIST} items")
        if len(self.variables) > _MAX_MAP or len(self.required_skills) > _MAX_MAP:
            raise ValueError(f"variables and required_skills: at most {_MAX_MAP} items")
        for skill, level in self.required_skills.items():
            if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 10:
                raise ValueError(f"required skill {skill!r}: level must be 1..10, not {level!r}")
        object.__setattr__(self, "ivr_path", tuple(self.ivr_path))
        object.__setattr__(self, "visited", frozenset(self.visited))
        object.__setattr__(self, "variables", _frozen(self.variables))
        object.__setattr__(self, "required_skills", _frozen(self.required_skills))

    def next_hop(self, from_site: str) -> HandoffContext:
        """The context ``from_site`` sends on: one hop more, ``from_site`` visited, no id."""
        return replace(
            self,
            from_site=from_site,
            handoff_id="",
            hops=self.hops + 1,
            visited=self.visited | {from_site},
        )

    def to_proto(self) -> Any:
        """The ``ccgw.v1.CallContext`` message."""
        pb2, _ = _pb()
        msg = pb2.CallContext(
            handoff_id=self.handoff_id,
            from_site=self.from_site,
            queue=self.queue,
            caller=self.caller,
            dialled=self.dialled,
            arrival_unix_ms=self.arrival_unix_ms,
            priority=self.priority,
            language=self.language,
            ivr_path=list(self.ivr_path),
            variables=dict(self.variables),
            notes=self.notes,
            hops=self.hops,
            required_skills=dict(self.required_skills),
            call_id=self.call_id,
            visited=sorted(self.visited),
        )
        if self.customer is not None:
            msg.customer.CopyFrom(self.customer.to_proto())
        return msg

    @classmethod
    def from_proto(cls, msg: Any) -> HandoffContext:
        """From a ``ccgw.v1.CallContext`` message; ``ValueError`` names what is wrong."""
        if len(msg.ivr_path) > _MAX_LIST or len(msg.visited) > _MAX_LIST:
            raise ValueError(f"ivr_path and visited: at most {_MAX_LIST} items")
        return cls(
            handoff_id=msg.handoff_id,
            from_site=msg.from_site,
            queue=msg.queue,
            caller=msg.caller,
            dialled=msg.dialled,
            arrival_unix_ms=msg.arrival_unix_ms,
            priority=msg.priority,
            language=msg.language,
            ivr_path=tuple(msg.ivr_path),
            variables=dict(msg.variables),
            customer=Customer.from_proto(msg.customer) if msg.HasField("customer") else None,
            notes=msg.notes,
            hops=msg.hops,
            required_skills=dict(msg.required_skills),
            call_id=msg.call_id,
            visited=frozenset(msg.visited),
        )


# --- SIP header helpers ------------------------------------------------------------------


def invite_headers(handoff_id: str, hops: int) -> dict[str, str]:
    """The extra headers of an overflow INVITE."""
    return {HANDOFF_HEADER: parse_handoff_id(handoff_id), HOPS_HEADER: str(int(hops))}


def parse_handoff_id(value: str) -> str:
    """A handoff id from a header value (whitespace trimmed); ``ValueError`` when malformed."""
    v = value.strip()
    if not _ID_RE.fullmatch(v):
        raise ValueError(f"bad {HANDOFF_HEADER} value {value!r}")
    return v


def parse_hops(value: str | None) -> int:
    """The hop count from an :data:`HOPS_HEADER` value; 0 when absent, ``ValueError`` when
    malformed (answer such an INVITE with a 400)."""
    if value is None:
        return 0
    v = value.strip()
    if not v.isascii() or not v.isdigit() or len(v) > 3:
        raise ValueError(f"bad {HOPS_HEADER} value {value!r}")
    return int(v)


# --- the receiving side's reservations (pure) --------------------------------------------


@dataclass(frozen=True, slots=True)
class Reservation:
    """Capacity held for one incoming overflow call."""

    handoff_id: str
    context: HandoffContext
    """The call's context, its ``handoff_id`` set."""
    created_at: float
    expires_at: float
    """Seconds, on the book's clock; the reservation is gone at this instant."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A reservation not granted, with a short machine reason."""

    reason: str


def incoming_refusal(ctx: HandoffContext, *, site: str, max_hops: int) -> str | None:
    """Loop and hop checks on an incoming context: ``"loop"`` when it comes from this site or
    has been here before, ``"hops"`` when it has made more than ``max_hops`` hops, else
    ``None``."""
    if ctx.from_site == site or site in ctx.visited:
        return "loop"
    if ctx.hops > max_hops:
        return "hops"
    return None


def _uuid_id() -> str:
    return uuid.uuid4().hex


class ReservationBook:
    """The reservations a site holds for incoming overflow calls. Pure: every call takes the
    time ``now`` (seconds, any clock but always the same one)."""

    def __init__(self, *, max_pending: int = 100, new_id: Callable[[], str] = _uuid_id) -> None:
        """``max_pending`` caps live reservations (a misbehaving peer cannot exhaust memory);
        ``new_id`` makes ids for requests that do not propose one."""
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, not {max_pending!r}")
        self.max_pending = max_pending
        self._new_id = new_id
        self._held: dict[str, Reservation] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, handoff_id: object) -> bool:
        return handoff_id in self._held

    def pending(self, queue: str | None = None) -> int:
        """Live reservations (for ``queue`` only, when given), as of the last call with a
        time. Callers that need an exact figure call :meth:`expire` first."""
        if queue is None:
            return len(self._held)
        return sum(1 for r in self._held.values() if r.context.queue == queue)

    def reservations(self) -> list[Reservation]:
        """Every held reservation, oldest first."""
        return sorted(self._held.values(), key=lambda r: (r.created_at, r.handoff_id))

    def next_expiry(self) -> float | None:
        """When the next reservation expires, or ``None``."""
        return min((r.expires_at for r in self._held.values()), default=None)

    def get(self, handoff_id: str, now: float) -> Reservation | None:
        """The live reservation ``handoff_id`` (not taken, not expired), or ``None``."""
        r = self._held.get(handoff_id)
        if r is None or now >= r.expires_at:
            return None
        return r

    def reserve(
        self, ctx: HandoffContext, now: float, ttl_s: float, refusal: str | None = None
    ) -> Reservation | Refusal:
        """Hold capacity for ``ctx`` for ``ttl_s`` seconds, unless ``refusal`` (the site's
        capacity check: ``None`` = it can take the call) says no.

        Expired reservations are dropped first. A request proposing the id of a live
        reservation from the same site is a retry and gets that reservation back, whatever
        ``refusal`` says (its capacity is already held); from another site it is refused
        (``"duplicate_id"``). Past :attr:`max_pending` live reservations: ``"too_many_pending"``.
        """
        if not (math.isfinite(ttl_s) and ttl_s > 0):
            raise ValueError(f"ttl_s must be a finite number > 0, not {ttl_s!r}")
        self.expire(now)
        if ctx.handoff_id:
            held = self._held.get(ctx.handoff_id)
            if held is not None:
                if held.context.from_site == ctx.from_site:
                    return held
                return Refusal("duplicate_id")
        if refusal is not None:
            return Refusal(refusal)
        if len(self._held) >= self.max_pending:
            return Refusal("too_many_pending")
        handoff_id = ctx.handoff_id
        if not handoff_id:
            handoff_id = self._new_id()
            while handoff_id in self._held:  # a factory that repeats itself must not clobber
                handoff_id = self._new_id()
        r = Reservation(handoff_id, replace(ctx, handoff_id=handoff_id), now, now + ttl_s)
        self._held[handoff_id] = r
        return r

    def take(self, handoff_id: str, now: float) -> HandoffContext | None:
        """The context of reservation ``handoff_id``, removing it (single use); ``None`` when
        unknown, already taken, released or expired."""
        r = self.get(handoff_id, now)
        if r is None:
            return None  # an expired one stays for expire() to report
        del self._held[handoff_id]
        return r.context

    def release(self, handoff_id: str, now: float, from_site: str | None = None) -> bool:
        """Drop a live reservation (only the sending site's own, when ``from_site`` is given);
        ``False`` when there is none to drop."""
        r = self.get(handoff_id, now)
        if r is None or (from_site is not None and r.context.from_site != from_site):
            return False
        del self._held[handoff_id]
        return True

    def expire(self, now: float) -> list[Reservation]:
        """Drop and return the reservations whose time is up at ``now``, oldest first."""
        gone = [r for r in self._held.values() if now >= r.expires_at]
        for r in gone:
            del self._held[r.handoff_id]
        return sorted(gone, key=lambda r: (r.expires_at, r.handoff_id))


# --- the gRPC server ---------------------------------------------------------------------

Admit = Callable[[HandoffContext], str | None]
"""The site's capacity check: ``None`` = accept the call, else the refusal reason."""

_STATUS: Final[tuple[tuple[type[Exception], Any], ...]] = (
    (PermissionError, grpc.StatusCode.PERMISSION_DENIED),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
)
"""Domain errors → gRPC status, in one place (STYLE.md §8)."""


def _status_for(exc: Exception) -> Any:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return grpc.StatusCode.INTERNAL


def _peer_site(context: Any) -> str | None:
    # The verified client certificate's CN under mutual TLS (gateway/mesh/tls.py issues one per
    # site with CN = site name); None on an insecure channel.
    try:
        auth = context.auth_context()
    except Exception:
        return None
    values = (auth or {}).get("x509_common_name") or []
    if not values:
        return None
    v = values[0]
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class _Servicer:
    """``ccgw.v1.Handoff``: translates messages and calls the book and ``admit``."""

    def __init__(self, owner: HandoffServer) -> None:
        self._o = owner

    async def Reserve(self, request: Any, context: Any) -> Any:  # gRPC method name
        pb2, _ = _pb()
        o = self._o
        try:
            ctx = HandoffContext.from_proto(request.context)
            o.check_peer(ctx.from_site, _peer_site(context))
        except (ValueError, PermissionError) as exc:
            await context.abort(_status_for(exc), str(exc))
            raise  # abort raises; this keeps the type checker sure nothing follows
        now = o.clock()
        ttl_s = o.ttl_for(request.ttl_ms)
        result: Reservation | Refusal | None = None
        if ctx.handoff_id:
            held = o.book.get(ctx.handoff_id, now)
            if held is not None and held.context.from_site == ctx.from_site:
                result = held
        if result is None:
            reason = incoming_refusal(ctx, site=o.site, max_hops=o.max_hops)
            if reason is None:
                try:
                    reason = o.admit(ctx)
                except Exception:
                    logger.exception("handoff %s: admit failed", ctx.call_id or "?")
                    reason = "error"
            result = o.book.reserve(ctx, now, ttl_s, reason)
        if isinstance(result, Refusal):
            logger.info(
                "handoff from %s queue %s call %s refused: %s",
                ctx.from_site,
                ctx.queue,
                ctx.call_id or "?",
                result.reason,
            )
            return pb2.ReserveReply(accepted=False, reason=result.reason)
        logger.info(
            "handoff %s from %s queue %s call %s reserved for %.1fs",
            result.handoff_id,
            ctx.from_site,
            ctx.queue,
            ctx.call_id or "?",
            result.expires_at - now,
        )
        return pb2.ReserveReply(
            accepted=True,
            handoff_id=result.handoff_id,
            expires_unix_ms=round(result.expires_at * 1000),
            sip_uri=o.sip_uri_for(result.context),
        )

    async def Release(self, request: Any, context: Any) -> Any:  # gRPC method name
        pb2, _ = _pb()
        o = self._o
        try:
            o.check_peer(request.from_site, _peer_site(context))
        except PermissionError as exc:
            await context.abort(_status_for(exc), str(exc))
            raise
        done = o.book.release(request.handoff_id, o.clock(), request.from_site or None)
        if done:
            logger.info(
                "handoff %s released by %s (%s)",
                request.handoff_id,
                request.from_site,
                request.reason,
            )
        return pb2.ReleaseReply(released=done)


class HandoffServer:
    """The receiving side: a ``grpc.aio`` server for ``ccgw.v1.Handoff`` around a
    :class:`ReservationBook`.

    ``admit(ctx)`` is the site's capacity check (``None`` = accept, else a refusal reason such
    as ``"no_agents"``, ``"unknown_queue"``, ``"closed"``); it may read :attr:`book` to count
    reservations already held. ``sip_uri`` is a template for where the INVITE goes, with
    ``{queue}``, ``{handoff_id}`` and ``{site}``, e.g. ``"sip:overflow-{queue}@10.0.0.2:5060"``.
    ``clock`` gives Unix time in seconds (expiry times cross the wire as Unix ms).
    """

    def __init__(
        self,
        site: str,
        admit: Admit,
        *,
        sip_uri: str,
        clock: Callable[[], float] = time.time,
        default_ttl_s: float = 10.0,
        max_ttl_s: float = 30.0,
        max_hops: int = 3,
        max_pending: int = 100,
        expire_every_s: float = 1.0,
        on_expired: Callable[[Reservation], None] | None = None,
        book: ReservationBook | None = None,
        verify_peer: bool = True,
    ) -> None:
        """``max_hops``: refuse a call that has made more hops than this. ``verify_peer``:
        under mutual TLS, refuse a request whose ``from_site`` is not the client
        certificate's name. ``on_expired`` hears every reservation that expired unused."""
        if not (0 < default_ttl_s <= max_ttl_s):
            raise ValueError("need 0 < default_ttl_s <= max_ttl_s")
        self.site = site
        self.admit = admit
        self.clock = clock
        self.default_ttl_s = default_ttl_s
        self.max_ttl_s = max_ttl_s
        self.max_hops = max_hops
        self.book = book if book is not None else ReservationBook(max_pending=max_pending)
        self.verify_peer = verify_peer
        self._sip_uri = sip_uri
        self._expire_every_s = expire_every_s
        self._on_expired = on_expired
        self._server: Any = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port: int | None = None

    def ttl_for(self, ttl_ms: int) -> float:
        """The hold time granted for a requested ``ttl_ms`` (0 = default), seconds."""
        if ttl_ms <= 0:
            return self.default_ttl_s
        return min(ttl_ms / 1000.0, self.max_ttl_s)

    def sip_uri_for(self, ctx: HandoffContext) -> str:
        """Where the overflow INVITE for ``ctx`` should go."""
        return self._sip_uri.format(queue=ctx.queue, handoff_id=ctx.handoff_id, site=self.site)

    def check_peer(self, from_site: str, peer: str | None) -> None:
        """``PermissionError`` when TLS named a different site than the request claims."""
        if self.verify_peer and peer is not None and peer != from_site:
            raise PermissionError(f"client certificate is {peer!r}, request says {from_site!r}")

    def take(self, handoff_id: str) -> HandoffContext | None:
        """The context for an arriving overflow INVITE (single use), or ``None``."""
        ctx = self.book.take(handoff_id, self.clock())
        if ctx is None:
            logger.info("handoff %s: no live reservation", handoff_id)
        return ctx

    async def start(self, listen: str, credentials: Any = None) -> int:
        """Serve on ``listen`` (``"host:port"``, port 0 = any free one); TLS with
        ``credentials`` (``grpc.ServerCredentials``), insecure when ``None``. Returns the
        bound port."""
        _, pb2_grpc = _pb()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.so_reuseport", 0),
            ]
        )
        pb2_grpc.add_HandoffServicer_to_server(_Servicer(self), server)
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
        if not port:
            raise OSError(f"handoff server cannot listen on {listen}")
        await server.start()
        self._server = server
        self.port = port
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        logger.info("handoff server for %s on %s (port %d)", self.site, listen, port)
        return int(port)

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving; calls in progress get ``grace`` seconds to finish."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    def sweep(self) -> list[Reservation]:
        """Expire reservations now (the server does this every ``expire_every_s``)."""
        gone = self.book.expire(self.clock())
        for r in gone:
            logger.info(
                "handoff %s from %s (call %s) expired unused",
                r.handoff_id,
                r.context.from_site,
                r.context.call_id or "?",
            )
            if self._on_expired is not None:
                self._on_expired(r)
        return gone

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._expire_every_s)
            try:
                self.sweep()
            except Exception:
                logger.exception("handoff sweep failed")


# --- the sending side --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """What a Reserve call came to. A network failure is a refusal (``"timeout"``,
    ``"unreachable"`` or ``"error:<grpc status>"``), never an exception."""

    target: str
    """The address asked (``host:port``)."""
    accepted: bool
    reason: str = ""
    handoff_id: str = ""
    expires_unix_ms: int = 0
    sip_uri: str = ""


@dataclass(frozen=True, slots=True)
class HandoffAttempts:
    """:meth:`HandoffClient.reserve_first`'s outcome: the site that accepted (or ``None``:
    keep the call) and every refusal on the way, in order."""

    site: str | None
    result: ReserveResult | None
    refused: tuple[tuple[str, str], ...] = ()
    """``(site, reason)`` for each target that said no or did not answer."""


def _rpc_reason(exc: grpc.aio.AioRpcError) -> str:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timeout"
    if code == grpc.StatusCode.UNAVAILABLE:
        return "unreachable"
    return f"error:{code.name.lower()}"


class HandoffClient:
    """The sending side: one channel per target address, kept open. ``credentials`` is a
    ``grpc.ChannelCredentials`` (mutual TLS) or ``None`` (insecure)."""

    def __init__(
        self,
        site: str,
        credentials: Any = None,
        *,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.site = site
        self._credentials = credentials
        self._options = list(options)
        self._channels: dict[str, Any] = {}
        self._stubs: dict[str, Any] = {}

    def _stub(self, target: str) -> Any:
        stub = self._stubs.get(target)
        if stub is None:
            _, pb2_grpc = _pb()
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(target, options=self._options)
            else:
                channel = grpc.aio.secure_channel(target, self._credentials, options=self._options)
            self._channels[target] = channel
            stub = self._stubs[target] = pb2_grpc.HandoffStub(channel)
        return stub

    async def _call(self, method: Callable[..., Awaitable[Any]], req: Any, timeout_s: float) -> Any:
        # The gRPC deadline bounds the call; asyncio.timeout is a backstop (name resolution).
        async with asyncio.timeout(timeout_s + 0.5):
            return await method(req, timeout=timeout_s)

    async def reserve(
        self,
        target: str,
        ctx: HandoffContext,
        timeout_s: float,
        *,
        ttl_s: float | None = None,
    ) -> ReserveResult:
        """Ask ``target`` (``host:port``) to reserve capacity for ``ctx``; at most
        ``timeout_s`` seconds. Network errors come back as refusals."""
        pb2, _ = _pb()
        req = pb2.ReserveRequest(
            context=ctx.to_proto(),
            ttl_ms=0 if ttl_s is None else max(1, round(ttl_s * 1000)),
        )
        try:
            reply = await self._call(self._stub(target).Reserve, req, timeout_s)
        except grpc.aio.AioRpcError as exc:
            reason = _rpc_reason(exc)
            logger.info("handoff to %s (call %s): %s", target, ctx.call_id or "?", exc.details())
            return ReserveResult(target, False, reason)
        except TimeoutError:
            return ReserveResult(target, False, "timeout")
        if not reply.accepted:
            return ReserveResult(target, False, reply.reason or "refused")
        return ReserveResult(
            target,
            True,
            handoff_id=reply.handoff_id,
            expires_unix_ms=reply.expires_unix_ms,
            sip_uri=reply.sip_uri,
        )

    async def release(
        self, target: str, handoff_id: str, timeout_s: float, *, reason: str = ""
    ) -> bool:
        """Give back a reservation at ``target``; ``False`` when it was not released (unknown,
        expired, taken, or the target did not answer)."""
        pb2, _ = _pb()
        req = pb2.ReleaseRequest(handoff_id=handoff_id, from_site=self.site, reason=reason)
        try:
            reply = await self._call(self._stub(target).Release, req, timeout_s)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            logger.info("release of handoff %s at %s failed: %r", handoff_id, target, exc)
            return False
        return bool(reply.released)

    async def reserve_first(
        self,
        targets: Iterable[tuple[str, str]],
        ctx: HandoffContext,
        *,
        timeout_s: float,
        ttl_s: float | None = None,
    ) -> HandoffAttempts:
        """Try ``targets`` (``(site, address)``, best first, e.g. from
        :func:`gateway.routing.overflow.choose_targets`) one at a time until one accepts;
        each refused site joins the context's ``visited`` for the next request."""
        refused: list[tuple[str, str]] = []
        for site, address in targets:
            result = await self.reserve(address, ctx, timeout_s, ttl_s=ttl_s)
            if result.accepted:
                return HandoffAttempts(site, result, tuple(refused))
            refused.append((site, result.reason))
            ctx = replace(ctx, visited=ctx.visited | {site})
        return HandoffAttempts(None, None, tuple(refused))

    async def close(self, grace: float | None = None) -> None:
        """Close every channel."""
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for ch in channels:
            await ch.close(grace)
