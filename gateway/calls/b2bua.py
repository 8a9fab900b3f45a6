"""Call control: a back-to-back user agent bridging a caller (leg a) to a callee (leg b).

Events from the transaction layer come in through :meth:`B2bua.handle_event`; the B2BUA answers,
forwards and tears down through the endpoint, and anchors the media in a relay session. Where the
call goes is decided by the pure dial plan (``gateway.routing.dialplan``); who may call is decided
by the edge (``EdgeService``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from gateway.media.endpoint import MediaEndpoint
from gateway.media.relay import MediaRelay, RelaySession
from gateway.routing.dialplan import (
    AppDestination,
    Destination,
    DialPlan,
    Reject,
    ToAgent,
    ToFlow,
    ToGroup,
    ToQueue,
    ToTrunk,
    ToVoicemail,
    route_inbound,
    route_internal,
)
from gateway.sip.dialog import Dialog
from gateway.sip.digest import Challenge, answer_challenge, choose_challenge
from gateway.sip.errors import SipError
from gateway.sip.message import (
    Address,
    Headers,
    Request,
    Response,
    Via,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
)
from gateway.sip.peer import Peer
from gateway.sip.transaction import (
    AckReceived,
    AckTimeout,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionTimeout,
)
from gateway.sip.uri import SipUri
from gateway.transport.endpoint import ALLOW, Sender

from . import sdp_glue
from .leg import Leg

log = logging.getLogger(__name__)


MESH_HEADERS = ("x-ccgw-handoff", "x-ccgw-hops")
"""Headers of an overflow INVITE between sites (lower case): kept in ``call.data``."""


class Edge(Protocol):
    """Who may call, and where agents are."""

    def handle_request(self, txn_id: str, request: Request, peer: Peer) -> bool:
        """Out-of-dialog requests that are not INVITE (REGISTER, OPTIONS); True if handled."""
        ...

    def authenticate_invite(self, txn_id: str, request: Request, peer: Peer) -> str | None:
        """The agent extension of an authenticated INVITE, or None after answering 407/403."""
        ...

    def authenticate_trunk(
        self, txn_id: str, request: Request, peer: Peer, username: str, password: str
    ) -> bool:
        """A carrier INVITE on a trunk that requires digest; False after answering 407/403."""
        ...

    def handle_response(self, txn_id: str, response: Response) -> bool:
        """Responses to the edge's own requests (OPTIONS keep-alives); True if it was one."""
        ...

    def handle_timeout(self, txn_id: str) -> bool:
        """A timeout of the edge's own requests; True if it was one."""
        ...

    def locate(self, extension: str) -> list[tuple[SipUri, Peer]]:
        """Where an agent's phones are: (contact URI, flow) per live binding."""
        ...


class CallApp(Protocol):
    """The contact centre: calls the gateway answers itself, and their offers to agents."""

    def on_app_call(self, call: Call, dest: AppDestination) -> None:
        """``call`` was answered by the gateway; ``call.endpoint`` plays to the caller."""
        ...

    def on_offer_answered(self, call: Call, agent: str) -> None:
        """``agent`` answered an offer: the caller now talks to the agent."""
        ...

    def on_offer_failed(self, call: Call, agent: str, status: int) -> None:
        """An offer to ``agent`` ended without an answer (busy, declined, ring timeout 408)."""
        ...

    def on_call_ended(self, call: Call) -> None:
        """The call is over (either side hung up, media stalled ...)."""
        ...

    def on_dtmf(self, call: Call, digit: str) -> None:
        """The caller pressed ``digit`` (RFC 4733 or INFO)."""
        ...

    def on_callback_result(self, call: Call, status: int) -> None:
        """An originated (agent-first) callback: 200 when the customer answered, else the
        customer leg's final status (the agent has been hung up on)."""
        ...


@dataclass(frozen=True, slots=True)
class TrunkInfo:
    """A carrier trunk as call control sees it."""

    name: str
    peers: tuple[Peer, ...]
    username: str | None = None
    password: str | None = None
    inbound_auth: bool = False  # the carrier's INVITEs must carry our digest credentials too
    site: str | None = None  # set on a trunk to another site gateway


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A ring group."""

    name: str
    strategy: str  # "ringall" | "hunt"
    members: tuple[str, ...]
    ring_timeout: float


@dataclass(slots=True)
class CallRecord:
    """What a call leaves behind (the CDR)."""

    call_id: str
    direction: str
    caller: str
    callee: str
    destination: str
    agent: str | None
    trunk: str | None
    start_ts: float
    answer_ts: float | None
    end_ts: float
    cause: int
    cause_text: str
    hangup_side: str


@dataclass(slots=True)
class Call:
    """One bridged call."""

    a: Leg
    direction: str
    caller: str
    callee: str
    destination: str = ""
    trunk: str | None = None
    agent: str | None = None
    forks: list[Leg] = field(default_factory=list)
    b: Leg | None = None
    state: str = "routing"  # routing → ringing → answered → ended
    media: RelaySession | None = None
    start_wall: float = field(default_factory=time.time)
    answer_wall: float | None = None
    no_answer: asyncio.TimerHandle | None = None
    hunt: list[tuple[str, list[tuple[SipUri, Peer]]]] = field(default_factory=list)
    ring_timeout: float = 30.0
    best_status: int = 0
    a_sdp: bytes = b""
    # in-flight re-INVITE: (leg it came from, its server txn, the client txn towards the other leg)
    reinvite: tuple[Leg, str, str] | None = None
    reinvite_req: Request | None = None
    hangup_side: str = ""
    cause: int = 0
    cause_text: str = ""
    app: bool = False  # answered by the gateway (IVR, queue, voicemail) rather than a phone
    endpoint: MediaEndpoint | None = None  # the gateway's own media end while ``app``
    a_codec: int = 0  # leg a's payload type once the gateway answered it
    data: dict[str, object] = field(default_factory=dict)  # the contact centre's notes
    txn_ids: list[str] = field(default_factory=list)  # every key this call has in ``B2bua.txns``


class CallCounters:
    """Plain counters for /metrics."""

    __slots__ = ("answered", "failed", "offered", "refused", "stalled")

    def __init__(self) -> None:
        self.offered = 0
        self.answered = 0
        self.failed = 0
        self.refused = 0
        self.stalled = 0


class B2bua:
    """Back-to-back user agent: the transaction user of a site's SIP endpoint."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        endpoint: Sender,
        edge: Edge,
        relay: MediaRelay,
        plan: DialPlan,
        *,
        local_host: str,
        local_port: int,
        local_ports: Mapping[str, int] | None = None,
        peer_name: Callable[[Peer], str | None] | None = None,
        trunks: dict[str, TrunkInfo],
        groups: dict[str, GroupInfo],
        no_answer_timeout: float = 30.0,
        user_agent: str = "ccgw",
        on_record: Callable[[CallRecord], None] | None = None,
        on_dtmf: Callable[[Call, str, str], None] | None = None,
        linger: float = 32.0,
    ) -> None:
        self.loop = loop
        self.endpoint = endpoint
        self.edge = edge
        self.relay = relay
        self.plan = plan
        self.host = local_host
        self.port = local_port
        self.ports = dict(local_ports or {})  # our port per transport (TLS listens apart)
        self.peer_name = peer_name  # the verified certificate name of a TLS peer
        self.trunks = trunks
        self.groups = groups
        self.no_answer_timeout = no_answer_timeout
        self.user_agent = user_agent
        self.on_record = on_record
        self.on_dtmf = on_dtmf
        self.linger = linger  # s an ended call's Call-IDs stay known (late retransmissions)
        self.app: CallApp | None = None
        self.calls: dict[str, Call] = {}  # by the Call-ID of every leg
        self.txns: dict[str, tuple[Call, Leg]] = {}  # client txn → (call, leg) and a-leg server txn
        self._live: dict[int, Call] = {}  # calls not yet ended, by id()
        self.counters = CallCounters()
        self._tasks: set[asyncio.Task[Any]] = set()
        # A carrier is recognised by its exact source address and port: a host-only match would
        # let anything else on the carrier's host (or a spoofer on a shared host) reach the PSTN.
        self._trunk_by_addr: dict[tuple[str, int], str] = {}
        self._trunk_by_site: dict[str, str] = {}
        for t in trunks.values():
            for p in t.peers:
                self._trunk_by_addr[(p.host, p.port)] = t.name
                if p.transport == "TLS" and t.site is not None:
                    self._trunk_by_site[t.site] = t.name

    # ------------------------------------------------------------------ helpers

    @property
    def active_calls(self) -> int:
        """Calls not yet ended (each counted once)."""
        return len(self._live)

    def contact(self, transport: str = "UDP") -> str:
        """Our Contact header value."""
        t = "" if transport == "UDP" else f";transport={transport.lower()}"
        return f"<sip:ccgw@{self.host}:{self.ports.get(transport, self.port)}{t}>"

    def via(self, transport: str) -> Via:
        """A fresh Via for a request we send."""
        port = self.ports.get(transport, self.port)
        return Via(transport, self.host, port, {"branch": new_branch(), "rport": None})

    def trunk_of(self, peer: Peer) -> str | None:
        """The trunk a message came from: a carrier by its source address, a site over TLS by
        the name its verified certificate bears (a stream's source port tells nothing)."""
        if peer.transport == "TLS" and self.peer_name is not None:
            name = self.peer_name(peer)
            return None if name is None else self._trunk_by_site.get(name)
        return self._trunk_by_addr.get((peer.host, peer.port))

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call task failed", exc_info=task.exception())

    def _respond(self, leg: Leg, status: int, reason: str = "", body: bytes = b"") -> None:
        """Answer the a-leg's INVITE."""
        assert leg.txn_id is not None
        headers = [("Server", self.user_agent)]
        if status < 300 and status != 100:
            headers.append(("Contact", self.contact(leg.peer.transport)))
            headers.append(("Allow", ALLOW))
        if body:
            headers.append(("Content-Type", "application/sdp"))
        resp = make_response(
            leg.invite, status, reason, to_tag=leg.local_tag, headers=headers, body=body
        )
        if 100 < status < 300 and leg.dialog is None:
            leg.dialog = Dialog.from_uas(
                leg.invite, leg.local_tag, self.contact(leg.peer.transport)
            )
        if status >= 200:
            leg.status = status
        self.endpoint.send_response(leg.txn_id, resp)

    def _reply(
        self, txn_id: str, request: Request, status: int, reason: str = "", **kw: Any
    ) -> None:
        extra: list[tuple[str, str]] = kw.pop("headers", [])
        resp = make_response(request, status, reason, to_tag=new_tag(), headers=extra, **kw)
        self.endpoint.send_response(txn_id, resp)

    # ------------------------------------------------------------------ events

    def handle_event(self, event: Event) -> None:
        """Entry point from the endpoint."""
        if isinstance(event, RequestReceived):
            self._on_request(event.txn_id, event.request, event.peer)
        elif isinstance(event, ResponseReceived):
            self._on_response(event.txn_id, event.response)
        elif isinstance(event, AckReceived):
            self._on_ack(event.request)
        elif isinstance(event, CancelReceived):
            self._on_cancel(event.txn_id)
        elif isinstance(event, TransactionTimeout):
            self._on_timeout(event.txn_id, event.method)
        elif isinstance(event, AckTimeout):
            call = self.calls.get(event.call_id)
            if call is not None:
                log.info("[%s] 2xx never ACKed: ending the call", event.call_id)
                self._hangup(call, None, 408, "ACK Timeout", side="timeout")
        elif isinstance(event, StrayResponse):
            self._on_stray(event.response, event.peer)

    def _on_request(self, txn_id: str, req: Request, peer: Peer) -> None:
        method = req.method
        to_tag = req.to.tag
        if to_tag is None:
            if method == "INVITE":
                self._new_call(txn_id, req, peer)
            elif not self.edge.handle_request(txn_id, req, peer):
                self._reply(txn_id, req, 405, headers=[("Allow", ALLOW)])
            return
        call = self.calls.get(req.call_id)
        if call is None:
            self._reply(txn_id, req, 481)
            return
        leg = self._leg_of(call, req)
        if leg is None or leg.dialog is None:
            self._reply(txn_id, req, 481)
            return
        try:
            leg.dialog.receive_request(req)
        except SipError as exc:
            self._reply(txn_id, req, exc.status, exc.reason)
            return
        if method == "BYE":
            self._reply_in_dialog(leg, txn_id, req, 200)
            self._hangup(call, leg, 16, "Normal Clearing", side=leg.role)
        elif method == "INVITE":
            self._on_reinvite(call, leg, txn_id, req)
        elif method == "INFO":
            self._on_info(call, leg, txn_id, req)
        elif method in ("OPTIONS", "UPDATE") and not req.body:
            self._reply_in_dialog(leg, txn_id, req, 200, headers=[("Allow", ALLOW)])
        else:
            self._reply_in_dialog(leg, txn_id, req, 501, headers=[("Allow", ALLOW)])

    def _reply_in_dialog(self, leg: Leg, txn_id: str, req: Request, status: int, **kw: Any) -> None:
        extra: list[tuple[str, str]] = kw.pop("headers", [])
        resp = make_response(req, status, headers=extra, **kw)
        self.endpoint.send_response(txn_id, resp)

    def _leg_of(self, call: Call, req: Request) -> Leg | None:
        if req.call_id == call.a.call_id:
            return call.a
        if call.b is not None and req.call_id == call.b.call_id:
            return call.b
        for f in call.forks:
            if f.call_id == req.call_id:
                return f
        return None

    def _other(self, call: Call, leg: Leg) -> Leg | None:
        return call.b if leg is call.a else call.a

    # ------------------------------------------------------------------ new calls

    def _new_call(self, txn_id: str, req: Request, peer: Peer) -> None:
        self.counters.offered += 1
        mf = req.headers.get("max-forwards")
        if mf is not None and int(mf) == 0:
            self._reply(txn_id, req, 483)
            return
        ruri = req.ruri
        dialled = ruri.user_unescaped if isinstance(ruri, SipUri) else None
        if not dialled:
            self._reply(txn_id, req, 404, "No Number In Request-URI")
            return
        if "contact" not in req.headers:
            self._reply(txn_id, req, 400, "Missing Contact")  # RFC 3261 §8.1.1.8
            return
        caller = _caller_of(req)
        trunk = self.trunk_of(peer)
        if trunk is not None:
            info = self.trunks[trunk]
            if (
                info.inbound_auth
                and info.username
                and info.password is not None
                and not self.edge.authenticate_trunk(
                    txn_id, req, peer, info.username, info.password
                )
            ):
                self.counters.refused += 1
                return
            direction = "inbound"
            dest = self._route_inbound(trunk, dialled)
            agent: str | None = None
        else:
            agent = self.edge.authenticate_invite(txn_id, req, peer)
            if agent is None:
                self.counters.refused += 1
                return  # the edge has answered (407 challenge, 403)
            caller = agent
            dest = route_internal(self.plan, agent, dialled)
            direction = "outbound" if isinstance(dest, ToTrunk) else "internal"
        if isinstance(dest, Reject):
            self.counters.refused += 1
            self._reply(txn_id, req, dest.status, dest.reason)
            return
        if isinstance(dest, AppDestination) and self.app is None:
            self.counters.refused += 1
            self._reply(txn_id, req, 404, "No Contact Centre")
            return
        try:
            offer = sdp_glue.parse_offer(req.body) if req.body else None
        except SipError as exc:
            self._reply(txn_id, req, exc.status, exc.reason)
            return
        if offer is None:
            self._reply(txn_id, req, 488, "SDP Offer Required")
            return
        a = Leg("a", req.call_id, peer, req, new_tag(), txn_id=txn_id, label=trunk or agent or "")
        a.remote_sdp = req.body
        call = Call(a, direction, caller, dialled, trunk=trunk, agent=None)
        call.a_sdp = req.body
        call.ring_timeout = self.no_answer_timeout
        if trunk is not None and trunk in self.plan.mesh_trunks:
            for name in MESH_HEADERS:  # an overflow from another site: its handoff id, hops
                value = req.headers.get(name)
                if value is not None:
                    call.data[name] = value
            call.data["from_site"] = self.trunks[trunk].site or trunk
        self.calls[a.call_id] = call
        self._track(txn_id, call, a)
        if isinstance(dest, ToTrunk):
            call.destination = f"trunk:{dest.trunk}"
            call.trunk = dest.trunk
        elif isinstance(dest, ToAgent):
            call.destination = f"agent:{dest.extension}"
        elif isinstance(dest, ToGroup):
            call.destination = f"group:{dest.name}"
        else:
            call.destination = _app_label(dest)
            call.app = True
            self._spawn(self._setup_app(call, dest, offer))
            return
        self._spawn(self._setup(call, dest, offer))

    def _route_inbound(self, trunk: str, dialled: str) -> Destination:
        return route_inbound(self.plan, trunk, dialled)

    # ------------------------------------------------------------------ calls the gateway answers

    async def _open_media(self, call: Call) -> RelaySession | None:
        """The call's relay session, wired to its stall and DTMF handlers; None (the caller
        answered 503) when no ports are free, or when the call ended meanwhile."""
        try:
            session = await self.relay.open_session(call.a.call_id)
        except Exception as exc:
            log.warning("[%s] no media ports: %s", call.a.call_id, exc)
            self._fail(call, 503, "No Media Resources")
            return None
        if call.state == "ended":
            session.close()
            return None
        call.media = session
        session.on_stall = lambda _s, c=call: self._on_stall(c)
        session.on_dtmf = lambda leg, digit, dur, c=call: self._on_media_dtmf(c, leg, digit, dur)
        return session

    async def _setup_app(self, call: Call, dest: AppDestination, offer: sdp_glue.Offer) -> None:
        """Answer the caller ourselves, media anchored in the relay, far leg on our endpoint."""
        session = await self._open_media(call)
        if session is None:
            return
        a = call.a
        try:
            body, codec, dtmf = sdp_glue.local_answer(
                call.a_sdp,
                self.relay.sdp_host,
                session.leg("a").local_port,
                a.sdp_session_id,
                a.next_sdp_version(),
            )
            endpoint = await MediaEndpoint.open(
                self.loop, self.relay.host, session.leg("b").local_port, codec
            )
        except (SipError, OSError) as exc:
            log.warning("[%s] cannot answer: %s", a.call_id, exc)
            self._fail(call, 488 if isinstance(exc, SipError) else 503, "Cannot Answer")
            return
        if call.state == "ended":
            endpoint.close()
            return
        call.endpoint = endpoint
        call.a_codec = codec
        session.set_remote("a", offer.host, offer.port, codec_pt=codec, dtmf_pt=dtmf)
        session.set_remote("b", self.relay.host, endpoint.local_port, codec_pt=codec, dtmf_pt=None)
        call.state = "app"
        call.answer_wall = time.time()
        self._respond(a, 200, "OK", body)
        assert self.app is not None
        self.app.on_app_call(call, dest)

    def offer(self, call: Call, agent: str, ring_timeout: float) -> bool:
        """Ring ``agent``'s phones for a call the gateway holds; False if none is registered.

        The outcome comes back as ``on_offer_answered`` or ``on_offer_failed``.
        """
        if call.state != "app" or call.media is None:
            return False
        targets = self.edge.locate(agent)
        if not targets:
            return False
        extra = cast("Mapping[str, str] | None", call.data.get("offer_headers"))
        for uri, peer in targets:
            leg = self._send_invite(call, uri, peer, agent, extra)
            leg.timer = self.loop.call_later(ring_timeout, self._offer_timeout, call, leg)
        return True

    def offer_site(
        self,
        call: Call,
        label: str,
        uri: SipUri,
        trunk: str,
        ring_timeout: float,
        headers: Mapping[str, str],
    ) -> bool:
        """Send a call the gateway holds to another site over inter-site ``trunk`` (an
        overflow): like :meth:`offer`, with ``headers`` (the handoff id, hop count) on the
        INVITE. The far site's gateway answers at once and queues the caller there; the outcome
        comes back as ``on_offer_answered`` / ``on_offer_failed`` with ``label``."""
        info = self.trunks.get(trunk)
        if call.state != "app" or call.media is None or info is None:
            return False
        peer = info.peers[0]
        leg = self._send_invite(call, uri, peer, label, headers, trunk=trunk)
        leg.timer = self.loop.call_later(ring_timeout, self._offer_timeout, call, leg)
        return True

    def withdraw(self, call: Call, agent: str) -> None:
        """Stop ringing ``agent`` for ``call`` (another agent won, the caller left ...)."""
        for f in call.forks:
            if f.label == agent and not f.ended and not f.answered:
                self._cancel_fork(f)

    def hangup_call(self, call: Call, cause: int = 16, text: str = "Normal Clearing") -> None:
        """End a call from the gateway's side (after a goodbye prompt, a feature code ...)."""
        self._hangup(call, None, cause, text, side="gateway")

    def _cancel_fork(self, leg: Leg) -> None:
        leg.ended = True
        if leg.timer is not None:
            leg.timer.cancel()
            leg.timer = None
        if leg.txn_id is not None:
            self.endpoint.cancel(leg.txn_id)

    def _offer_timeout(self, call: Call, leg: Leg) -> None:
        leg.timer = None
        if leg.ended or leg.answered or call.state != "app":
            return
        self._cancel_fork(leg)
        self._report_offer_failed(call, leg, 408)

    def _report_offer_failed(self, call: Call, leg: Leg, status: int) -> None:
        live = any(f.label == leg.label and not f.ended for f in call.forks if f is not leg)
        if not live and self.app is not None and call.state == "app":
            self.app.on_offer_failed(call, leg.label, status)

    def _bridge_app_call(self, call: Call, leg: Leg, resp: Response) -> None:
        """An agent answered a held call: point the relay's far leg at the agent."""
        assert call.media is not None
        try:
            ans = sdp_glue.parse_offer(resp.body)
        except SipError as exc:
            log.info("[%s] bad SDP answer from %s: %s", call.a.call_id, leg.label, exc.detail)
            self._send_bye(leg)
            self._report_offer_failed(call, leg, 488)
            return
        call.b = leg
        call.state = "answered"
        call.agent = leg.label
        self.counters.answered += 1
        for f in call.forks:
            if f is not leg and not f.ended:
                self._cancel_fork(f)
        if leg.timer is not None:
            leg.timer.cancel()
            leg.timer = None
        if call.endpoint is not None:
            call.endpoint.close()
            call.endpoint = None
        call.media.set_remote("b", ans.host, ans.port, codec_pt=ans.codec_pt, dtmf_pt=ans.dtmf_pt)
        log.debug("[%s] answered by agent %s", call.a.call_id, leg.label)
        if self.app is not None:
            self.app.on_offer_answered(call, leg.label)

    async def _setup(
        self, call: Call, dest: ToAgent | ToGroup | ToTrunk, offer: sdp_glue.Offer
    ) -> None:
        session = await self._open_media(call)
        if session is None:
            return
        session.set_remote(
            "a", offer.host, offer.port, codec_pt=offer.codec_pt, dtmf_pt=offer.dtmf_pt
        )
        if isinstance(dest, ToTrunk):
            trunk = self.trunks[dest.trunk]
            uri = SipUri("sip", dest.number, trunk.peers[0].host, trunk.peers[0].port)
            call.hunt = [(dest.trunk, [(uri, trunk.peers[0])])]
        elif isinstance(dest, ToAgent):
            call.agent = dest.extension
            call.hunt = [(dest.extension, self.edge.locate(dest.extension))]
        else:
            group = self.groups[dest.name]
            call.ring_timeout = group.ring_timeout
            if group.strategy == "ringall":
                targets: list[tuple[SipUri, Peer]] = []
                labels = []
                for ext in group.members:
                    for t in self.edge.locate(ext):
                        targets.append(t)
                        labels.append(ext)
                call.hunt = [("|".join(labels), targets)]
            else:
                call.hunt = [(ext, self.edge.locate(ext)) for ext in group.members]
        self._next_target(call)

    def _next_target(self, call: Call) -> None:
        """Ring the next entry of the hunt list, or fail the call when none is left."""
        while call.hunt:
            label, targets = call.hunt.pop(0)
            if not targets:
                call.best_status = call.best_status or 480
                continue
            labels = label.split("|")
            call.forks = []
            for i, (uri, peer) in enumerate(targets):
                self._send_invite(call, uri, peer, labels[i] if i < len(labels) else labels[0])
            call.state = "ringing"
            if call.no_answer is not None:
                call.no_answer.cancel()
            call.no_answer = self.loop.call_later(call.ring_timeout, self._on_no_answer, call)
            return
        status = call.best_status or 480
        reason = {480: "Temporarily Unavailable", 486: "Busy Here", 408: "Request Timeout"}.get(
            status, ""
        )
        self._fail(call, status, reason)

    def _send_invite(
        self,
        call: Call,
        uri: SipUri,
        peer: Peer,
        label: str,
        headers: Mapping[str, str] | None = None,
        *,
        trunk: str | None = None,
    ) -> Leg:
        assert call.media is not None
        a = call.a
        mf = a.invite.headers.get("max-forwards")
        port = call.media.leg("b").local_port

        def body(leg: Leg) -> bytes:
            return sdp_glue.relay_offer(
                call.a_sdp, self.relay.sdp_host, port, leg.sdp_session_id, leg.next_sdp_version()
            )

        leg = self._uac_invite(
            call, "b", uri, peer, label, call.caller, _display_of(a.invite), body,
            min(70, int(mf) - 1) if mf else 70, headers, trunk,
        )  # fmt: skip
        call.forks.append(leg)
        return leg

    def _uac_invite(
        self,
        call: Call,
        role: str,
        uri: SipUri,
        peer: Peer,
        label: str,
        from_user: str,
        display: str | None,
        body: Callable[[Leg], bytes],
        max_forwards: int = 70,
        headers: Mapping[str, str] | None = None,
        trunk: str | None = None,
    ) -> Leg:
        """Send an INVITE that starts a leg of ours (a UAC leg) with the SDP ``body(leg)``."""
        call_id = new_call_id(self.host)
        tag = new_tag()
        h = Headers()
        h.add("Via", str(self.via(peer.transport)))
        h.add("Max-Forwards", str(max_forwards))
        h.add("From", str(Address(SipUri("sip", from_user, self.host), display, {"tag": tag})))
        h.add("To", str(Address(SipUri("sip", uri.user, uri.host, uri.port))))
        h.add("Call-ID", call_id)
        h.add("CSeq", "1 INVITE")
        h.add("Contact", self.contact(peer.transport))
        h.add("Allow", ALLOW)
        h.add("User-Agent", self.user_agent)
        if headers:
            for name, value in headers.items():
                h.add(name, value)
        h.add("Content-Type", "application/sdp")
        leg = Leg(role, call_id, peer, Request("INVITE", uri, h), tag, label=label, trunk=trunk)
        leg.invite.body = body(leg)
        txn = self.endpoint.send_request(leg.invite, peer)
        leg.txn_id = txn
        self.calls[call_id] = call
        self._track(txn, call, leg)
        return leg

    # ------------------------------------------------------------------ agent-first callbacks

    async def originate(
        self,
        label: str,
        agent: str,
        number: str,
        trunk: str,
        ring_timeout: float,
        caller_id: str | None = None,
    ) -> Call | None:
        """Ring ``agent``; once they answer, dial ``number`` through ``trunk`` and bridge the two
        (an agent-first callback). None when the agent has no phone registered or no media
        ports are free. The outcome arrives as ``on_offer_failed`` (agent) or
        ``on_callback_result`` (customer), then ``on_call_ended``."""
        targets = self.edge.locate(agent)
        info = self.trunks.get(trunk)
        if not targets or info is None:
            return None
        try:
            session = await self.relay.open_session(label)
        except Exception as exc:
            log.warning("[%s] callback: no media ports: %s", label, exc)
            return None
        uri, peer = targets[0]
        port = session.leg("a").local_port

        def offer(leg: Leg) -> bytes:
            return sdp_glue.make_offer(
                self.relay.sdp_host, port, leg.sdp_session_id, leg.next_sdp_version()
            )

        placeholder = Leg("a", label, peer, Request("INVITE", uri), "")
        call = Call(placeholder, "outbound", agent, number, trunk=trunk, agent=agent)
        call.state = "originating"
        call.app = True
        call.media = session
        call.destination = f"callback:{number}"
        call.data["callback"] = label
        call.data["caller_id"] = caller_id or agent
        session.on_stall = lambda _s, c=call: self._on_stall(c)
        self.counters.offered += 1
        a = self._uac_invite(call, "a", uri, peer, agent, caller_id or number, "Callback", offer)
        call.a = a
        a.timer = self.loop.call_later(ring_timeout, self._originate_timeout, call, a)
        return call

    def _originate_timeout(self, call: Call, leg: Leg) -> None:
        leg.timer = None
        if leg.answered or leg.ended or call.state != "originating":
            return
        leg.ended = True
        if leg.txn_id is not None:
            self.endpoint.cancel(leg.txn_id)

    def _on_originate_response(self, call: Call, leg: Leg, resp: Response) -> None:
        status = resp.status
        if status < 200:
            return
        assert call.media is not None
        if status < 300:
            if leg.dialog is None:
                leg.dialog = Dialog.from_uac(leg.invite, resp, self.contact(leg.peer.transport))
            self._send_ack(leg, resp)
            if leg.answered:
                return
            leg.answered = True
            leg.status = status
            if leg.timer is not None:
                leg.timer.cancel()
                leg.timer = None
            try:
                ans = sdp_glue.parse_offer(resp.body)
            except SipError:
                self._hangup(
                    call, None, 488, "Bad SDP Answer", side="b" if leg.role == "b" else "a"
                )
                return
            call.media.set_remote(
                leg.role, ans.host, ans.port, codec_pt=ans.codec_pt, dtmf_pt=ans.dtmf_pt
            )
            if leg.role == "a":
                # The agent is on the line: now the customer, through the trunk.
                trunk = self.trunks[call.trunk or ""]
                tpeer = trunk.peers[0]
                uri = SipUri("sip", call.callee, tpeer.host, tpeer.port)
                port = call.media.leg("b").local_port

                def offer(leg: Leg) -> bytes:
                    return sdp_glue.make_offer(
                        self.relay.sdp_host, port, leg.sdp_session_id, leg.next_sdp_version()
                    )

                cid = str(call.data.get("caller_id") or call.caller)
                call.b = self._uac_invite(call, "b", uri, tpeer, call.trunk or "", cid, None, offer)
                return
            call.state = "answered"
            call.answer_wall = time.time()
            self.counters.answered += 1
            log.info("[%s] callback connected: %s ↔ %s", call.a.call_id, call.agent, call.callee)
            if self.app is not None:
                self.app.on_callback_result(call, 200)
            return
        leg.ended = True
        leg.status = status
        if leg.timer is not None:
            leg.timer.cancel()
            leg.timer = None
        if (
            leg.role == "b"
            and status in (401, 407)
            and not leg.auth_tried
            and self._retry_with_auth(call, leg, resp)
        ):
            return
        if leg.role == "a":
            if self.app is not None:
                self.app.on_offer_failed(call, leg.label, status)
            call.cause, call.cause_text, call.hangup_side = status, "Agent Did Not Answer", "a"
            self._end(call)
            return
        if self.app is not None:
            self.app.on_callback_result(call, status)
        self._hangup(call, leg, status, "Customer Did Not Answer", side="b")

    def _on_no_answer(self, call: Call) -> None:
        call.no_answer = None
        if call.state != "ringing":
            return
        log.info("[%s] no answer after %.0f s", call.a.call_id, call.ring_timeout)
        call.best_status = max(call.best_status, 480)
        for f in call.forks:
            if not f.ended and f.txn_id is not None:
                f.ended = True
                self.endpoint.cancel(f.txn_id)
        self._next_target(call)

    # ------------------------------------------------------------------ responses

    def _on_response(self, txn_id: str, resp: Response) -> None:
        if self.edge.handle_response(txn_id, resp):
            return
        entry = self.txns.get(txn_id)
        if entry is None:
            return
        call, leg = entry
        method = resp.cseq.method
        if method == "INVITE" and call.state == "originating" and txn_id == leg.txn_id:
            self._on_originate_response(call, leg, resp)
        elif method == "INVITE" and leg.role == "b" and txn_id == leg.txn_id:
            self._on_b_invite_response(call, leg, resp)
        elif method == "INVITE" and call.reinvite is not None and call.reinvite[2] == txn_id:
            self._on_reinvite_response(call, leg, resp)
        elif method == "BYE" and resp.status >= 200:
            self.txns.pop(txn_id, None)

    def _on_b_invite_response(self, call: Call, leg: Leg, resp: Response) -> None:
        if call.app:
            self._on_offer_response(call, leg, resp)
            return
        status = resp.status
        a = call.a
        if status < 200:
            if status == 100 or call.state != "ringing":
                return
            leg.provisional = True
            if resp.body and call.media is not None:
                # Early media from the callee: relay it and pass an 183 with our SDP.
                try:
                    ans = sdp_glue.parse_offer(resp.body)
                except SipError:
                    ans = None
                if ans is not None:
                    call.media.set_remote(
                        "b", ans.host, ans.port, codec_pt=ans.codec_pt, dtmf_pt=ans.dtmf_pt
                    )
                    body = self._answer_for_a(call, resp.body)
                    if a.status == 0:
                        self._respond(a, 183, "Session Progress", body)
                    return
            if a.status == 0 and not a.provisional:
                a.provisional = True
                self._respond(a, 180)
            return
        if 200 <= status < 300:
            if leg.dialog is None:
                leg.dialog = Dialog.from_uac(leg.invite, resp, self.contact(leg.peer.transport))
            self._send_ack(leg, resp)
            if leg.answered:
                return  # a retransmitted 2xx: ACK sent again above
            leg.answered = True
            leg.status = status
            if call.state != "ringing" or leg.ended:
                # Answered too late (cancelled, another fork won): end it.
                self._send_bye(leg)
                return
            self._answered(call, leg, resp)
            return
        # 3xx-6xx: this fork failed (the layer sent the ACK).
        leg.ended = True
        leg.status = status
        if (
            status in (401, 407)
            and not leg.auth_tried
            and call.direction == "outbound"
            and self._retry_with_auth(call, leg, resp)
        ):
            return
        if call.state != "ringing":
            return
        call.best_status = _better_status(call.best_status, status)
        if all(f.ended for f in call.forks):
            if status >= 600:
                call.hunt.clear()
            if call.no_answer is not None:
                call.no_answer.cancel()
                call.no_answer = None
            self._next_target(call)

    def _on_offer_response(self, call: Call, leg: Leg, resp: Response) -> None:
        status = resp.status
        if status < 200:
            leg.provisional = True
            return
        if status < 300:
            if leg.dialog is None:
                leg.dialog = Dialog.from_uac(leg.invite, resp, self.contact(leg.peer.transport))
            self._send_ack(leg, resp)
            if leg.answered:
                return  # a retransmitted 2xx
            leg.answered = True
            leg.status = status
            if call.state != "app" or leg.ended:
                self._send_bye(leg)  # too late: another agent won, or the caller left
                return
            self._bridge_app_call(call, leg, resp)
            return
        if (
            status in (401, 407)
            and leg.trunk is not None  # an overflow leg to another site: answer its challenge
            and not leg.auth_tried
            and not leg.ended
            and call.state == "app"
            and self._retry_with_auth(call, leg, resp)
        ):
            return
        was_ended = leg.ended
        leg.ended = True
        leg.status = status
        if leg.timer is not None:
            leg.timer.cancel()
            leg.timer = None
        if not was_ended:
            self._report_offer_failed(call, leg, status)

    def _answered(self, call: Call, leg: Leg, resp: Response) -> None:
        call.b = leg
        call.state = "answered"
        call.answer_wall = time.time()
        call.agent = leg.label if call.direction != "outbound" else call.agent
        self.counters.answered += 1
        if call.no_answer is not None:
            call.no_answer.cancel()
            call.no_answer = None
        for f in call.forks:
            if f is not leg and not f.ended:
                f.ended = True
                if f.txn_id is not None:
                    self.endpoint.cancel(f.txn_id)
        leg.remote_sdp = resp.body
        body = b""
        if call.media is not None and resp.body:
            try:
                ans = sdp_glue.parse_offer(resp.body)
                call.media.set_remote(
                    "b", ans.host, ans.port, codec_pt=ans.codec_pt, dtmf_pt=ans.dtmf_pt
                )
                body = self._answer_for_a(call, resp.body)
            except SipError as exc:
                log.info("[%s] bad SDP answer from callee: %s", call.a.call_id, exc.detail)
                self._hangup(call, None, 488, "Bad SDP Answer", side="b")
                return
        self._respond(call.a, 200, "OK", body)
        log.debug("[%s] answered by %s", call.a.call_id, leg.label)

    def _answer_for_a(self, call: Call, b_answer: bytes) -> bytes:
        """The SDP answer we give leg a, given leg b's answer; sets leg a's codec."""
        assert call.media is not None
        a = call.a
        body, codec_pt, dtmf_pt = sdp_glue.relay_answer(
            call.a_sdp,
            b_answer,
            self.relay.sdp_host,
            call.media.leg("a").local_port,
            a.sdp_session_id,
            a.next_sdp_version(),
        )
        offer = sdp_glue.parse_offer(call.a_sdp)
        call.media.set_remote("a", offer.host, offer.port, codec_pt=codec_pt, dtmf_pt=dtmf_pt)
        return body

    def _send_ack(self, leg: Leg, resp: Response) -> None:
        assert leg.dialog is not None
        ack = leg.dialog.create_ack(resp.cseq.seq, self.via(leg.peer.transport))
        self.endpoint.send_stateless(ack, leg.peer)

    def _retry_with_auth(self, call: Call, leg: Leg, resp: Response) -> bool:
        trunk = self.trunks.get(leg.trunk or call.trunk or "")
        if trunk is None or not trunk.username or trunk.password is None:
            return False
        header = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        try:
            challenge = choose_challenge(Challenge.parse(v) for v in resp.headers.get_all(header))
            if challenge is None:
                return False
            creds = answer_challenge(
                challenge, "INVITE", leg.invite.uri, trunk.username, trunk.password
            )
        except SipError as exc:
            log.info("[%s] cannot answer the carrier's challenge: %s", call.a.call_id, exc.detail)
            return False
        inv = leg.invite
        h = inv.headers.copy()
        h.set("Via", str(self.via(leg.peer.transport)))
        h.set("CSeq", f"{inv.cseq.seq + 1} INVITE")
        h.add("Authorization" if resp.status == 401 else "Proxy-Authorization", str(creds))
        new = Request("INVITE", inv.uri, h, inv.body)
        leg.invite = new
        leg.ended = False
        leg.auth_tried = True
        self.txns.pop(leg.txn_id or "", None)
        leg.txn_id = self.endpoint.send_request(new, leg.peer)
        self._track(leg.txn_id, call, leg)
        return True

    def _on_timeout(self, txn_id: str, method: str) -> None:
        if self.edge.handle_timeout(txn_id):
            return
        entry = self.txns.pop(txn_id, None)
        if entry is None:
            return
        call, leg = entry
        if method == "INVITE" and call.state == "originating" and txn_id == leg.txn_id:
            self._on_originate_response(call, leg, _synthetic(leg.invite, 408))
        elif method == "INVITE" and leg.role == "b" and txn_id == leg.txn_id:
            self._on_b_invite_response(call, leg, _synthetic(leg.invite, 408))
        elif method == "INVITE" and call.reinvite is not None and call.reinvite[2] == txn_id:
            self._on_reinvite_response(call, leg, _synthetic(leg.invite, 408))

    def _on_stray(self, resp: Response, peer: Peer) -> None:
        # A 2xx for a fork we already gave up on (RFC 3261 §13.2.2.4): ACK it, then BYE it.
        if resp.cseq.method != "INVITE" or not 200 <= resp.status < 300:
            return
        call = self.calls.get(resp.call_id)
        if call is None:
            return
        for f in call.forks:
            if f.call_id == resp.call_id and f.dialog is not None:
                self._send_ack(f, resp)
                return

    # ------------------------------------------------------------------ cancel, ack, bye

    def _on_cancel(self, txn_id: str) -> None:
        entry = self.txns.get(txn_id)
        if entry is None:
            return
        call, a = entry
        if a.status >= 200:
            return
        log.debug("[%s] cancelled by the caller", call.a.call_id)
        self._respond(a, 487, "Request Terminated")
        call.cause, call.cause_text, call.hangup_side = 487, "Cancelled", "a"
        for f in call.forks:
            if not f.ended and f.txn_id is not None:
                f.ended = True
                self.endpoint.cancel(f.txn_id)
        self._end(call)

    def _on_ack(self, req: Request) -> None:
        call = self.calls.get(req.call_id)
        if call is None:
            return
        leg = self._leg_of(call, req)
        if leg is None:
            return
        if call.reinvite is not None and call.reinvite[0] is leg and req.cseq.method == "ACK":
            # ACK for a re-INVITE 2xx we relayed: ACK the other side's 2xx (done on its 2xx).
            call.reinvite = None

    def _send_bye(self, leg: Leg) -> None:
        if leg.dialog is None:
            return
        bye = leg.dialog.create_request("BYE", self.via(leg.peer.transport))
        bye.headers.add("User-Agent", self.user_agent)
        txn = self.endpoint.send_request(bye, leg.peer)
        # Keep a mapping so the 200 is recognised and then dropped.
        call = self.calls.get(leg.call_id)
        if call is not None:
            self._track(txn, call, leg)

    def _hangup(
        self, call: Call, from_leg: Leg | None, cause: int, text: str, *, side: str
    ) -> None:
        """End an established (or establishing) call from one side, or from us."""
        if call.state == "ended":
            return
        call.cause, call.cause_text, call.hangup_side = cause, text, side
        for leg in [call.a, *(call.forks if call.b is None else [call.b])]:
            if leg is from_leg or leg.ended:
                continue
            if leg.role == "a" and leg.status < 200:
                self._respond(leg, 480 if cause != 408 else 408, text)
            elif leg.answered or (leg.role == "a" and leg.status < 300):
                self._send_bye(leg)
            elif leg.txn_id is not None:
                self.endpoint.cancel(leg.txn_id)
            leg.ended = True
        self._end(call)

    def _fail(self, call: Call, status: int, reason: str) -> None:
        """The call could not be connected: answer the caller with ``status``."""
        self.counters.failed += 1
        if call.a.status == 0:
            self._respond(call.a, status, reason)
        call.cause, call.cause_text, call.hangup_side = status, reason or "Failed", "gateway"
        self._end(call)

    def _end(self, call: Call) -> None:
        if call.state == "ended":
            return
        call.state = "ended"
        self._live.pop(id(call), None)
        if call.no_answer is not None:
            call.no_answer.cancel()
            call.no_answer = None
        if call.media is not None:
            call.media.close()
        if call.endpoint is not None:
            call.endpoint.close()
            call.endpoint = None
        for f in call.forks:
            if f.timer is not None:
                f.timer.cancel()
                f.timer = None
        if call.app and self.app is not None:
            try:
                self.app.on_call_ended(call)
            except Exception:
                log.exception("[%s] contact centre failed on call end", call.a.call_id)
        # Keep the Call-ID mappings a little while, so late retransmissions find a 481-free home.
        self.loop.call_later(self.linger, self._forget, call)
        if self.on_record is not None:
            now = time.time()
            self.on_record(
                CallRecord(
                    call_id=call.a.call_id,
                    direction=call.direction,
                    caller=call.caller,
                    callee=call.callee,
                    destination=call.destination,
                    agent=call.agent if call.b is not None else None,
                    trunk=call.trunk,
                    start_ts=call.start_wall,
                    answer_ts=call.answer_wall,
                    end_ts=now,
                    cause=call.cause,
                    cause_text=call.cause_text,
                    hangup_side=call.hangup_side,
                )
            )

    def _track(self, txn_id: str, call: Call, leg: Leg) -> None:
        """Map a transaction to its call and leg (dropped when the call is forgotten)."""
        self.txns[txn_id] = (call, leg)
        call.txn_ids.append(txn_id)
        if call.state != "ended":
            self._live[id(call)] = call

    def _forget(self, call: Call) -> None:
        for leg in [call.a, *call.forks]:
            if self.calls.get(leg.call_id) is call:
                del self.calls[leg.call_id]
        # The call's own list, not a scan of every transaction: under load ``txns`` holds those
        # of every lingering call, and a scan per forgotten call grew with the load squared.
        txns = self.txns
        for k in call.txn_ids:
            entry = txns.get(k)
            if entry is not None and entry[0] is call:
                del txns[k]
        call.txn_ids.clear()

    # ------------------------------------------------------------------ in-dialog

    def _on_reinvite(self, call: Call, leg: Leg, txn_id: str, req: Request) -> None:
        other = self._other(call, leg)
        if call.state != "answered" or other is None or other.dialog is None or call.media is None:
            self._reply_in_dialog(leg, txn_id, req, 491 if call.reinvite else 488)
            return
        if call.reinvite is not None:
            self._reply_in_dialog(leg, txn_id, req, 491)  # RFC 3261 §14.2
            return
        body = b""
        if req.body:
            try:
                off = sdp_glue.parse_offer(req.body)
            except SipError as exc:
                self._reply_in_dialog(leg, txn_id, req, exc.status)
                return
            call.media.set_remote(
                leg.role, off.host, off.port, codec_pt=off.codec_pt, dtmf_pt=off.dtmf_pt
            )
            if leg is call.a:
                call.a_sdp = req.body
            leg.remote_sdp = req.body
            body = sdp_glue.relay_offer(
                req.body,
                self.relay.sdp_host,
                call.media.leg(other.role).local_port,
                other.sdp_session_id,
                other.next_sdp_version(),
            )
        fwd = other.dialog.create_request(
            "INVITE",
            self.via(other.peer.transport),
            body=body,
            content_type="application/sdp" if body else None,
        )
        fwd.headers.add("User-Agent", self.user_agent)
        out_txn = self.endpoint.send_request(fwd, other.peer)
        self._track(out_txn, call, other)
        self._track(txn_id, call, leg)
        call.reinvite = (leg, txn_id, out_txn)
        call.reinvite_req = req

    def _on_reinvite_response(self, call: Call, leg: Leg, resp: Response) -> None:
        assert call.reinvite is not None
        from_leg, in_txn, _ = call.reinvite
        req = call.reinvite_req
        assert req is not None
        if resp.status < 200:
            return
        body = b""
        if 200 <= resp.status < 300:
            if leg.dialog is not None:
                leg.dialog.receive_response(resp)
                self._send_ack(leg, resp)
            if resp.body and call.media is not None:
                try:
                    ans = sdp_glue.parse_offer(resp.body)
                    call.media.set_remote(
                        leg.role, ans.host, ans.port, codec_pt=ans.codec_pt, dtmf_pt=ans.dtmf_pt
                    )
                    body = sdp_glue.relay_answer_passthrough(
                        resp.body,
                        self.relay.sdp_host,
                        call.media.leg(from_leg.role).local_port,
                        from_leg.sdp_session_id,
                        from_leg.next_sdp_version(),
                    )
                except SipError:
                    body = b""
        headers = [("Contact", self.contact(from_leg.peer.transport))]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        out = make_response(req, resp.status, resp.reason, headers=headers, body=body)
        self.endpoint.send_response(in_txn, out)
        if resp.status >= 300:
            call.reinvite = None

    def _on_info(self, call: Call, leg: Leg, txn_id: str, req: Request) -> None:
        ct = req.content_type
        digit: str | None = None
        if ct in ("application/dtmf-relay", "application/dtmf"):
            digit = _info_digit(req.body, ct)
        self._reply_in_dialog(leg, txn_id, req, 200)
        if digit is not None:
            self._on_media_dtmf(call, leg.role, digit, 0)

    def _on_media_dtmf(self, call: Call, leg: str, digit: str, duration: int) -> None:
        if self.on_dtmf is not None:
            self.on_dtmf(call, leg, digit)
        if call.app and leg == "a" and self.app is not None:
            self.app.on_dtmf(call, digit)

    def _on_stall(self, call: Call) -> None:
        if call.state not in ("answered", "app"):
            return
        self.counters.stalled += 1
        log.info("[%s] media stalled: ending the call", call.a.call_id)
        self._hangup(call, None, 408, "Media Timeout", side="media")

    async def close(self) -> None:
        """End every call (BYE/CANCEL/480) and wait for the tasks."""
        for call in list({id(c): c for c in self.calls.values()}.values()):
            self._hangup(call, None, 503, "Service Shutting Down", side="gateway")
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _caller_of(req: Request) -> str:
    frm = req.from_
    uri = frm.uri
    if isinstance(uri, SipUri) and uri.user:
        return uri.user_unescaped or uri.user
    return "anonymous"


def _display_of(req: Request) -> str | None:
    return req.from_.display


def _better_status(current: int, new: int) -> int:
    """Which final status to give the caller when every fork failed (RFC 3261 §16.7 step 6)."""
    if current == 0:
        return new
    if new >= 600 or current >= 600:
        return new if new >= 600 else current
    if new == 486 or current == 486:
        return 486
    return min(current, new) if current // 100 == new // 100 else max(current, new)


def _synthetic(invite: Request, status: int) -> Response:
    return make_response(invite, status)


def _info_digit(body: bytes, ct: str | None) -> str | None:
    text = body.decode("ascii", "replace")
    if ct == "application/dtmf-relay":
        for line in text.splitlines():
            k, _, v = line.partition("=")
            if k.strip().lower() == "signal":
                v = v.strip()
                return v if v and v in "0123456789*#ABCD" else None
        return None
    v = text.strip()
    return v if len(v) == 1 and v in "0123456789*#ABCD" else None


def _app_label(dest: AppDestination) -> str:
    if isinstance(dest, ToQueue):
        return f"queue:{dest.name}"
    if isinstance(dest, ToFlow):
        return f"flow:{dest.name}"
    if isinstance(dest, ToVoicemail):
        return f"voicemail:{dest.box}"
    return f"feature:{dest.code}"
