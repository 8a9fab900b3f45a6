"""SIP message parsing and writing (RFC 3261 §7, §20, §25): examples, then Hypothesis."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip import grammar
from gateway.sip.errors import BadRequest, MessageTooLarge, SipError, Unparseable
from gateway.sip.message import (
    MAX_HEADERS,
    MAX_MESSAGE_SIZE,
    Address,
    CSeq,
    Headers,
    Request,
    Response,
    StreamFramer,
    Via,
    make_response,
    parse_message,
    sent_by,
)
from gateway.sip.uri import SipUri

TORTURE = Path(__file__).resolve().parent.parent / "data" / "rfc4475"

INVITE = (
    b"INVITE sip:+8613800138000@gw.example.com:5060;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@carrier.example.net>;tag=1928301774\r\n'
    b"To: <sip:+8613800138000@gw.example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.carrier.example.net\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)
OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.10\r\n"
    b'From: "Alice" <sip:alice@carrier.example.net>;tag=1928301774\r\n'
    b"To: <sip:+8613800138000@gw.example.com>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@pc33.carrier.example.net\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def parse_request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def with_header(line: bytes, data: bytes = INVITE) -> bytes:
    head, _, body = data.partition(b"\r\n\r\n")
    return head + b"\r\n" + line + b"\r\n\r\n" + body


def replace_header(name: bytes, line: bytes, data: bytes = INVITE) -> bytes:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = [line if ln.split(b":")[0] == name else ln for ln in head.split(b"\r\n")]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# --------------------------------------------------------------------------- examples


def test_typical_invite_and_round_trip() -> None:
    req = parse_request(INVITE)
    assert req.method == "INVITE"
    assert isinstance(req.ruri, SipUri) and req.ruri.user == "+8613800138000"
    assert req.ruri.params == {"user": "phone"}
    assert req.top_via.branch == "z9hG4bK776asdhds"
    assert req.top_via.params == {"branch": "z9hG4bK776asdhds", "rport": None}
    assert req.from_.display == "Alice" and req.from_.tag == "1928301774"
    assert req.to.tag is None
    assert req.cseq == CSeq(314159, "INVITE")
    assert req.body == b"v=0\n"
    assert req.headers.get_all("allow") == ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"]
    assert bytes(req) == INVITE
    resp = parse_message(OK)
    assert isinstance(resp, Response)
    assert (resp.status, resp.reason) == (200, "OK")
    assert bytes(resp) == OK
    assert sent_by(resp.top_via) == ("192.0.2.10", 5060)


def test_make_response_copies_and_tags() -> None:
    req = parse_request(INVITE)
    resp = make_response(req, 180, to_tag="t1")
    assert resp.reason == "Ringing"
    assert resp.to.tag == "t1"
    assert resp.headers.get("via") == req.headers.get("via")
    assert resp.call_id == req.call_id and resp.cseq == req.cseq
    assert make_response(req, 100, to_tag="t1").to.tag is None  # RFC 3261 §8.2.6.2
    assert "contact" not in resp.headers


def test_make_response_with_unparseable_to_copies_it() -> None:
    with pytest.raises(SipError) as info:
        parse_message(replace_header(b"To", b"To: <sip:bob@example.com"))
    bad = info.value.message
    assert isinstance(bad, Request)
    resp = make_response(bad, 400, to_tag="x")
    assert resp.headers.get("to") == "<sip:bob@example.com"


def test_compact_forms_are_found_by_long_names() -> None:
    data = (
        b"OPTIONS sip:a@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/TCP h.example.com;branch=z9hG4bKx\r\n"
        b"f: <sip:b@example.com>;tag=1\r\nt: sip:a@example.com\r\ni: cid-1\r\n"
        b"CSeq: 1 OPTIONS\r\nm: <sip:b@h.example.com;transport=tcp>\r\nk: timer, 100rel\r\n"
        b"c: text/plain\r\nl: 2\r\n\r\nhi"
    )
    req = parse_request(data)
    assert req.call_id == "cid-1"
    assert req.headers.get("Content-Type") == "text/plain"
    assert req.headers.get_all("supported") == ["timer", "100rel"]
    assert req.headers.get("contact") == "<sip:b@h.example.com;transport=tcp>"
    assert req.body == b"hi"
    assert bytes(req).endswith(b"k: timer, 100rel\r\nc: text/plain\r\nContent-Length: 2\r\n\r\nhi")


def test_folding_and_lf_only_and_leading_crlf() -> None:
    folded = INVITE.replace(b"Allow: INVITE, ACK,", b"Allow: INVITE,\r\n  ACK,\r\n\t")
    assert parse_request(folded).headers.get("allow") == "INVITE, ACK, CANCEL, BYE, OPTIONS"
    lf = INVITE.replace(b"\r\n", b"\n")
    assert parse_request(lf).call_id == "a84b4c76e66710@pc33.carrier.example.net"
    assert parse_request(b"\r\n\r\n" + INVITE).method == "INVITE"


def test_comma_lists_respect_quotes_and_brackets() -> None:
    value = '"Doe, \\"J\\"" <sip:j,k@example.com;a=1>;q=0.5, <sip:k@example.com>, sip:l@example.com'
    req = parse_request(with_header(b"Contact: " + value.encode(), INVITE))
    contacts = req.headers.get_all("contact")
    assert contacts == [
        "<sip:alice@192.0.2.10:5060>",
        '"Doe, \\"J\\"" <sip:j,k@example.com;a=1>;q=0.5',
        "<sip:k@example.com>",
        "sip:l@example.com",
    ]
    doe = Address.parse(contacts[1])
    assert doe.display == 'Doe, "J"'
    assert doe.params == {"q": "0.5"}
    # A header that is not a list is never split (RFC 3261 §7.3.1).
    subject = parse_request(with_header(b"Subject: a, b")).headers.get_all("subject")
    assert subject == ["a, b"]


@pytest.mark.parametrize(
    ("text", "display", "uri", "params"),
    [
        ("<sip:a@example.com>", None, "sip:a@example.com", {}),
        ("sip:a@example.com;tag=x", None, "sip:a@example.com", {"tag": "x"}),
        ('"" <sip:a@example.com>', "", "sip:a@example.com", {}),
        ('"A \\"B\\", C" <sip:a@example.com;lr>;tag=1', 'A "B", C', "sip:a@example.com;lr",
         {"tag": "1"}),
        ("Bob Smith <sips:b@[2001:db8::1]:5061>;expires=60", "Bob Smith",
         "sips:b@[2001:db8::1]:5061", {"expires": "60"}),
        ("caller<sip:c@example.com>", "caller", "sip:c@example.com", {}),
        ("<tel:+12015550123;phone-context=example.com>", None,
         "tel:+12015550123;phone-context=example.com", {}),
        (' "X" <sip:x@h>  ;  tag = y ;lr', "X", "sip:x@h", {"tag": "y", "lr": None}),
    ],
)  # fmt: skip
def test_address_forms(
    text: str, display: str | None, uri: str, params: dict[str, str | None]
) -> None:
    a = Address.parse(text)
    assert a.display == display
    assert str(a.uri) == uri
    assert a.params == params
    assert Address.parse(str(a)) == a


@pytest.mark.parametrize(
    "text",
    [
        "<>",
        "< sip:a@example.com>",
        '"unterminated <sip:a@example.com>',
        "Bell, Alexander <sip:a@example.com>",
        '"x" sip:a@example.com',
        "sip:a@example.com?Route=x",
        "<sip:a@example.com>;;tag=1",
        "<sip:a@example.com>;tag=",
        "<sip:a@example.com> junk",
        "",
    ],
)
def test_bad_addresses(text: str) -> None:
    with pytest.raises(BadRequest):
        Address.parse(text)


def test_star_contact() -> None:
    assert str(Address.parse("*")) == "*"
    req = parse_request(INVITE.replace(b"<sip:alice@192.0.2.10:5060>", b"*"))
    assert req.headers.get("contact") == "*"


@pytest.mark.parametrize(
    ("text", "host", "port", "params"),
    [
        ("SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKa;rport", "[2001:db8::9:1]", 5070,
         {"branch": "z9hG4bKa", "rport": None}),
        ("SIP/2.0/UDP h.example.com;received=192.0.2.1;rport=5061", "h.example.com", None,
         {"received": "192.0.2.1", "rport": "5061"}),
        ("SIP/2.0/UDP h;received=2001:db8::1", "h", None, {"received": "2001:db8::1"}),
        ("SIP/2.0/UDP h;received=[2001:db8::1]", "h", None, {"received": "[2001:db8::1]"}),
        ("sip / 2.0 / tls  h.example.com : 5061 ; ttl = 16", "h.example.com", 5061, {"ttl": "16"}),
    ],
)  # fmt: skip
def test_via_forms(text: str, host: str, port: int | None, params: dict[str, str | None]) -> None:
    via = Via.parse(text)
    assert (via.host, via.port, via.params) == (host, port, params)
    assert Via.parse(str(via)) == via


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP",
        "SIP/3.0/UDP h",
        "SIP/2.0/UDP h:0",
        "SIP/2.0/UDP h:65536",
        "SIP/2.0/UDP [2001:db8::zz]",
        "SIP/2.0/UDP 2001:db8::1",
        "SIP/2.0/UDP h;rport=0",
        "SIP/2.0/UDP h;rport=x",
        "SIP/2.0/UDP h;received=h.example.com",
        "SIP/2.0/UDP h;branch",
        'SIP/2.0/UDP h;branch="q"',
        "SIP/2.0/UDP h;ttl=256",
        "SIP/2.0/UDP h;;",
        "SIP/2.0/UDP 1.2.3.256",
    ],
)
def test_bad_vias(text: str) -> None:
    with pytest.raises(BadRequest):
        Via.parse(text)


def test_sent_by_rport_received() -> None:
    assert sent_by(Via.parse("SIP/2.0/UDP h:5070;rport=6000;received=192.0.2.9")) == (
        "192.0.2.9",
        6000,
    )
    assert sent_by(Via.parse("SIP/2.0/UDP h;rport")) == ("h", 5060)


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"CSeq: 2147483647 INVITE", None),
        (b"CSeq: 2147483648 INVITE", 400),
        (b"CSeq: " + b"9" * 5000 + b" INVITE", 400),
        (b"CSeq: 1 BYE", 400),
        (b"CSeq: INVITE", 400),
        (b"Max-Forwards: 255", None),
        (b"Max-Forwards: 0", None),
        (b"Max-Forwards: 256", 400),
        (b"Max-Forwards: " + b"1" * 5000, 400),
        (b"Max-Forwards: -1", 400),
        (b"Call-ID: a b", 400),
        (b"Call-ID: ", 400),
        (b"Content-Length: 99999999999999999999", 400),
        (b"Content-Length: 5", 400),
        (b"Content-Length: 3", None),
    ],
)
def test_scalar_bounds(line: bytes, status: int | None) -> None:
    data = replace_header(line.split(b":")[0], line)
    if status is None:
        parse_message(data)
        return
    with pytest.raises(SipError) as info:
        parse_message(data)
    assert info.value.status == status
    assert isinstance(info.value.message, Request)


def test_errors_with_no_answer_are_unparseable() -> None:
    for data in (
        b"",
        b"\r\n\r\n",
        b"\xff\xfe\r\n\r\n",
        b"SIP/2.0 2000 OK\r\n\r\n",
        b"SIP/2.0 099 Low\r\n\r\n",
        b"SIP/3.0 200 OK\r\n\r\n",
        OK.replace(b"CSeq: 314159 INVITE", b"CSeq: x"),  # any error in a response
        b"INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\n",  # no Via: nowhere to answer
    ):
        with pytest.raises(Unparseable):
            parse_message(data)


def test_request_errors_carry_the_request() -> None:
    cases = {
        b"Bad Line Without Colon": 400,
        b"Bad Name: x": 400,
        b"Weird\rValue: x": 400,
        b"To: sip:other@example.com": 400,  # a second To
    }
    for line, status in cases.items():
        with pytest.raises(SipError) as info:
            parse_message(with_header(line))
        assert info.value.status == status and not isinstance(info.value, Unparseable)
        bad = info.value.message
        assert isinstance(bad, Request) and bad.method == "INVITE"
        assert bytes(make_response(bad, 400, to_tag="z")).startswith(b"SIP/2.0 400 Bad Request")
    with pytest.raises(SipError) as info:
        parse_message(INVITE.replace(b" SIP/2.0\r\n", b"  SIP/2.0\r\n", 1))
    assert isinstance(info.value.message, Request) and info.value.message.method == "INVITE"


def test_uri_checks_at_parse_time() -> None:
    with pytest.raises(SipError) as info:
        parse_message(INVITE.replace(b"sip:+8613800138000@gw.example.com:5060", b"sip:a@[::zz]", 1))
    assert info.value.status == 400
    req = parse_request(
        INVITE.replace(b"sip:+8613800138000@gw.example.com:5060;user=phone", b"tel:+1", 1)
    )
    assert req.ruri == "tel:+1"


def test_limits() -> None:
    with pytest.raises(MessageTooLarge):
        parse_message(INVITE + b"x" * MAX_MESSAGE_SIZE)
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
    with pytest.raises(MessageTooLarge) as info:
        parse_message(with_header(many.rstrip(b"\r\n")))
    assert info.value.status == 413 and isinstance(info.value.message, Request)


def test_headers_api() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b"), ("v", "SIP/2.0/UDP c")])
    assert h.count("via") == 2
    assert len(h.get_all("Via")) == 3
    assert h.pop_first("via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert h.get("via") == "SIP/2.0/UDP b"
    h.prepend("Via", "SIP/2.0/UDP z")
    assert h.keys() == ["via", "via", "via"]
    h.set("Via", "SIP/2.0/UDP only")
    assert list(h) == [("Via", "SIP/2.0/UDP only")]
    h.remove("v")
    assert "via" not in h and len(h) == 0


def test_cached_views_are_independent_copies() -> None:
    a = parse_request(INVITE)
    b = parse_request(INVITE)
    a.from_.params["tag"] = "changed"
    a.top_via.params["received"] = "1.2.3.4"
    assert isinstance(a.from_.uri, SipUri)
    a.from_.uri.params["x"] = "y"
    assert b.from_.tag == "1928301774"
    assert "received" not in b.top_via.params
    assert parse_request(INVITE).from_.sip_uri.params == {}


def test_stream_framer_basics() -> None:
    f = StreamFramer()
    assert f.feed(b"\r\n\r\n") == []  # keep-alives
    assert f.feed(INVITE[:10]) == []
    assert f.feed(INVITE[10:] + OK) == [INVITE, OK]
    with pytest.raises(BadRequest):
        StreamFramer().feed(INVITE.replace(b"Content-Length: 4", b"Content-Length: " + b"9" * 40))
    with pytest.raises(MessageTooLarge):
        StreamFramer(limit=100).feed(INVITE)


# --------------------------------------------------------------------------- Hypothesis

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip

BUILT = settings(
    max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip

CORPUS = [INVITE, OK] + [p.read_bytes() for p in sorted(TORTURE.glob("*.dat"))]


def only_sip_errors(data: bytes, stream: bool = False) -> None:
    try:
        msg = parse_message(data, stream=stream)
    except SipError as exc:
        if not isinstance(exc, Unparseable):
            assert isinstance(exc.message, Request)
            make_response(exc.message, exc.status)  # must not raise either
        return
    bytes(msg)
    _ = msg.vias, msg.from_, msg.to, msg.cseq, msg.call_id
    if isinstance(msg, Request):
        _ = msg.ruri


@FUZZ
@given(st.binary(max_size=3000), st.booleans())
def test_random_bytes_raise_only_sip_errors(data: bytes, stream: bool) -> None:
    only_sip_errors(data, stream)


@FUZZ
@given(st.sampled_from(CORPUS), st.data())
def test_truncated_and_flipped_messages_raise_only_sip_errors(
    msg: bytes, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(msg)))
    only_sip_errors(msg[:cut])
    flipped = bytearray(msg)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(msg) - 1))
        flipped[i] = data.draw(st.sampled_from(b'\x00\r\n \t:;,<>"\\%@[]=/\x7f\xff0aZ'))
    only_sip_errors(bytes(flipped))
    only_sip_errors(bytes(flipped), stream=True)


@FUZZ
@given(st.sampled_from(CORPUS), st.data())
def test_inserted_junk_raises_only_sip_errors(msg: bytes, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(msg)))
    junk = data.draw(st.binary(min_size=1, max_size=40) | st.sampled_from(
        [b"9" * 5000, b";" * 3000, b"a-" * 2000, b"%" * 1000, b"\\\"" * 2000, b"<" * 2000]
    ))  # fmt: skip
    only_sip_errors(msg[:i] + junk + msg[i:])


# Strategies for valid pieces -----------------------------------------------------------------

tokens = st.text(alphabet=grammar.TOKEN_CHARS.replace("\\", "") + "-", min_size=1, max_size=10)
label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
toplabel = st.from_regex(r"[a-z](?:[a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
hostnames = st.builds(lambda ls, t: ".".join([*ls, t]), st.lists(label, max_size=3), toplabel)
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
hosts = hostnames | ipv4 | ipv6.map(lambda a: f"[{a}]")
ports = st.none() | st.integers(1, 65535)
users = st.text(alphabet="abcXYZ019-_.!~*'()&=+$,;?/", min_size=1, max_size=12) | st.text(
    alphabet="abc", min_size=1, max_size=3
).map(lambda s: s + "%20" + s)
display_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, blacklist_categories=["Cs"])
    | st.sampled_from('"\\,;<>'),
    max_size=20,
)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    params = draw(
        st.dictionaries(
            tokens.map(str.lower).filter(lambda k: "%" not in k and "`" not in k and "'" not in k),
            st.none() | tokens.filter(lambda v: "`" not in v and "%" not in v),
            max_size=3,
        )
    )
    return SipUri(
        draw(st.sampled_from(["sip", "sips"])),
        draw(st.none() | users),
        draw(hosts),
        draw(ports),
        None,
        params,
        None,
    )


@st.composite
def addresses(draw: st.DrawFn) -> Address:
    uri = draw(sip_uris())
    display = draw(st.none() | display_text)
    params = draw(st.dictionaries(tokens.map(str.lower), st.none() | tokens, max_size=3))
    return Address(uri, display, params)


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params: dict[str, str | None] = {"branch": "z9hG4bK" + draw(tokens)}
    if draw(st.booleans()):
        params["rport"] = draw(st.none() | st.integers(1, 65535).map(str))
    if draw(st.booleans()):
        params["received"] = draw(ipv4 | ipv6)
    host = draw(hosts)
    return Via(
        draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"])), host, draw(ports), params
    )


words = st.text(alphabet="abcXYZ0129-.!%*_+`'~()<>:\\\"/[]?{}", min_size=1, max_size=12)
call_ids = st.builds(lambda a, b: a if b is None else f"{a}@{b}", words, st.none() | words)
header_values = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"),
    max_size=40,
).map(lambda s: s.strip(" \t"))
# RFC 3261 §25.1: Reason-Phrase has no control characters but HTAB.
reasons = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc"]) | st.just("\t"), max_size=20
)
extra_names = tokens.filter(
    lambda n: grammar.header_key(n)
    not in {"via", "from", "to", "call-id", "cseq", "contact", "content-length", "max-forwards",
            "expires", "content-type"}
    and len(n) > 1
)  # fmt: skip


@FUZZ
@given(addresses())
def test_address_round_trip(a: Address) -> None:
    again = Address.parse(str(a))
    assert again == a
    assert Address.parse(str(again)) == a


@FUZZ
@given(vias())
def test_via_round_trip(via: Via) -> None:
    assert Via.parse(str(via)) == via
    host, port = sent_by(via)
    assert host == (via.params.get("received") or via.host)
    assert 0 < port < 65536


@FUZZ
@given(st.integers(0, 2**31 - 1), tokens, st.integers(2**31, 10**15))
def test_cseq_bounds(seq: int, method: str, big: int) -> None:
    assert CSeq.parse(f"{seq}  {method}") == CSeq(seq, method)
    with pytest.raises(BadRequest):
        CSeq.parse(f"{big} {method}")


@st.composite
def messages(draw: st.DrawFn) -> Request | Response:
    compact = draw(st.booleans())

    def name(long: str, short: str) -> str:
        return short if compact else long

    h = Headers()
    for via in draw(st.lists(vias(), min_size=1, max_size=3)):
        h.add(name("Via", "v"), str(via))
    h.add("Max-Forwards", str(draw(st.integers(0, 255))))
    h.add(name("From", "f"), str(draw(addresses())))
    h.add(name("To", "t"), str(draw(addresses())))
    h.add(name("Call-ID", "i"), draw(call_ids))
    method = draw(st.sampled_from(["INVITE", "BYE", "OPTIONS", "X-" + draw(tokens)]))
    h.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    contacts = draw(st.lists(addresses(), max_size=3))
    if contacts:
        h.add(name("Contact", "m"), ", ".join(str(c) for c in contacts))
    for extra_name, value in draw(st.lists(st.tuples(extra_names, header_values), max_size=5)):
        h.add(extra_name, value)
    body = draw(st.binary(max_size=60))
    if draw(st.booleans()):
        return Request(method, draw(sip_uris()), h, body)
    return Response(draw(st.integers(100, 699)), draw(reasons), h, body)


@BUILT
@given(messages())
def test_built_messages_round_trip(m: Request | Response) -> None:
    data = bytes(m)
    parsed = parse_message(data)
    assert bytes(parsed) == data
    assert parse_message(data, stream=True).body == m.body
    assert [str(v) for v in parsed.vias] == [str(v) for v in m.vias]
    assert parsed.from_ == m.from_ and parsed.to == m.to and parsed.cseq == m.cseq
    assert parsed.call_id == m.call_id
    assert parsed.headers.get_all("contact") == m.headers.get_all("contact")
    if isinstance(m, Request):
        assert isinstance(parsed, Request) and parsed.ruri == m.ruri


@BUILT
@given(messages(), st.lists(tokens, min_size=2, max_size=6), st.data())
def test_folding_does_not_change_values(
    m: Request | Response, value: list[str], data: st.DataObject
) -> None:
    m.headers.add("Subject", " ".join(value))
    raw = bytes(m)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    for i, line in enumerate(lines):
        name, _, text = line.partition(b": ")
        words = text.split(b" ")
        if i == 0 or len(words) < 2 or not all(words) or not data.draw(st.booleans()):
            continue
        cut = data.draw(st.integers(1, len(words) - 1))
        ws = data.draw(st.sampled_from([b"\r\n ", b"\r\n\t", b" \r\n  ", b"\t\r\n\t"]))
        lines[i] = name + b": " + b" ".join(words[:cut]) + ws + b" ".join(words[cut:])
    folded = parse_message(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    assert bytes(folded) == raw


@BUILT
@given(st.lists(messages(), min_size=1, max_size=3), st.data())
def test_stream_framer_reassembles_any_split(
    ms: list[Request | Response], data: st.DataObject
) -> None:
    wire = [bytes(m) for m in ms]
    stream = b"".join(data.draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n"])) + w for w in wire)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    f = StreamFramer()
    out: list[bytes] = []
    prev = 0
    for c in [*cuts, len(stream)]:
        out.extend(f.feed(stream[prev:c]))
        prev = c
    assert out == wire
    assert [bytes(parse_message(w, stream=True)) for w in out] == wire
