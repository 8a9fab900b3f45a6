"""The asyncio adapter around the sans-I/O SIP core.

Bytes in from the UDP/TCP transports → :func:`parse_message` → :class:`TransactionLayer`; events out
to the transaction user (call control); whatever the core wants to send goes out through the
transport it names; one ``loop.call_at`` re-armed to the core's next timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from gateway.sip.errors import SipError, Unparseable
from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.peer import Peer
from gateway.sip.transaction import Event, TimerConfig, TransactionLayer

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REGISTER"
"""The methods a site gateway serves (the Allow header, RFC 3261 §20.5)."""


class Sender(Protocol):
    """What the layers above need of the endpoint: send and cancel (see :class:`SipEndpoint`)."""

    def send_request(self, request: Request, peer: Peer) -> str: ...
    def send_response(self, txn_id: str, response: Response) -> None: ...
    def send_stateless(self, message: Request | Response, peer: Peer) -> None: ...
    def cancel(self, txn_id: str) -> None: ...


class Transport(Protocol):
    """Sends bytes to a peer over one transport kind."""

    def send(self, data: bytes, peer: Peer) -> None: ...

    def close(self) -> None: ...


class TransactionUser(Protocol):
    """What the endpoint hands events to (call control, registrar ...)."""

    def handle_event(self, event: Event) -> None: ...


class EndpointCounters:
    """Plain integers the metrics layer reads; bumped on the message path."""

    __slots__ = (
        "bad_requests",
        "dropped",
        "messages_in",
        "messages_out",
        "refused_source",
        "tu_errors",
    )

    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_out = 0
        self.bad_requests = 0  # answered 4xx/5xx at parse time
        self.dropped = 0  # unparseable, nothing to answer
        self.refused_source = 0  # refused by the admission hook (throttled, banned)
        self.tu_errors = 0  # an exception in the transaction user (a bug): logged, not fatal


class SipEndpoint:
    """One site's SIP endpoint: transports + transaction layer + timer, on one event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timers: TimerConfig | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.loop = loop
        self.layer = TransactionLayer(timers or TimerConfig())
        self.transports: dict[str, Transport] = {}
        self.tu: TransactionUser | None = None
        self.admit: Callable[[Peer, float], bool] | None = None
        self.counters = EndpointCounters()
        self._clock = clock or loop.time
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def now(self) -> float:
        """The clock the SIP core runs on (the loop's monotonic clock)."""
        return self._clock()

    # ------------------------------------------------------------------ input

    def datagram_received(self, data: bytes, peer: Peer, *, stream: bool = False) -> None:
        """Feed one message (a UDP datagram, or a framed TCP message)."""
        now = self._clock()
        c = self.counters
        c.messages_in += 1
        if self.admit is not None and not self.admit(peer, now):
            c.refused_source += 1
            return
        if len(data) <= 4 and not data.strip():
            return  # RFC 5626 keep-alive (CRLF) or empty datagram
        try:
            msg = parse_message(data, stream=stream)
        except SipError as exc:
            self._answer_bad(exc, peer)
            return
        self.layer.receive(msg, peer, now)
        self._drain()

    def _answer_bad(self, exc: SipError, peer: Peer) -> None:
        bad = getattr(exc, "message", None)
        if isinstance(exc, Unparseable) or not isinstance(bad, Request) or bad.method == "ACK":
            self.counters.dropped += 1
            log.debug("dropped from %s: %s", peer, exc.detail)
            return
        try:
            resp = make_response(bad, exc.status, exc.reason)
            resp.headers.add("Warning", f'399 ccgw "{_warning_text(exc.detail)}"')
            data = bytes(resp)
        except SipError:
            self.counters.dropped += 1
            return
        self.counters.bad_requests += 1
        log.info("answered %d to %s: %s", exc.status, peer, exc.detail)
        self._send(data, peer)

    # ------------------------------------------------------------------ output

    def send_request(self, request: Request, peer: Peer) -> str:
        """Start a client transaction; returns its id."""
        txn_id = self.layer.send_request(request, peer, self._clock())
        self._drain()
        return txn_id

    def send_response(self, txn_id: str, response: Response) -> None:
        """Answer on a server transaction."""
        self.layer.send_response(txn_id, response, self._clock())
        self._drain()

    def send_stateless(self, message: Request | Response, peer: Peer) -> None:
        """ACK for a 2xx, or a response outside any transaction."""
        self.layer.send_stateless(message, peer)
        self._drain()

    def cancel(self, txn_id: str) -> None:
        """CANCEL a pending INVITE client transaction."""
        self.layer.cancel(txn_id, self._clock())
        self._drain()

    def _send(self, data: bytes, peer: Peer) -> None:
        transport = self.transports.get(peer.transport)
        if transport is None:
            self.counters.dropped += 1
            return
        self.counters.messages_out += 1
        transport.send(data, peer)

    def _drain(self) -> None:
        layer = self.layer
        for data, peer in layer.datagrams_to_send():
            self._send(data, peer)
        tu = self.tu
        while True:
            event = layer.next_event()
            if event is None:
                break
            if tu is not None:
                try:
                    tu.handle_event(event)
                except Exception:
                    self.counters.tu_errors += 1
                    log.exception("transaction user failed on %r", event)
            for data, peer in layer.datagrams_to_send():
                self._send(data, peer)
        self._arm_timer()

    def _arm_timer(self) -> None:
        when = self.layer.get_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            # call_at runs on the loop's clock; our clock is the loop's clock.
            self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.layer.handle_timer(self._clock())
        self._drain()

    def flush(self) -> None:
        """Send what the core has pending and re-arm the timer (after direct core calls)."""
        self._drain()

    def close(self) -> None:
        """Stop the timer and close every transport."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for t in self.transports.values():
            t.close()
        self.transports.clear()


def _warning_text(detail: str) -> str:
    return detail.replace("\\", "").replace('"', "'")[:120]
