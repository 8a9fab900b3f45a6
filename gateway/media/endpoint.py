"""The gateway's own RTP end of a call: what the IVR, queue music and voicemail talk through.

A call the gateway answers itself keeps its media anchored in the relay; the relay's far leg points
at this endpoint (a loopback socket), so the caller hears the :class:`Player` and whatever the
caller says reaches ``on_packet`` (the voicemail recorder). When an agent answers, the relay's far
leg is pointed at the agent instead and this endpoint is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from .player import Player


class MediaEndpoint(asyncio.DatagramProtocol):
    """A UDP socket that plays to, and listens to, one relay leg."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.local_port = 0
        self.remote: tuple[str, int] = ("127.0.0.1", 0)
        self.on_packet: Callable[[bytes], None] | None = None
        self.packets_in = 0
        self.player: Player | None = None

    @classmethod
    async def open(
        cls, loop: asyncio.AbstractEventLoop, host: str, remote_port: int, payload_type: int
    ) -> MediaEndpoint:
        """Bind ``host``:<free port>, send to ``host:remote_port`` (the relay leg) in
        ``payload_type`` (0 PCMU, 8 PCMA)."""
        _, ep = await loop.create_datagram_endpoint(cls, local_addr=(host, 0))
        ep.remote = (host, remote_port)
        ep.player = Player(loop, ep.send, payload_type)
        return ep

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local_port = int(self.transport.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.packets_in += 1
        if self.on_packet is not None:
            self.on_packet(data)

    def error_received(self, exc: Exception) -> None:
        pass  # the relay leg went away: the call is ending

    def send(self, data: bytes) -> None:
        """Send one packet to the relay leg."""
        if self.transport is not None:
            self.transport.sendto(data, self.remote)

    def close(self) -> None:
        """Stop playing and close the socket; idempotent."""
        if self.player is not None:
            self.player.close()
        if self.transport is not None:
            self.transport.close()
            self.transport = None
