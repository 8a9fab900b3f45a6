"""SIP and tel URIs (RFC 3261 §19.1, RFC 3966)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from urllib.parse import unquote as pct_unquote

from . import grammar
from .errors import BadRequest, UnsupportedUriScheme

SIP_SCHEMES = frozenset({"sip", "sips"})


@dataclass(slots=True)
class SipUri:
    """``sip:user:password@host:port;params?headers``.

    ``user`` keeps its %-escapes as received (compare with :meth:`user_unescaped`).
    """

    scheme: str = "sip"
    user: str | None = None
    host: str = ""
    port: int | None = None
    password: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a SIP/SIPS URI; :class:`UnsupportedUriScheme` for others, 400 if malformed."""
        m = grammar.SIP_URI_RE.fullmatch(text)
        if m is None:
            scheme, colon, _ = text.partition(":")
            if not colon:
                raise BadRequest(f"URI without scheme: {text[:80]!r}")
            if scheme.lower() not in SIP_SCHEMES:
                if grammar.TOKEN_RE.fullmatch(scheme):
                    raise UnsupportedUriScheme(f"scheme {scheme[:40]!r} is not supported")
                raise BadRequest(f"bad URI scheme in {text[:80]!r}")
            raise BadRequest(f"bad SIP URI {text[:80]!r}")
        scheme, user, password, host, port_text, param_text, headers = m.groups()
        if host[0] == "[":
            check_host(host, text)
        port: int | None = None
        if port_text is not None:
            port = int(port_text)
            if not 0 < port < 65536:
                raise BadRequest(f"bad port in {text[:80]!r}")
        params: dict[str, str | None] = {}
        if param_text:
            # RFC 3261 §19.1.4: parameter names compare case-insensitively.
            for raw in param_text[1:].split(";"):
                k, eq, v = raw.partition("=")
                params[k.lower()] = v if eq else None
        return cls(scheme.lower(), user, host, port, password, params, headers)

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        if self.params:
            out.append(grammar.format_params(self.params))
        if self.headers is not None:
            out.append("?" + self.headers)
        return "".join(out)

    @property
    def user_unescaped(self) -> str | None:
        """The user part with %-escapes resolved."""
        return None if self.user is None else pct_unquote(self.user)

    @property
    def transport(self) -> str:
        """The ``transport`` parameter, upper-case, defaulting to UDP (TLS for ``sips``)."""
        t = self.params.get("transport")
        if t:
            return t.upper()
        return "TLS" if self.scheme == "sips" else "UDP"

    def with_(self, **changes: object) -> SipUri:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def equivalent(self, other: SipUri) -> bool:
        """URI comparison per RFC 3261 §19.1.4 (the parts we use)."""
        if self.scheme != other.scheme:
            return False
        if self.user_unescaped != other.user_unescaped:
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        for key in ("user", "ttl", "method", "maddr", "transport"):
            a, b = self.params.get(key), other.params.get(key)
            if (a is None) != (b is None):
                return False
            if a is not None and b is not None and a.lower() != b.lower():
                return False
        return True


_HOSTPORT_RE = re.compile(f"({grammar.HOST})(?::({grammar.PORT}))?")


def check_host(host: str, whole: str = "") -> None:
    """What the host pattern cannot check: the IPv6 address syntax (RFC 3261 §25.1, RFC 5118)."""
    if host[:1] == "[":
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise BadRequest(f"bad IPv6 reference in {(whole or host)[:80]!r}") from None


def parse_hostport(hostport: str, whole: str = "") -> tuple[str, int | None]:
    """``host[:port]`` per RFC 3261 §25.1 (``hostport``)."""
    m = _HOSTPORT_RE.fullmatch(hostport)
    if m is None:
        raise BadRequest(f"bad host or port in {(whole or hostport)[:80]!r}")
    host, port_text = m.groups()
    check_host(host, whole or hostport)
    port: int | None = None
    if port_text is not None:
        port = int(port_text)
        if not 0 < port < 65536:
            raise BadRequest(f"bad port in {(whole or hostport)[:80]!r}")
    return host, port


def copy_uri(uri: SipUri | str) -> SipUri | str:
    """A copy of ``uri`` that shares nothing mutable with it."""
    if isinstance(uri, str):
        return uri
    return SipUri(
        uri.scheme, uri.user, uri.host, uri.port, uri.password, uri.params.copy(), uri.headers
    )


# Parsed URIs by their text (see the header caches in message.py). The cached objects are
# templates: they are never handed out, only copies of them.
_URI_CACHE: dict[str, SipUri | str] = {}


def uri_template(text: str) -> SipUri | str:
    """Like :func:`parse_uri`, but the result is shared: copy it (:func:`copy_uri`) before use."""
    hit = _URI_CACHE.get(text)
    if hit is not None:
        return hit
    uri: SipUri | str
    scheme = text[:5].lower()
    if scheme[:4] == "sip:" or scheme == "sips:":
        uri = SipUri.parse(text)
    elif grammar.ABSOLUTE_URI_RE.fullmatch(text) is None:
        raise BadRequest(f"bad URI {text[:80]!r}")
    else:
        uri = text
    if len(text) <= 256:
        if len(_URI_CACHE) >= 4096:
            _URI_CACHE.clear()
        _URI_CACHE[text] = uri
    return uri


def parse_uri(text: str) -> SipUri | str:
    """A SIP URI as :class:`SipUri`; an absolute URI of another scheme (``tel:``) as text."""
    return copy_uri(uri_template(text))
