"""SIP messages (RFC 3261 §7): parse bytes into typed requests and responses, and back.

``parse_message(data)`` never lets anything but a :class:`SipError` escape; ``bytes(msg)`` writes
the message with a correct Content-Length. Headers keep their order and their spelling, so a
message that was written canonically round-trips: ``bytes(parse_message(x)) == x``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import grammar
from .errors import (
    BadRequest,
    MessageTooLarge,
    SipError,
    Unparseable,
    VersionNotSupported,
)
from .uri import SipUri, parse_hostport, parse_uri

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


def new_tag() -> str:
    """A fresh From/To tag (RFC 3261 §19.3: at least 32 bits of randomness)."""
    return secrets.token_hex(5)


def new_branch() -> str:
    """A fresh Via branch with the RFC 3261 magic cookie (§8.1.1.7)."""
    return "z9hG4bK" + secrets.token_hex(8)


def new_call_id(host: str) -> str:
    """A fresh Call-ID (RFC 3261 §8.1.1.4)."""
    return f"{secrets.token_hex(10)}@{host}"


# --------------------------------------------------------------------------- header values


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
        m = grammar.VIA_RE.fullmatch(text.strip())
        if m is None:
            raise BadRequest(f"bad Via {text!r}")
        name, version, transport, host, port, rest = m.groups()
        if name.upper() != "SIP" or version != "2.0":
            raise BadRequest(f"bad Via protocol in {text!r}")
        rest = rest.strip()
        if rest and not rest.startswith(";"):
            raise BadRequest(f"junk in Via {text!r}")
        _, params = grammar.split_params(rest)
        p = int(port) if port else None
        if p is not None and not 0 < p < 65536:
            raise BadRequest(f"bad Via port in {text!r}")
        return cls(transport.upper(), host, p, params)

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
        text = text.strip()
        display: str | None = None
        lt = text.find("<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise BadRequest(f"unterminated <> in {text!r}")
            disp = text[:lt].strip()
            if disp:
                if disp.startswith('"'):
                    if not grammar.QUOTED_STRING_RE.fullmatch(disp):
                        raise BadRequest(f"bad display name in {text!r}")
                    display = grammar.unquote(disp)
                else:
                    display = disp
            uri_text = text[lt + 1 : gt].strip()
            rest = text[gt + 1 :].strip()
            if rest and not rest.startswith(";"):
                raise BadRequest(f"junk after address in {text!r}")
            _, params = grammar.split_params(rest)
        else:
            if text.startswith('"'):
                raise BadRequest(f"display name without <uri> in {text!r}")
            # addr-spec: parameters after the URI belong to the header (RFC 3261 §20.10).
            uri_text, params = grammar.split_params(text)
            if "?" in uri_text or " " in uri_text:
                raise BadRequest(f"addr-spec with reserved characters must use <>: {text!r}")
        if text == "*":
            return cls("*", None, {})
        return cls(parse_uri(uri_text), display, params)

    def __str__(self) -> str:
        disp = ""
        if self.display is not None:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            disp = f'"{escaped}" '
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


@dataclass(slots=True, frozen=True)
class CSeq:
    """RFC 3261 §20.16."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Parse ``314159 INVITE``; 400 if malformed or out of range (< 2**31)."""
        m = grammar.CSEQ_RE.fullmatch(text.strip())
        if m is None:
            raise BadRequest(f"bad CSeq {text!r}")
        seq = int(m.group(1))
        if seq >= 2**31:
            raise BadRequest(f"CSeq number out of range in {text!r}")
        return cls(seq, m.group(2))

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
    h = Headers()
    for name, value in request.headers:
        key = grammar.header_key(name)
        if key == "via" or key == "from" or key == "call-id" or key == "cseq":
            h.add(name, value)
        elif key == "to":
            if to_tag and status != 100 and request.to.tag is None:
                value = f"{value};tag={to_tag}"
            h.add(name, value)
        elif key == "record-route" and 100 < status < 300:
            h.add(name, value)
    if headers:
        for name, value in headers:
            h.add(name, value)
    return Response(status, reason, h, body)


# --------------------------------------------------------------------------- parsing


def _head_and_body(data: bytes) -> tuple[bytes, bytes]:
    idx = data.find(b"\r\n\r\n")
    if idx >= 0:
        return data[:idx], data[idx + 4 :]
    idx = data.find(b"\n\n")
    if idx >= 0:
        return data[:idx], data[idx + 2 :]
    return data.rstrip(b"\r\n"), b""


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one SIP message.

    Raises :class:`Unparseable` when no response can be formed (no start line, a broken status
    line), another :class:`SipError` (400, 413, 416, 505 ...) for a request we can answer.
    ``stream`` means the bytes came framed by Content-Length (TCP), which is then mandatory.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise MessageTooLarge(f"message of {len(data)} bytes")
    # RFC 3261 §7.5: ignore CRLFs before the start line.
    data = data.lstrip(b"\r\n")
    if not data:
        raise Unparseable("empty message")
    head_b, body = _head_and_body(data)
    try:
        head = head_b.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unparseable(f"headers are not UTF-8: {exc}") from None
    if "\n " in head or "\n\t" in head:
        head = grammar.FOLD_RE.sub(" ", head)
    lines = head.split("\n")
    start = lines[0].rstrip("\r")
    if len(lines) > MAX_HEADERS + 1:
        raise MessageTooLarge(f"{len(lines) - 1} header lines")
    headers = Headers()
    for raw in lines[1:]:
        line = raw.rstrip("\r")
        if not line:
            continue
        m = grammar.HEADER_LINE_RE.fullmatch(line)
        if m is None:
            err = BadRequest(f"bad header line {line[:60]!r}")
            _raise_with_headers(start, headers, err)
        headers.add(m.group(1), m.group(2).rstrip())

    msg: Request | Response
    if start.startswith(("SIP/", "sip/", "Sip/")):
        sm = grammar.STATUS_LINE_RE.fullmatch(start)
        if sm is None:
            raise Unparseable(f"bad status line {start[:60]!r}")
        version, status_s, reason = sm.groups()
        status = int(status_s)
        if version.upper() != "SIP/2.0" or not 100 <= status <= 699:
            raise Unparseable(f"bad status line {start[:60]!r}")
        msg = Response(status, reason, headers)
    else:
        rm = grammar.REQUEST_LINE_RE.fullmatch(start)
        if rm is None:
            _raise_with_headers(start, headers, BadRequest(f"bad request line {start[:60]!r}"))
        method, uri_text, version = rm.groups()
        msg = Request(method, uri_text, headers)
        try:
            vm = grammar.SIP_VERSION_RE.fullmatch(version)
            if vm is None:
                raise BadRequest(f"bad SIP version {version!r}")
            if vm.groups() != ("2", "0"):
                raise VersionNotSupported(f"SIP version {version} is not supported")
        except SipError as exc:
            exc.message = msg  # type: ignore[attr-defined]
            raise
    try:
        msg.body = _check_body(headers, body, stream)
        _validate(msg)
    except SipError as exc:
        exc.message = msg  # type: ignore[attr-defined]
        raise
    return msg


def _raise_with_headers(start: str, headers: Headers, err: SipError) -> None:
    """Raise ``err`` with enough of a request attached that a response can be formed."""
    if start.startswith(("SIP/", "sip/")):
        raise Unparseable(err.detail)
    parts = start.split(" ")
    method = parts[0] if parts and grammar.TOKEN_RE.fullmatch(parts[0]) else "UNKNOWN"
    err.message = Request(method, "sip:invalid", headers)  # type: ignore[attr-defined]
    raise err


def _check_body(headers: Headers, body: bytes, stream: bool) -> bytes:
    cl_values = headers.get_all("content-length")
    if not cl_values:
        if stream:
            raise BadRequest("no Content-Length on a stream transport")
        return body  # RFC 3261 §18.3: over UDP the body runs to the end of the datagram
    if len(cl_values) > 1:
        raise BadRequest("more than one Content-Length")
    cl = cl_values[0].strip()
    if not grammar.DIGITS_RE.fullmatch(cl):
        raise BadRequest(f"bad Content-Length {cl!r}")
    n = int(cl)
    if n > len(body):
        raise BadRequest(f"Content-Length {n} is larger than the body ({len(body)} bytes)")
    return body[:n]  # RFC 3261 §18.3: bytes past Content-Length are discarded


def _validate(msg: Request | Response) -> None:
    """The checks RFC 3261 §8.2 and RFC 4475 expect of a message we accept."""
    h = msg.headers
    for key in ("via", "to", "from", "call-id", "cseq"):
        if key not in h:
            raise BadRequest(f"missing {grammar.canonical_name(key)} header")
    for key in SINGLE_HEADERS:
        if h.count(key) > 1:
            raise BadRequest(f"more than one {grammar.canonical_name(key)} header")
    call_id = h.get("call-id") or ""
    if not grammar.CALL_ID_RE.fullmatch(call_id.strip()):
        raise BadRequest(f"bad Call-ID {call_id!r}")
    _ = msg.vias
    _ = msg.from_
    _ = msg.to
    cseq = msg.cseq
    mf = h.get("max-forwards")
    if mf is not None and (not grammar.DIGITS_RE.fullmatch(mf.strip()) or int(mf) > 255):
        raise BadRequest(f"bad Max-Forwards {mf!r}")
    expires = h.get("expires")
    if expires is not None and not grammar.DIGITS_RE.fullmatch(expires.strip()):
        raise BadRequest(f"bad Expires {expires!r}")
    if isinstance(msg, Request):
        if cseq.method != msg.method:
            raise BadRequest(f"CSeq method {cseq.method} does not match {msg.method}")
        _ = msg.ruri  # 400 / 416 on a bad Request-URI
        for contact in h.get_all("contact"):
            if contact.strip() != "*":
                Address.parse(contact)


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
            if v.isdigit():
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
