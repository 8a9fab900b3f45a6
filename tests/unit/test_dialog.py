"""Dialogs (RFC 3261 §12): creation, route sets, in-dialog requests, CSeq order, target refresh."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sip.dialog import CONTACT_METHODS, Dialog
from gateway.sip.errors import CallDoesNotExist, SipError
from gateway.sip.message import Request, Response, Via, make_response, parse_message
from gateway.sip.uri import SipUri

RR = ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>", "<sip:p3.example.com;lr>")


def invite(
    *,
    record_route: tuple[str, ...] = (),
    rr_one_line: bool = False,
    contact: str | None = "<sip:alice@192.0.2.10:5060;transport=udp>",
    cseq: int = 101,
) -> Request:
    lines = [
        "INVITE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1",
        "Max-Forwards: 70",
        'From: "Alice" <sip:alice@example.com>;tag=atag',
        "To: Bob <sip:bob@example.com>",
        "Call-ID: call-77@192.0.2.10",
        f"CSeq: {cseq} INVITE",
    ]
    if record_route:
        if rr_one_line:
            lines.append("Record-Route: " + ", ".join(record_route))
        else:
            lines += [f"Record-Route: {r}" for r in record_route]
    if contact:
        lines.append(f"Contact: {contact}")
    msg = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def ok_for(
    request: Request,
    *,
    status: int = 200,
    to_tag: str | None = "btag",
    contact: str | None = "<sip:bob@198.51.100.5:5062>",
) -> Response:
    r = make_response(request, status, to_tag=to_tag)
    if contact:
        r.headers.add("Contact", contact)
    return parse_message(bytes(r))  # type: ignore[return-value]


VIA = Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bKnew"})


def uac(record_route: tuple[str, ...] = (), **kw: object) -> Dialog:
    inv = invite(record_route=record_route)
    return Dialog.from_uac(inv, ok_for(inv, **kw), "<sip:gw@192.0.2.1:5060>")  # type: ignore[arg-type]


def uas(record_route: tuple[str, ...] = ()) -> Dialog:
    return Dialog.from_uas(invite(record_route=record_route), "btag", "<sip:gw@192.0.2.1:5060>")


def roundtrip(r: Request) -> Request:
    out = parse_message(bytes(r))
    assert isinstance(out, Request)
    return out


# --------------------------------------------------------------------------- creation


@pytest.mark.parametrize("one_line", [False, True])
def test_from_uac(one_line: bool) -> None:
    inv = invite(record_route=RR, rr_one_line=one_line)
    d = Dialog.from_uac(inv, ok_for(inv), "<sip:gw@192.0.2.1>")
    assert d.call_id == "call-77@192.0.2.10"
    assert d.local_tag == "atag" and d.remote_tag == "btag"
    assert d.id == ("call-77@192.0.2.10", "atag", "btag")
    assert d.local_uri == '"Alice" <sip:alice@example.com>'
    assert d.remote_uri == '"Bob" <sip:bob@example.com>'
    assert str(d.remote_target) == "sip:bob@198.51.100.5:5062"
    assert d.route_set == list(reversed(RR))  # RFC 3261 §12.1.2
    assert d.local_seq == 101 and d.remote_seq is None
    assert d.local_contact == "<sip:gw@192.0.2.1>"


def test_from_uac_without_contact_or_tag() -> None:
    inv = invite()
    d = Dialog.from_uac(inv, ok_for(inv, to_tag=None, contact=None), "<sip:gw@h>")
    assert d.remote_tag == ""
    assert str(d.remote_target) == "sip:bob@example.com"
    assert d.route_set == []


def test_from_uac_early_dialog_from_183() -> None:
    inv = invite(record_route=RR[:1])
    d = Dialog.from_uac(inv, ok_for(inv, status=183), "<sip:gw@h>")
    assert d.remote_tag == "btag" and d.route_set == [RR[0]]


@pytest.mark.parametrize("one_line", [False, True])
def test_from_uas(one_line: bool) -> None:
    inv = invite(record_route=RR, rr_one_line=one_line)
    d = Dialog.from_uas(inv, "btag", "<sip:gw@192.0.2.1>")
    assert d.id == ("call-77@192.0.2.10", "btag", "atag")
    assert d.local_uri == '"Bob" <sip:bob@example.com>'
    assert d.remote_uri == '"Alice" <sip:alice@example.com>'
    assert isinstance(d.remote_target, SipUri)
    assert d.remote_target.host == "192.0.2.10" and d.remote_target.port == 5060
    assert d.route_set == list(RR)  # RFC 3261 §12.1.1: in order
    assert d.remote_seq == 101 and d.local_seq == 0


def test_from_uas_without_contact_falls_back_to_from() -> None:
    d = Dialog.from_uas(invite(contact=None), "btag", "<sip:gw@h>")
    assert str(d.remote_target) == "sip:alice@example.com"


def test_tel_contact_kept_as_text() -> None:
    inv = invite(contact="<tel:+8621555>")
    d = Dialog.from_uas(inv, "t", "<sip:gw@h>")
    assert d.remote_target == "tel:+8621555"
    assert d.next_hop() == "tel:+8621555"


# --------------------------------------------------------------------------- building requests


@pytest.mark.parametrize("method", ["BYE", "INFO", "OPTIONS", "MESSAGE", "INVITE", "UPDATE",
                                    "REFER", "NOTIFY", "SUBSCRIBE", "PRACK"])  # fmt: skip
@pytest.mark.parametrize("side", ["uac", "uas"])
def test_create_request_headers(method: str, side: str) -> None:
    d = uac() if side == "uac" else uas()
    seq0 = d.local_seq
    r = roundtrip(d.create_request(method, VIA))
    assert r.method == method
    assert d.local_seq == seq0 + 1
    assert r.cseq.seq == seq0 + 1 and r.cseq.method == method
    assert r.call_id == d.call_id
    assert r.from_.tag == d.local_tag and r.to.tag == d.remote_tag
    assert str(r.top_via) == str(VIA) and len(r.vias) == 1
    assert r.headers.get("max-forwards") == "70"
    has_contact = r.headers.get("contact") is not None
    assert has_contact == (method in CONTACT_METHODS)
    if has_contact:
        assert r.headers.get("contact") == d.local_contact
    assert r.body == b"" and r.headers.get("content-type") is None


def test_cseq_increments_per_request() -> None:
    d = uas()
    seqs = [d.create_request("INFO", VIA).cseq.seq for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5]


def test_create_request_body_and_extra_headers() -> None:
    d = uac()
    sdp = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n"
    r = roundtrip(d.create_request("INVITE", VIA, sdp, extra_headers=[("Supported", "timer")]))
    assert r.body == sdp and r.content_type == "application/sdp"
    assert r.headers.get("supported") == "timer"
    r2 = roundtrip(
        d.create_request("INFO", VIA, b"Signal=5", content_type="application/dtmf-relay")
    )
    assert r2.content_type == "application/dtmf-relay"


def test_create_request_to_without_remote_tag() -> None:
    inv = invite()
    d = Dialog.from_uac(inv, ok_for(inv, to_tag=None), "<sip:gw@h>")
    r = roundtrip(d.create_request("BYE", VIA))
    assert r.to.tag is None


@pytest.mark.parametrize("method", ["ACK", "CANCEL"])
def test_create_request_refuses_ack_and_cancel(method: str) -> None:
    d = uac()
    with pytest.raises(ValueError):
        d.create_request(method, VIA)
    assert d.local_seq == 101


def test_create_ack_keeps_cseq_and_routes() -> None:
    d = uac(RR)
    seq = d.local_seq
    ack = roundtrip(d.create_ack(seq, VIA))
    assert ack.method == "ACK" and ack.cseq.seq == seq and ack.cseq.method == "ACK"
    assert d.local_seq == seq
    assert ack.headers.get_all("route") == list(reversed(RR))
    assert ack.to.tag == "btag" and ack.from_.tag == "atag"
    assert ack.headers.get("contact") is None
    ack2 = roundtrip(d.create_ack(seq, VIA, b"v=0\r\n"))
    assert ack2.content_type == "application/sdp" and ack2.body == b"v=0\r\n"


# --------------------------------------------------------------------------- routing


def test_no_route_set_uses_remote_target() -> None:
    d = uac()
    r = d.create_request("BYE", VIA)
    assert r.uri == "sip:bob@198.51.100.5:5062"
    assert r.headers.get_all("route") == []
    assert str(d.next_hop()) == "sip:bob@198.51.100.5:5062"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_loose_routing(n: int) -> None:
    d = uas(RR[:n])
    r = roundtrip(d.create_request("BYE", VIA))
    assert r.uri == str(d.remote_target)
    assert r.headers.get_all("route") == list(RR[:n])
    assert str(d.next_hop()) == "sip:p1.example.com;lr"


@pytest.mark.parametrize(
    "first,expect_ruri",
    [
        ("<sip:strict.example.com>", "sip:strict.example.com"),
        (
            "<sip:strict.example.com:5070;transport=tcp>",
            "sip:strict.example.com:5070;transport=tcp",
        ),
        ("<sip:strict.example.com;method=INVITE>", "sip:strict.example.com"),
        ("<sip:strict.example.com?Subject=x>", "sip:strict.example.com"),
    ],
)
@pytest.mark.parametrize("rest", [(), ("<sip:p2.example.com;lr>",)])
def test_strict_routing(first: str, expect_ruri: str, rest: tuple[str, ...]) -> None:
    # RFC 3261 §12.2.1.1: the first route URI becomes the Request-URI, the remote target goes last.
    d = uas((first, *rest))
    r = roundtrip(d.create_request("BYE", VIA))
    assert r.uri == expect_ruri
    assert r.headers.get_all("route") == [*rest, f"<{d.remote_target}>"]
    assert str(d.next_hop()) == first[1:-1]


def test_uac_and_uas_route_sets_mirror() -> None:
    inv = invite(record_route=RR)
    a = Dialog.from_uac(inv, ok_for(inv), "<sip:alice@192.0.2.10>")
    b = Dialog.from_uas(inv, "btag", "<sip:bob@198.51.100.5:5062>")
    assert a.route_set == list(reversed(b.route_set))
    assert str(a.next_hop()) == "sip:p3.example.com;lr"
    assert str(b.next_hop()) == "sip:p1.example.com;lr"


# --------------------------------------------------------------------------- receiving


def _peer_dialogs() -> tuple[Dialog, Dialog]:
    inv = invite()
    a = Dialog.from_uac(inv, ok_for(inv), "<sip:alice@192.0.2.10:5060>")
    b = Dialog.from_uas(inv, "btag", "<sip:bob@198.51.100.5:5062>")
    return a, b


def test_requests_cross_between_uac_and_uas() -> None:
    a, b = _peer_dialogs()
    bye = roundtrip(b.create_request("BYE", VIA))
    a.receive_request(bye)
    assert a.remote_seq == 1
    info = roundtrip(a.create_request("INFO", VIA))
    b.receive_request(info)
    assert b.remote_seq == 102


@pytest.mark.parametrize("delta,ok", [(-5, False), (-1, False), (0, True), (1, True), (1000, True)])
def test_cseq_order(delta: int, ok: bool) -> None:
    a, b = _peer_dialogs()
    b.local_seq = 50
    a.receive_request(roundtrip(b.create_request("INFO", VIA)))  # remote_seq = 51
    b.local_seq = 51 + delta - 1
    r = roundtrip(b.create_request("INFO", VIA))
    if ok:
        a.receive_request(r)
        assert a.remote_seq == 51 + delta
    else:
        with pytest.raises(SipError) as exc:
            a.receive_request(r)
        assert exc.value.status == 500 and exc.value.reason == "Server Internal Error"
        assert a.remote_seq == 51


def test_ack_is_not_counted() -> None:
    a, b = _peer_dialogs()
    b.receive_request(roundtrip(a.create_request("INFO", VIA)))
    assert b.remote_seq == 102
    b.receive_request(roundtrip(a.create_ack(101, VIA)))  # lower, but ACK carries the INVITE's
    assert b.remote_seq == 102


@pytest.mark.parametrize("field", ["call-id", "from-tag", "to-tag"])
def test_request_of_another_dialog_is_481(field: str) -> None:
    a, b = _peer_dialogs()
    r = b.create_request("BYE", VIA)
    if field == "call-id":
        r.set_header("Call-ID", "other@h")
    elif field == "from-tag":
        r.set_header("From", "<sip:bob@example.com>;tag=zzz")
    else:
        r.set_header("To", "<sip:alice@example.com>;tag=zzz")
    with pytest.raises(CallDoesNotExist):
        a.receive_request(roundtrip(r))


@pytest.mark.parametrize(
    "method,refresh", [("INVITE", True), ("UPDATE", True), ("BYE", False), ("INFO", False)]
)
def test_target_refresh_on_request(method: str, refresh: bool) -> None:
    a, b = _peer_dialogs()
    r = b.create_request(method, VIA)
    r.set_header("Contact", "<sip:bob@203.0.113.50:6000>")
    old = str(a.remote_target)
    a.receive_request(roundtrip(r))
    assert str(a.remote_target) == ("sip:bob@203.0.113.50:6000" if refresh else old)


def test_reinvite_without_contact_keeps_target() -> None:
    a, b = _peer_dialogs()
    r = b.create_request("INVITE", VIA)
    r.headers.remove("contact")
    old = str(a.remote_target)
    a.receive_request(roundtrip(r))
    assert str(a.remote_target) == old


@pytest.mark.parametrize(
    "method,status,refresh",
    [("INVITE", 200, True), ("UPDATE", 200, True), ("INVITE", 180, False),
     ("INVITE", 488, False), ("BYE", 200, False)],
)  # fmt: skip
def test_target_refresh_on_response(method: str, status: int, refresh: bool) -> None:
    a, _ = _peer_dialogs()
    r = roundtrip(a.create_request(method, VIA))
    old = str(a.remote_target)
    a.receive_response(ok_for(r, status=status, contact="<sip:bob@203.0.113.60>"))
    assert str(a.remote_target) == ("sip:bob@203.0.113.60" if refresh else old)


def test_route_set_not_changed_by_reinvite() -> None:
    # RFC 3261 §12.2: the route set is fixed when the dialog is established.
    d = uac(RR)
    before = list(d.route_set)
    r = roundtrip(d.create_request("INVITE", VIA))
    resp = make_response(r, 200, to_tag="btag")
    resp.headers.add("Record-Route", "<sip:new.example.com;lr>")
    resp.headers.add("Contact", "<sip:bob@203.0.113.60>")
    d.receive_response(parse_message(bytes(resp)))  # type: ignore[arg-type]
    assert d.route_set == before


@given(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=30))
def test_cseq_acceptance_is_monotonic(seqs: list[int]) -> None:
    a, b = _peer_dialogs()
    highest: int | None = None
    for s in seqs:
        b.local_seq = s - 1
        r = roundtrip(b.create_request("INFO", VIA))
        if highest is not None and s < highest:
            with pytest.raises(SipError):
                a.receive_request(r)
        else:
            a.receive_request(r)
            highest = s
        assert a.remote_seq == highest
