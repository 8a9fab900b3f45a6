"""SIP and tel URIs (RFC 3261 §19.1, RFC 3966)."""

from __future__ import annotations

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
        scheme, colon, rest = text.partition(":")
        if not colon:
            raise BadRequest(f"URI without scheme: {text!r}")
        scheme = scheme.lower()
        if scheme not in SIP_SCHEMES:
            if grammar.TOKEN_RE.fullmatch(scheme):
                raise UnsupportedUriScheme(f"scheme {scheme!r} is not supported")
            raise BadRequest(f"bad URI scheme in {text!r}")
        headers: str | None = None
        if "?" in rest:
            rest, _, headers = rest.partition("?")
        userinfo, at, hostpart = rest.rpartition("@")
        user: str | None = None
        password: str | None = None
        if at:
            user, colon2, pw = userinfo.partition(":")
            password = pw if colon2 else None
            if not user or not grammar.USER_RE.fullmatch(user):
                raise BadRequest(f"bad user part in URI {text!r}")
        hostport, params = grammar.split_params(hostpart)
        host, port = parse_hostport(hostport, text)
        return cls(scheme, user, host, port, password, params, headers)

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


def parse_hostport(hostport: str, whole: str = "") -> tuple[str, int | None]:
    """``host[:port]`` per RFC 3261 §25.1 (``hostport``)."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not grammar.IPV6_REF_RE.fullmatch(hostport[: end + 1]):
            raise BadRequest(f"bad IPv6 reference in {whole or hostport!r}")
        host = hostport[: end + 1]
        rest = hostport[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            raise BadRequest(f"junk after host in {whole or hostport!r}")
    else:
        host, colon, port_text_ = hostport.partition(":")
        port_text = port_text_ if colon else None
        if not host or not grammar.HOSTNAME_RE.fullmatch(host):
            raise BadRequest(f"bad host in {whole or hostport!r}")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise BadRequest(f"bad port in {whole or hostport!r}")
        port = int(port_text)
    return host, port


def parse_uri(text: str) -> SipUri | str:
    """A SIP URI as :class:`SipUri`; an absolute URI of another scheme (``tel:``) as text."""
    scheme = text.partition(":")[0].lower()
    if scheme in SIP_SCHEMES:
        return SipUri.parse(text)
    if not grammar.TOKEN_RE.fullmatch(scheme) or ":" not in text:
        raise BadRequest(f"bad URI {text!r}")
    return text
