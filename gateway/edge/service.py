"""The SIP edge of a site: REGISTER with digest auth, who may call, OPTIONS keep-alives, the guard.

A scanner learns nothing here: an unknown user and a wrong password get the same 403 after the
same work; repeated failures from one source ban it (``Guard``), with one log line and a metric.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from gateway.sip.digest import AuthResult, DigestAuthenticator, DigestError, find_credentials
from gateway.sip.errors import SipError
from gateway.sip.message import (
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
from gateway.sip.uri import SipUri
from gateway.transport.endpoint import ALLOW, Sender

from .guard import Guard, Verdict
from .registrar import ContactSpec, IntervalTooBrief, Registrar, contact_values

log = logging.getLogger(__name__)


class EdgeCounters:
    """Plain counters for /metrics."""

    __slots__ = (
        "auth_failed",
        "auth_ok",
        "bans",
        "challenges",
        "keepalive_removed",
        "registrations",
        "throttled",
    )

    def __init__(self) -> None:
        self.registrations = 0
        self.challenges = 0
        self.auth_ok = 0
        self.auth_failed = 0
        self.bans = 0
        self.throttled = 0
        self.keepalive_removed = 0


class EdgeService:
    """Registrar, authentication policy and keep-alives of one site."""

    def __init__(
        self,
        endpoint: Sender,
        registrar: Registrar,
        auth: DigestAuthenticator,
        guard: Guard,
        agents: Mapping[str, str],
        *,
        host: str,
        port: int,
        user_agent: str = "ccgw",
        ping_interval: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint
        self.registrar = registrar
        self.auth = auth
        self.guard = guard
        self.agents = agents  # extension → password
        self.host = host
        self.port = port
        self.user_agent = user_agent
        self.ping_interval = ping_interval
        self.clock = clock
        self.counters = EdgeCounters()
        self._pings: dict[str, tuple[str, SipUri]] = {}
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ admission

    def admit(self, peer: Peer, now: float) -> bool:
        """The transport's admission hook: False drops the message (throttled or banned)."""
        verdict = self.guard.allow(peer.host, self.clock())
        if verdict is Verdict.ALLOW:
            return True
        self.counters.throttled += 1
        return False

    # ------------------------------------------------------------------ requests

    def handle_request(self, txn_id: str, req: Request, peer: Peer) -> bool:
        """REGISTER and out-of-dialog OPTIONS; False for methods the edge does not serve."""
        if req.method == "REGISTER":
            self._register(txn_id, req, peer)
            return True
        if req.method == "OPTIONS":
            resp = make_response(
                req,
                200,
                to_tag=new_tag(),
                headers=[
                    ("Allow", ALLOW),
                    ("Accept", "application/sdp"),
                    ("Server", self.user_agent),
                ],
            )
            self.endpoint.send_response(txn_id, resp)
            return True
        return False

    def _authenticate(
        self,
        txn_id: str,
        req: Request,
        peer: Peer,
        *,
        proxy: bool,
        passwords: Mapping[str, str] | None = None,
    ) -> str | None:
        """The authenticated user, or None once a challenge or a 403 has been sent.

        ``passwords`` (user → password) defaults to the agents'.
        """
        now = self.clock()
        header = "proxy-authorization" if proxy else "authorization"
        values = req.headers.get_all(header) or req.headers.get_all(
            "authorization" if proxy else "proxy-authorization"
        )
        try:
            creds = find_credentials(values, self.auth.realm, self.auth.algorithms)
        except DigestError:
            creds = None
            self._fail(txn_id, req, peer, "malformed credentials")
            return None
        if creds is None:
            self._challenge(txn_id, req, proxy=proxy, stale=False)
            return None
        password = (self.agents if passwords is None else passwords).get(creds.username)
        result = self.auth.verify(creds, req.method, req.uri, password, now)
        if result is AuthResult.STALE:
            self._challenge(txn_id, req, proxy=proxy, stale=True)
            return None
        if result is not AuthResult.OK:
            self._fail(txn_id, req, peer, f"bad credentials for {creds.username!r}")
            return None
        self.counters.auth_ok += 1
        self.guard.auth_ok(peer.host)
        return creds.username

    def _challenge(self, txn_id: str, req: Request, *, proxy: bool, stale: bool) -> None:
        self.counters.challenges += 1
        status = 407 if proxy else 401
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        headers = [(name, str(c)) for c in self.auth.challenges(self.clock(), stale=stale)]
        headers.append(("Server", self.user_agent))
        self.endpoint.send_response(
            txn_id, make_response(req, status, to_tag=new_tag(), headers=headers)
        )

    def _fail(self, txn_id: str, req: Request, peer: Peer, why: str) -> None:
        self.counters.auth_failed += 1
        if self.guard.auth_failed(peer.host, self.clock()):
            self.counters.bans += 1
            log.warning(
                "banned %s for %.0f s after repeated authentication failures (last: %s)",
                peer.host,
                self.guard.ban_time,
                why,
            )
        else:
            log.info("authentication failed from %s: %s", peer, why)
        self.endpoint.send_response(txn_id, make_response(req, 403, "Forbidden", to_tag=new_tag()))

    def authenticate_invite(self, txn_id: str, req: Request, peer: Peer) -> str | None:
        """An INVITE not from a trunk: only an authenticated agent may call (toll-fraud guard)."""
        return self._authenticate(txn_id, req, peer, proxy=True)

    def authenticate_trunk(
        self, txn_id: str, req: Request, peer: Peer, username: str, password: str
    ) -> bool:
        """A carrier INVITE on a trunk with ``inbound_auth``: its digest must name the trunk's
        own user and password; False after a challenge or a 403 has been sent."""
        return (
            self._authenticate(txn_id, req, peer, proxy=True, passwords={username: password})
            is not None
        )

    def _register(self, txn_id: str, req: Request, peer: Peer) -> None:
        user = self._authenticate(txn_id, req, peer, proxy=False)
        if user is None:
            return
        to_uri = req.to.uri
        aor = to_uri.user_unescaped if isinstance(to_uri, SipUri) else None
        if aor != user:
            # An agent may register only their own extension.
            self._fail(txn_id, req, peer, f"{user!r} tried to register {aor!r}")
            return
        now = self.clock()
        try:
            contacts = ContactSpec.parse_all(req.headers.get_all("contact"))
            exp = req.headers.get("expires")
            bindings = self.registrar.register(
                user,
                contacts,
                int(exp) if exp is not None else None,
                req.call_id,
                req.cseq.seq,
                peer,
                now,
            )
        except IntervalTooBrief as exc:
            resp = make_response(
                req, exc.status, exc.reason, to_tag=new_tag(), headers=exc.headers()
            )
            self.endpoint.send_response(txn_id, resp)
            return
        except SipError as exc:
            resp = make_response(req, exc.status, exc.reason, to_tag=new_tag())
            resp.headers.add("Warning", f'399 ccgw "{exc.detail[:100]}"')
            self.endpoint.send_response(txn_id, resp)
            return
        self.counters.registrations += 1
        headers = [("Contact", v) for v in contact_values(bindings, now)]
        headers.append(("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())))
        headers.append(("Server", self.user_agent))
        self.endpoint.send_response(
            txn_id, make_response(req, 200, to_tag=new_tag(), headers=headers)
        )
        log.info("registered %s: %d contact(s) from %s", user, len(bindings), peer)

    # ------------------------------------------------------------------ location

    def locate(self, extension: str) -> list[tuple[SipUri, Peer]]:
        """Where an agent's phones are: (contact URI, the flow the REGISTER came on)."""
        return [(b.contact, b.source) for b in self.registrar.lookup(extension, self.clock())]

    # ------------------------------------------------------------------ keep-alive

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the housekeeping task (binding expiry, OPTIONS pings)."""
        self._task = loop.create_task(self._housekeeping())

    async def stop(self) -> None:
        """Stop housekeeping."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _housekeeping(self) -> None:
        tick = max(1.0, min(5.0, self.ping_interval / 3))
        while True:
            await asyncio.sleep(tick)
            try:
                self.housekeeping_once()
            except Exception:
                log.exception("housekeeping failed")

    def housekeeping_once(self) -> None:
        """Expire bindings and ping the phones not heard from for ``ping_interval``."""
        now = self.clock()
        for b in self.registrar.expire(now):
            log.info("registration of %s at %s expired", b.user, b.contact)
        if self.ping_interval <= 0:
            return
        pending = {(user, str(contact)) for user, contact in self._pings.values()}
        for b in self.registrar.due_for_ping(now, self.ping_interval):
            if (b.user, str(b.contact)) in pending:
                continue
            self._ping(b.user, b.contact, b.source)

    def _ping(self, user: str, contact: SipUri, peer: Peer) -> None:
        h = Headers()
        h.add(
            "Via",
            str(Via(peer.transport, self.host, self.port, {"branch": new_branch(), "rport": None})),
        )
        h.add("Max-Forwards", "70")
        h.add("From", f"<sip:ccgw@{self.host}>;tag={new_tag()}")
        h.add("To", f"<{contact}>")
        h.add("Call-ID", new_call_id(self.host))
        h.add("CSeq", "1 OPTIONS")
        h.add("User-Agent", self.user_agent)
        txn = self.endpoint.send_request(Request("OPTIONS", contact, h), peer)
        self._pings[txn] = (user, contact)

    def handle_response(self, txn_id: str, response: Response) -> bool:
        """A response to one of our OPTIONS pings: any final answer means the phone is alive."""
        entry = self._pings.get(txn_id)
        if entry is None:
            return False
        if response.status >= 200:
            del self._pings[txn_id]
            self.registrar.mark_alive(entry[0], entry[1], self.clock())
        return True

    def handle_timeout(self, txn_id: str) -> bool:
        """A ping went unanswered (timer F)."""
        entry = self._pings.pop(txn_id, None)
        if entry is None:
            return False
        removed = self.registrar.mark_failed(entry[0], entry[1], self.clock())
        if removed is not None:
            self.counters.keepalive_removed += 1
            log.warning("phone of %s at %s stopped answering: binding removed", entry[0], entry[1])
        return True
