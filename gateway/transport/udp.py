"""UDP transport: one socket, every datagram fed to the endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from gateway.sip.peer import Peer

Receiver = Callable[..., None]


class UdpTransport(asyncio.DatagramProtocol):
    """A bound UDP socket that feeds datagrams to ``receiver(data, peer)``."""

    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver
        self._transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)

    @classmethod
    async def bind(
        cls, loop: asyncio.AbstractEventLoop, host: str, port: int, receiver: Receiver
    ) -> UdpTransport:
        """Bind ``host:port`` (0 = any free port) and start receiving."""
        _, proto = await loop.create_datagram_endpoint(
            lambda: cls(receiver), local_addr=(host, port)
        )
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        self.local = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self._receiver(data, Peer("UDP", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the transaction layer's timers handle the silence.
        pass

    def send(self, data: bytes, peer: Peer) -> None:
        """Send one datagram."""
        if self._transport is not None:
            self._transport.sendto(data, (peer.host, peer.port))

    def close(self) -> None:
        """Close the socket."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
