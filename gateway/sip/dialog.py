"""SIP dialogs (RFC 3261 §12): the state two user agents share, and requests built from it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .errors import CallDoesNotExist, SipError
from .message import Address, Headers, Request, Response, Via
from .uri import SipUri

TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})
"""Requests whose Contact replaces the remote target (RFC 3261 §12.2, RFC 3311, RFC 6665)."""

CONTACT_METHODS = TARGET_REFRESH_METHODS | {"REFER"}
"""Requests we send with our Contact (RFC 3261 §12.2.1.1, RFC 3515 §2.4.1)."""


def _without_tag(address: Address) -> str:
    params = {k: v for k, v in address.params.items() if k != "tag"}
    return str(Address(address.uri, address.display, params))


def _contact_uri(message: Request | Response) -> SipUri | str | None:
    contacts = message.headers.get_all("contact")
    if not contacts or contacts[0].strip() == "*":
        return None
    return Address.parse(contacts[0]).uri


def _route_uri(route: str) -> SipUri | str:
    return Address.parse(route).uri


@dataclass(slots=True)
class Dialog:
    """One dialog (RFC 3261 §12): identifiers, route set, remote target and CSeq numbers.

    ``local_uri``/``remote_uri`` are the From/To name-addr text without tag, ``route_set`` the
    Route values in the order requests carry them, ``local_contact`` our Contact value.
    ``local_seq`` 0 means "empty" for a UAS (the first request we send gets CSeq 1).
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: SipUri | str
    route_set: list[str]
    local_seq: int
    remote_seq: int | None
    local_contact: str

    @classmethod
    def from_uac(cls, request: Request, response: Response, local_contact: str) -> Dialog:
        """The dialog a UAC gets from a 1xx-with-tag or 2xx ``response`` to ``request``.

        RFC 3261 §12.1.2: route set = the response's Record-Route reversed, remote target =
        its Contact (the request URI when there is none), remote tag = the To tag ("" if none).
        """
        target = _contact_uri(response)
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=response.to.tag or "",
            local_uri=_without_tag(request.from_),
            remote_uri=_without_tag(request.to),
            remote_target=target if target is not None else request.ruri,
            route_set=list(reversed(response.headers.get_all("record-route"))),
            local_seq=request.cseq.seq,
            remote_seq=None,
            local_contact=local_contact,
        )

    @classmethod
    def from_uas(cls, request: Request, local_tag: str, local_contact: str) -> Dialog:
        """The dialog a UAS gets by answering ``request`` with To tag ``local_tag``.

        RFC 3261 §12.1.1: route set = the request's Record-Route in order, remote target = its
        Contact, remote sequence number = its CSeq. A request without Contact (it MUST have one,
        §8.1.1.8; the TU may answer 400 first) gets its From URI as target rather than an error.
        """
        target = _contact_uri(request)
        if target is None:
            target = request.from_.uri
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag or "",
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(request.from_),
            remote_target=target,
            route_set=list(request.headers.get_all("record-route")),
            local_seq=0,
            remote_seq=request.cseq.seq,
            local_contact=local_contact,
        )

    @property
    def id(self) -> tuple[str, str, str]:
        """``(call_id, local_tag, remote_tag)`` (RFC 3261 §12)."""
        return (self.call_id, self.local_tag, self.remote_tag)

    # ------------------------------------------------------------------ sending

    def _routing(self) -> tuple[SipUri | str, list[str]]:
        """RFC 3261 §12.2.1.1: the Request-URI and the Route values."""
        if not self.route_set:
            return self.remote_target, []
        first = _route_uri(self.route_set[0])
        if isinstance(first, SipUri) and "lr" in first.params:
            return self.remote_target, list(self.route_set)
        # Strict router: it gets the request URI, the remote target goes last in Route; strip
        # what a Request-URI may not carry (§19.1.1: method parameter, headers).
        if isinstance(first, SipUri):
            params = {k: v for k, v in first.params.items() if k != "method"}
            first = first.with_(params=params, headers=None)
        return first, [*self.route_set[1:], f"<{self.remote_target}>"]

    def _build(
        self,
        method: str,
        seq: int,
        via: Via,
        body: bytes,
        content_type: str | None,
        extra_headers: Iterable[tuple[str, str]],
    ) -> Request:
        ruri, routes = self._routing()
        h = Headers()
        h.add("Via", str(via))
        h.add("Max-Forwards", "70")
        for route in routes:
            h.add("Route", route)
        h.add("From", f"{self.local_uri};tag={self.local_tag}")
        to = f"{self.remote_uri};tag={self.remote_tag}" if self.remote_tag else self.remote_uri
        h.add("To", to)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{seq} {method}")
        if method in CONTACT_METHODS:
            h.add("Contact", self.local_contact)
        for name, value in extra_headers:
            h.add(name, value)
        if body or content_type:
            h.add("Content-Type", content_type or "application/sdp")
        return Request(method, ruri, h, body)

    def create_request(
        self,
        method: str,
        via: Via,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """A request within the dialog (RFC 3261 §12.2.1.1) with CSeq ``local_seq + 1``.

        ``via`` goes on top as given. A body without ``content_type`` is ``application/sdp``.
        ACK (use :meth:`create_ack`) and CANCEL (the transaction layer's job) raise ValueError.
        """
        if method in ("ACK", "CANCEL"):
            raise ValueError(f"{method} is not built with create_request()")
        self.local_seq += 1
        return self._build(method, self.local_seq, via, body, content_type, extra_headers)

    def create_ack(
        self, invite_cseq: int, via: Via, body: bytes = b"", content_type: str | None = None
    ) -> Request:
        """The ACK for a 2xx to the INVITE with CSeq ``invite_cseq`` (RFC 3261 §13.2.2.4)."""
        return self._build("ACK", invite_cseq, via, body, content_type, ())

    def next_hop(self) -> SipUri | str:
        """Where requests go (RFC 3261 §8.1.2): the first Route URI, else the remote target."""
        if self.route_set:
            return _route_uri(self.route_set[0])
        return self.remote_target

    # ------------------------------------------------------------------ receiving

    def receive_request(self, request: Request) -> None:
        """Account for a request received within the dialog (RFC 3261 §12.2.2).

        Raises :class:`CallDoesNotExist` (481) when it belongs to another dialog and
        :class:`SipError` 500 when its CSeq is lower than the remote sequence number.
        A target refresh request with a Contact replaces the remote target.
        """
        if (
            request.call_id != self.call_id
            or (request.from_.tag or "") != self.remote_tag
            or (request.to.tag or "") != self.local_tag
        ):
            raise CallDoesNotExist(f"request does not belong to dialog {self.id}")
        if request.method == "ACK":
            return  # the ACK carries the INVITE's CSeq; it is neither checked nor counted
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            raise SipError(
                f"CSeq {seq} is lower than {self.remote_seq}",
                status=500,
                reason="Server Internal Error",
            )
        self.remote_seq = seq
        if request.method in TARGET_REFRESH_METHODS:
            target = _contact_uri(request)
            if target is not None:
                self.remote_target = target

    def receive_response(self, response: Response) -> None:
        """Account for a response to a request we sent in the dialog: a 2xx to a target
        refresh request (re-INVITE, UPDATE ...) with a Contact replaces the remote target."""
        if (
            200 <= response.status < 300
            and response.cseq.method in TARGET_REFRESH_METHODS
            and (target := _contact_uri(response)) is not None
        ):
            self.remote_target = target


__all__ = ["CONTACT_METHODS", "TARGET_REFRESH_METHODS", "Dialog"]
