"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

Server side: :class:`DigestAuthenticator` issues challenges with stateless nonces (a timestamp, a
salt and an HMAC of both under a shared secret, so any process holding the secret can check them)
and verifies :class:`Credentials`. Client side: :func:`answer_challenge` answers a 401/407 from a
carrier.

Interoperability notes: libre ≤ 1.x (baresip 1.0) and SIPp ≤ 3.6 know only MD5 and give up on the
first challenge whose algorithm they do not know, even when an MD5 one follows; offer them
``algorithms=("MD5",)``. libre answers every challenge it accepted, so a request may carry several
Authorization headers for one realm: pick one with :func:`find_credentials`.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from . import grammar
from .errors import BadRequest
from .uri import SipUri

# RFC 7616 §3.3 / RFC 8760 §2: algorithm names as registered, keyed by their upper-case form.
_CANONICAL_ALGORITHMS: dict[str, str] = {
    "MD5": "MD5",
    "MD5-SESS": "MD5-sess",
    "SHA-256": "SHA-256",
    "SHA-256-SESS": "SHA-256-sess",
    "SHA-512-256": "SHA-512-256",
    "SHA-512-256-SESS": "SHA-512-256-sess",
}
_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
try:  # RFC 8760 §2.2: SHA-512/256 needs OpenSSL's sha512_256
    hashlib.new("sha512_256", b"")
    _HASHES["SHA-512-256"] = lambda data: hashlib.new("sha512_256", data).hexdigest()
except ValueError:  # pragma: no cover - depends on the OpenSSL build
    pass

SUPPORTED_ALGORITHMS = frozenset(
    name for name in _CANONICAL_ALGORITHMS.values() if name.removesuffix("-sess") in _HASHES
)
"""Algorithm names this module can compute (canonical spelling)."""

# RFC 7616 §3.4.2: nc = 8LHEX
_NC_LEN = 8
_HEX = frozenset("0123456789abcdefABCDEF")
# Clock skew tolerated between gateway processes sharing the secret, seconds.
_MAX_SKEW = 5.0
_NONCE_SALT = 8
_NONCE_MAC = 16
_TS = struct.Struct(">d")


def canonical_algorithm(name: str) -> str:
    """``md5`` -> ``MD5``, ``sha-256-SESS`` -> ``SHA-256-sess``; unknown names are kept."""
    return _CANONICAL_ALGORITHMS.get(name.upper(), name)


class DigestError(BadRequest):
    """A malformed or unanswerable Authorization / WWW-Authenticate value (400)."""


# --------------------------------------------------------------------------- auth-param lists


def _parse_auth_params(value: str, what: str) -> dict[str, str]:
    """Split ``Digest a=b, c="d, \\"e\\""`` into lower-case names and unquoted values.

    RFC 7235 §2.1 / RFC 3261 §25.1: challenge = "Digest" LWS digest-cln *(COMMA digest-cln).
    Any order; quoted-strings may hold commas and quoted-pairs; a repeated name is a 400.
    """
    text = value.strip()
    n = len(text)
    i = 0
    while i < n and text[i] not in " \t\r\n":
        i += 1
    scheme = text[:i]
    if scheme.lower() != "digest":
        raise DigestError(f"{what}: not a Digest value: {value[:60]!r}")
    params: dict[str, str] = {}
    while True:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n:
            break
        m = grammar.TOKEN_RE.match(text, i)
        if m is None:
            raise DigestError(f"{what}: bad parameter name at {text[i : i + 20]!r}")
        name = m.group(0).lower()
        i = m.end()
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n or text[i] != "=":
            raise DigestError(f"{what}: parameter {name!r} has no value")
        i += 1
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise DigestError(f"{what}: unterminated quoted string in {name!r}")
                ch = text[i]
                if ch == "\\":
                    if i + 1 >= n:
                        raise DigestError(f"{what}: dangling escape in {name!r}")
                    chars.append(text[i + 1])
                    i += 2
                    continue
                if ch == '"':
                    i += 1
                    break
                chars.append(ch)
                i += 1
            val = "".join(chars)
        else:
            start = i
            while i < n and text[i] not in " \t\r\n,":
                i += 1
            val = text[start:i]
            if not val or '"' in val:
                raise DigestError(f"{what}: bad value for {name!r}")
        if name in params:
            raise DigestError(f"{what}: {name!r} appears twice")
        params[name] = val
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i < n and text[i] != ",":
            raise DigestError(f"{what}: junk after {name!r}: {text[i : i + 20]!r}")
    return params


def _quote(value: str) -> str:
    """A quoted-string (RFC 3261 §25.1) with ``"`` and ``\\`` escaped as quoted-pairs."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _require(params: Mapping[str, str], name: str, what: str) -> str:
    val = params.get(name)
    if val is None:
        raise DigestError(f"{what}: missing {name}")
    return val


# --------------------------------------------------------------------------- header values


@dataclass(slots=True)
class Challenge:
    """A WWW-Authenticate / Proxy-Authenticate value (RFC 3261 §22.4, RFC 7616 §3.3).

    ``qop`` is the quoted qop-options list as sent (``"auth"`` or ``"auth,auth-int"``), ``None``
    for an RFC 2069 challenge; ``algorithm`` ``None`` means the header had none (MD5 implied).
    """

    realm: str
    nonce: str
    algorithm: str | None = "MD5"
    qop: str | None = "auth"
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None

    @classmethod
    def parse(cls, value: str) -> Challenge:
        """Parse a challenge; :class:`DigestError` (400) when malformed or incomplete."""
        what = "WWW-Authenticate"
        p = _parse_auth_params(value, what)
        algorithm = p.get("algorithm")
        stale = p.get("stale")
        return cls(
            realm=_require(p, "realm", what),
            nonce=_require(p, "nonce", what),
            algorithm=None if algorithm is None else canonical_algorithm(algorithm),
            qop=p.get("qop"),
            opaque=p.get("opaque"),
            stale=stale is not None and stale.lower() == "true",
            domain=p.get("domain"),
        )

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}"]
        if self.domain is not None:
            parts.append(f"domain={_quote(self.domain)}")
        parts.append(f"nonce={_quote(self.nonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.algorithm is not None:
            parts.append(f"algorithm={self.algorithm}")
        if self.qop is not None:
            parts.append(f"qop={_quote(self.qop)}")  # RFC 2617 §3.2.1: quoted in challenges
        if self.stale:
            parts.append("stale=TRUE")
        return "Digest " + ", ".join(parts)

    @property
    def qop_options(self) -> tuple[str, ...]:
        """The qop-options, lower-case (``("auth", "auth-int")``); empty for RFC 2069."""
        if self.qop is None:
            return ()
        return tuple(q.strip().lower() for q in self.qop.split(",") if q.strip())


@dataclass(slots=True)
class Credentials:
    """An Authorization / Proxy-Authorization value (RFC 3261 §22.4, RFC 7616 §3.4).

    ``nc`` keeps the 8 hex digits as sent, since the response is computed over that text.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    cnonce: str | None = None
    nc: str | None = None
    qop: str | None = None
    opaque: str | None = None

    @classmethod
    def parse(cls, value: str) -> Credentials:
        """Parse credentials; :class:`DigestError` (400) when malformed or incomplete."""
        what = "Authorization"
        p = _parse_auth_params(value, what)
        algorithm = p.get("algorithm")
        qop = p.get("qop")
        cnonce = p.get("cnonce")
        nc = p.get("nc")
        if qop is not None:
            qop = qop.lower()
            # RFC 7616 §3.4: with a qop, cnonce and nc are required.
            if cnonce is None or nc is None:
                raise DigestError(f"{what}: qop={qop} without cnonce and nc")
        if nc is not None and (len(nc) != _NC_LEN or not set(nc) <= _HEX):
            raise DigestError(f"{what}: nc must be 8 hex digits, not {nc!r}")
        response = _require(p, "response", what)
        if not response or not set(response) <= _HEX:
            raise DigestError(f"{what}: response is not hex")
        return cls(
            username=_require(p, "username", what),
            realm=_require(p, "realm", what),
            nonce=_require(p, "nonce", what),
            uri=_require(p, "uri", what),
            response=response.lower(),
            algorithm=None if algorithm is None else canonical_algorithm(algorithm),
            cnonce=cnonce,
            nc=nc,
            qop=qop,
            opaque=p.get("opaque"),
        )

    def __str__(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
        ]
        if self.algorithm is not None:
            parts.append(f"algorithm={self.algorithm}")
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        # RFC 7616 §3.4: qop and nc are unquoted tokens.
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        return "Digest " + ", ".join(parts)

    @property
    def nonce_count(self) -> int:
        """``nc`` as a number (0 when absent)."""
        return int(self.nc, 16) if self.nc else 0


def find_credentials(
    values: Iterable[str], realm: str, algorithms: Iterable[str] = ("SHA-256", "MD5")
) -> Credentials | None:
    """Pick, among Authorization values, the one for ``realm`` with the preferred algorithm.

    RFC 3261 §22.4: a request may carry credentials for several realms; libre sends one per
    challenge it accepted. Values for other realms or of other schemes are skipped; a malformed
    value for our realm raises :class:`DigestError`.
    """
    found: dict[str, Credentials] = {}
    for value in values:
        if value.strip()[:6].lower() != "digest":
            continue
        creds = Credentials.parse(value)
        if creds.realm != realm:
            continue
        found.setdefault(creds.algorithm or "MD5", creds)
    for alg in algorithms:
        if alg in found:
            return found[alg]
    return next(iter(found.values()), None)


# --------------------------------------------------------------------------- the computation


def _hash_for(algorithm: str | None) -> tuple[Callable[[bytes], str], bool]:
    alg = canonical_algorithm(algorithm or "MD5")
    base = alg.removesuffix("-sess")
    h = _HASHES.get(base)
    if h is None or alg not in SUPPORTED_ALGORITHMS:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    return h, alg != base


def compute_ha1(algorithm: str | None, username: str, realm: str, password: str) -> str:
    """H(username ":" realm ":" password) in hex (RFC 7616 §3.4.2, without -sess)."""
    h, _ = _hash_for(algorithm)
    return h(f"{username}:{realm}:{password}".encode())


def compute_response(
    *,
    algorithm: str | None,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    cnonce: str | None = None,
    nc: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` hex digest (RFC 2617 §3.2.2, RFC 7616 §3.4.1–§3.4.3).

    ``ha1`` is H(username:realm:password); for a ``-sess`` algorithm it is hashed again with the
    nonce and cnonce here. ``qop`` None gives the RFC 2069 form.
    """
    h, sess = _hash_for(algorithm)
    if sess:
        if cnonce is None:
            raise DigestError("a -sess algorithm needs a cnonce")
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())  # RFC 7616 §3.4.2
    if qop == "auth-int":
        ha2 = h(f"{method}:{uri}:".encode() + h(body).encode())  # RFC 7616 §3.4.3
    else:
        ha2 = h(f"{method}:{uri}".encode())
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}".encode())  # RFC 2069 §2.1.2
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())  # RFC 7616 §3.4.1


# --------------------------------------------------------------------------- client side


def answer_challenge(
    challenge: Challenge,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str | None = None,
    nc: int = 1,
    body: bytes = b"",
) -> Credentials:
    """Credentials answering a carrier's 401/407 challenge for a request (RFC 3261 §22.2–§22.3).

    Prefers qop=auth, then auth-int (over ``body``), then the RFC 2069 form when the challenge
    offers no qop. Raises :class:`DigestError` for an algorithm or qop we cannot compute.
    """
    options = challenge.qop_options
    qop: str | None
    if not options:
        qop = None
    elif "auth" in options:
        qop = "auth"
    elif "auth-int" in options:
        qop = "auth-int"
    else:
        raise DigestError(f"no supported qop in {challenge.qop!r}")
    if not 0 < nc < 2**32:
        raise ValueError(f"nonce count {nc} out of range")
    nc_text: str | None = None
    if qop is not None:
        cnonce = cnonce or secrets.token_hex(8)
        nc_text = f"{nc:08x}"
    else:
        cnonce = None
    ha1 = compute_ha1(challenge.algorithm, username, challenge.realm, password)
    response = compute_response(
        algorithm=challenge.algorithm,
        ha1=ha1,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        cnonce=cnonce,
        nc=nc_text,
        body=body,
    )
    return Credentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        cnonce=cnonce,
        nc=nc_text,
        qop=qop,
        opaque=challenge.opaque,
    )


def choose_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """The strongest challenge we can answer (RFC 8760 §2.4: the client picks its preferred)."""
    best: Challenge | None = None
    best_rank = -1
    order = ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess")
    for ch in challenges:
        alg = ch.algorithm or "MD5"
        if alg not in SUPPORTED_ALGORITHMS:
            continue
        if alg.endswith("-sess") and not ch.qop_options:
            continue
        opts = ch.qop_options
        if opts and "auth" not in opts and "auth-int" not in opts:
            continue
        rank = order.index(alg) if alg in order else -1
        if rank > best_rank:
            best, best_rank = ch, rank
    return best


# --------------------------------------------------------------------------- server side


class AuthResult(enum.Enum):
    """What :meth:`DigestAuthenticator.verify` decided."""

    OK = "ok"
    STALE = "stale"
    """The digest is right but the nonce is too old: challenge again with ``stale=TRUE``."""
    FAILED = "failed"
    """Anything else: says neither which check failed nor whether the user exists."""


@dataclass(frozen=True, slots=True)
class HA1:
    """Pre-hashed H(username:realm:password), one hex digest per algorithm, for stores that do
    not keep passwords. Build with :meth:`from_password`."""

    digests: Mapping[str, str]

    @classmethod
    def from_password(
        cls,
        username: str,
        realm: str,
        password: str,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
    ) -> HA1:
        """The HA1 of each algorithm."""
        return cls({a: compute_ha1(a, username, realm, password) for a in algorithms})


@dataclass(slots=True)
class _NonceUse:
    last_nc: int
    issued: float


@dataclass(slots=True)
class DigestAuthenticator:
    """Digest authentication for one realm (RFC 3261 §22.1, RFC 7616 §3.3–§3.5).

    ``secret`` keys the nonce HMAC: processes sharing it accept each other's nonces, so ``now``
    must then be wall-clock time. ``nonce_lifetime`` is in seconds (a request with an older nonce
    and a right digest gets STALE). ``algorithms`` are offered in order, SHA-256 first (RFC 8760
    §2.4); libre ≤ 1.x and SIPp ≤ 3.6 need ``("MD5",)``. ``allow_no_qop`` accepts RFC 2069
    answers (no replay protection). ``check_uri`` enforces RFC 7616 §3.4.6 (the digest-uri names
    the Request-URI); SIPp ≤ 3.6 digests ``sip:<remote host:port>`` unless run with ``-auth_uri``.
    ``max_tracked_nonces`` bounds the nonce-count table.
    """

    realm: str
    secret: bytes
    nonce_lifetime: float = 300.0
    algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    allow_no_qop: bool = False
    opaque: str | None = None
    check_uri: bool = True
    max_tracked_nonces: int = 100_000
    _uses: OrderedDict[str, _NonceUse] = field(default_factory=OrderedDict, init=False, repr=False)
    _floor: float = field(default=float("-inf"), init=False, repr=False)
    _dummy: str = field(default_factory=lambda: secrets.token_hex(16), init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError("the nonce secret must not be empty")
        if not self.algorithms:
            raise ValueError("at least one algorithm is needed")
        algs = tuple(canonical_algorithm(a) for a in self.algorithms)
        for a in algs:
            if a.endswith("-sess") or a not in SUPPORTED_ALGORITHMS:
                raise ValueError(f"cannot offer digest algorithm {a!r}")
        self.algorithms = algs

    # ---- nonces: base64url(timestamp ‖ salt ‖ HMAC-SHA256(secret, realm ‖ timestamp ‖ salt)[:16])

    def _mac(self, head: bytes) -> bytes:
        return hmac.new(self.secret, self.realm.encode() + head, hashlib.sha256).digest()[
            :_NONCE_MAC
        ]

    def make_nonce(self, now: float) -> str:
        """A fresh stateless nonce stamped with ``now``."""
        head = _TS.pack(now) + secrets.token_bytes(_NONCE_SALT)
        return base64.urlsafe_b64encode(head + self._mac(head)).decode().rstrip("=")

    def nonce_issued(self, nonce: str) -> float | None:
        """When we issued ``nonce``, or None when its HMAC does not check (not ours, tampered)."""
        raw_len = _TS.size + _NONCE_SALT + _NONCE_MAC
        if len(nonce) != (raw_len * 4 + 2) // 3:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        if len(raw) != raw_len:
            return None
        head, mac = raw[:-_NONCE_MAC], raw[-_NONCE_MAC:]
        if not hmac.compare_digest(mac, self._mac(head)):
            return None
        (issued,) = _TS.unpack(head[: _TS.size])
        return float(issued)

    # ---- challenges

    def challenges(self, now: float, *, stale: bool = False) -> list[Challenge]:
        """One challenge per configured algorithm, in order of preference (RFC 8760 §2.4).

        Send each as its own WWW-Authenticate (401) or Proxy-Authenticate (407) header.
        """
        nonce = self.make_nonce(now)
        return [
            Challenge(self.realm, nonce, alg, "auth", self.opaque, stale) for alg in self.algorithms
        ]

    # ---- verification

    def verify(
        self,
        creds: Credentials,
        method: str,
        request_uri: str,
        password: str | HA1 | None,
        now: float,
    ) -> AuthResult:
        """Check credentials sent with a ``method`` request to ``request_uri``.

        ``password`` is the user's password or stored :class:`HA1`, or None when the user is
        unknown: a dummy digest is still computed so the answer and the work are the same.
        """
        ok = True
        algorithm = canonical_algorithm(creds.algorithm or "MD5")
        if algorithm not in self.algorithms:
            ok = False
            algorithm = self.algorithms[-1]  # still hash, for uniform work
        ok &= creds.realm == self.realm
        if self.opaque is not None:
            ok &= creds.opaque == self.opaque
        # RFC 7616 §3.4.6: the digest-uri must name the Request-URI.
        if self.check_uri:
            ok &= _same_uri(creds.uri, request_uri)
        if creds.qop is None:
            ok &= self.allow_no_qop
        else:
            ok &= creds.qop == "auth"  # the only qop we offer
        issued = self.nonce_issued(creds.nonce)
        ok &= issued is not None

        # RFC 7616 §3.4.2: HA1 from the stored password or HA1; a dummy one for unknown users.
        ha1: str | None = None
        if isinstance(password, HA1):
            ha1 = password.digests.get(algorithm)
        elif password is not None:
            ha1 = compute_ha1(algorithm, creds.username, self.realm, password)
        if ha1 is None:
            ok = False
            ha1 = compute_ha1(algorithm, creds.username, self.realm, self._dummy)
        expected = compute_response(
            algorithm=algorithm,
            ha1=ha1,
            nonce=creds.nonce,
            method=method,
            uri=creds.uri,
            qop=creds.qop,
            cnonce=creds.cnonce,
            nc=creds.nc,
        )
        ok &= hmac.compare_digest(expected.encode(), creds.response.lower().encode())
        if not ok or issued is None:
            return AuthResult.FAILED

        # RFC 7616 §3.3 stale: a right digest over a nonce that is too old (or from the future).
        age = now - issued
        if age > self.nonce_lifetime or age < -_MAX_SKEW:
            return AuthResult.STALE
        if creds.qop is None:
            return AuthResult.OK
        return self._check_nonce_count(creds.nonce, creds.nonce_count, issued, now)

    def _check_nonce_count(self, nonce: str, nc: int, issued: float, now: float) -> AuthResult:
        """RFC 7616 §3.4 / RFC 2617 §3.2.2: nc must grow for each request under one nonce."""
        self._expire(now)
        use = self._uses.get(nonce)
        if use is None:
            if issued <= self._floor:
                # Its count was forgotten when the table overflowed: make the client take a
                # fresh nonce rather than risk accepting a replay.
                return AuthResult.STALE
            if nc < 1:
                return AuthResult.FAILED
            self._uses[nonce] = _NonceUse(nc, issued)
            while len(self._uses) > self.max_tracked_nonces:
                _, evicted = self._uses.popitem(last=False)
                self._floor = max(self._floor, evicted.issued)
            return AuthResult.OK
        if nc <= use.last_nc:
            return AuthResult.FAILED  # a replay
        use.last_nc = nc
        return AuthResult.OK

    def _expire(self, now: float) -> None:
        # Entries are appended in order of first use, which follows issue time within one
        # lifetime; drop from the front while the front nonce has expired.
        uses = self._uses
        limit = now - self.nonce_lifetime
        while uses:
            first = next(iter(uses.values()))
            if first.issued >= limit:
                break
            uses.popitem(last=False)

    @property
    def tracked_nonces(self) -> int:
        """How many nonces' counts are remembered (bounded by ``max_tracked_nonces``)."""
        return len(self._uses)


def _same_uri(digest_uri: str, request_uri: str) -> bool:
    if digest_uri == request_uri:
        return True
    try:
        a = SipUri.parse(digest_uri)
        b = SipUri.parse(request_uri)
    except BadRequest:
        return False
    return a.equivalent(b)


__all__ = [
    "HA1",
    "SUPPORTED_ALGORITHMS",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestAuthenticator",
    "DigestError",
    "answer_challenge",
    "canonical_algorithm",
    "choose_challenge",
    "compute_ha1",
    "compute_response",
    "find_credentials",
]
