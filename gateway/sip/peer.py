"""Where a message came from or goes to: a transport and an address."""

from __future__ import annotations

from typing import NamedTuple


class Peer(NamedTuple):
    """A remote end: ``transport`` is ``"UDP"``, ``"TCP"`` or ``"TLS"``; ``host`` an IP literal."""

    transport: str
    host: str
    port: int

    @property
    def addr(self) -> tuple[str, int]:
        """``(host, port)`` for a socket call."""
        return (self.host, self.port)

    def __str__(self) -> str:
        return f"{self.transport.lower()}:{self.host}:{self.port}"
