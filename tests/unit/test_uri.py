"""SIP URIs (RFC 3261 §19.1, §25.1) and hostport."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip.errors import BadRequest, SipError, UnsupportedUriScheme
from gateway.sip.uri import SipUri, copy_uri, parse_hostport, parse_uri


def test_full_sip_uri() -> None:
    u = SipUri.parse(
        "sips:alice:secret@Example.COM:5061;transport=TCP;LR;maddr=239.255.255.1?subject=x&to=y"
    )
    assert (u.scheme, u.user, u.password, u.host, u.port) == (
        "sips",
        "alice",
        "secret",
        "Example.COM",
        5061,
    )
    assert u.params == {"transport": "TCP", "lr": None, "maddr": "239.255.255.1"}
    assert u.headers == "subject=x&to=y"
    assert u.transport == "TCP"
    assert SipUri.parse(str(u)) == u


def test_user_part_special_characters_and_escapes() -> None:
    # RFC 4475 §3.1.1.2 / §3.1.1.9: ";", "?", "/" belong to the user part before "@".
    u = SipUri.parse("sip:user;par=u%40example.net@example.com")
    assert u.user == "user;par=u%40example.net" and u.host == "example.com" and u.params == {}
    u = SipUri.parse("sip:a?b/c@h")
    assert u.user == "a?b/c" and u.headers is None
    assert SipUri.parse("sip:%61lice@h").user_unescaped == "alice"
    assert SipUri.parse("sip:+1-201-555-0123;isub=1@h;user=phone").params == {"user": "phone"}


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::10]", "[2001:db8::10]", None),
        ("sip:[2001:db8::10]:5070", "[2001:db8::10]", 5070),
        ("sip:u@[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]", None),
        ("sip:192.0.2.1:1", "192.0.2.1", 1),
        ("sip:h.example.com.", "h.example.com.", None),
        ("SIP:h", "h", None),
    ],
)
def test_hosts(text: str, host: str, port: int | None) -> None:
    u = SipUri.parse(text)
    assert (u.host, u.port) == (host, port)


@pytest.mark.parametrize(
    "text",
    [
        "sip:2001:db8::10",  # RFC 5118 §4.2: an IPv6 address needs []
        "sip:[2001:db8::zz]",
        "sip:[1:2]",
        "sip:h:0",
        "sip:h:65536",
        "sip:h:123456",
        "sip:1.2.3.256",
        "sip:-h.example.com",
        "sip:h_.-",
        "sip:",
        "sip:@h",
        "sip:a b@h",
        "sip:a@h;",
        "sip:a@h?",
        "sip:a@h;p=a b",
        "sip:a@h%",
        "sip:a%zz@h",
        "sip:a@h@i",
        "sip:" + "a" * 4500 + "@1" * 300,
    ],
)
def test_bad_sip_uris(text: str) -> None:
    with pytest.raises(BadRequest):
        SipUri.parse(text)


def test_other_schemes() -> None:
    with pytest.raises(UnsupportedUriScheme) as info:
        SipUri.parse("tel:+12015550123")
    assert info.value.status == 416
    assert parse_uri("tel:+12015550123;phone-context=example.com") == (
        "tel:+12015550123;phone-context=example.com"
    )
    assert parse_uri("urn:service:sos") == "urn:service:sos"
    assert parse_uri("sipx:whatever") == "sipx:whatever"  # not "sip": an unknown scheme
    for bad in ("no-scheme", "1tel:+1", "<sip:a@b>", "tel:", "tel:a b", "x:%zz"):
        with pytest.raises(BadRequest):
            parse_uri(bad)


def test_parse_uri_returns_copies() -> None:
    a = parse_uri("sip:a@h;lr")
    b = parse_uri("sip:a@h;lr")
    assert isinstance(a, SipUri) and isinstance(b, SipUri)
    assert a == b and a is not b
    a.params["x"] = "1"
    assert b.params == {"lr": None}
    assert parse_uri("sip:a@h;lr") == b
    c = copy_uri(b)
    assert c == b and c.params is not b.params


def test_equivalent() -> None:
    a = SipUri.parse("sip:%61lice@EXAMPLE.com;transport=udp")
    assert a.equivalent(SipUri.parse("sip:alice@example.com;transport=UDP"))
    assert not a.equivalent(SipUri.parse("sip:alice@example.com"))
    assert not a.equivalent(SipUri.parse("sips:alice@example.com;transport=udp"))
    assert SipUri.parse("sips:h").transport == "TLS" and SipUri.parse("sip:h").transport == "UDP"


def test_with_() -> None:
    u = SipUri.parse("sip:a@h")
    assert str(u.with_(port=5070, params={"lr": None})) == "sip:a@h:5070;lr"


def test_parse_hostport() -> None:
    assert parse_hostport("h.example.com:5060") == ("h.example.com", 5060)
    assert parse_hostport("[::1]") == ("[::1]", None)
    assert parse_hostport("192.0.2.1") == ("192.0.2.1", None)
    for bad in ("", "h:", "h:0", "[::1", "::1", "h:x", "h h"):
        with pytest.raises(BadRequest):
            parse_hostport(bad)


label = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,5}[A-Za-z0-9])?", fullmatch=True)
toplabel = st.from_regex(r"[A-Za-z](?:[A-Za-z0-9-]{0,5}[A-Za-z0-9])?", fullmatch=True)
hosts = (
    st.builds(lambda ls, t: ".".join([*ls, t]), st.lists(label, max_size=3), toplabel)
    | st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
    | st.integers(0, 2**128 - 1).map(lambda n: f"[{ipaddress.IPv6Address(n)}]")
)
user_chars = "abcXYZ019-_.!~*'()&=+$,;?/"
params = st.dictionaries(
    st.text(alphabet="abcxyz01-_.!~*'()[]/:&+$", min_size=1, max_size=8).map(str.lower),
    st.none()
    | st.text(alphabet="abcXYZ01-_.!~*'()[]/:&+$%2041", max_size=8).filter(
        lambda v: re.fullmatch(r"(?:[^%]|%[0-9A-F]{2})*", v) is not None
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["sip", "sips"]),
    st.none() | st.text(alphabet=user_chars, min_size=1, max_size=12),
    st.none() | st.text(alphabet="abc012&=+$,", max_size=6),
    hosts,
    st.none() | st.integers(1, 65535),
    params,
    st.none() | st.sampled_from(["a=b", "subject=hi%20there&priority=urgent", "x="]),
)
def test_round_trip(
    scheme: str,
    user: str | None,
    password: str | None,
    host: str,
    port: int | None,
    uri_params: dict[str, str | None],
    headers: str | None,
) -> None:
    if user is None:
        password = None
    u = SipUri(scheme, user, host, port, password, uri_params, headers)
    again = SipUri.parse(str(u))
    assert again == u
    assert parse_uri(str(u)) == u


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_random_text_raises_only_sip_errors(text: str) -> None:
    try:
        parse_uri(text)
    except SipError:
        pass
    try:
        parse_hostport(text)
    except SipError:
        pass
