"""RFC 4475 torture messages: every one of the 49 parses, or fails with the status the RFC expects.

Where the RFC lets an element choose between being liberal and rejecting, the choice made here is
written next to the case. The messages are the RFC's own files (tests/data/rfc4475/README.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sip.errors import SipError, Unparseable, UnsupportedUriScheme
from gateway.sip.message import Address, Request, Response, make_response, parse_message
from gateway.sip.uri import SipUri

DATA = Path(__file__).resolve().parent.parent / "data" / "rfc4475"


def load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def request(name: str) -> Request:
    msg = parse_message(load(name))
    assert isinstance(msg, Request)
    return msg


def response(name: str) -> Response:
    msg = parse_message(load(name))
    assert isinstance(msg, Response)
    return msg


def sip_uri(msg: Request) -> SipUri:
    assert isinstance(msg.ruri, SipUri)
    return msg.ruri


# Every file of the RFC's archive, by section; a file missing here fails test_all_files_covered.
VALID = {  # §3.1.1, §3.2, §3.3 (syntactically valid), §3.4
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri",
    "transports", "mpart01", "unreason", "noreason", "badbranch", "unkscm", "novelsc", "unksm2",
    "bext01", "invut", "regaut01", "bcast", "zeromf", "cparam01", "cparam02", "regescrt", "sdp01",
    "inv2543", "baddate",
}  # fmt: skip

# name -> (status, the request can be answered). §3.1.2 and §3.3 messages we refuse.
INVALID: dict[str, tuple[int, bool]] = {
    "badinv01": (400, True),  # §3.1.2.1 extraneous ;,; separators
    "clerr": (400, True),  # §3.1.2.2 Content-Length larger than the body
    "ncl": (400, True),  # §3.1.2.3 negative Content-Length
    "scalar02": (400, True),  # §3.1.2.4 CSeq >= 2**31 (the RFC: "should respond with a 400")
    "scalarlg": (400, False),  # §3.1.2.5 a response: discarded
    "quotbal": (400, True),  # §3.1.2.6 unterminated quoted string
    "ltgtruri": (400, True),  # §3.1.2.7 <> around the Request-URI
    "lwsruri": (400, True),  # §3.1.2.8 LWS inside the Request-URI
    # §3.1.2.9 / §3.1.2.10: extra SP in the Request-Line. The RFC allows a liberal element to
    # ignore them; we reject (one SP exactly, RFC 3261 §7.1) - it is cheap and unambiguous.
    "lwsstart": (400, True),
    "trws": (400, True),
    "escruri": (400, True),  # §3.1.2.11 headers in the Request-URI: "acceptable to reject"
    "regbadct": (400, True),  # §3.1.2.13 addr-spec with "?" not in <>: we do not infer the <>
    "badaspec": (400, True),  # §3.1.2.14 spaces inside <>: "reasonable to reject"
    "baddn": (400, True),  # §3.1.2.15 unquoted non-token display name: we do not infer quotes
    "badvers": (505, True),  # §3.1.2.16 SIP/7.0
    "mismatch01": (400, True),  # §3.1.2.17 CSeq method differs from the Request-Line
    # §3.1.2.18: unknown method and mismatched CSeq. The RFC prefers 501 but accepts 400; the
    # parser knows no method list, so it answers 400 (method support is the UAS's business).
    "mismatch02": (400, True),
    "bigcode": (400, False),  # §3.1.2.19 a response with code 4294967301: dropped
    "insuf": (400, True),  # §3.3.1 no Call-ID, From, To: "ideally ... 400"
    "multi01": (400, True),  # §3.3.8 several To, From, Call-ID, CSeq, Max-Forwards
    "mcl01": (400, True),  # §3.3.9 two Content-Length values
}


def test_all_files_covered() -> None:
    names = {p.stem for p in DATA.glob("*.dat")}
    assert len(names) == 49
    assert names == VALID | set(INVALID)
    assert not VALID & set(INVALID)


def test_files_are_crlf_as_in_the_rfc_archive() -> None:
    for path in DATA.glob("*.dat"):
        data = path.read_bytes()
        head = data.partition(b"\r\n\r\n")[0]
        assert b"\n" not in head.replace(b"\r\n", b""), path.name


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_messages_parse(name: str) -> None:
    msg = parse_message(load(name))
    assert msg.call_id.startswith(name[:4]) or name in {"mpart01"}
    if isinstance(msg, Request):
        assert msg.cseq.method == msg.method
    assert msg.vias
    assert bytes(msg)  # and can be written back


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_messages_fail_with_the_expected_status(name: str) -> None:
    status, answerable = INVALID[name]
    with pytest.raises(SipError) as info:
        parse_message(load(name))
    exc = info.value
    assert exc.status == status
    assert isinstance(exc, Unparseable) is not answerable
    if answerable:
        # The transport answers with make_response on the attached request (RFC 3261 §8.2.6).
        bad = exc.message
        assert isinstance(bad, Request)
        resp = make_response(bad, exc.status, exc.reason, to_tag="abc")
        data = bytes(resp)
        assert data.startswith(f"SIP/2.0 {status} ".encode())
        assert b"Via:" in data or b"v:" in data


# ---------------------------------------------------------------- §3.1.1 valid messages, in detail


def test_wsinv_short_tortuous_invite() -> None:
    # §3.1.1.1: folding, odd spacing, case, compact forms, escaped quotes in display names.
    req = request("wsinv")
    assert req.method == "INVITE"
    assert req.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert sip_uri(req).params == {"unknownparam": None}
    assert req.to.tag == "1918181833n"
    assert req.to.display is None
    assert req.from_.display == 'J Rosenberg \\"'
    assert req.from_.tag == "98asjd8"
    assert req.headers.get("max-forwards") == "0068"
    assert req.cseq.seq == 9 and req.cseq.method == "INVITE"
    assert req.headers.get("subject") == ""  # "s :" with an empty value
    assert req.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert req.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    vias = req.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    contacts = req.headers.get_all("contact")
    assert len(contacts) == 1
    contact = Address.parse(contacts[0])
    assert contact.display == 'Quoted string ""'  # quoted-pairs resolved
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert req.headers.get_all("route") == [
        "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"
    ]
    assert len(req.body) == 150 and req.body.startswith(b"v=0\r\n")
    assert req.content_type == "application/sdp"


def test_intmeth_wide_range_of_valid_characters() -> None:
    # §3.1.1.2
    req = request("intmeth")
    assert req.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = sip_uri(req)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    assert req.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert req.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"  # quoted-pairs resolved
    to_uri = req.to.sip_uri
    assert to_uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert req.from_.display == "token1~` token2'+_ token3*%!.-"
    assert req.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert req.from_.tag == "_token~1'+`*%!-."
    assert req.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert req.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_escaped_characters() -> None:
    # §3.1.1.3
    req = request("esc01")
    assert sip_uri(req).user == "sips%3Auser%40example.com"
    assert sip_uri(req).user_unescaped == "sips:user@example.com"
    assert sip_uri(req).host == "example.net"
    assert req.to.sip_uri.user_unescaped == "user"
    assert req.from_.sip_uri.user_unescaped == "I have spaces"
    assert req.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # compact "i"
    assert req.content_type == "application/sdp"  # compact "C"
    contact = Address.parse(req.headers.get_all("contact")[0])
    assert contact.sip_uri.user_unescaped == "caller"
    assert contact.sip_uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    assert len(req.body) == 150


def test_escnull_escaped_nulls() -> None:
    # §3.1.1.4
    req = request("escnull")
    assert req.to.sip_uri.user_unescaped == "null-\x00-null"
    contacts = [Address.parse(c) for c in req.headers.get_all("contact")]
    assert [c.sip_uri.user_unescaped for c in contacts] == ["\x00", "\x00\x00"]
    assert req.body == b""


def test_esc02_percent_that_is_not_an_escape() -> None:
    # §3.1.1.5: the method is a token (with %); "C%6Fntact" is NOT Contact.
    req = request("esc02")
    assert req.method == "RE%47IST%45R"
    assert req.to.display == "%Z%45"
    assert req.top_via.branch == "z9hG4bK209%fzsnel234"
    assert len(req.headers.get_all("contact")) == 2
    assert req.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_no_lws_between_display_name_and_laquot() -> None:
    # §3.1.1.6
    req = request("lwsdisp")
    assert req.from_.display == "caller"
    assert req.from_.sip_uri.user == "caller"
    assert req.from_.tag == "323"


def test_longreq_long_values() -> None:
    # §3.1.1.7: long values, many Vias in every spelling of the name, long headers.
    req = request("longreq")
    assert req.to.display is not None and "extremeextreme" in req.to.display
    assert req.to.sip_uri.port == 6000
    assert req.from_.sip_uri.user is not None and len(req.from_.sip_uri.user) > 100
    assert len(req.vias) == 34
    assert all(v.transport == "TCP" for v in req.vias)
    assert req.top_via.host == "sip33.example.com"
    assert len(req.body) == 150


def test_dblreq_extra_octets_after_content_length() -> None:
    # §3.1.1.8: a UDP datagram with a second request after the first: the bytes are discarded.
    req = request("dblreq")
    assert req.method == "REGISTER"
    assert req.body == b""


def test_semiuri_semicolon_in_user_part() -> None:
    # §3.1.1.9
    req = request("semiuri")
    uri = sip_uri(req)
    assert uri.user == "user;par=u%40example.net"
    assert uri.host == "example.com"
    assert uri.params == {}
    accept = req.headers.get_all("accept")
    assert accept[0] == "application/sdp"
    assert len(req.headers.get("accept") or "") > 60  # folded over three lines


def test_transports_every_transport() -> None:
    # §3.1.1.10
    req = request("transports")
    assert [v.transport for v in req.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert req.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_mpart01_binary_body() -> None:
    # §3.1.1.11: a multipart body with binary octets, taken whole by Content-Length.
    req = request("mpart01")
    assert req.method == "MESSAGE"
    assert len(req.body) == 553
    assert req.content_type == "multipart/mixed"
    assert req.top_via.params["rport"] is None


def test_unreason_utf8_reason_phrase() -> None:
    # §3.1.1.12
    resp = response("unreason")
    assert resp.status == 200
    assert resp.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert len(resp.body) == 154


def test_noreason_empty_reason_phrase() -> None:
    # §3.1.1.13: kept empty (we do not invent "Trying").
    resp = response("noreason")
    assert resp.status == 100
    assert resp.reason == ""
    assert bytes(resp).startswith(b"SIP/2.0 100 \r\n")


# ------------------------------------------------- §3.1.2 / §3.3 invalid messages, the details


def test_clerr_content_length_larger_than_body() -> None:
    with pytest.raises(SipError, match="larger than the body"):
        parse_message(load("clerr"))


def test_ncl_negative_content_length() -> None:
    with pytest.raises(SipError, match="Content-Length"):
        parse_message(load("ncl"))


def test_scalar02_overlarge_cseq_is_the_error() -> None:
    # Max-Forwards 300 and the huge Expires are wrong too; CSeq is the one the RFC names.
    with pytest.raises(SipError, match="CSeq"):
        parse_message(load("scalar02"))


def test_badvers_answered_505_with_the_request() -> None:
    with pytest.raises(SipError) as info:
        parse_message(load("badvers"))
    assert info.value.status == 505
    assert isinstance(info.value.message, Request)
    resp = make_response(info.value.message, 505)
    assert resp.call_id == "badvers.31417@c.example.com"


def test_insuf_response_still_formed_from_what_is_there() -> None:
    with pytest.raises(SipError) as info:
        parse_message(load("insuf"))
    bad = info.value.message
    assert isinstance(bad, Request)
    resp = make_response(bad, 400, to_tag="x")
    assert resp.headers.count("via") == 1
    assert resp.headers.get("cseq") == "193942 INVITE"


def test_stream_transport_needs_content_length() -> None:
    # RFC 3261 §18.3: on TCP a message without Content-Length is an error (inv2543 has none).
    with pytest.raises(SipError) as info:
        parse_message(load("inv2543"), stream=True)
    assert info.value.status == 400


# ------------------------------------------------------ §3.2 - §3.4 valid but odd, in detail


def test_badbranch_bare_magic_cookie_parses() -> None:
    # §3.2.1: the transaction layer, not the parser, deals with a branch of just "z9hG4bK".
    assert request("badbranch").top_via.branch == "z9hG4bK"


def test_unkscm_parses_and_the_uas_answers_416() -> None:
    # §3.3.2: syntactically valid; a UAS answers 416 - SipUri.parse says so.
    req = request("unkscm")
    assert req.ruri == "nobodyKnowsThisScheme:totallyopaquecontent"
    with pytest.raises(UnsupportedUriScheme) as info:
        SipUri.parse(req.uri)
    assert info.value.status == 416


def test_novelsc_known_but_atypical_scheme() -> None:
    # §3.3.3: an absolute URI of another scheme is kept as text.
    req = request("novelsc")
    assert req.ruri == "soap.beep://192.0.2.103:3002"


def test_unksm2_unknown_schemes_in_headers() -> None:
    # §3.3.4
    req = request("unksm2")
    assert req.to.uri == "isbn:2983792873"
    assert req.from_.uri == "http://www.example.com"
    assert req.from_.tag == "3234233"
    assert Address.parse(req.headers.get_all("contact")[0]).uri == "name:John_Smith"


def test_bext01_require_values_for_the_uas() -> None:
    # §3.3.5: parses; the UAS answers 420 with Unsupported listing these.
    req = request("bext01")
    assert req.headers.get_all("require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert req.headers.get_all("proxy-require") == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]


def test_invut_unknown_content_type() -> None:
    # §3.3.6: parses; the UAS answers 415.
    req = request("invut")
    assert req.content_type == "application/unknownformat"
    assert len(req.body) == 40


def test_regaut01_unknown_authorization_scheme() -> None:
    assert (
        request("regaut01").headers.get("authorization") == "NoOneKnowsThisScheme opaque-data=here"
    )


def test_bcast_broadcast_via_parses() -> None:
    # §3.3.10: the response is well formed; what to do with it is not the parser's business.
    resp = response("bcast")
    assert [v.host for v in resp.vias] == ["192.0.2.198", "255.255.255.255"]


def test_zeromf_max_forwards_zero() -> None:
    assert request("zeromf").headers.get("max-forwards") == "0"


def test_cparam01_contact_parameter_belongs_to_the_header() -> None:
    # §3.3.12: no <>, so ;unknownparam is a contact-param, not a URI parameter.
    contact = Address.parse(request("cparam01").headers.get_all("contact")[0])
    assert contact.params == {"unknownparam": None}
    assert contact.sip_uri.params == {}
    assert contact.sip_uri.user == "+19725552222"


def test_cparam02_uri_parameter_inside_brackets() -> None:
    contact = Address.parse(request("cparam02").headers.get_all("contact")[0])
    assert contact.params == {}
    assert contact.sip_uri.params == {"unknownparam": None}


def test_regescrt_escaped_header_in_contact_uri() -> None:
    # §3.3.14: valid; a registrar may keep or refuse it.
    contact = Address.parse(request("regescrt").headers.get_all("contact")[0])
    assert contact.sip_uri.headers == "Route=%3Csip:sip.example.com%3E"
    assert request("regescrt").headers.get("content-length") == "0"  # "L:0"


def test_sdp01_unacceptable_accept() -> None:
    assert request("sdp01").headers.get_all("accept") == ["text/nobodyKnowsThis"]


def test_inv2543_rfc2543_syntax() -> None:
    # §3.4.1: no branch, no From tag, no Max-Forwards, no Content-Length (UDP: body to the end).
    req = request("inv2543")
    assert req.top_via.branch is None
    assert req.from_.tag is None
    assert "max-forwards" not in req.headers
    assert len(req.body) == 105
    assert req.to.sip_uri.params == {}
    assert req.to.params == {"user": "phone"}


def test_baddate_accepted_as_we_do_not_use_date() -> None:
    # §3.1.2.12: "shouldn't [reject] unless the contents of the Date header field were actually
    # important to its processing" - we never read Date.
    req = request("baddate")
    assert req.headers.get("date") == "Fri, 01 Jan 2010 16:00:00 EST"
