"""The agents' location service (RFC 3261 §10.3)."""

from __future__ import annotations

import pytest

from gateway.edge.registrar import (
    Binding,
    ContactSpec,
    IntervalTooBrief,
    OutOfOrderRegister,
    Registrar,
    contact_values,
)
from gateway.sip.errors import BadRequest, SipError
from gateway.sip.message import parse_message
from gateway.sip.peer import Peer
from gateway.sip.uri import SipUri

PHONE = Peer("UDP", "203.0.113.7", 40123)
OTHER = Peer("UDP", "198.51.100.9", 5060)
T0 = 1000.0


def c(text: str) -> ContactSpec:
    return ContactSpec.parse(text)


def uri(text: str) -> SipUri:
    return SipUri.parse(text)


def reg(
    r: Registrar,
    contacts: list[str],
    expires: int | None = None,
    *,
    call_id: str = "cid-1",
    cseq: int = 1,
    source: Peer = PHONE,
    now: float = T0,
    user: str = "1001",
) -> list[Binding]:
    return r.register(user, [c(x) for x in contacts], expires, call_id, cseq, source, now)


# --------------------------------------------------------------------------- ContactSpec


def test_contact_spec_parse() -> None:
    spec = c('"Agent" <sip:1001@10.0.0.5:5062;transport=udp>;expires=120;q=0.7;+sip.instance="<x>"')
    assert spec.uri == uri("sip:1001@10.0.0.5:5062;transport=udp")
    assert spec.expires == 120 and spec.q == 0.7
    assert spec.params == (("+sip.instance", '"<x>"'),)
    assert not spec.wildcard
    assert c("*").wildcard
    assert c("sip:1001@10.0.0.5").expires is None


@pytest.mark.parametrize(
    "text",
    [
        "<sip:a@b>;expires=soon",
        "<sip:a@b>;expires",
        "<sip:a@b>;q=1.5",
        "<sip:a@b>;q=0.1234",
        "<tel:+15551234>",
        "<sip:a@b",
    ],
)
def test_bad_contact_is_400(text: str) -> None:
    with pytest.raises(BadRequest):
        c(text)


def test_contact_specs_from_a_real_register() -> None:
    raw = (
        b"REGISTER sip:ccgw.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK776;rport\r\n"
        b"From: <sip:1001@ccgw.test>;tag=a\r\nTo: <sip:1001@ccgw.test>\r\n"
        b"Call-ID: reg-1\r\nCSeq: 7 REGISTER\r\n"
        b"Contact: <sip:1001@10.0.0.5:5062>;expires=60, <sip:1001@10.0.0.6>;q=0.5\r\n"
        b"Expires: 300\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw)
    specs = ContactSpec.parse_all(msg.headers.get_all("contact"))
    r = Registrar()
    out = r.register("1001", specs, 300, msg.call_id, msg.cseq.seq, PHONE, T0)
    assert [(b.contact.host, b.remaining(T0)) for b in out] == [("10.0.0.5", 60), ("10.0.0.6", 300)]


# --------------------------------------------------------------------------- §10.3 steps 6–8


def test_register_lookup_and_expires_rules() -> None:
    r = Registrar(min_expires=60, max_expires=3600, default_expires=1800)
    out = reg(r, ["<sip:1001@10.0.0.5>;expires=120", "<sip:1001@10.0.0.6>"], 600)
    assert {(b.contact.host, b.expires_at - T0) for b in out} == {
        ("10.0.0.5", 120.0),  # the contact's own expires wins over the header
        ("10.0.0.6", 600.0),
    }
    out = reg(r, ["<sip:1001@10.0.0.7>"], None, cseq=2)  # neither: the default
    assert _host(out, "10.0.0.7").expires_at == T0 + 1800
    out = reg(r, ["<sip:1001@10.0.0.8>"], 99999, cseq=3)  # too long: cut to the maximum
    assert _host(out, "10.0.0.8").expires_at == T0 + 3600
    assert r.bindings_count() == 4
    assert all(b.source == PHONE and b.user == "1001" for b in r.lookup("1001", T0))
    assert r.lookup("1002", T0) == []


def _host(bindings: list[Binding], host: str) -> Binding:
    return next(b for b in bindings if b.contact.host == host)


def test_query_without_contacts() -> None:
    r = Registrar()
    reg(r, ["<sip:1001@10.0.0.5>"], 600)
    out = r.register("1001", [], None, "cid-9", 1, PHONE, T0 + 1)
    assert len(out) == 1 and r.bindings_count() == 1


def test_refresh_updates_source_and_keeps_one_binding() -> None:
    r = Registrar()
    reg(r, ["<sip:1001@10.0.0.5>"], 600, cseq=1)
    out = reg(r, ["<sip:1001@10.0.0.5>"], 900, cseq=2, source=OTHER, now=T0 + 100)
    assert len(out) == 1
    b = out[0]
    assert b.source == OTHER and b.expires_at == T0 + 1000 and b.cseq == 2
    assert b.updated_at == b.last_seen == T0 + 100


def test_uri_comparison_finds_the_binding() -> None:
    r = Registrar()
    reg(r, ["<sip:1001@PHONE.example:5062>"], 600, cseq=1)
    out = reg(r, ["<sip:1001@phone.example:5062>"], 600, cseq=2)
    assert len(out) == 1


def test_expires_zero_removes_one() -> None:
    r = Registrar()
    reg(r, ["<sip:1001@10.0.0.5>", "<sip:1001@10.0.0.6>"], 600)
    out = reg(r, ["<sip:1001@10.0.0.5>;expires=0"], 600, cseq=2)
    assert [b.contact.host for b in out] == ["10.0.0.6"]
    out = reg(r, ["<sip:1001@10.0.0.6>"], 0, cseq=3)
    assert out == [] and r.bindings_count() == 0 and r.users() == []


def test_wildcard_removes_all() -> None:
    r = Registrar()
    reg(r, ["<sip:1001@10.0.0.5>", "<sip:1001@10.0.0.6>"], 600)
    reg(r, ["<sip:1001@10.0.0.9>"], 600, call_id="cid-2")
    assert reg(r, ["*"], 0, call_id="cid-3", cseq=1) == []
    assert r.lookup("1001", T0) == []


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [(["*"], 600), (["*"], None), (["*", "<sip:1001@10.0.0.5>"], 0)],
)
def test_wildcard_misuse_is_400(contacts: list[str], expires: int | None) -> None:
    r = Registrar()
    reg(r, ["<sip:1001@10.0.0.5>"], 600)
    with pytest.raises(BadRequest):
        reg(r, contacts, expires, cseq=2)
    assert r.bindings_count() == 1


def test_interval_too_brief() -> None:
    r = Registrar(min_expires=60)
    reg(r, ["<sip:1001@10.0.0.5>"], 600)
    with pytest.raises(IntervalTooBrief) as exc:
        reg(r, ["<sip:1001@10.0.0.6>", "<sip:1001@10.0.0.5>;expires=59"], 600, cseq=2)
    err = exc.value
    assert isinstance(err, SipError)
    assert (err.status, err.reason) == (423, "Interval Too Brief")
    assert err.headers() == [("Min-Expires", "60")]
    # nothing changed: the request is all or nothing
    assert [b.contact.host for b in r.lookup("1001", T0)] == ["10.0.0.5"]
    # exactly the minimum passes, and 0 is never "too brief"
    reg(r, ["<sip:1001@10.0.0.6>;expires=60", "<sip:1001@10.0.0.5>;expires=0"], 600, cseq=3)
    assert [b.contact.host for b in r.lookup("1001", T0)] == ["10.0.0.6"]


def test_same_call_id_needs_higher_cseq() -> None:
    r = Registrar()
    reg(r, ["<sip:1001@10.0.0.5>"], 600, cseq=5)
    for cseq in (5, 4):
        with pytest.raises(OutOfOrderRegister) as exc:
            reg(r, ["<sip:1001@10.0.0.5>"], 0, cseq=cseq, now=T0 + 1)
        assert exc.value.status == 500
        with pytest.raises(OutOfOrderRegister):
            reg(r, ["*"], 0, cseq=cseq)
    assert r.bindings_count() == 1
    # another Call-ID (the phone restarted) may use any CSeq
    out = reg(r, ["<sip:1001@10.0.0.5>"], 900, call_id="cid-new", cseq=1, now=T0 + 2)
    assert out[0].call_id == "cid-new" and out[0].expires_at == T0 + 902


def test_max_contacts_replaces_the_stalest() -> None:
    r = Registrar(max_contacts=2)
    reg(r, ["<sip:1001@10.0.0.1>"], 600, call_id="a", now=T0)
    reg(r, ["<sip:1001@10.0.0.2>"], 600, call_id="b", now=T0 + 1)
    reg(r, ["<sip:1001@10.0.0.1>"], 600, call_id="a", cseq=2, now=T0 + 2)  # refreshed
    out = reg(r, ["<sip:1001@10.0.0.3>"], 600, call_id="c", now=T0 + 3)
    assert sorted(b.contact.host for b in out) == ["10.0.0.1", "10.0.0.3"]
    assert r.bindings_count() == 2


def test_lookup_order_q_then_most_recent() -> None:
    r = Registrar()
    reg(r, ["<sip:1001@10.0.0.1>;q=0.5"], 600, call_id="a", now=T0)
    reg(r, ["<sip:1001@10.0.0.2>"], 600, call_id="b", now=T0 + 1)
    reg(r, ["<sip:1001@10.0.0.3>"], 600, call_id="c", now=T0 + 2)
    reg(r, ["<sip:1001@10.0.0.4>;q=0.9"], 600, call_id="d", now=T0 + 3)
    hosts = [b.contact.host for b in r.lookup("1001", T0 + 4)]
    assert hosts == ["10.0.0.3", "10.0.0.2", "10.0.0.4", "10.0.0.1"]


def test_expire_and_lookup_skip_old_bindings() -> None:
    r = Registrar()
    reg(r, ["<sip:1001@10.0.0.1>;expires=60", "<sip:1001@10.0.0.2>;expires=120"], None)
    reg(r, ["<sip:1002@10.0.0.3>;expires=60"], None, user="1002")
    assert len(r.lookup("1001", T0 + 60)) == 1  # expires_at is exclusive
    gone = r.expire(T0 + 60)
    assert sorted(b.contact.host for b in gone) == ["10.0.0.1", "10.0.0.3"]
    assert r.bindings_count() == 1 and r.users() == ["1001"]
    assert r.expire(T0 + 60) == []
    assert [b.contact.host for b in r.expire(T0 + 500)] == ["10.0.0.2"]
    assert r.bindings_count() == 0


# --------------------------------------------------------------------------- keep-alive


def test_ping_bookkeeping() -> None:
    r = Registrar(max_ping_failures=3)
    reg(r, ["<sip:1001@10.0.0.1>", "<sip:1001@10.0.0.2>"], 600)
    assert r.due_for_ping(T0 + 29, 30) == []
    assert len(r.due_for_ping(T0 + 30, 30)) == 2
    alive = r.mark_alive("1001", uri("sip:1001@10.0.0.1"), T0 + 30)
    assert alive is not None and alive.last_seen == T0 + 30
    assert [b.contact.host for b in r.due_for_ping(T0 + 31, 30)] == ["10.0.0.2"]

    u2 = uri("sip:1001@10.0.0.2")
    assert r.mark_failed("1001", u2, T0 + 31) is None
    assert r.mark_failed("1001", u2, T0 + 32) is None
    r.mark_alive("1001", u2, T0 + 33)  # an answer resets the count
    assert r.mark_failed("1001", u2, T0 + 34) is None
    assert r.mark_failed("1001", u2, T0 + 35) is None
    removed = r.mark_failed("1001", u2, T0 + 36)
    assert removed is not None and removed.contact == u2 and removed.failures == 3
    assert [b.contact.host for b in r.lookup("1001", T0 + 37)] == ["10.0.0.1"]
    assert r.mark_failed("1001", u2, T0 + 38) is None
    assert r.mark_alive("nobody", u2, T0) is None
    # expired bindings are not pinged
    assert r.due_for_ping(T0 + 600, 30) == []


# --------------------------------------------------------------------------- 200 OK Contact


def test_contact_values_for_200_ok() -> None:
    r = Registrar()
    out = reg(
        r,
        ['<sip:1001@10.0.0.1;transport=tcp>;+sip.instance="<urn:x>";expires=120', "<sip:1001@h>"],
        600,
    )
    assert contact_values(out, T0 + 20.4) == [
        '<sip:1001@10.0.0.1;transport=tcp>;+sip.instance="<urn:x>";expires=100',
        "<sip:1001@h>;expires=580",
    ]
    out = reg(r, ["<sip:1001@10.0.0.1;transport=tcp>;q=0.25"], 600, cseq=2)
    assert contact_values(out[-1:], T0)[0] == "<sip:1001@10.0.0.1;transport=tcp>;q=0.25;expires=600"
    assert out[-1].remaining(T0 + 10_000) == 0


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        Registrar(min_expires=100, default_expires=50)
    with pytest.raises(ValueError):
        Registrar(max_contacts=0)


def test_reregister_after_expiry_replaces_the_old_binding() -> None:
    r = Registrar()
    reg(r, ["<sip:1001@10.0.0.1>;expires=60", "<sip:1001@10.0.0.2>;expires=60"], None, cseq=5)
    # the old binding is gone, so its CSeq no longer orders anything
    out = reg(r, ["<sip:1001@10.0.0.1>"], 600, cseq=1, now=T0 + 61)
    assert [b.contact.host for b in out] == ["10.0.0.1"]
    assert r.bindings_count() == 2  # 10.0.0.2 waits for expire() to report it
    assert r.bindings_count(T0 + 61) == 1
    assert [b.contact.host for b in r.expire(T0 + 62)] == ["10.0.0.2"]
    assert [b.contact.host for b in r.lookup("1001", T0 + 62)] == ["10.0.0.1"]
