"""RFC 3261 / RFC 3986 grammar as compiled patterns, in one place (after h11's ``_abnf.py``).

Each pattern quotes the ABNF rule it implements and the section it comes from.
"""

from __future__ import annotations

import ipaddress
import re

# After unfolding (RFC 3261 §7.3.1), LWS and SWS are runs of SP / HTAB.
LWS = r"[ \t]*"

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN = f"[{TOKEN_CHARS}]+"
TOKEN_RE = re.compile(TOKEN)

# RFC 3261 §25.1: Method = INVITEm / ACKm / ... / extension-method ; extension-method = token
METHOD_RE = re.compile(TOKEN)

# RFC 3261 §25.1: SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT (case-insensitive "SIP")
SIP_VERSION_RE = re.compile(r"[Ss][Ii][Pp]/([0-9]+)\.([0-9]+)")

# RFC 3261 §25.1: Request-Line = Method SP Request-URI SP SIP-Version CRLF
# (exactly one SP between elements and none at the end: RFC 4475 §3.1.2.9, §3.1.2.10)
REQUEST_LINE_RE = re.compile(r"(" + TOKEN + r") ([^\s]+) ([^\s]+)")

# RFC 3261 §25.1: Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
# Status-Code = 3DIGIT; Reason-Phrase = *(reserved / unreserved / escaped / UTF8 / SP / HTAB)
# (a missing SP before an empty Reason-Phrase is tolerated; RFC 4475 §3.1.1.13 has the SP)
STATUS_LINE_RE = re.compile(
    r"([Ss][Ii][Pp]/[0-9]+\.[0-9]+) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?"
)

# RFC 3261 §25.1: header-name = token; HCOLON = *( SP / HTAB ) ":" SWS
HEADER_LINE_RE = re.compile(r"(" + TOKEN + r")[ \t]*:[ \t]*(.*)", re.DOTALL)

# RFC 3261 §25.1: LWS = [*WSP CRLF] 1*WSP  (line folding: a CRLF followed by SP/HTAB)
FOLD_RE = re.compile(r"[ \t]*\r?\n[ \t]+")

# RFC 3986 §3.2.2: IPv4address = dec-octet "." dec-octet "." dec-octet "." dec-octet
# (RFC 3261 §25.1 writes 1*3DIGIT: leading zeros are accepted, values above 255 are not)
DEC_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])"
IPV4 = f"{DEC_OCTET}(?:\\.{DEC_OCTET}){{3}}"
IPV4_RE = re.compile(IPV4)

# RFC 3261 §25.1: Call-ID = word [ "@" word ];
# word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" / "(" / ")" /
#           "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
CALL_ID_RE = re.compile(WORD + r"(?:@" + WORD + r")?")

# RFC 3261 §25.1: CSeq = 1*DIGIT LWS Method (digits capped: the number must be < 2**31, §8.1.1.5)
CSEQ_RE = re.compile(r"[ \t]*([0-9]{1,12})[ \t]+(" + TOKEN + r")[ \t]*")

# RFC 3261 §25.1: Max-Forwards = 1*DIGIT ; Content-Length = 1*DIGIT ; Expires = delta-seconds
DIGITS_RE = re.compile(r"[0-9]+")

# RFC 3261 §25.1: hostname = *( domainlabel "." ) toplabel [ "." ]
# domainlabel = alphanum / alphanum *( alphanum / "-" ) alphanum  ("_" tolerated: it is seen in
# the wild and is unambiguous); toplabel = ALPHA / ALPHA *( alphanum / "-" ) alphanum
DOMAINLABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?"
TOPLABEL = r"[A-Za-z](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?"
HOSTNAME = f"(?:{DOMAINLABEL}\\.)*{TOPLABEL}\\.?"
HOSTNAME_RE = re.compile(HOSTNAME)

# RFC 3261 §25.1: IPv6reference = "[" IPv6address "]" (the address is checked by ipaddress)
IPV6_REF = r"\[[0-9A-Fa-f:.]+\]"
IPV6_REF_RE = re.compile(IPV6_REF)

# RFC 3261 §25.1: host = hostname / IPv4address / IPv6reference ; port = 1*DIGIT
# (an IPv6reference is further checked with the ipaddress module, see uri.check_host)
HOST = f"(?:{IPV4}|{HOSTNAME}|{IPV6_REF})"
PORT = r"[0-9]{1,5}"

# RFC 3261 §25.1: escaped = "%" HEXDIG HEXDIG
ESCAPED = r"%[0-9A-Fa-f]{2}"
ESCAPED_RE = re.compile(r"%([0-9A-Fa-f]{2})")
BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _run(chars: str, *, empty: bool = False) -> str:
    """``1*( [chars] / escaped )`` (``*`` with ``empty``), unrolled so that it cannot backtrack."""
    c = f"[{chars}]"
    tail = f"{c}*(?:{ESCAPED}{c}*)*"
    return tail if empty else f"(?:{c}|{ESCAPED}){tail}"


# RFC 3261 §25.1: unreserved = alphanum / mark; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" /
# "(" / ")"
UNRESERVED = r"A-Za-z0-9\-_.!~*'()"

# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved )
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
USER = _run(f"{UNRESERVED}&=+$,;?/")
USER_RE = re.compile(USER)

# RFC 3261 §25.1: password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
PASSWORD = _run(f"{UNRESERVED}&=+$,", empty=True)

# RFC 3261 §25.1: uri-parameters = *( ";" uri-parameter ); other-param = pname [ "=" pvalue ]
# pname = 1*paramchar; pvalue = 1*paramchar (an empty pvalue is tolerated)
# paramchar = param-unreserved / unreserved / escaped; param-unreserved = "[" / "]" / "/" / ":" /
# "&" / "+" / "$"
_PARAM_C = UNRESERVED + r"\[\]/:&+$"
URI_PARAMS = f"(?:;{_run(_PARAM_C)}(?:={_run(_PARAM_C, empty=True)})?)*"

# RFC 3261 §25.1: headers = "?" header *( "&" header ); header = hname "=" hvalue
# hname = 1*( hnv-unreserved / unreserved / escaped ); hvalue = *( ... )
# hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"
_HNV_C = UNRESERVED + r"\[\]/?:+$"
URI_HEADER = f"{_run(_HNV_C)}={_run(_HNV_C, empty=True)}"
URI_HEADERS = f"{URI_HEADER}(?:&{URI_HEADER})*"

# RFC 3261 §19.1.1 / §25.1: SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
# userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
# Groups: scheme, user, password, host, port, parameters, headers.
SIP_URI_RE = re.compile(
    f"([Ss][Ii][Pp][Ss]?):(?:({USER})(?::({PASSWORD}))?@)?({HOST})(?::({PORT}))?"
    f"({URI_PARAMS})(?:\\?({URI_HEADERS}))?"
)

# RFC 3261 §25.1: absoluteURI = scheme ":" ( hier-part / opaque-part )
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ); uric = reserved / unreserved / escaped
ABSOLUTE_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:" + _run(UNRESERVED + ";/?:@&=+$,"))

# RFC 3261 §25.1: quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
_QDTEXT = r'[^"\\\x00-\x08\x0a-\x1f\x7f]'
_QPAIR = r"\\[\x00-\x09\x0b\x0c\x0e-\x7f]"
QUOTED = f'"{_QDTEXT}*(?:{_QPAIR}{_QDTEXT}*)*"'
QUOTED_STRING_RE = re.compile(QUOTED)

# RFC 3261 §25.1: generic-param = token [ EQUAL gen-value ]; gen-value = token / host /
# quoted-string. Parameter lists start with SEMI = SWS ";" SWS.
GEN_VALUE = f"(?:[{TOKEN_CHARS}\\[\\]:]+|{QUOTED})"
PARAMS = f"(?:{LWS};{LWS}{TOKEN}(?:{LWS}={LWS}{GEN_VALUE})?)*{LWS}"
PARAMS_RE = re.compile(PARAMS)
PARAM_RE = re.compile(f";{LWS}({TOKEN})(?:{LWS}={LWS}({GEN_VALUE}))?")

# RFC 3261 §25.1: name-addr = [ display-name ] LAQUOT addr-spec RAQUOT
# display-name = *(token LWS) / quoted-string; LAQUOT = SWS "<"; RAQUOT = ">" SWS
# Groups: quoted display, token display, addr-spec, parameters.
NAME_ADDR_RE = re.compile(
    f"{LWS}(?:({QUOTED})|({TOKEN}(?:[ \\t]+{TOKEN})*))?{LWS}<([^<>\\s]+)>({PARAMS})"
)
# addr-spec form: the URI runs to the first ";" (its parameters belong to the header, §20.10).
ADDR_SPEC_RE = re.compile(f'{LWS}([^;<>\\s"]+)({PARAMS})')

# RFC 3261 §25.1: via-parm = sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol = protocol-name SLASH protocol-version SLASH transport; sent-by = host [COLON port]
# Groups: protocol name, version, transport, host, port, parameters.
VIA_RE = re.compile(
    f"{LWS}({TOKEN}){LWS}/{LWS}({TOKEN}){LWS}/{LWS}({TOKEN})[ \\t]+({HOST})"
    f"(?:{LWS}:{LWS}({PORT}))?({PARAMS})"
)

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


_KEY_CACHE: dict[str, str] = {}
_KEY_CACHE_MAX = 512


def header_key(name: str) -> str:
    """The lookup key of a header name: lower-case, compact forms expanded."""
    key = _KEY_CACHE.get(name)
    if key is None:
        low = name.lower()
        key = COMPACT_FORMS.get(low, low)
        if len(_KEY_CACHE) < _KEY_CACHE_MAX:  # bounded: names come from the network
            _KEY_CACHE[name] = key
    return key


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


_QUOTE_RE = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')


def quote(text: str) -> str:
    """``text`` as a quoted-string (RFC 3261 §25.1); CR and LF cannot be quoted and become SP."""
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return '"' + _QUOTE_RE.sub(lambda m: "\\" + m.group(), text) + '"'


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


def parse_params(text: str) -> dict[str, str | None]:
    """Parameters of a text already checked against :data:`PARAMS_RE` (keys lower-cased)."""
    if not text or text.isspace():
        return {}
    if text.count(";") == 1 and " " not in text and '"' not in text and "\t" not in text:
        k, _, v = text[1:].partition("=")  # the common ";tag=x" (already validated)
        return {k.lower(): v or None}
    return {k.lower(): (v or None) for k, v in PARAM_RE.findall(text)}


def format_params(params: dict[str, str | None]) -> str:
    """``{'a': '1', 'lr': None}`` -> ``;a=1;lr``."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def is_digits(text: str, most: int) -> bool:
    """``1*DIGIT`` of at most ``most`` digits (ASCII only; bounds int() on network input)."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def is_ip(text: str) -> bool:
    """RFC 3261 §20.42 received = IPv4address / IPv6address ([] tolerated, RFC 5118 §4.5)."""
    if IPV4_RE.fullmatch(text):
        return True
    if text[:1] == "[" and text[-1:] == "]":
        text = text[1:-1]
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True
