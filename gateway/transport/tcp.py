"""TCP and TLS transports (RFC 3261 §18, §26.2): a listener, a connection per peer, framing.

Connections that a peer opened are reused to reach that peer (the flow, as RFC 5626 has it);
a message for a peer without a connection opens one.

TLS is mutual (both ends show a certificate from the mesh CA): it carries SIP between sites.
It runs over a plain TCP connection through :class:`ssl.SSLObject` and memory BIOs, the same on
asyncio and uvloop, so a failed handshake (no certificate, another CA, plain text) is ours to log
and count. The verified name of the far end (its certificate's CN) is kept per connection, and
:meth:`TcpTransport.identity` gives it to call control, which recognises an inter-site trunk by
that name rather than by a source port that a stream connection does not have.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, cast

from gateway.sip.errors import SipError
from gateway.sip.message import StreamFramer
from gateway.sip.peer import Peer

log = logging.getLogger(__name__)

Receiver = Callable[..., None]

HANDSHAKE_TIMEOUT = 5.0
"""Seconds a TLS handshake may take before the connection is dropped."""

IDLE_TIMEOUT = 600.0
"""Seconds a connection may stay silent both ways before we close it (a phone's or a site's
keep-alive is far more often; a scanner's open socket is not)."""

_READ = 65536


def cert_name(cert: dict[str, Any] | None) -> str | None:
    """The subject CN of a verified peer certificate (``getpeercert()``), else ``None``."""
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class TlsContexts:
    """What a TLS transport needs: see :func:`gateway.mesh.tls.sip_contexts`."""

    def __init__(
        self, server: ssl.SSLContext, client_named: ssl.SSLContext, client_any: ssl.SSLContext
    ) -> None:
        self.server = server
        self.client_named = client_named
        self.client_any = client_any


class _Connection(asyncio.Protocol):
    _in: ssl.MemoryBIO  # TLS only: the records in and out, made with ``tls``
    _out: ssl.MemoryBIO

    def __init__(self, owner: TcpTransport, peer: Peer | None = None) -> None:
        self.owner = owner
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer()
        self.pending: list[bytes] = []  # written before the connection (or handshake) was up
        self.tls: ssl.SSLObject | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.last_active = owner.loop.time()
        self.refused = False  # a failed handshake: nothing more is read from this connection

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        owner = self.owner
        self.transport = cast(asyncio.Transport, transport)
        outbound = self.peer is not None
        if self.peer is None:
            host, port = transport.get_extra_info("peername")[:2]
            self.peer = Peer(owner.kind, host, port)
        owner.connections[(self.peer.host, self.peer.port)] = self
        if owner.tls is None:
            self._flush_pending()
            return
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        if outbound:
            name = owner.expect.get((self.peer.host, self.peer.port))
            ctx = owner.tls.client_named if name else owner.tls.client_any
            self.tls = ctx.wrap_bio(self._in, self._out, server_side=False, server_hostname=name)
        else:
            self.tls = owner.tls.server.wrap_bio(self._in, self._out, server_side=True)
        self._deadline = owner.loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_timeout)
        self._handshake()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.last_active = self.owner.loop.time()
        if self.tls is None:
            self._feed(data)
            return
        self._in.write(data)
        if self._deadline is not None and not self._handshake():
            return
        chunks = []
        while True:
            try:
                chunk = self.tls.read(_READ)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLError as exc:  # includes a clean close_notify (SSLZeroReturnError)
                self._close(f"TLS: {exc}" if not isinstance(exc, ssl.SSLZeroReturnError) else "")
                return
            if not chunk:
                break
            chunks.append(chunk)
        self._send_out()  # TLS 1.3 may answer (key updates)
        if chunks:
            self._feed(b"".join(chunks))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
            self._handshake_failed("connection closed during the handshake")
        if self.peer is not None:
            key = (self.peer.host, self.peer.port)
            if self.owner.connections.get(key) is self:
                del self.owner.connections[key]
                self.owner.names.pop(key, None)
        self.transport = None

    # ------------------------------------------------------------------ ours

    def write(self, data: bytes) -> None:
        self.last_active = self.owner.loop.time()
        if self.transport is None or self._deadline is not None:
            self.pending.append(data)
        elif self.tls is not None:
            self.tls.write(data)
            self._send_out()
        else:
            self.transport.write(data)

    def _feed(self, data: bytes) -> None:
        assert self.peer is not None
        try:
            messages = self.framer.feed(data)
        except SipError as exc:
            self._close(exc.detail)
            return
        for msg in messages:
            self.owner.receiver(msg, self.peer, stream=True)

    def _flush_pending(self) -> None:
        pending, self.pending = self.pending, []
        for data in pending:
            self.write(data)

    def _send_out(self) -> None:
        out = self._out.read()
        if out and self.transport is not None:
            self.transport.write(out)

    def _handshake(self) -> bool:
        """Step the handshake; True once it is done (the peer's name is then known)."""
        assert self.tls is not None and self.peer is not None
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._send_out()
            return False
        except ssl.SSLError as exc:
            self._send_out()  # the alert tells the other end why
            self._handshake_failed(str(exc))
            return False
        self._send_out()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        name = cert_name(self.tls.getpeercert())
        if name is not None:
            self.owner.names[(self.peer.host, self.peer.port)] = name
        self._flush_pending()
        return True

    def _handshake_timeout(self) -> None:
        self._deadline = None
        self._handshake_failed(f"no handshake within {HANDSHAKE_TIMEOUT:g} s")

    def _handshake_failed(self, why: str) -> None:
        owner = self.owner
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.tls is not None and self.tls.server_side:
            owner.handshake_failures += 1
            log.info("TLS handshake from %s refused: %s", self.peer, why)
        else:
            owner.connect_failures += 1
            log.warning("TLS handshake with %s failed: %s", self.peer, why)
        self.pending.clear()
        self.refused = True
        self._close("")

    def _close(self, why: str) -> None:
        if why:
            log.info("closing %s connection with %s: %s", self.owner.kind, self.peer, why)
        if self.transport is not None:
            self.transport.close()


class TcpTransport:
    """The TCP (or, with ``tls``, the TLS) side of a site's SIP endpoint."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        receiver: Receiver,
        tls: TlsContexts | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.loop = loop
        self.idle_timeout = idle_timeout
        self.idle_closed = 0
        self._sweep: asyncio.TimerHandle | None = None
        self.receiver = receiver
        self.tls = tls
        self.kind = "TLS" if tls is not None else "TCP"
        self.connections: dict[tuple[str, int], _Connection] = {}
        self.names: dict[tuple[str, int], str] = {}  # verified certificate name per connection
        self.expect: dict[tuple[str, int], str] = {}  # the name a server we call must have
        self.connect_failures = 0  # outbound connections that failed (refused, bad certificate)
        self.handshake_failures = 0  # inbound TLS handshakes refused (no or a foreign cert)
        self.server: asyncio.Server | None = None
        self.local: tuple[str, int] = ("", 0)
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def bind(
        cls,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        receiver: Receiver,
        tls: TlsContexts | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> TcpTransport:
        """Listen on ``host:port`` (TLS when ``tls`` is given)."""
        self = cls(loop, receiver, tls, idle_timeout)
        self.server = await loop.create_server(lambda: _Connection(self), host, port)
        self.local = self.server.sockets[0].getsockname()[:2]
        self._sweep = loop.call_later(idle_timeout / 4, self._close_idle)
        return self

    def _close_idle(self) -> None:
        """Close connections silent for ``idle_timeout``; re-arm."""
        horizon = self.loop.time() - self.idle_timeout
        for conn in list(self.connections.values()):
            if conn.last_active < horizon and conn.transport is not None:
                self.idle_closed += 1
                log.info("closing idle %s connection with %s", self.kind, conn.peer)
                conn.transport.close()
        self._sweep = self.loop.call_later(self.idle_timeout / 4, self._close_idle)

    def identity(self, peer: Peer) -> str | None:
        """The verified certificate name of the connection ``peer`` came on (TLS only)."""
        return self.names.get((peer.host, peer.port))

    def send(self, data: bytes, peer: Peer) -> None:
        """Write a message on the peer's connection, opening one if needed."""
        conn = self.connections.get((peer.host, peer.port))
        if conn is None:
            conn = _Connection(self, peer)
            conn.pending.append(data)
            self.connections[(peer.host, peer.port)] = conn
            task = self.loop.create_task(self._connect(conn, peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        conn.write(data)

    async def _connect(self, conn: _Connection, peer: Peer) -> None:
        # From our own address, so the far end sees the site's address, not the default one.
        local = (self.local[0], 0) if self.local[0] not in ("", "0.0.0.0", "::") else None
        try:
            await self.loop.create_connection(lambda: conn, peer.host, peer.port, local_addr=local)
        except OSError as exc:
            self.connect_failures += 1
            log.warning("%s connect to %s failed: %s", self.kind, peer, exc)
            if self.connections.get((peer.host, peer.port)) is conn:
                del self.connections[(peer.host, peer.port)]

    def close(self) -> None:
        """Stop listening and close every connection."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        if self.server is not None:
            self.server.close()
            self.server = None
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        self.connections.clear()
