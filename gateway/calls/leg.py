"""One side of a bridged call: its SIP dialog, where it is reached, and its media leg."""

from __future__ import annotations

import asyncio
import random
import secrets
from dataclasses import dataclass, field

from gateway.sip.dialog import Dialog
from gateway.sip.message import Request
from gateway.sip.peer import Peer

# SDP o= session ids (RFC 4566 §5.2) need only be unique, not secret: a seeded PRNG, not a
# system call per leg.
_session_ids = random.Random(secrets.randbits(64))


@dataclass(slots=True)
class Leg:
    """A or B side of a call.

    ``a`` is the side that called us (its INVITE is a server transaction); a ``b`` leg is one we
    created (a client transaction); ring-all creates several ``b`` forks of which one wins.
    """

    role: str  # "a" or "b"
    call_id: str
    peer: Peer  # where this side's messages go (the flow it came from, or the binding's flow)
    invite: Request  # the INVITE that made the leg (received for a, sent for b)
    local_tag: str
    txn_id: str | None = None  # server txn (a) / client txn (b) of the initial INVITE
    dialog: Dialog | None = None
    label: str = ""  # agent extension, trunk name ...
    provisional: bool = False  # a 1xx has been seen/sent
    answered: bool = False
    ended: bool = False
    auth_tried: bool = False
    sdp_session_id: int = field(default_factory=lambda: _session_ids.getrandbits(31))
    sdp_version: int = 0
    ack_bytes_peer: tuple[bytes, Peer] | None = None  # the ACK we sent for its 2xx (to resend)
    remote_sdp: bytes = b""
    status: int = 0  # final status seen/sent on the initial INVITE
    timer: asyncio.TimerHandle | None = None  # the ring timeout of an offer to an agent
    trunk: str | None = None  # trunk whose credentials answer a challenge to this leg

    def next_sdp_version(self) -> int:
        """The o= version for the next SDP we send on this leg (RFC 3264 §8)."""
        self.sdp_version += 1
        return self.sdp_version
