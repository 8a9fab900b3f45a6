"""The etcd v3 seam: one small :class:`EtcdClient` protocol and its aetcd implementation.

Everything in the mesh that talks to etcd goes through :class:`EtcdClient`; unit tests pass a
small in-memory fake, integration tests and ``ccgw run`` pass :class:`AetcdClient` over a real
etcd v3 server (gRPC API, etcd ``api/etcdserverpb/rpc.proto``).

Errors: every failure to reach etcd (connection refused, deadline exceeded, a watch stream
that breaks, anything aetcd or grpc raises) becomes :class:`EtcdUnavailable`; a lease the
server does not know (expired or revoked) becomes :class:`LeaseNotFound`. Callers never see
aetcd or grpc exception types.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

__all__ = [
    "AetcdClient",
    "EtcdAccess",
    "EtcdClient",
    "EtcdUnavailable",
    "LeaseNotFound",
    "WatchEvent",
    "connect",
    "parse_endpoint",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_OP_TIMEOUT = 2.0
"""Seconds one unary etcd call (and a watch creation) may take before it counts as a failure."""


class EtcdUnavailable(Exception):
    """etcd could not be reached or did not answer in time; retry later."""


class LeaseNotFound(Exception):
    """The lease is unknown to etcd: it expired (TTL passed without a keep-alive) or was revoked."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change under a watched prefix.

    ``revision`` is the store revision of the change (etcd ``KeyValue.mod_revision``; for a
    delete, the revision of the deletion). ``value`` is empty for a delete.
    """

    kind: Literal["put", "delete"]
    key: str
    value: bytes
    revision: int


class EtcdClient(Protocol):
    """The subset of the etcd v3 KV, Lease and Watch services the mesh uses.

    Every method raises :class:`EtcdUnavailable` when etcd cannot be reached.
    """

    async def put(self, key: str, value: bytes, lease: int | None = None) -> None:
        """Set ``key`` to ``value``, attached to ``lease`` when given (raises
        :class:`LeaseNotFound` if that lease is gone)."""
        ...

    async def get_prefix(self, prefix: str) -> tuple[list[tuple[str, bytes]], int]:
        """All keys under ``prefix`` (sorted by key) and the store revision they were read at."""
        ...

    async def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""
        ...

    async def grant_lease(self, ttl: float) -> int:
        """A new lease of ``ttl`` seconds (rounded up to whole seconds; etcd may raise it to its
        minimum TTL); returns the lease id."""
        ...

    async def refresh_lease(self, lease: int) -> None:
        """One keep-alive for ``lease``; raises :class:`LeaseNotFound` if it expired or is
        unknown."""
        ...

    async def revoke_lease(self, lease: int) -> None:
        """Revoke ``lease``, deleting every key attached to it at once; an unknown lease is not
        an error."""
        ...

    def watch_prefix(self, prefix: str, start_revision: int | None) -> AsyncIterator[WatchEvent]:
        """Changes under ``prefix`` from ``start_revision`` (inclusive; ``None``: from now).

        The iterator raises :class:`EtcdUnavailable` when the stream breaks (including when
        ``start_revision`` was compacted away); it never ends quietly while the client is open.
        """
        ...

    async def close(self) -> None:
        """Release the connection; safe to call twice."""
        ...


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) → ``(host, port)``; :class:`ValueError` if not."""
    host, sep, port_s = endpoint.rpartition(":")
    if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"etcd endpoint {endpoint!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_s)


def _is_lease_not_found(exc: BaseException) -> bool:
    # etcd: rpctypes.ErrGRPCLeaseNotFound, "etcdserver: requested lease not found" (NOT_FOUND)
    text = str(exc).lower()
    cause = exc.__cause__
    if cause is not None:
        text += " " + str(cause).lower()
    return "lease not found" in text


@dataclass(frozen=True)
class EtcdAccess:
    """How to reach etcd beyond its address: ``credentials`` (``grpc.ChannelCredentials``:
    TLS, with a client certificate for etcd's ``--client-cert-auth``) and an etcd user
    (``--auth`` with RBAC). The default is plain gRPC without a user."""

    credentials: Any = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def _tls_client(host: str, port: int, timeout: float, access: EtcdAccess) -> Any:
    """An aetcd client whose channel is TLS (aetcd 1.0 only opens plain ones)."""
    import aetcd
    from aetcd import rpc, watcher

    class _TlsClient(aetcd.Client):  # type: ignore[misc]
        async def connect(self) -> None:
            # aetcd's own connect, but over grpc.aio.secure_channel.
            c: Any = self  # aetcd's attributes, untyped
            if c._connected.is_set():
                return
            if c._is_connecting:
                await asyncio.wait_for(c._connected.wait(), c._connect_wait_timeout)
                return
            try:
                c._is_connecting = True
                c.channel = rpc.secure_channel(
                    f"{c._host}:{c._port}", access.credentials, options=c._options.items()
                )
                if c._username is not None and c._password is not None:
                    c.auth_stub = rpc.AuthStub(c.channel)
                    request = rpc.AuthenticateRequest(name=c._username, password=c._password)
                    reply = await c.auth_stub.Authenticate(request, timeout=c._timeout)
                    c.metadata = (("token", reply.token),)
                c.kvstub = rpc.KVStub(c.channel)
                c.clusterstub = rpc.ClusterStub(c.channel)
                c.leasestub = rpc.LeaseStub(c.channel)
                c.maintenancestub = rpc.MaintenanceStub(c.channel)
                c._watcher = watcher.Watcher(
                    rpc.WatchStub(c.channel), timeout=c._timeout, metadata=c.metadata
                )
                c._connected.set()
            finally:
                c._is_connecting = False

    return _TlsClient(
        host=host, port=port, timeout=timeout, username=access.username, password=access.password
    )


class AetcdClient:
    """:class:`EtcdClient` over aetcd 1.0.0 (one gRPC channel to one etcd member).

    aetcd's channel is lazy: constructing this never touches the network, the first call does.
    Every call is bounded by ``op_timeout`` seconds. With several endpoints the first one is
    used; :func:`connect` tries them in turn.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
        access: EtcdAccess | None = None,
    ) -> None:
        import aetcd  # local: keep the import cost off modules that only need the protocol

        host, port = parse_endpoint(endpoint)
        self.endpoint = endpoint
        self._op_timeout = op_timeout
        access = access or EtcdAccess()
        # aetcd passes `timeout` to every unary call and to watch creation (seconds; grpc
        # accepts a float although aetcd annotates int).
        if access.credentials is not None:
            self._client: Any = _tls_client(host, port, op_timeout, access)
        else:
            self._client = aetcd.Client(
                host=host,
                port=port,
                timeout=op_timeout,
                username=access.username,
                password=access.password,
            )
        self._closed = False

    async def _call(self, aw: Awaitable[_T]) -> _T:
        try:
            return await asyncio.wait_for(aw, self._op_timeout + 0.5)
        except asyncio.CancelledError:
            raise
        except (LeaseNotFound, EtcdUnavailable):
            raise
        except Exception as exc:  # aetcd.ClientError, grpc errors, TimeoutError, OSError
            if _is_lease_not_found(exc):
                raise LeaseNotFound(str(exc)) from exc
            raise EtcdUnavailable(f"etcd {self.endpoint}: {type(exc).__name__}: {exc}") from exc

    async def ping(self) -> int:
        """Read nothing, return the store revision: proves etcd answers."""
        _, rev = await self.get_prefix("\x00ccgw-ping\x00")
        return rev

    async def put(self, key: str, value: bytes, lease: int | None = None) -> None:
        await self._call(self._client.put(key.encode(), value, lease=lease))

    async def get_prefix(self, prefix: str) -> tuple[list[tuple[str, bytes]], int]:
        res = await self._call(self._client.get_prefix(prefix.encode(), sort_order="ascend"))
        items = [(bytes(kv.key).decode("utf-8", "replace"), bytes(kv.value)) for kv in res.kvs]
        return items, int(res.header.revision)

    async def delete(self, key: str) -> None:
        await self._call(self._client.delete(key.encode()))

    async def grant_lease(self, ttl: float) -> int:
        # LeaseGrantRequest.TTL is int64 seconds (rpc.proto)
        lease = await self._call(self._client.lease(max(1, math.ceil(ttl))))
        return int(lease.id)

    async def refresh_lease(self, lease: int) -> None:
        reply = await self._call(self._client.refresh_lease(lease))
        # rpc.proto LeaseKeepAliveResponse: TTL <= 0 means the lease expired (or never existed)
        if reply is None or int(reply.TTL) <= 0:
            raise LeaseNotFound(f"lease {lease:x} expired or unknown")

    async def revoke_lease(self, lease: int) -> None:
        with contextlib.suppress(LeaseNotFound):
            await self._call(self._client.revoke_lease(lease))

    async def watch_prefix(
        self, prefix: str, start_revision: int | None
    ) -> AsyncIterator[WatchEvent]:
        watch = await self._call(
            self._client.watch_prefix(prefix.encode(), start_revision=start_revision)
        )
        try:
            try:
                async for ev in watch:
                    kind: Literal["put", "delete"] = "put" if ev.kind == "PUT" else "delete"
                    kv = ev.kv
                    yield WatchEvent(
                        kind,
                        bytes(kv.key).decode("utf-8", "replace"),
                        bytes(kv.value) if kind == "put" else b"",
                        int(kv.mod_revision),
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise EtcdUnavailable(f"etcd {self.endpoint}: watch broke: {exc!r}") from exc
            if not self._closed:
                raise EtcdUnavailable(f"etcd {self.endpoint}: watch stream ended")
        finally:
            if not self._closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(watch.cancel(), 1.0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.close(), 2.0)


async def connect(
    endpoints: Sequence[str],
    *,
    op_timeout: float = DEFAULT_OP_TIMEOUT,
    access: EtcdAccess | None = None,
) -> EtcdClient:
    """An :class:`AetcdClient` to the first of ``endpoints`` that answers.

    Raises :class:`EtcdUnavailable` if none does, :class:`ValueError` if an endpoint is not
    ``host:port``.
    """
    if not endpoints:
        raise ValueError("no etcd endpoints")
    for ep in endpoints:
        parse_endpoint(ep)
    errors: list[str] = []
    for ep in endpoints:
        client = AetcdClient(ep, op_timeout=op_timeout, access=access)
        try:
            await client.ping()
        except EtcdUnavailable as exc:
            errors.append(str(exc))
            await client.close()
            continue
        return client
    raise EtcdUnavailable("; ".join(errors))
