"""The location service for agent phones: REGISTER processing (RFC 3261 §10.3), pure.

The registrar keeps, per address-of-record user, the contacts that phones registered, where each
REGISTER came from (the flow to reach a phone behind NAT), and the OPTIONS keep-alive state. The
caller authenticates the request first and turns the errors raised here into responses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.sip.errors import BadRequest, SipError
from gateway.sip.message import Address
from gateway.sip.peer import Peer
from gateway.sip.uri import SipUri

# RFC 3261 §25.1: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE_RE = re.compile(r"0(?:\.\d{0,3})?|1(?:\.0{0,3})?")
# RFC 3261 §25.1: delta-seconds = 1*DIGIT
_DELTA_RE = re.compile(r"\d+")
# RFC 3261 §20.19 / §10.2.1: a delta-seconds above 2**32-1 may be taken as 2**32-1.
_MAX_DELTA = 2**32 - 1


class IntervalTooBrief(SipError):
    """RFC 3261 §21.4.17 / §10.3 step 7: answer 423 with a Min-Expires header."""

    status = 423
    reason = "Interval Too Brief"

    def __init__(self, min_expires: int) -> None:
        super().__init__(f"registration interval below {min_expires} s")
        self.min_expires = min_expires

    def headers(self) -> list[tuple[str, str]]:
        """The headers the 423 response must carry (RFC 3261 §20.23)."""
        return [("Min-Expires", str(self.min_expires))]


class OutOfOrderRegister(SipError):
    """RFC 3261 §10.3 step 7: a REGISTER with the binding's Call-ID and a CSeq not above it."""

    status = 500
    reason = "Server Internal Error"


@dataclass(frozen=True, slots=True)
class ContactSpec:
    """One Contact value of a REGISTER. ``uri`` None is the ``*`` wildcard (RFC 3261 §10.2.2).

    ``expires`` is the contact's own ``expires`` parameter (None if absent), ``q`` its priority
    (RFC 3261 §20.10), ``params`` the other header parameters (``+sip.instance``, ``reg-id`` ...).
    """

    uri: SipUri | None
    expires: int | None = None
    q: float | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    @property
    def wildcard(self) -> bool:
        """True for ``Contact: *``."""
        return self.uri is None

    @classmethod
    def parse(cls, value: str) -> ContactSpec:
        """Parse one Contact value; 400 on bad syntax or a non-SIP URI."""
        if value.strip() == "*":
            return cls(None)
        addr = Address.parse(value)
        uri = addr.sip_uri
        params = dict(addr.params)
        expires: int | None = None
        raw_exp = params.pop("expires", None)
        if raw_exp is not None or "expires" in addr.params:
            if raw_exp is None or not _DELTA_RE.fullmatch(raw_exp):
                raise BadRequest(f"bad expires parameter in Contact {value!r}")
            expires = min(int(raw_exp), _MAX_DELTA)
        q: float | None = None
        raw_q = params.pop("q", None)
        if raw_q is not None or "q" in addr.params:
            if raw_q is None or not _QVALUE_RE.fullmatch(raw_q):
                raise BadRequest(f"bad q parameter in Contact {value!r}")
            q = float(raw_q)
        return cls(uri, expires, q, tuple(params.items()))

    @classmethod
    def parse_all(cls, values: Iterable[str]) -> list[ContactSpec]:
        """Parse every Contact value of a request (already split at commas)."""
        return [cls.parse(v) for v in values]


@dataclass(slots=True, eq=False)
class Binding:
    """One registered contact of an agent (RFC 3261 §10.3 step 8).

    Times are in the caller's clock, seconds. ``source`` is where the REGISTER came from: send
    requests for this contact there (the NAT flow). ``updated_at`` is the last REGISTER that
    refreshed it, ``last_seen`` the last sign of life (REGISTER or answered OPTIONS).
    """

    user: str
    contact: SipUri
    source: Peer
    expires_at: float
    q: float
    call_id: str
    cseq: int
    updated_at: float
    last_seen: float
    failures: int = 0
    params: tuple[tuple[str, str | None], ...] = ()

    def remaining(self, now: float) -> int:
        """Whole seconds left, for the 200 OK ``expires`` parameter (never negative)."""
        return max(0, int(self.expires_at - now + 0.5))

    def contact_value(self, now: float) -> str:
        """The Contact value for the 200 OK: the URI with its ``expires`` (and ``q``)."""
        out = [f"<{self.contact}>"]
        for k, v in self.params:
            out.append(f";{k}" if v is None else f";{k}={v}")
        if self.q != 1.0:
            out.append(f";q={_format_q(self.q)}")
        out.append(f";expires={self.remaining(now)}")
        return "".join(out)


def _format_q(q: float) -> str:
    text = f"{q:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def contact_values(bindings: Iterable[Binding], now: float) -> list[str]:
    """The Contact header values of a 200 OK to REGISTER (RFC 3261 §10.3 step 8)."""
    return [b.contact_value(now) for b in bindings]


@dataclass(slots=True)
class Registrar:
    """Bindings of agents' contacts, keyed by the AOR's user part.

    ``min_expires`` / ``max_expires`` / ``default_expires`` are seconds (RFC 3261 §10.3 step 7:
    shorter intervals get 423, longer ones are cut to the maximum, and the default applies when
    neither the contact nor the request says). ``max_contacts`` bounds bindings per user: a new
    contact beyond it replaces the least recently refreshed one (a phone that rebooted behind a
    NAT comes back with a new contact before the old binding expires). ``max_ping_failures``
    OPTIONS pings in a row without answer remove a binding.
    """

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 5
    max_ping_failures: int = 3
    _by_user: dict[str, list[Binding]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need 0 <= min_expires <= default_expires <= max_expires")
        if self.max_contacts < 1 or self.max_ping_failures < 1:
            raise ValueError("max_contacts and max_ping_failures must be at least 1")

    # ---- REGISTER

    def register(
        self,
        aor_user: str,
        contacts: list[ContactSpec],
        expires_header: int | None,
        call_id: str,
        cseq: int,
        source: Peer,
        now: float,
    ) -> list[Binding]:
        """Apply one (authenticated) REGISTER; return the user's current bindings for the 200 OK.

        RFC 3261 §10.3 steps 6–8. The request is checked whole before anything changes: on
        :class:`BadRequest` (``*`` misuse), :class:`IntervalTooBrief` (423) or
        :class:`OutOfOrderRegister` (500) no binding is touched. No contacts is a query.
        """
        current = self._live(aor_user, now)
        if not contacts:
            return self._ordered(current)

        # Step 6: "*" only alone and only with Expires: 0.
        if any(c.wildcard for c in contacts):
            if len(contacts) != 1:
                raise BadRequest("Contact: * must be the only Contact")
            if expires_header != 0:
                raise BadRequest("Contact: * needs Expires: 0")
            for b in current:
                if b.call_id == call_id and cseq <= b.cseq:
                    raise OutOfOrderRegister(f"CSeq {cseq} not above {b.cseq} for {call_id}")
            self._by_user.pop(aor_user, None)
            return []

        # Step 7: the interval of each contact; all checked before any change.
        plan: list[tuple[ContactSpec, SipUri, int, Binding | None]] = []
        for spec in contacts:
            assert spec.uri is not None
            if spec.expires is not None:
                expires = spec.expires
            elif expires_header is not None:
                expires = expires_header
            else:
                expires = self.default_expires
            if 0 < expires < self.min_expires:
                raise IntervalTooBrief(self.min_expires)
            expires = min(expires, self.max_expires)
            existing = _find(current, spec.uri)
            if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
                raise OutOfOrderRegister(f"CSeq {cseq} not above {existing.cseq} for {call_id}")
            plan.append((spec, spec.uri, expires, existing))

        # Step 8: add, update or remove.
        bindings = current
        for spec, uri, expires, existing in plan:
            if expires == 0:
                if existing is not None and existing in bindings:
                    bindings.remove(existing)
                continue
            q = 1.0 if spec.q is None else spec.q
            if existing is not None and existing in bindings:
                existing.contact = uri
                existing.source = source
                existing.expires_at = now + expires
                existing.q = q
                existing.call_id = call_id
                existing.cseq = cseq
                existing.updated_at = now
                existing.last_seen = now
                existing.failures = 0
                existing.params = spec.params
                continue
            dup = _find(bindings, uri)  # the same contact twice in one request
            if dup is not None:
                bindings.remove(dup)
            bindings.append(
                Binding(
                    aor_user, uri, source, now + expires, q, call_id, cseq, now, now, 0, spec.params
                )
            )
            if len(bindings) > self.max_contacts:
                bindings.remove(min(bindings, key=lambda b: b.updated_at))
        # Expired bindings wait for expire(), unless a live one of the same contact replaced them.
        stored = [
            b
            for b in self._by_user.get(aor_user, ())
            if b.expires_at <= now and _find(bindings, b.contact) is None
        ]
        stored.extend(bindings)
        if stored:
            self._by_user[aor_user] = stored
        else:
            self._by_user.pop(aor_user, None)
        return self._ordered(bindings)

    # ---- lookups

    def lookup(self, user: str, now: float) -> list[Binding]:
        """Live bindings of ``user``: highest q first, then the most recently refreshed."""
        return self._ordered(self._live(user, now))

    def expire(self, now: float) -> list[Binding]:
        """Remove the bindings whose time is up and return them."""
        gone: list[Binding] = []
        for user in list(self._by_user):
            bindings = self._by_user[user]
            keep = [b for b in bindings if b.expires_at > now]
            if len(keep) != len(bindings):
                gone.extend(b for b in bindings if b.expires_at <= now)
                if keep:
                    self._by_user[user] = keep
                else:
                    del self._by_user[user]
        return gone

    def bindings_count(self, now: float | None = None) -> int:
        """How many bindings are held; with ``now``, only the live ones (otherwise expired ones
        count until :meth:`expire` removes them)."""
        if now is None:
            return sum(len(v) for v in self._by_user.values())
        return sum(1 for v in self._by_user.values() for b in v if b.expires_at > now)

    def users(self) -> list[str]:
        """Users with at least one binding held (expired ones included until :meth:`expire`)."""
        return list(self._by_user)

    # ---- OPTIONS keep-alive

    def due_for_ping(self, now: float, interval: float) -> list[Binding]:
        """Live bindings not heard from for ``interval`` seconds or more."""
        return [
            b
            for bindings in self._by_user.values()
            for b in bindings
            if b.expires_at > now and now - b.last_seen >= interval
        ]

    def mark_alive(self, user: str, contact: SipUri, now: float) -> Binding | None:
        """The contact answered a ping: note the time and clear its failures."""
        b = _find(self._by_user.get(user, []), contact)
        if b is not None:
            b.last_seen = now
            b.failures = 0
        return b

    def mark_failed(self, user: str, contact: SipUri, now: float) -> Binding | None:
        """A ping went unanswered. Return the binding when this failure removes it."""
        bindings = self._by_user.get(user)
        if not bindings:
            return None
        b = _find(bindings, contact)
        if b is None:
            return None
        b.failures += 1
        if b.failures < self.max_ping_failures:
            return None
        bindings.remove(b)
        if not bindings:
            del self._by_user[user]
        return b

    # ---- internals

    def _live(self, user: str, now: float) -> list[Binding]:
        # Expired bindings stay stored until expire() reports them.
        return [b for b in self._by_user.get(user, ()) if b.expires_at > now]

    @staticmethod
    def _ordered(bindings: list[Binding]) -> list[Binding]:
        return sorted(bindings, key=lambda b: (-b.q, -b.updated_at))


def _find(bindings: Iterable[Binding], uri: SipUri) -> Binding | None:
    """The binding of ``uri`` by RFC 3261 §19.1.4 URI comparison (§10.3 step 8)."""
    for b in bindings:
        if b.contact.equivalent(uri):
            return b
    return None


__all__ = [
    "Binding",
    "ContactSpec",
    "IntervalTooBrief",
    "OutOfOrderRegister",
    "Registrar",
    "contact_values",
]
