"""The SIP transaction layer (RFC 3261 §17, RFC 6026) without I/O.

Feed it messages with the time (:meth:`TransactionLayer.receive`), hand it requests and responses
to send, then drain what it wants on the wire (:meth:`~TransactionLayer.datagrams_to_send`), what
happened (:meth:`~TransactionLayer.next_event`) and when to wake it
(:meth:`~TransactionLayer.get_timer` / :meth:`~TransactionLayer.handle_timer`).

The four machines (INVITE / non-INVITE x client / server) are tables
``(state, input) -> (action, next_state)``; a pair missing from a table is a bug and raises
``KeyError``. On top of the server machines the layer does what a B2BUA's UAS core would:
it sends 100 Trying at once, answers CANCEL (200 or 481) and merged requests (482), and
retransmits 2xx to INVITE until the ACK arrives (RFC 3261 §13.3.1.4).

Transaction ids are opaque strings: ``c|<branch>|<method>`` for client transactions,
``s|<branch>|<sent-by>|<method>`` for server ones (``l|...`` when the request has no RFC 3261
magic cookie and RFC 2543 matching is used, §17.2.3).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from .grammar import header_key, split_list
from .message import Headers, Request, Response, Via, make_response, new_tag
from .peer import Peer

MAGIC_COOKIE = "z9hG4bK"
"""RFC 3261 §8.1.1.7: branches that start with this are unique per transaction."""

RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})
"""Transports on which the transaction layer does not retransmit (RFC 3261 §17)."""


def is_reliable(peer: Peer) -> bool:
    """Whether ``peer.transport`` is a reliable (stream) transport."""
    return peer.transport.upper() in RELIABLE_TRANSPORTS


# --------------------------------------------------------------------------- timers


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 §17 timer base values, in seconds (Table 4 of RFC 3261, Appendix A).

    ``T1`` (0.5 s) is the RTT estimate, ``T2`` (4 s) the longest retransmit interval for
    non-INVITE requests and INVITE responses, ``T4`` (5 s) the longest time a message stays in
    the network. The derived timers are properties (``timer_a`` ...) or, when they depend on the
    transport, methods taking ``reliable``.
    """

    T1: float = 0.5
    T2: float = 4.0
    T4: float = 5.0

    def __post_init__(self) -> None:
        if not self.T1 > 0 or not self.T2 >= self.T1 or not self.T4 >= 0:
            raise ValueError(f"need 0 < T1 <= T2 and T4 >= 0, got {self}")

    @property
    def timer_a(self) -> float:
        """Initial INVITE request retransmit interval (UDP), doubling each time: T1."""
        return self.T1

    @property
    def timer_b(self) -> float:
        """INVITE client transaction timeout: 64*T1."""
        return 64 * self.T1

    def timer_d(self, reliable: bool) -> float:
        """Wait time for response retransmits in INVITE client Completed: 32 s on UDP, else 0."""
        return 0.0 if reliable else 32.0

    @property
    def timer_e(self) -> float:
        """Initial non-INVITE request retransmit interval (UDP), doubling up to T2: T1."""
        return self.T1

    @property
    def timer_f(self) -> float:
        """Non-INVITE client transaction timeout: 64*T1."""
        return 64 * self.T1

    @property
    def timer_g(self) -> float:
        """Initial INVITE response retransmit interval (UDP), doubling up to T2: T1."""
        return self.T1

    @property
    def timer_h(self) -> float:
        """Wait time for the ACK of a non-2xx final response: 64*T1."""
        return 64 * self.T1

    def timer_i(self, reliable: bool) -> float:
        """Wait time for ACK retransmits in INVITE server Confirmed: T4 on UDP, else 0."""
        return 0.0 if reliable else self.T4

    def timer_j(self, reliable: bool) -> float:
        """Wait time for request retransmits in non-INVITE server Completed: 64*T1 / 0."""
        return 0.0 if reliable else 64 * self.T1

    def timer_k(self, reliable: bool) -> float:
        """Wait time for response retransmits in non-INVITE client Completed: T4 / 0."""
        return 0.0 if reliable else self.T4

    @property
    def timer_l(self) -> float:
        """RFC 6026 §8.7: INVITE server Accepted lifetime: 64*T1."""
        return 64 * self.T1

    @property
    def timer_m(self) -> float:
        """RFC 6026 §8.4: INVITE client Accepted lifetime: 64*T1."""
        return 64 * self.T1


# --------------------------------------------------------------------------- events


@dataclass(slots=True)
class RequestReceived:
    """A new server transaction (any method but ACK); for INVITE, 100 Trying is already sent."""

    txn_id: str
    request: Request
    peer: Peer


@dataclass(slots=True)
class AckReceived:
    """An ACK that matched no non-2xx INVITE server transaction: the ACK for a 2xx."""

    request: Request
    peer: Peer


@dataclass(slots=True)
class CancelReceived:
    """A CANCEL matched INVITE server transaction ``txn_id`` (already answered 200).

    The TU should send 487 on ``txn_id`` unless it already sent a final response.
    """

    txn_id: str
    request: Request


@dataclass(slots=True)
class ResponseReceived:
    """A response for client transaction ``txn_id`` (for INVITE non-2xx, the ACK is sent)."""

    txn_id: str
    response: Response


@dataclass(slots=True)
class StrayResponse:
    """A response that matched no client transaction (e.g. a 2xx retransmitted late)."""

    response: Response
    peer: Peer


@dataclass(slots=True)
class TransactionTimeout:
    """Timer B/F (client: treat as 408), timer H (server non-2xx never ACKed), or no final
    response 64*T1 after a CANCEL (RFC 3261 §9.1)."""

    txn_id: str
    method: str


@dataclass(slots=True)
class AckTimeout:
    """A 2xx to INVITE we sent was not ACKed within 64*T1 (RFC 3261 §13.3.1.4): send BYE."""

    call_id: str
    cseq: int


Event: TypeAlias = (
    RequestReceived
    | AckReceived
    | CancelReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimeout
    | AckTimeout
)


# --------------------------------------------------------------------------- state tables


class State(Enum):
    """Transaction states (RFC 3261 §17 figures 5-8, RFC 6026 'Accepted')."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(Enum):
    """What drives a machine: a response (received by a client, sent by a server's TU), a
    retransmitted request, an ACK, or a timer."""

    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "3xx-6xx"
    REQUEST = "request"
    ACK = "ACK"
    TIMER_A = "timer_a"
    TIMER_B = "timer_b"
    TIMER_D = "timer_d"
    TIMER_E = "timer_e"
    TIMER_F = "timer_f"
    TIMER_G = "timer_g"
    TIMER_H = "timer_h"
    TIMER_I = "timer_i"
    TIMER_J = "timer_j"
    TIMER_K = "timer_k"
    TIMER_L = "timer_l"
    TIMER_M = "timer_m"
    TIMER_CANCEL = "timer_cancel"  # RFC 3261 §9.1: no final 64*T1 after CANCEL
    TIMER_2XX = "timer_2xx"  # RFC 3261 §13.3.1.4: UAS core 2xx retransmission
    TIMER_ACK = "timer_ack"  # RFC 3261 §13.3.1.4: no ACK for a 2xx in 64*T1


class Action(Enum):
    """What the layer does on a transition."""

    NOTHING = "nothing"  # absorb a retransmission, discard a late TU response, just transit
    PASS_UP = "pass up"  # client: ResponseReceived
    ACK_PASS_UP = "ack, pass up"  # INVITE client non-2xx: build + send ACK, then pass up
    RESEND_ACK = "resend ack"  # INVITE client Completed: a retransmitted non-2xx final
    STRAY = "stray"  # INVITE client Completed: a 2xx after a non-2xx (another fork)
    RETRANSMIT = "retransmit"  # timer A/E (request) or G (response)
    TIMEOUT = "timeout"  # TransactionTimeout
    SEND = "send"  # server: send the TU's response
    SEND_2XX = "send 2xx"  # INVITE server: send and have the UAS core retransmit it
    RESEND_LAST = "resend last"  # server: a request retransmission gets the last response
    ACK_2XX = "ack 2xx"  # INVITE server Accepted: ACK for the 2xx, pass up


_S, _I, _A = State, Input, Action  # table shorthands
_Table: TypeAlias = dict[tuple[State, Input], tuple[Action, State]]

# RFC 3261 §17.1.1.2 figure 5, with RFC 6026 §8.4 (Accepted, timer M).
INVITE_CLIENT: _Table = {
    (_S.CALLING, _I.PROVISIONAL): (_A.PASS_UP, _S.PROCEEDING),
    (_S.CALLING, _I.SUCCESS): (_A.PASS_UP, _S.ACCEPTED),
    (_S.CALLING, _I.FAILURE): (_A.ACK_PASS_UP, _S.COMPLETED),
    (_S.CALLING, _I.TIMER_A): (_A.RETRANSMIT, _S.CALLING),
    (_S.CALLING, _I.TIMER_B): (_A.TIMEOUT, _S.TERMINATED),
    (_S.PROCEEDING, _I.PROVISIONAL): (_A.PASS_UP, _S.PROCEEDING),
    (_S.PROCEEDING, _I.SUCCESS): (_A.PASS_UP, _S.ACCEPTED),
    (_S.PROCEEDING, _I.FAILURE): (_A.ACK_PASS_UP, _S.COMPLETED),
    (_S.PROCEEDING, _I.TIMER_CANCEL): (_A.TIMEOUT, _S.TERMINATED),
    (_S.COMPLETED, _I.PROVISIONAL): (_A.NOTHING, _S.COMPLETED),
    (_S.COMPLETED, _I.SUCCESS): (_A.STRAY, _S.COMPLETED),
    (_S.COMPLETED, _I.FAILURE): (_A.RESEND_ACK, _S.COMPLETED),
    (_S.COMPLETED, _I.TIMER_D): (_A.NOTHING, _S.TERMINATED),
    (_S.ACCEPTED, _I.PROVISIONAL): (_A.NOTHING, _S.ACCEPTED),
    (_S.ACCEPTED, _I.SUCCESS): (_A.PASS_UP, _S.ACCEPTED),
    (_S.ACCEPTED, _I.FAILURE): (_A.NOTHING, _S.ACCEPTED),
    (_S.ACCEPTED, _I.TIMER_M): (_A.NOTHING, _S.TERMINATED),
}

# RFC 3261 §17.1.2.2 figure 6.
NON_INVITE_CLIENT: _Table = {
    (_S.TRYING, _I.PROVISIONAL): (_A.PASS_UP, _S.PROCEEDING),
    (_S.TRYING, _I.SUCCESS): (_A.PASS_UP, _S.COMPLETED),
    (_S.TRYING, _I.FAILURE): (_A.PASS_UP, _S.COMPLETED),
    (_S.TRYING, _I.TIMER_E): (_A.RETRANSMIT, _S.TRYING),
    (_S.TRYING, _I.TIMER_F): (_A.TIMEOUT, _S.TERMINATED),
    (_S.PROCEEDING, _I.PROVISIONAL): (_A.PASS_UP, _S.PROCEEDING),
    (_S.PROCEEDING, _I.SUCCESS): (_A.PASS_UP, _S.COMPLETED),
    (_S.PROCEEDING, _I.FAILURE): (_A.PASS_UP, _S.COMPLETED),
    (_S.PROCEEDING, _I.TIMER_E): (_A.RETRANSMIT, _S.PROCEEDING),
    (_S.PROCEEDING, _I.TIMER_F): (_A.TIMEOUT, _S.TERMINATED),
    (_S.COMPLETED, _I.PROVISIONAL): (_A.NOTHING, _S.COMPLETED),
    (_S.COMPLETED, _I.SUCCESS): (_A.NOTHING, _S.COMPLETED),
    (_S.COMPLETED, _I.FAILURE): (_A.NOTHING, _S.COMPLETED),
    (_S.COMPLETED, _I.TIMER_K): (_A.NOTHING, _S.TERMINATED),
}

# RFC 3261 §17.2.1 figure 7, with RFC 6026 §8.5-8.7 (Accepted, timer L). Responses are the
# TU's, sent through send_response(); REQUEST is a retransmitted INVITE.
INVITE_SERVER: _Table = {
    (_S.PROCEEDING, _I.REQUEST): (_A.RESEND_LAST, _S.PROCEEDING),
    (_S.PROCEEDING, _I.ACK): (_A.NOTHING, _S.PROCEEDING),
    (_S.PROCEEDING, _I.PROVISIONAL): (_A.SEND, _S.PROCEEDING),
    (_S.PROCEEDING, _I.SUCCESS): (_A.SEND_2XX, _S.ACCEPTED),
    (_S.PROCEEDING, _I.FAILURE): (_A.SEND, _S.COMPLETED),
    (_S.COMPLETED, _I.REQUEST): (_A.RESEND_LAST, _S.COMPLETED),
    (_S.COMPLETED, _I.ACK): (_A.NOTHING, _S.CONFIRMED),
    (_S.COMPLETED, _I.PROVISIONAL): (_A.NOTHING, _S.COMPLETED),
    (_S.COMPLETED, _I.SUCCESS): (_A.NOTHING, _S.COMPLETED),
    (_S.COMPLETED, _I.FAILURE): (_A.NOTHING, _S.COMPLETED),
    (_S.COMPLETED, _I.TIMER_G): (_A.RETRANSMIT, _S.COMPLETED),
    (_S.COMPLETED, _I.TIMER_H): (_A.TIMEOUT, _S.TERMINATED),
    (_S.CONFIRMED, _I.REQUEST): (_A.NOTHING, _S.CONFIRMED),
    (_S.CONFIRMED, _I.ACK): (_A.NOTHING, _S.CONFIRMED),
    (_S.CONFIRMED, _I.PROVISIONAL): (_A.NOTHING, _S.CONFIRMED),
    (_S.CONFIRMED, _I.SUCCESS): (_A.NOTHING, _S.CONFIRMED),
    (_S.CONFIRMED, _I.FAILURE): (_A.NOTHING, _S.CONFIRMED),
    (_S.CONFIRMED, _I.TIMER_I): (_A.NOTHING, _S.TERMINATED),
    (_S.ACCEPTED, _I.REQUEST): (_A.NOTHING, _S.ACCEPTED),
    (_S.ACCEPTED, _I.ACK): (_A.ACK_2XX, _S.ACCEPTED),
    (_S.ACCEPTED, _I.PROVISIONAL): (_A.NOTHING, _S.ACCEPTED),
    (_S.ACCEPTED, _I.SUCCESS): (_A.SEND_2XX, _S.ACCEPTED),
    (_S.ACCEPTED, _I.FAILURE): (_A.NOTHING, _S.ACCEPTED),
    (_S.ACCEPTED, _I.TIMER_L): (_A.NOTHING, _S.TERMINATED),
}

# RFC 3261 §17.2.2 figure 8.
NON_INVITE_SERVER: _Table = {
    (_S.TRYING, _I.REQUEST): (_A.NOTHING, _S.TRYING),
    (_S.TRYING, _I.PROVISIONAL): (_A.SEND, _S.PROCEEDING),
    (_S.TRYING, _I.SUCCESS): (_A.SEND, _S.COMPLETED),
    (_S.TRYING, _I.FAILURE): (_A.SEND, _S.COMPLETED),
    (_S.PROCEEDING, _I.REQUEST): (_A.RESEND_LAST, _S.PROCEEDING),
    (_S.PROCEEDING, _I.PROVISIONAL): (_A.SEND, _S.PROCEEDING),
    (_S.PROCEEDING, _I.SUCCESS): (_A.SEND, _S.COMPLETED),
    (_S.PROCEEDING, _I.FAILURE): (_A.SEND, _S.COMPLETED),
    (_S.COMPLETED, _I.REQUEST): (_A.RESEND_LAST, _S.COMPLETED),
    (_S.COMPLETED, _I.PROVISIONAL): (_A.NOTHING, _S.COMPLETED),
    (_S.COMPLETED, _I.SUCCESS): (_A.NOTHING, _S.COMPLETED),
    (_S.COMPLETED, _I.FAILURE): (_A.NOTHING, _S.COMPLETED),
    (_S.COMPLETED, _I.TIMER_J): (_A.NOTHING, _S.TERMINATED),
}

del _S, _I, _A


def classify(status: int) -> Input:
    """The table input for a response status."""
    if status < 200:
        return Input.PROVISIONAL
    if status < 300:
        return Input.SUCCESS
    return Input.FAILURE


# --------------------------------------------------------------------------- transactions


# Compact the timer heap only past this many stale entries, so small layers never bother.
_COMPACT_MIN = 64


class _Timed:
    """Something with named timers in the layer's heap (lazy deletion by token)."""

    __slots__ = ("timers",)

    def __init__(self) -> None:
        self.timers: dict[Input, int] = {}


class _ClientTxn(_Timed):
    __slots__ = (
        "ack",
        "cancel_requested",
        "data",
        "id",
        "internal",
        "interval",
        "invite",
        "peer",
        "reliable",
        "request",
        "state",
        "table",
    )

    def __init__(self, txn_id: str, request: Request, peer: Peer, data: bytes, internal: bool):
        super().__init__()
        self.id = txn_id
        self.request = request
        self.peer = peer
        self.data = data
        self.internal = internal  # a CANCEL the layer sent: its events are not passed up
        self.invite = request.method == "INVITE"
        self.reliable = is_reliable(peer)
        self.table = INVITE_CLIENT if self.invite else NON_INVITE_CLIENT
        self.state = State.CALLING if self.invite else State.TRYING
        self.interval = 0.0
        self.ack: bytes | None = None
        self.cancel_requested = False


class _ServerTxn(_Timed):
    __slots__ = (
        "branch_key",
        "id",
        "interval",
        "invite",
        "last",
        "merge_key",
        "peer",
        "reliable",
        "request",
        "state",
        "table",
        "to_tag",
    )

    def __init__(self, txn_id: str, request: Request, peer: Peer) -> None:
        super().__init__()
        self.id = txn_id
        self.request = request
        self.peer = peer
        self.invite = request.method == "INVITE"
        self.reliable = is_reliable(peer)
        self.table = INVITE_SERVER if self.invite else NON_INVITE_SERVER
        self.state = State.PROCEEDING if self.invite else State.TRYING
        self.interval = 0.0
        self.last: bytes | None = None  # the last response sent, for retransmissions
        self.to_tag: str | None = None  # the To tag of our responses (for the CANCEL's 200)
        self.merge_key: tuple[str, str, int, str] | None = None
        self.branch_key: str | None = None


class _Pending2xx(_Timed):
    """RFC 3261 §13.3.1.4: a 2xx to INVITE the UAS core retransmits until the ACK."""

    __slots__ = ("data", "interval", "key", "peer")

    def __init__(self, key: tuple[str, int], data: bytes, peer: Peer, interval: float) -> None:
        super().__init__()
        self.key = key
        self.data = data
        self.peer = peer
        self.interval = interval


def _sent_by(via: Via) -> str:
    return f"{via.host.lower()}:{via.port or ''}"


def _server_key(request: Request, via: Via, method: str) -> str:
    """RFC 3261 §17.2.3 matching key; ``method`` is INVITE for ACK and for CANCEL lookups."""
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        return f"s|{branch}|{_sent_by(via)}|{method}"
    # RFC 2543 peers: Request-URI, From tag, Call-ID, CSeq number and the top Via identify the
    # transaction (the To tag is left out so that ACK and CANCEL find the INVITE).
    return (
        f"l|{request.uri}|{request.from_.tag}|{request.call_id}|{request.cseq.seq}"
        f"|{via.transport}|{_sent_by(via)}|{branch}|{method}"
    )


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _stamp_via(request: Request, peer: Peer) -> None:
    """RFC 3261 §18.2.1 ``received`` and RFC 3581 §4 ``rport`` on the top Via, in place."""
    via = request.top_via
    params = via.params
    if "rport" in params and params["rport"] is None:
        params["rport"] = str(peer.port)
        params["received"] = peer.host  # RFC 3581 §4: always, when rport is filled in
    elif _strip_brackets(via.host) != peer.host and params.get("received") != peer.host:
        params["received"] = peer.host
    else:
        return
    # Rewrite the first Via line; the cached parsed Vias stay valid (we edited vias[0]).
    new = Headers()
    done = False
    for name, value in request.headers:
        if not done and header_key(name) == "via":
            parts = split_list(value)
            parts[0] = str(via)
            value = ", ".join(parts)
            done = True
        new.add(name, value)
    request.headers = new


def _copy_common(request: Request, out: Headers) -> None:
    """Top Via and Max-Forwards then Routes, as CANCEL and non-2xx ACK need (§9.1, §17.1.1.3)."""
    out.add("Via", str(request.top_via))
    out.add("Max-Forwards", "70")
    for route in request.headers.get_all("route"):
        out.add("Route", route)


def build_cancel(invite: Request) -> Request:
    """RFC 3261 §9.1: a CANCEL for ``invite`` (same R-URI, Call-ID, From, To, CSeq number, top
    Via and Route)."""
    h = Headers()
    _copy_common(invite, h)
    h.add("From", invite.headers.get("from") or "")
    h.add("To", invite.headers.get("to") or "")
    h.add("Call-ID", invite.call_id)
    h.add("CSeq", f"{invite.cseq.seq} CANCEL")
    return Request("CANCEL", invite.uri, h)


def build_non2xx_ack(invite: Request, response: Response) -> Request:
    """RFC 3261 §17.1.1.3: the ACK for a non-2xx final response to ``invite`` (To from the
    response, with its tag)."""
    h = Headers()
    _copy_common(invite, h)
    h.add("From", invite.headers.get("from") or "")
    h.add("To", response.headers.get("to") or "")
    h.add("Call-ID", invite.call_id)
    h.add("CSeq", f"{invite.cseq.seq} ACK")
    return Request("ACK", invite.uri, h)


# --------------------------------------------------------------------------- the layer


class TransactionLayer:
    """Client and server transactions over any transport, driven by the caller's clock."""

    def __init__(self, config: TimerConfig | None = None) -> None:
        self.config = config if config is not None else TimerConfig()
        self._client: dict[str, _ClientTxn] = {}
        self._server: dict[str, _ServerTxn] = {}
        # branch|sent-by -> server txn, to find the target of a CANCEL whatever its method
        self._by_branch: dict[str, _ServerTxn] = {}
        # RFC 3261 §8.2.2.2: (From tag, Call-ID, CSeq number, method) of requests without To tag
        self._merge: dict[tuple[str, str, int, str], _ServerTxn] = {}
        self._pending_2xx: dict[tuple[str, int], _Pending2xx] = {}
        self._heap: list[tuple[float, int, _Timed, Input]] = []
        self._seq = 0
        self._stale = 0  # heap entries whose timer was cancelled or rescheduled
        self._outbox: list[tuple[bytes, Peer]] = []
        self._events: deque[Event] = deque()

    # ------------------------------------------------------------------ public API

    def receive(self, message: Request | Response, peer: Peer, now: float) -> None:
        """Feed a parsed message that arrived from ``peer`` at ``now``.

        Requests get ``received``/``rport`` on their top Via (RFC 3581), then are matched to
        server transactions (RFC 3261 §17.2.3); responses to client ones (§17.1.3). May raise
        :class:`~gateway.sip.errors.SipError` (400) for a message without a usable Via.
        """
        if isinstance(message, Response):
            self._on_response(message, peer, now)
        else:
            self._on_request(message, peer, now)

    def send_request(self, request: Request, peer: Peer, now: float) -> str:
        """Start a client transaction for ``request`` (not ACK: use :meth:`send_stateless`).

        The request must carry its top Via with a branch. Returns the transaction id.
        Raises ``ValueError`` for ACK, a Via without branch or a branch already in use.
        """
        if request.method == "ACK":
            raise ValueError("ACK is sent with send_stateless(), not in a transaction")
        branch = request.top_via.branch
        if not branch:
            raise ValueError("the top Via of a request we send needs a branch")
        txn_id = f"c|{branch}|{request.method}"
        if txn_id in self._client:
            raise ValueError(f"client transaction {txn_id} already exists")
        self._start_client(txn_id, request, peer, now, internal=False)
        return txn_id

    def send_response(self, txn_id: str, response: Response, now: float) -> None:
        """Send ``response`` on server transaction ``txn_id`` to the peer the request came from.

        INVITE 2xx moves the transaction to Accepted (RFC 6026) and starts the UAS core's 2xx
        retransmission (T1, 2*T1 ... capped at T2, on every transport, RFC 3261 §13.3.1.4)
        until the ACK or, after 64*T1, :class:`AckTimeout`. A response the state no longer
        accepts (a final after a final) is discarded. Raises ``KeyError`` when ``txn_id`` is
        unknown or already terminated (a TU bug).
        """
        txn = self._server[txn_id]
        action, nxt = txn.table[(txn.state, classify(response.status))]
        if action is Action.SEND or action is Action.SEND_2XX:
            data = bytes(response)
            txn.last = data
            tag = response.to.tag
            if tag is not None:
                txn.to_tag = tag
            self._outbox.append((data, txn.peer))
            if action is Action.SEND_2XX:
                self._start_2xx(txn.request, data, txn.peer, now)
        self._transit(txn, nxt, now)

    def send_stateless(self, request_or_response: Request | Response, peer: Peer) -> None:
        """Send a message outside any transaction (an ACK for a 2xx, a stateless response)."""
        self._outbox.append((bytes(request_or_response), peer))

    def cancel(self, txn_id: str, now: float) -> None:
        """CANCEL the INVITE client transaction ``txn_id`` (RFC 3261 §9.1).

        Sent at once if a provisional response arrived, else as soon as one does; nothing
        happens once a final response arrived, for unknown ids, or on a second call. If no final
        response arrives within 64*T1 of the CANCEL, the INVITE times out
        (:class:`TransactionTimeout`).
        """
        txn = self._client.get(txn_id)
        if txn is None or not txn.invite or txn.cancel_requested:
            return
        txn.cancel_requested = True
        if txn.state is State.PROCEEDING:
            self._send_cancel(txn, now)

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        """Drain the outbox: serialised messages and where to send them, in order."""
        out = self._outbox
        self._outbox = []
        return out

    def get_timer(self) -> float | None:
        """The earliest pending deadline (in ``now`` units), or None."""
        heap = self._heap
        while heap:
            _, token, obj, name = heap[0]
            if obj.timers.get(name) == token:
                return heap[0][0]
            heapq.heappop(heap)
            self._stale -= 1
        return None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, token, obj, name = heapq.heappop(heap)
            if obj.timers.get(name) != token:
                self._stale -= 1
                continue  # cancelled or rescheduled (lazy deletion)
            del obj.timers[name]
            if isinstance(obj, _ClientTxn):
                self._client_timer(obj, name, now)
            elif isinstance(obj, _ServerTxn):
                self._server_timer(obj, name, now)
            elif isinstance(obj, _Pending2xx):
                self._pending_timer(obj, name, now)

    def next_event(self) -> Event | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    def transaction_count(self) -> int:
        """Live client and server transactions."""
        return len(self._client) + len(self._server)

    def server_request(self, txn_id: str) -> Request:
        """The request server transaction ``txn_id`` was created for (``KeyError`` if gone)."""
        return self._server[txn_id].request

    def state(self, txn_id: str) -> State:
        """The state of a live transaction; ``State.TERMINATED`` when unknown or gone."""
        txn = self._client.get(txn_id) or self._server.get(txn_id)
        return State.TERMINATED if txn is None else txn.state

    def pending_2xx_count(self) -> int:
        """2xx responses being retransmitted while waiting for their ACK."""
        return len(self._pending_2xx)

    # ------------------------------------------------------------------ timers

    def _schedule(self, obj: _Timed, name: Input, deadline: float) -> None:
        self._seq += 1
        if name in obj.timers:
            self._stale += 1
        obj.timers[name] = self._seq
        heapq.heappush(self._heap, (deadline, self._seq, obj, name))

    def _cancel_timers(self, obj: _Timed) -> None:
        """Cancel every timer of ``obj``; their heap entries go stale (lazy deletion)."""
        timers = obj.timers
        if not timers:
            return
        self._stale += len(timers)
        timers.clear()
        heap = self._heap
        # A stale entry keeps a finished transaction (request, bytes) alive until its deadline,
        # up to 64*T1 for timers B and F: rebuild the heap once they are half of it.
        if self._stale > _COMPACT_MIN and 2 * self._stale > len(heap):
            heap[:] = [e for e in heap if e[2].timers.get(e[3]) == e[1]]
            heapq.heapify(heap)
            self._stale = 0

    # ------------------------------------------------------------------ client side

    def _start_client(
        self, txn_id: str, request: Request, peer: Peer, now: float, *, internal: bool
    ) -> None:
        data = bytes(request)
        txn = _ClientTxn(txn_id, request, peer, data, internal)
        self._client[txn_id] = txn
        self._outbox.append((data, peer))
        cfg = self.config
        if txn.invite:
            # RFC 3261 §17.1.1.2: timer A (unreliable only) and timer B.
            if not txn.reliable:
                txn.interval = cfg.timer_a
                self._schedule(txn, Input.TIMER_A, now + cfg.timer_a)
            self._schedule(txn, Input.TIMER_B, now + cfg.timer_b)
        else:
            # RFC 3261 §17.1.2.2: timer E (unreliable only) and timer F.
            if not txn.reliable:
                txn.interval = cfg.timer_e
                self._schedule(txn, Input.TIMER_E, now + cfg.timer_e)
            self._schedule(txn, Input.TIMER_F, now + cfg.timer_f)

    def _on_response(self, response: Response, peer: Peer, now: float) -> None:
        # RFC 3261 §17.1.3: top Via branch + CSeq method.
        txn = self._client.get(f"c|{response.top_via.branch}|{response.cseq.method}")
        if txn is None:
            self._events.append(StrayResponse(response, peer))
            return
        action, nxt = txn.table[(txn.state, classify(response.status))]
        if action is Action.PASS_UP:
            if not txn.internal:
                self._events.append(ResponseReceived(txn.id, response))
        elif action is Action.ACK_PASS_UP:
            # RFC 3261 §17.1.1.3: the transaction ACKs a non-2xx final itself.
            txn.ack = bytes(build_non2xx_ack(txn.request, response))
            self._outbox.append((txn.ack, txn.peer))
            if not txn.internal:
                self._events.append(ResponseReceived(txn.id, response))
        elif action is Action.RESEND_ACK:
            if txn.ack is not None:
                self._outbox.append((txn.ack, txn.peer))
        elif action is Action.STRAY:
            self._events.append(StrayResponse(response, peer))
        self._transit(txn, nxt, now)

    def _client_timer(self, txn: _ClientTxn, name: Input, now: float) -> None:
        action, nxt = txn.table[(txn.state, name)]
        if action is Action.RETRANSMIT:
            self._outbox.append((txn.data, txn.peer))
            if name is Input.TIMER_A:
                txn.interval *= 2  # RFC 3261 §17.1.1.2: 2*T1, 4*T1 ... (no cap)
            elif txn.state is State.PROCEEDING:
                txn.interval = self.config.T2  # §17.1.2.2: timer E is T2 in Proceeding
            else:
                txn.interval = min(2 * txn.interval, self.config.T2)
            self._schedule(txn, name, now + txn.interval)
        elif action is Action.TIMEOUT and not txn.internal:
            self._events.append(TransactionTimeout(txn.id, txn.request.method))
        self._transit(txn, nxt, now)

    def _send_cancel(self, invite: _ClientTxn, now: float) -> None:
        cancel = build_cancel(invite.request)
        txn_id = f"c|{invite.request.top_via.branch}|CANCEL"
        if txn_id not in self._client:
            self._start_client(txn_id, cancel, invite.peer, now, internal=True)
        # RFC 3261 §9.1: no final response to the INVITE within 64*T1 -> give up on it.
        self._schedule(invite, Input.TIMER_CANCEL, now + 64 * self.config.T1)

    # ------------------------------------------------------------------ server side

    def _on_request(self, request: Request, peer: Peer, now: float) -> None:
        _stamp_via(request, peer)
        via = request.top_via
        method = request.method
        if method == "ACK":
            self._on_ack(request, via, peer, now)
            return
        key = _server_key(request, via, method)
        txn = self._server.get(key)
        if txn is not None:
            # A retransmission (RFC 3261 §17.2.1 / §17.2.2).
            action, nxt = txn.table[(txn.state, Input.REQUEST)]
            if action is Action.RESEND_LAST and txn.last is not None:
                self._outbox.append((txn.last, txn.peer))
            self._transit(txn, nxt, now)
            return
        if method == "CANCEL":
            self._on_cancel(key, request, via, peer, now)
            return
        merge_key: tuple[str, str, int, str] | None = None
        if request.to.tag is None:
            # RFC 3261 §8.2.2.2: the same request arriving over another path is a merge.
            merge_key = (request.from_.tag or "", request.call_id, request.cseq.seq, method)
            if merge_key in self._merge:
                self._answer_new(key, request, peer, 482, now)
                return
        txn = self._new_server(key, request, peer)
        txn.merge_key = merge_key
        if merge_key is not None:
            self._merge[merge_key] = txn
        if txn.invite:
            # RFC 3261 §17.2.1: a 100 Trying at once (we do not know the TU answers in 200 ms).
            data = bytes(make_response(request, 100))
            txn.last = data
            self._outbox.append((data, peer))
        self._events.append(RequestReceived(key, request, peer))

    def _new_server(self, key: str, request: Request, peer: Peer) -> _ServerTxn:
        txn = _ServerTxn(key, request, peer)
        self._server[key] = txn
        if request.method != "CANCEL":
            txn.branch_key = f"{request.top_via.branch}|{_sent_by(request.top_via)}"
            self._by_branch[txn.branch_key] = txn
        return txn

    def _answer_new(
        self, key: str, request: Request, peer: Peer, status: int, now: float, tag: str = ""
    ) -> None:
        """A server transaction the layer answers itself (481 CANCEL, 482 merge, 200 CANCEL)."""
        self._new_server(key, request, peer)
        self.send_response(key, make_response(request, status, to_tag=tag or new_tag()), now)

    def _on_cancel(self, key: str, request: Request, via: Via, peer: Peer, now: float) -> None:
        # RFC 3261 §9.2: the CANCEL matches the transaction it cancels like any request
        # (§17.2.3), except for the method.
        branch = via.branch
        if branch and branch.startswith(MAGIC_COOKIE):
            target = self._by_branch.get(f"{branch}|{_sent_by(via)}")
        else:
            target = self._server.get(_server_key(request, via, "INVITE"))
        if target is None:
            self._answer_new(key, request, peer, 481, now)
            return
        # §9.2: the To tag of the 200 SHOULD be the one of the responses to the original.
        self._answer_new(key, request, peer, 200, now, target.to_tag or "")
        if target.invite and target.state is State.PROCEEDING:
            self._events.append(CancelReceived(target.id, request))

    def _on_ack(self, request: Request, via: Via, peer: Peer, now: float) -> None:
        txn = self._server.get(_server_key(request, via, "INVITE"))
        if txn is not None:
            action, nxt = txn.table[(txn.state, Input.ACK)]
            if action is Action.ACK_2XX:
                self._ack_2xx(request, peer)
            self._transit(txn, nxt, now)
            return
        # RFC 3261 §17.2.3 / RFC 6026: an ACK that matches no transaction is for a 2xx.
        self._ack_2xx(request, peer)

    def _ack_2xx(self, request: Request, peer: Peer) -> None:
        pending = self._pending_2xx.pop((request.call_id, request.cseq.seq), None)
        if pending is not None:
            self._cancel_timers(pending)
        self._events.append(AckReceived(request, peer))

    def _server_timer(self, txn: _ServerTxn, name: Input, now: float) -> None:
        action, nxt = txn.table[(txn.state, name)]
        if action is Action.RETRANSMIT:
            # RFC 3261 §17.2.1: timer G, doubling up to T2.
            if txn.last is not None:
                self._outbox.append((txn.last, txn.peer))
            txn.interval = min(2 * txn.interval, self.config.T2)
            self._schedule(txn, name, now + txn.interval)
        elif action is Action.TIMEOUT:
            self._events.append(TransactionTimeout(txn.id, txn.request.method))
        self._transit(txn, nxt, now)

    # ------------------------------------------------------------------ UAS core 2xx

    def _start_2xx(self, request: Request, data: bytes, peer: Peer, now: float) -> None:
        key = (request.call_id, request.cseq.seq)
        pending = self._pending_2xx.get(key)
        if pending is not None:  # the TU sent the 2xx again (RFC 6026 §8.6): keep the timers
            pending.data = data
            return
        cfg = self.config
        pending = _Pending2xx(key, data, peer, cfg.T1)
        self._pending_2xx[key] = pending
        self._schedule(pending, Input.TIMER_2XX, now + cfg.T1)
        self._schedule(pending, Input.TIMER_ACK, now + 64 * cfg.T1)

    def _pending_timer(self, pending: _Pending2xx, name: Input, now: float) -> None:
        if name is Input.TIMER_2XX:
            self._outbox.append((pending.data, pending.peer))
            pending.interval = min(2 * pending.interval, self.config.T2)
            self._schedule(pending, name, now + pending.interval)
        else:
            self._cancel_timers(pending)
            del self._pending_2xx[pending.key]
            self._events.append(AckTimeout(*pending.key))

    # ------------------------------------------------------------------ state entry

    def _transit(self, txn: _ClientTxn | _ServerTxn, nxt: State, now: float) -> None:
        """Move to ``nxt`` and run its entry actions (timers) when the state changes."""
        if nxt is txn.state:
            return
        txn.state = nxt
        cfg = self.config
        if nxt is State.TERMINATED:
            self._remove(txn)
            return
        if isinstance(txn, _ClientTxn):
            if nxt is State.PROCEEDING:
                if txn.invite:
                    self._cancel_timers(txn)  # §17.1.1.2: no more timer A, and timer B is moot
                    if txn.cancel_requested:
                        self._send_cancel(txn, now)
                return  # non-INVITE: timers E (now at T2) and F keep running
            self._cancel_timers(txn)
            if nxt is State.ACCEPTED:
                self._schedule(txn, Input.TIMER_M, now + cfg.timer_m)
                return
            # COMPLETED
            if txn.invite:
                self._after(txn, Input.TIMER_D, cfg.timer_d(txn.reliable), now)
            else:
                self._after(txn, Input.TIMER_K, cfg.timer_k(txn.reliable), now)
            return
        # server
        if nxt is State.PROCEEDING:
            return
        self._cancel_timers(txn)
        if nxt is State.COMPLETED:
            if txn.invite:
                if not txn.reliable:
                    txn.interval = cfg.timer_g
                    self._schedule(txn, Input.TIMER_G, now + cfg.timer_g)
                self._schedule(txn, Input.TIMER_H, now + cfg.timer_h)
            else:
                self._after(txn, Input.TIMER_J, cfg.timer_j(txn.reliable), now)
        elif nxt is State.CONFIRMED:
            self._after(txn, Input.TIMER_I, cfg.timer_i(txn.reliable), now)
        elif nxt is State.ACCEPTED:
            self._schedule(txn, Input.TIMER_L, now + cfg.timer_l)

    def _after(self, txn: _ClientTxn | _ServerTxn, name: Input, delay: float, now: float) -> None:
        """Start a wait timer; a zero wait (reliable transports) terminates at once."""
        if delay > 0:
            self._schedule(txn, name, now + delay)
        else:
            txn.state = State.TERMINATED
            self._remove(txn)

    def _remove(self, txn: _ClientTxn | _ServerTxn) -> None:
        self._cancel_timers(txn)
        if isinstance(txn, _ClientTxn):
            self._client.pop(txn.id, None)
            return
        self._server.pop(txn.id, None)
        if txn.branch_key is not None and self._by_branch.get(txn.branch_key) is txn:
            del self._by_branch[txn.branch_key]
        if txn.merge_key is not None and self._merge.get(txn.merge_key) is txn:
            del self._merge[txn.merge_key]


__all__ = [
    "MAGIC_COOKIE",
    "RELIABLE_TRANSPORTS",
    "AckReceived",
    "AckTimeout",
    "Action",
    "CancelReceived",
    "Event",
    "Input",
    "RequestReceived",
    "ResponseReceived",
    "State",
    "StrayResponse",
    "TimerConfig",
    "TransactionLayer",
    "TransactionTimeout",
    "build_cancel",
    "build_non2xx_ack",
    "classify",
    "is_reliable",
]
