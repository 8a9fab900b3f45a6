"""SIP messages (RFC 3261 §7): parse bytes into typed requests and responses, and back.

``parse_message(data)`` never lets anything but a :class:`SipError` escape; ``bytes(msg)`` writes
the message with a correct Content-Length. Headers keep their order and their spelling, so a
message that was written canonically round-trips: ``bytes(parse_message(x)) == x``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, NoReturn

from . import grammar
from .errors import (
    BadRequest,
    MessageTooLarge,
    SipError,
    Unparseable,
    VersionNotSupported,
)
from .uri import SipUri, check_host, copy_uri, parse_hostport, parse_uri, uri_template

MAX_MESSAGE_SIZE = 65_535
"""Largest message we accept, in bytes (the largest UDP payload)."""
MAX_HEADERS = 256
"""Most header lines in one message."""

# Headers of which a message may carry only one (RFC 3261 §7.3.1, §20); a second one is a 400.
SINGLE_HEADERS = frozenset(
    {"call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type", "expires"}
)

REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


_POOL_SIZE: Final = 4096
_pool = b""
_pool_at = 0
_pool_lock = threading.Lock()


def _random_hex(n: int) -> str:
    """``n`` bytes from the OS's CSPRNG as hex. The bytes are read 4 KiB at a time: one
    ``getrandom`` call serves ~150 identifiers instead of one (it was 5 % of a busy gateway)."""
    global _pool, _pool_at
    with _pool_lock:
        if _pool_at + n > len(_pool):
            _pool, _pool_at = os.urandom(_POOL_SIZE), 0
        chunk = _pool[_pool_at : _pool_at + n]
        _pool_at += n
    return chunk.hex()


def new_tag() -> str:
    """A fresh From/To tag (RFC 3261 §19.3: globally unique, cryptographically random, at
    least 32 bits: 40 here)."""
    return _random_hex(5)


def new_branch() -> str:
    """A fresh Via branch with the RFC 3261 magic cookie (§8.1.1.7)."""
    return "z9hG4bK" + _random_hex(8)


def new_call_id(host: str) -> str:
    """A fresh Call-ID (RFC 3261 §8.1.1.4)."""
    return f"{_random_hex(10)}@{host}"


# --------------------------------------------------------------------------- header values

# Parsed header values by their text. The same Via, From, To and CSeq come back in every response
# and in-dialog request, so parsing them again is a dict look-up; callers get fresh copies.
# Bounded: long values are not kept, and a full cache is emptied.
_CACHE_MAX = 4096
_CACHE_TEXT_MAX = 256
_VIA_CACHE: dict[str, tuple[str, str, int | None, dict[str, str | None]]] = {}
_ADDRESS_CACHE: dict[str, tuple[SipUri | str, str | None, dict[str, str | None]]] = {}
_CSEQ_CACHE: dict[str, CSeq] = {}


@dataclass(slots=True)
class Via:
    """One Via value (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one via-parm; 400 on bad syntax."""
        hit = _VIA_CACHE.get(text)
        if hit is not None:
            return cls(hit[0], hit[1], hit[2], hit[3].copy())
        m = grammar.VIA_RE.fullmatch(text)
        if m is None:
            raise BadRequest(f"bad Via {text[:80]!r}")
        name, version, transport, host, port_text, param_text = m.groups()
        if version != "2.0" or name.upper() != "SIP":
            raise BadRequest(f"bad Via protocol in {text[:80]!r}")
        if host[0] == "[":
            check_host(host, text)
        port: int | None = None
        if port_text is not None:
            port = int(port_text)
            if not 0 < port < 65536:
                raise BadRequest(f"bad Via port in {text[:80]!r}")
        params = grammar.parse_params(param_text)
        if params:
            _check_via_params(params, text)
        transport = transport.upper()
        if len(text) <= _CACHE_TEXT_MAX:
            if len(_VIA_CACHE) >= _CACHE_MAX:
                _VIA_CACHE.clear()
            _VIA_CACHE[text] = (transport, host, port, params.copy())
        return cls(transport, host, port, params)

    def __str__(self) -> str:
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {hp}{grammar.format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        """The branch parameter, if any."""
        return self.params.get("branch")


@dataclass(slots=True)
class Address:
    """A name-addr or addr-spec with header parameters (From, To, Contact, Route ...)."""

    uri: SipUri | str
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``"Name" <sip:...>;tag=x`` or ``sip:...;tag=x`` (RFC 3261 §20.10)."""
        uri, display, params = _address_parts(text)
        return cls(copy_uri(uri), display, params.copy())

    def __str__(self) -> str:
        if self.uri == "*":
            return "*"
        disp = ""
        if self.display is not None:
            disp = grammar.quote(self.display) + " "
        return f"{disp}<{self.uri}>{grammar.format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        """The tag parameter (RFC 3261 §19.3)."""
        return self.params.get("tag")

    @property
    def sip_uri(self) -> SipUri:
        """The URI when it is a SIP URI; 400 otherwise."""
        if isinstance(self.uri, SipUri):
            return self.uri
        raise BadRequest(f"not a SIP URI: {self.uri}")


_STAR: tuple[SipUri | str, str | None, dict[str, str | None]] = ("*", None, {})


def _address_parts(text: str) -> tuple[SipUri | str, str | None, dict[str, str | None]]:
    """The parts of an Address, shared (cached): copy them before handing them out."""
    hit = _ADDRESS_CACHE.get(text)
    if hit is not None:
        return hit
    display: str | None = None
    if "<" in text:
        m = grammar.NAME_ADDR_RE.fullmatch(text)
        if m is None:
            raise BadRequest(f"bad name-addr {text[:80]!r}")
        quoted, display, uri_text, param_text = m.groups()
        if quoted is not None:
            display = grammar.unquote(quoted)
    else:
        m = grammar.ADDR_SPEC_RE.fullmatch(text)
        if m is None:
            raise BadRequest(f"bad addr-spec {text[:80]!r}")
        uri_text, param_text = m.groups()
        if uri_text == "*" and not param_text:
            return _STAR  # Contact: * (RFC 3261 §10.2.2)
        # RFC 3261 §20.10: a URI with a comma, question mark or semicolon needs <>.
        if "?" in uri_text or "," in uri_text:
            raise BadRequest(f"addr-spec with reserved characters must use <>: {text[:80]!r}")
    parts = (uri_template(uri_text), display, grammar.parse_params(param_text))
    if len(text) <= _CACHE_TEXT_MAX:
        if len(_ADDRESS_CACHE) >= _CACHE_MAX:
            _ADDRESS_CACHE.clear()
        _ADDRESS_CACHE[text] = parts
    return parts


@dataclass(slots=True, frozen=True)
class CSeq:
    """RFC 3261 §20.16."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Parse ``314159 INVITE``; 400 if malformed or out of range (< 2**31)."""
        hit = _CSEQ_CACHE.get(text)
        if hit is not None:
            return hit  # frozen: safe to share
        m = grammar.CSEQ_RE.fullmatch(text)
        if m is None:
            raise BadRequest(f"bad CSeq {text[:80]!r}")
        seq = int(m.group(1))
        if seq >= 2**31:  # RFC 3261 §8.1.1.5
            raise BadRequest(f"CSeq number out of range in {text[:80]!r}")
        cseq = cls(seq, m.group(2))
        if len(_CSEQ_CACHE) >= _CACHE_MAX:
            _CSEQ_CACHE.clear()
        _CSEQ_CACHE[text] = cseq
        return cseq

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


# --------------------------------------------------------------------------- headers


class Headers:
    """Ordered, case-insensitive SIP headers; compact forms are found by their long names."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        # (key, name as written, value)
        self._items: list[tuple[str, str, str]] = []
        if items:
            for name, value in items:
                self.add(name, value)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self._items:
            yield name, value

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: str) -> bool:
        key = grammar.header_key(name)
        return any(k == key for k, _, _ in self._items)

    def copy(self) -> Headers:
        """A shallow copy."""
        h = Headers()
        h._items = list(self._items)
        return h

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of a header (not split at commas)."""
        key = grammar.header_key(name)
        for k, _, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, comma lists split for list headers (RFC 3261 §7.3.1)."""
        key = grammar.header_key(name)
        out: list[str] = []
        split = key in grammar.LIST_HEADERS
        for k, _, v in self._items:
            if k == key:
                if split:
                    out.extend(grammar.split_list(v))
                else:
                    out.append(v)
        return out

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        self._items.append((grammar.header_key(name), name, value))

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line before all others (for Via, Record-Route)."""
        self._items.insert(0, (grammar.header_key(name), name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of a header with one value (kept at the first one's place)."""
        key = grammar.header_key(name)
        for i, (k, n, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (k, n, value)
                self._items = [it for j, it in enumerate(self._items) if it[0] != key or j <= i]
                return
        self._items.append((key, name, value))

    def remove(self, name: str) -> None:
        """Remove every line of a header."""
        key = grammar.header_key(name)
        self._items = [it for it in self._items if it[0] != key]

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of a list header (the first element of the line)."""
        key = grammar.header_key(name)
        for i, (k, n, v) in enumerate(self._items):
            if k == key:
                values = grammar.split_list(v) if key in grammar.LIST_HEADERS else [v]
                if len(values) > 1:
                    self._items[i] = (k, n, ", ".join(values[1:]))
                else:
                    del self._items[i]
                return values[0] if values else None
        return None

    def count(self, name: str) -> int:
        """How many lines of a header there are."""
        key = grammar.header_key(name)
        return sum(1 for k, _, _ in self._items if k == key)

    def keys(self) -> list[str]:
        """The keys (lower-case long names) in order."""
        return [k for k, _, _ in self._items]

    def encode_into(self, out: list[str]) -> None:
        """Append ``Name: value\\r\\n`` lines (without Content-Length) to ``out``."""
        for k, n, v in self._items:
            if k != "content-length":
                out.append(f"{n}: {v}\r\n")


# --------------------------------------------------------------------------- messages


class Message:
    """What requests and responses share."""

    __slots__ = ("_cseq", "_from", "_to", "_vias", "body", "headers")

    headers: Headers
    body: bytes

    def __init__(self, headers: Headers, body: bytes) -> None:
        self.headers = headers
        self.body = body
        self._cseq: CSeq | None = None
        self._from: Address | None = None
        self._to: Address | None = None
        self._vias: list[Via] | None = None

    # Parsed views of the headers every layer needs; cached, refreshed by set_header().
    @property
    def call_id(self) -> str:
        """The Call-ID."""
        return self.headers.get("call-id") or ""

    @property
    def cseq(self) -> CSeq:
        """The parsed CSeq."""
        if self._cseq is None:
            self._cseq = CSeq.parse(self.headers.get("cseq") or "")
        return self._cseq

    @property
    def from_(self) -> Address:
        """The parsed From."""
        if self._from is None:
            self._from = Address.parse(self.headers.get("from") or "")
        return self._from

    @property
    def to(self) -> Address:
        """The parsed To."""
        if self._to is None:
            self._to = Address.parse(self.headers.get("to") or "")
        return self._to

    @property
    def vias(self) -> list[Via]:
        """Every Via, top first."""
        if self._vias is None:
            self._vias = [Via.parse(v) for v in self.headers.get_all("via")]
        return self._vias

    @property
    def top_via(self) -> Via:
        """The topmost Via; 400 when there is none."""
        vias = self.vias
        if not vias:
            raise BadRequest("no Via")
        return vias[0]

    @property
    def content_type(self) -> str | None:
        """The media type, lower-case, without parameters."""
        ct = self.headers.get("content-type")
        return None if ct is None else ct.partition(";")[0].strip().lower()

    def set_header(self, name: str, value: str) -> None:
        """Set a header and drop the cached parsed views."""
        self.headers.set(name, value)
        self._invalidate()

    def _invalidate(self) -> None:
        self._cseq = None
        self._from = None
        self._to = None
        self._vias = None

    def _encode(self, start_line: str) -> bytes:
        out = [start_line, "\r\n"]
        self.headers.encode_into(out)
        out.append(f"Content-Length: {len(self.body)}\r\n\r\n")
        return "".join(out).encode() + self.body


class Request(Message):
    """A SIP request (RFC 3261 §7.1)."""

    __slots__ = ("_ruri", "method", "uri")

    def __init__(
        self,
        method: str,
        uri: str | SipUri,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers if headers is not None else Headers(), body)
        self.method = method
        self.uri = str(uri)
        self._ruri: SipUri | str | None = uri if isinstance(uri, SipUri) else None

    @property
    def ruri(self) -> SipUri | str:
        """The Request-URI, parsed."""
        if self._ruri is None:
            self._ruri = parse_uri(self.uri)
        return self._ruri

    def set_uri(self, uri: SipUri | str) -> None:
        """Replace the Request-URI."""
        self.uri = str(uri)
        self._ruri = uri if isinstance(uri, SipUri) else None

    def __bytes__(self) -> bytes:
        return self._encode(f"{self.method} {self.uri} SIP/2.0")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.call_id}>"


class Response(Message):
    """A SIP response (RFC 3261 §7.2)."""

    __slots__ = ("reason", "status")

    def __init__(
        self, status: int, reason: str = "", headers: Headers | None = None, body: bytes = b""
    ) -> None:
        super().__init__(headers if headers is not None else Headers(), body)
        self.status = status
        self.reason = reason or REASONS.get(status, "Unknown")

    def __bytes__(self) -> bytes:
        return self._encode(f"SIP/2.0 {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self.call_id}>"


def make_response(
    request: Request,
    status: int,
    reason: str = "",
    *,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Response:
    """A response to ``request`` with Via, From, To, Call-ID and CSeq copied (RFC 3261 §8.2.6.2).

    ``to_tag`` is added to To when it has none (never for 100 Trying, §8.2.6.2).
    """
    items: list[tuple[str, str, str]] = []
    for key, name, value in request.headers._items:
        if key in _COPIED:
            if key == "to" and to_tag and status != 100 and _to_tag(request) is None:
                value = f"{value};tag={to_tag}"
            items.append((key, name, value))
        elif key == "record-route" and 100 < status < 300:
            items.append((key, name, value))
    h = Headers()
    h._items = items
    if headers:
        for name, value in headers:
            h.add(name, value)
    return Response(status, reason, h, body)


_COPIED = frozenset({"via", "from", "to", "call-id", "cseq"})


def _to_tag(request: Request) -> str | None:
    try:
        return request.to.tag
    except SipError:
        return ""  # an unparseable To is copied as it is, without a tag


# --------------------------------------------------------------------------- parsing

# Header names already checked to be tokens, as written -> key (bounded: names come from the wire).
_VALID_NAMES: dict[str, str] = {}


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one SIP message.

    Raises :class:`Unparseable` when no response can be formed (no start line, a broken status
    line, any error in a response, a request without Via), another :class:`SipError` (400, 413,
    416, 505 ...) for a request we can answer; the error's ``message`` is then the request as far
    as it was parsed, for :func:`make_response`. ``stream`` means the bytes came framed by
    Content-Length (TCP), which is then mandatory.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise MessageTooLarge(f"message of {len(data)} bytes")
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: ignore CRLFs before the start line
        if not data:
            raise Unparseable("empty message")
    idx = data.find(b"\r\n\r\n")
    if idx >= 0:
        head_b, body = data[:idx], data[idx + 4 :]
    else:
        head_b, body = _head_and_body(data)
    try:
        head = head_b.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unparseable(f"headers are not UTF-8: {exc}") from None
    err: SipError | None = None
    lines = head.split("\r\n")
    n = len(lines) - 1
    if head.count("\n") != n or head.count("\r") != n:  # bare LF line ends, or a bare CR
        head = head.replace("\r\n", "\n")
        if "\r" in head:
            err = BadRequest("bare CR in the header block")
            head = head.replace("\r", " ")
        lines = head.split("\n")
    if "\n " in head or "\n\t" in head:
        # RFC 3261 §7.3.1: unfold (rare; the common case pays two substring scans)
        lines = grammar.FOLD_RE.sub(" ", "\n".join(lines)).split("\n")
    if len(lines) > MAX_HEADERS + 1:
        err = MessageTooLarge(f"{len(lines) - 1} header lines")  # answered 413 when possible
    items: list[tuple[str, str, str]] = []
    append = items.append
    names = _VALID_NAMES
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        key = names.get(name)
        if key is None:
            name = name.rstrip(" \t")
            if not colon or grammar.TOKEN_RE.fullmatch(name) is None:
                if line and err is None:
                    err = BadRequest(f"bad header line {line[:60]!r}")
                continue
            key = grammar.header_key(name)
            if len(names) < 512:
                names[name] = key
        append((key, name, value.strip(" \t")))
    headers = Headers()
    headers._items = items

    start = lines[0]
    msg: Request | Response
    if start[:4].upper() == "SIP/":
        sm = grammar.STATUS_LINE_RE.fullmatch(start)
        if sm is None or sm.group(1).upper() != "SIP/2.0" or not "1" <= sm.group(2)[0] <= "6":
            raise Unparseable(f"bad status line {start[:60]!r}")
        msg = Response(int(sm.group(2)), "", headers)
        msg.reason = sm.group(3) or ""
    else:
        rm = grammar.REQUEST_LINE_RE.fullmatch(start)
        if rm is None:
            method = start.partition(" ")[0]
            if grammar.TOKEN_RE.fullmatch(method) is None:
                method = "UNKNOWN"
            _fail(
                Request(method, "sip:invalid", headers),
                BadRequest(f"bad request line {start[:60]!r}"),
            )
        method, uri_text, version = rm.groups()
        msg = Request(method, uri_text, headers)
        if version != "SIP/2.0":
            vm = grammar.SIP_VERSION_RE.fullmatch(version)
            if vm is None:
                _fail(msg, BadRequest(f"bad SIP version {version[:20]!r}"))
            if vm.groups() != ("2", "0"):
                _fail(msg, VersionNotSupported(f"SIP version {version[:20]} is not supported"))
    if err is not None:
        _fail(msg, err)
    try:
        msg.body = _validate(msg, items, body, stream)
    except SipError as exc:
        _fail(msg, exc)
    return msg


def _head_and_body(data: bytes) -> tuple[bytes, bytes]:
    idx = data.find(b"\n\n")
    if idx >= 0:
        return data[:idx], data[idx + 2 :]
    return data.rstrip(b"\r\n"), b""


def _fail(msg: Request | Response, exc: SipError) -> NoReturn:
    """Raise ``exc`` with ``msg`` attached; :class:`Unparseable` when it cannot be answered."""
    if isinstance(msg, Response) or "via" not in msg.headers:
        # RFC 3261 §18.1.2: a bad response is dropped; a response needs a Via (§8.2.6.2).
        new = exc if isinstance(exc, Unparseable) else Unparseable(exc.detail)
        new.message = msg
        raise new from (None if new is exc else exc)
    exc.message = msg
    raise exc


def _validate(
    msg: Request | Response, items: list[tuple[str, str, str]], body: bytes, stream: bool
) -> bytes:
    """The checks RFC 3261 §8.2 and RFC 4475 expect of a message we accept; returns the body."""
    # One pass over the headers: the single-valued ones, their repeats, the Vias and Contacts.
    single: dict[str, str] = {}
    repeated: str | None = None
    vias: list[str] = []
    contacts: list[str] = []
    for key, _, value in items:
        if key in SINGLE_HEADERS:
            if key in single:
                repeated = repeated or key
            else:
                single[key] = value
        elif key == "via":
            vias.append(value)
        elif key == "contact":
            contacts.append(value)
    if repeated is not None:
        raise BadRequest(f"more than one {grammar.canonical_name(repeated)} header")
    if not vias:
        raise BadRequest("missing Via header")
    for key in _REQUIRED:
        if key not in single:
            raise BadRequest(f"missing {grammar.canonical_name(key)} header")
    body = _check_body(single.get("content-length"), body, stream)
    call_id = single["call-id"]
    if grammar.CALL_ID_RE.fullmatch(call_id) is None:
        raise BadRequest(f"bad Call-ID {call_id[:80]!r}")
    parsed: list[Via] = []
    for value in vias:
        if "," in value:
            parsed.extend(Via.parse(v) for v in grammar.split_list(value))
        else:
            parsed.append(Via.parse(value))
    msg._vias = parsed
    msg._from = Address.parse(single["from"])
    msg._to = Address.parse(single["to"])
    msg._cseq = cseq = CSeq.parse(single["cseq"])
    mf = single.get("max-forwards")
    if mf is not None and (not grammar.is_digits(mf, 10) or int(mf) > 255):
        raise BadRequest(f"bad Max-Forwards {mf[:20]!r}")  # RFC 3261 §20.22
    expires = single.get("expires")
    if expires is not None and grammar.DIGITS_RE.fullmatch(expires) is None:
        raise BadRequest(f"bad Expires {expires[:20]!r}")  # RFC 3261 §20.19: delta-seconds
    if isinstance(msg, Request):
        if cseq.method != msg.method:
            raise BadRequest(f"CSeq method {cseq.method} does not match {msg.method}")
        ruri = uri_template(msg.uri)  # 400 on a bad Request-URI (other schemes: the UAS's 416)
        if isinstance(ruri, SipUri) and ruri.headers is not None:
            # RFC 3261 §19.1.1 table 1: no headers in a Request-URI (RFC 4475 §3.1.2.11)
            raise BadRequest("escaped headers in the Request-URI")
        for value in contacts:
            for contact in grammar.split_list(value) if "," in value else (value,):
                _address_parts(contact)
    return body


_REQUIRED = ("to", "from", "call-id", "cseq")


def _check_via_params(params: dict[str, str | None], text: str) -> None:
    """RFC 3261 §20.42 / §25.1 via-params, RFC 3581 rport."""
    branch = params.get("branch", "")
    if branch is None or (branch and grammar.TOKEN_RE.fullmatch(branch) is None):
        raise BadRequest(f"bad branch in Via {text[:80]!r}")
    if "rport" in params:
        rport = params["rport"]
        if rport is not None and not (grammar.is_digits(rport, 5) and 0 < int(rport) < 65536):
            raise BadRequest(f"bad rport in Via {text[:80]!r}")
    received = params.get("received", "")
    if received is None or (received and not grammar.is_ip(received)):
        raise BadRequest(f"bad received in Via {text[:80]!r}")
    ttl = params.get("ttl", "0")
    if ttl is None or not (grammar.is_digits(ttl, 3) and int(ttl) <= 255):
        raise BadRequest(f"bad ttl in Via {text[:80]!r}")


def _check_body(cl: str | None, body: bytes, stream: bool) -> bytes:
    if cl is None:
        if stream:
            raise BadRequest("no Content-Length on a stream transport")
        return body  # RFC 3261 §18.3: over UDP the body runs to the end of the datagram
    if not grammar.is_digits(cl, 10):
        raise BadRequest(f"bad Content-Length {cl[:20]!r}")
    n = int(cl)
    if n > len(body):
        raise BadRequest(f"Content-Length {n} is larger than the body ({len(body)} bytes)")
    return body[:n] if n < len(body) else body  # RFC 3261 §18.3: extra bytes are discarded


class StreamFramer:
    """Cuts a TCP byte stream into SIP messages by Content-Length (RFC 3261 §18.3)."""

    def __init__(self, limit: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete messages now available (keep-alive CRLFs dropped).

        Raises :class:`MessageTooLarge` when a message would pass the limit: close the stream.
        """
        self._buf += data
        out: list[bytes] = []
        while True:
            # RFC 5626 §3.5.1 keep-alives and stray CRLFs between messages.
            while self._buf[:2] == b"\r\n":
                del self._buf[:2]
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > self._limit:
                    raise MessageTooLarge("header block too large on stream")
                return out
            head = bytes(self._buf[:end])
            length = _stream_content_length(head)
            total = end + 4 + length
            if total > self._limit:
                raise MessageTooLarge(f"message of {total} bytes on stream")
            if len(self._buf) < total:
                return out
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]


def _stream_content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            v = value.strip()
            if v.isdigit() and len(v) <= 10:
                return int(v)
            raise BadRequest("bad Content-Length on stream")
    return 0


def sent_by(via: Via) -> tuple[str, int]:
    """Where a response to this Via goes (RFC 3261 §18.2.2, RFC 3581 rport)."""
    host = via.params.get("received") or via.host
    rport = via.params.get("rport")
    if rport:
        return host, int(rport)
    return host, via.port or 5060


__all__ = [
    "REASONS",
    "Address",
    "CSeq",
    "Headers",
    "Message",
    "Request",
    "Response",
    "StreamFramer",
    "Via",
    "make_response",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_hostport",
    "parse_message",
    "sent_by",
]
