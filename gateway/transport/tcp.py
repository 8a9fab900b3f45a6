"""TCP transport (RFC 3261 §18): a listener, a connection per peer, Content-Length framing.

Connections that a peer opened are reused to reach that peer (the flow, as RFC 5626 has it);
a message for a peer without a connection opens one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from gateway.sip.errors import SipError
from gateway.sip.message import StreamFramer
from gateway.sip.peer import Peer

log = logging.getLogger(__name__)

Receiver = Callable[..., None]

IDLE_TIMEOUT = 600.0
"""Seconds a connection may stay silent before we close it."""


class _Connection(asyncio.Protocol):
    def __init__(self, owner: TcpTransport, peer: Peer | None = None) -> None:
        self.owner = owner
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer()
        self.pending: list[bytes] = []
        self.last_active = owner.loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.peer is None:
            host, port = transport.get_extra_info("peername")[:2]
            self.peer = Peer("TCP", host, port)
        self.owner.connections[(self.peer.host, self.peer.port)] = self
        for data in self.pending:
            self.transport.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.owner.loop.time()
        try:
            messages = self.framer.feed(data)
        except SipError as exc:
            log.info("closing TCP connection from %s: %s", self.peer, exc.detail)
            if self.transport is not None:
                self.transport.close()
            return
        assert self.peer is not None
        for msg in messages:
            self.owner.receiver(msg, self.peer, stream=True)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            key = (self.peer.host, self.peer.port)
            if self.owner.connections.get(key) is self:
                del self.owner.connections[key]
        self.transport = None

    def write(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)


class TcpTransport:
    """The TCP side of a site's SIP endpoint."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receiver: Receiver) -> None:
        self.loop = loop
        self.receiver = receiver
        self.connections: dict[tuple[str, int], _Connection] = {}
        self.server: asyncio.Server | None = None
        self.local: tuple[str, int] = ("", 0)
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def bind(
        cls, loop: asyncio.AbstractEventLoop, host: str, port: int, receiver: Receiver
    ) -> TcpTransport:
        """Listen on ``host:port``."""
        self = cls(loop, receiver)
        self.server = await loop.create_server(lambda: _Connection(self), host, port)
        self.local = self.server.sockets[0].getsockname()[:2]
        return self

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
        try:
            await self.loop.create_connection(lambda: conn, peer.host, peer.port)
        except OSError as exc:
            log.info("TCP connect to %s failed: %s", peer, exc)
            self.connections.pop((peer.host, peer.port), None)

    def close(self) -> None:
        """Stop listening and close every connection."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        self.connections.clear()
