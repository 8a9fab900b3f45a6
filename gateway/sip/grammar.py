"""RFC 3261 / RFC 3986 grammar as compiled patterns, in one place (after h11's ``_abnf.py``).

Each pattern quotes the ABNF rule it implements and the section it comes from.
"""

from __future__ import annotations

import re

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
TOKEN_RE = re.compile(TOKEN)

# RFC 3261 §25.1: Method = INVITEm / ACKm / ... / extension-method ; extension-method = token
METHOD_RE = re.compile(TOKEN)

# RFC 3261 §25.1: SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT (case-insensitive "SIP")
SIP_VERSION_RE = re.compile(r"[Ss][Ii][Pp]/(\d+)\.(\d+)")

# RFC 3261 §25.1: Request-Line = Method SP Request-URI SP SIP-Version CRLF
REQUEST_LINE_RE = re.compile(r"(" + TOKEN + r") (\S+) (\S+)")

# RFC 3261 §25.1: Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
# Status-Code = 3DIGIT; Reason-Phrase = *(reserved / unreserved / escaped / UTF8 / SP / HTAB)
STATUS_LINE_RE = re.compile(r"([Ss][Ii][Pp]/\d+\.\d+) (\d{3}) ?(.*)")

# RFC 3261 §25.1: header-name = token; HCOLON = *( SP / HTAB ) ":" SWS
HEADER_LINE_RE = re.compile(r"(" + TOKEN + r")[ \t]*:[ \t]*(.*)", re.DOTALL)

# RFC 3261 §25.1: LWS = [*WSP CRLF] 1*WSP  (line folding: a CRLF followed by SP/HTAB)
FOLD_RE = re.compile(r"\r?\n[ \t]+")

# RFC 3261 §25.1: Call-ID = word [ "@" word ];
# word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" / "(" / ")" /
#           "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
CALL_ID_RE = re.compile(WORD + r"(?:@" + WORD + r")?")

# RFC 3261 §25.1: CSeq = 1*DIGIT LWS Method
CSEQ_RE = re.compile(r"(\d+)\s+(" + TOKEN + r")")

# RFC 3261 §25.1: Max-Forwards = 1*DIGIT ; Content-Length = 1*DIGIT ; Expires = delta-seconds
DIGITS_RE = re.compile(r"\d+")

# RFC 3261 §25.1: via-parm = sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol = protocol-name SLASH protocol-version SLASH transport
VIA_RE = re.compile(
    r"(" + TOKEN + r")\s*/\s*(" + TOKEN + r")\s*/\s*(" + TOKEN + r")\s+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:\s*:\s*(\d+))?\s*(.*)",
    re.DOTALL,
)

# RFC 3986 §3.2.2: IPv4address = dec-octet "." dec-octet "." dec-octet "." dec-octet
IPV4_RE = re.compile(r"(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}")

# RFC 3261 §25.1: hostname = *( domainlabel "." ) toplabel [ "." ]
HOSTNAME_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z0-9\-]+\.?")

# RFC 3261 §25.1: IPv6reference = "[" IPv6address "]"
IPV6_REF_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]")

# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved )
# unreserved = alphanum / mark; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/" ; escaped = "%" HEXDIG HEXDIG
USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")

# RFC 3261 §25.1: escaped = "%" HEXDIG HEXDIG
ESCAPED_RE = re.compile(r"%([0-9A-Fa-f]{2})")
BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")

# RFC 3261 §25.1: quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
QUOTED_STRING_RE = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)

# Compact header forms, RFC 3261 §7.3.3 and the extensions that define them.
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",  # RFC 3265
    "r": "refer-to",  # RFC 3515
    "b": "referred-by",  # RFC 3892
    "u": "allow-events",  # RFC 3265
    "x": "session-expires",  # RFC 4028
    "a": "accept-contact",  # RFC 3841
    "j": "reject-contact",  # RFC 3841
    "d": "request-disposition",  # RFC 3841
    "y": "identity",  # RFC 4474
}

# Headers whose values are comma-separated lists (RFC 3261 §7.3.1); the others never split.
LIST_HEADERS = frozenset(
    {
        "via",
        "route",
        "record-route",
        "contact",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-encoding",
        "allow-events",
        "path",
        "service-route",
    }
)

# Canonical spelling used when we write a header ourselves.
CANONICAL_NAMES: dict[str, str] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
}


def header_key(name: str) -> str:
    """The lookup key of a header name: lower-case, compact forms expanded."""
    low = name.lower()
    return COMPACT_FORMS.get(low, low)


def canonical_name(key: str) -> str:
    """The spelling we use on the wire for a header key (``call-id`` -> ``Call-ID``)."""
    name = CANONICAL_NAMES.get(key)
    if name is None:
        name = "-".join(part.capitalize() for part in key.split("-"))
    return name


def unquote(value: str) -> str:
    """Remove the quotes of a quoted-string and resolve its quoted-pairs (RFC 3261 §25.1)."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        if "\\" in inner:
            return re.sub(r"\\(.)", r"\1", inner, flags=re.DOTALL)
        return inner
    return value


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quotes and ``<...>`` (RFC 3261 §7.3.1)."""
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "," and depth <= 0:
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
        i += 1
    part = value[start:].strip()
    if part:
        out.append(part)
    return out


def split_params(text: str) -> tuple[str, dict[str, str | None]]:
    """Split ``base;a=1;b`` into the base and its parameters (keys lower-cased).

    Semicolons inside quoted strings are respected. Parameter values keep their quotes.
    """
    if ";" not in text:
        return text.strip(), {}
    parts: list[str] = []
    quoted = False
    start = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == ";":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    params: dict[str, str | None] = {}
    for raw in parts[1:]:
        raw = raw.strip()
        if not raw:
            continue
        if "=" in raw:
            k, _, v = raw.partition("=")
            params[k.strip().lower()] = v.strip()
        else:
            params[raw.lower()] = None
    return parts[0].strip(), params


def format_params(params: dict[str, str | None]) -> str:
    """``{'a': '1', 'lr': None}`` -> ``;a=1;lr``."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
