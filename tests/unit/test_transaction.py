"""The sans-I/O transaction layer (RFC 3261 §17, RFC 6026, RFC 3581) with a fake clock."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.peer import Peer
from gateway.sip.transaction import (
    INVITE_CLIENT,
    INVITE_SERVER,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    AckReceived,
    AckTimeout,
    CancelReceived,
    Event,
    Input,
    RequestReceived,
    ResponseReceived,
    State,
    StrayResponse,
    TimerConfig,
    TransactionLayer,
    TransactionTimeout,
    build_cancel,
    build_non2xx_ack,
    classify,
    is_reliable,
)

UDP = Peer("UDP", "192.0.2.10", 5060)
TCP = Peer("TCP", "192.0.2.10", 5060)
TLS = Peer("TLS", "192.0.2.10", 5061)
PEERS = [UDP, TCP, TLS]
NON_INVITE_METHODS = ["OPTIONS", "BYE", "REGISTER", "INFO", "MESSAGE", "UPDATE", "NOTIFY", "REFER"]
FAILURES = [300, 302, 401, 404, 408, 480, 486, 487, 500, 503, 600, 603]
SUCCESSES = [200, 202, 299]
PROVISIONALS = [100, 180, 181, 183]


def req(
    method: str = "INVITE",
    *,
    branch: str = "z9hG4bKaaa1",
    via_host: str = "192.0.2.10",
    via_port: int | None = 5060,
    transport: str = "UDP",
    via_params: str = "",
    more_vias: tuple[str, ...] = (),
    from_tag: str = "ft1",
    to_tag: str | None = None,
    call_id: str = "call-1@192.0.2.10",
    cseq: int = 1,
    cseq_method: str | None = None,
    ruri: str = "sip:bob@192.0.2.1",
    routes: tuple[str, ...] = (),
    body: bytes = b"",
) -> Request:
    hp = via_host if via_port is None else f"{via_host}:{via_port}"
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{transport} {hp};branch={branch}{via_params}",
    ]
    lines += [f"Via: {v}" for v in more_vias]
    lines.append("Max-Forwards: 70")
    lines += [f"Route: {r}" for r in routes]
    lines.append(f"From: <sip:alice@example.com>;tag={from_tag}")
    lines.append("To: <sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else ""))
    lines.append(f"Call-ID: {call_id}")
    lines.append(f"CSeq: {cseq} {cseq_method or method}")
    lines.append("Contact: <sip:alice@192.0.2.10:5060>")
    data = ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def ack_for(invite: Request, to_tag: str | None, *, branch: str | None = None) -> Request:
    """An ACK like a UA sends it: same branch for non-2xx, a new one (``branch``) for 2xx."""
    via = invite.top_via
    return req(
        "ACK",
        branch=branch or (via.branch or ""),
        via_host=via.host,
        via_port=via.port,
        transport=via.transport,
        from_tag=invite.from_.tag or "",
        to_tag=to_tag,
        call_id=invite.call_id,
        cseq=invite.cseq.seq,
        ruri=invite.uri,
    )


def cancel_for(invite: Request) -> Request:
    out = reparse(build_cancel(invite))
    assert isinstance(out, Request)
    return out


def reparse(msg: Request | Response) -> Request | Response:
    out = parse_message(bytes(msg))
    return out


def resp(request: Request, status: int, to_tag: str | None = "tt1") -> Response:
    return make_response(request, status, to_tag=to_tag)


class Harness:
    """A layer with a fake clock."""

    def __init__(self, T1: float = 0.5, T2: float = 4.0, T4: float = 5.0) -> None:
        self.cfg = TimerConfig(T1, T2, T4)
        self.tl = TransactionLayer(self.cfg)
        self.now = 0.0

    def recv(self, msg: Request | Response, peer: Peer = UDP) -> None:
        self.tl.receive(reparse(msg), peer, self.now)

    def send(self, request: Request, peer: Peer = UDP) -> str:
        return self.tl.send_request(request, peer, self.now)

    def respond(self, txn_id: str, response: Response) -> None:
        self.tl.send_response(txn_id, response, self.now)

    def out(self) -> list[Request | Response]:
        return [parse_message(d) for d, _ in self.tl.datagrams_to_send()]

    def out_peers(self) -> list[tuple[Request | Response, Peer]]:
        return [(parse_message(d), p) for d, p in self.tl.datagrams_to_send()]

    def events(self) -> list[Event]:
        out: list[Event] = []
        while (ev := self.tl.next_event()) is not None:
            out.append(ev)
        return out

    def run_until(self, t: float) -> list[tuple[float, Request | Response]]:
        """Fire every timer up to ``t`` at its deadline; what was sent, with times."""
        sent: list[tuple[float, Request | Response]] = []
        while (deadline := self.tl.get_timer()) is not None and deadline <= t:
            self.now = deadline
            self.tl.handle_timer(deadline)
            sent += [(deadline, m) for m in self.out()]
        self.now = t
        return sent

    def new_server(self, request: Request, peer: Peer = UDP) -> str:
        self.recv(request, peer)
        (ev,) = self.events()
        assert isinstance(ev, RequestReceived)
        self.out()
        return ev.txn_id


def backoff(first: float, cap: float | None, until: float) -> list[float]:
    """Fire times of a timer that starts at ``first`` and doubles (capped) while < ``until``."""
    times: list[float] = []
    t, interval = first, first
    while t < until - 1e-9:
        times.append(t)
        interval = 2 * interval if cap is None else min(2 * interval, cap)
        t += interval
    return times


def approx_list(xs: list[float]) -> list[object]:
    return [pytest.approx(x) for x in xs]


def status_of(msgs: list[Request | Response]) -> list[object]:
    return [m.status if isinstance(m, Response) else m.method for m in msgs]


CONFIGS = [(0.5, 4.0, 5.0), (0.1, 0.4, 1.0), (1.0, 4.0, 5.0), (0.25, 8.0, 2.0), (0.5, 0.5, 5.0)]


# --------------------------------------------------------------------------- TimerConfig


def test_timer_defaults() -> None:
    cfg = TimerConfig()
    assert (cfg.T1, cfg.T2, cfg.T4) == (0.5, 4.0, 5.0)
    assert cfg.timer_a == cfg.timer_e == cfg.timer_g == 0.5
    assert cfg.timer_b == cfg.timer_f == cfg.timer_h == cfg.timer_l == cfg.timer_m == 32.0
    assert cfg.timer_j(False) == 32.0
    assert cfg.timer_d(False) == 32.0
    assert cfg.timer_i(False) == cfg.timer_k(False) == 5.0


@pytest.mark.parametrize("T1,T2,T4", CONFIGS)
def test_timer_reliable_waits_are_zero(T1: float, T2: float, T4: float) -> None:
    cfg = TimerConfig(T1, T2, T4)
    for fn in (cfg.timer_d, cfg.timer_i, cfg.timer_j, cfg.timer_k):
        assert fn(True) == 0.0
        assert fn(False) > 0
    assert cfg.timer_b == pytest.approx(64 * T1)
    assert cfg.timer_j(False) == pytest.approx(64 * T1)
    assert cfg.timer_i(False) == cfg.timer_k(False) == T4


@pytest.mark.parametrize(
    "args", [(0.0, 4.0, 5.0), (-1.0, 4.0, 5.0), (5.0, 4.0, 5.0), (0.5, 4.0, -1)]
)
def test_timer_config_rejects_nonsense(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        TimerConfig(*args)


def test_timer_config_is_frozen() -> None:
    cfg = TimerConfig()
    with pytest.raises(AttributeError):
        cfg.T1 = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "peer,reliable", [(UDP, False), (TCP, True), (TLS, True), (Peer("tcp", "h", 1), True)]
)
def test_is_reliable(peer: Peer, reliable: bool) -> None:
    assert is_reliable(peer) is reliable


@pytest.mark.parametrize("status,inp", [(100, Input.PROVISIONAL), (199, Input.PROVISIONAL),
                                         (200, Input.SUCCESS), (299, Input.SUCCESS),
                                         (300, Input.FAILURE), (699, Input.FAILURE)])  # fmt: skip
def test_classify(status: int, inp: Input) -> None:
    assert classify(status) is inp


# --------------------------------------------------------------------------- tables


_RESPONSES = ["PROVISIONAL", "SUCCESS", "FAILURE"]


@pytest.mark.parametrize(
    "table,states,inputs",
    [
        (INVITE_CLIENT, ["CALLING", "PROCEEDING", "COMPLETED", "ACCEPTED"], _RESPONSES),
        (NON_INVITE_CLIENT, ["TRYING", "PROCEEDING", "COMPLETED"], _RESPONSES),
        (
            INVITE_SERVER,
            ["PROCEEDING", "COMPLETED", "CONFIRMED", "ACCEPTED"],
            [*_RESPONSES, "REQUEST", "ACK"],
        ),
        (NON_INVITE_SERVER, ["TRYING", "PROCEEDING", "COMPLETED"], [*_RESPONSES, "REQUEST"]),
    ],
)
def test_tables_cover_every_network_and_tu_input(
    table: dict[tuple[State, Input], object], states: list[str], inputs: list[str]
) -> None:
    for s in states:
        for i in inputs:
            assert (State[s], Input[i]) in table, (s, i)
    # Terminated is never a source state.
    assert all(s is not State.TERMINATED for s, _ in table)


# --------------------------------------------------------------------------- INVITE client


@pytest.mark.parametrize("T1,T2,T4", CONFIGS)
def test_invite_client_timer_a_doubles_without_cap_then_timer_b(
    T1: float, T2: float, T4: float
) -> None:
    h = Harness(T1, T2, T4)
    inv = req()
    tid = h.send(inv)
    assert status_of(h.out()) == ["INVITE"]
    assert h.tl.state(tid) is State.CALLING
    sent = h.run_until(64 * T1 - 1e-6)
    # RFC 3261 §17.1.1.2: T1, 2T1, 4T1 ... (timer A is not capped at T2).
    assert [t for t, _ in sent] == approx_list(backoff(T1, None, 64 * T1))
    assert all(bytes(m) == bytes(inv) for _, m in sent)
    assert h.events() == []
    assert h.run_until(64 * T1) == []
    assert h.events() == [TransactionTimeout(tid, "INVITE")]
    assert h.tl.transaction_count() == 0
    assert h.tl.get_timer() is None


@pytest.mark.parametrize("peer", [TCP, TLS])
def test_invite_client_reliable_no_retransmit(peer: Peer) -> None:
    h = Harness()
    tid = h.send(req(transport=peer.transport), peer)
    h.out()
    assert h.tl.get_timer() == 32.0
    assert h.run_until(40) == []
    assert h.events() == [TransactionTimeout(tid, "INVITE")]


@pytest.mark.parametrize("status", PROVISIONALS)
def test_invite_client_provisional_stops_timer_a_and_b(status: int) -> None:
    h = Harness()
    inv = req()
    tid = h.send(inv)
    h.out()
    h.run_until(1.0)  # one retransmission at 0.5
    h.recv(resp(inv, status))
    assert h.tl.state(tid) is State.PROCEEDING
    (ev,) = h.events()
    assert isinstance(ev, ResponseReceived) and ev.txn_id == tid and ev.response.status == status
    # No more retransmissions and, in Proceeding, no timer B (RFC 3261 §17.1.1.2).
    assert h.run_until(1000) == []
    assert h.events() == []
    assert h.tl.get_timer() is None
    assert h.tl.state(tid) is State.PROCEEDING


def test_invite_client_provisionals_all_passed_up() -> None:
    h = Harness()
    inv = req()
    tid = h.send(inv)
    for st_ in (100, 180, 180, 183):
        h.recv(resp(inv, st_))
    assert [e.response.status for e in h.events() if isinstance(e, ResponseReceived)] == [
        100,
        180,
        180,
        183,
    ]
    assert h.tl.state(tid) is State.PROCEEDING


@pytest.mark.parametrize("via_provisional", [False, True])
@pytest.mark.parametrize("status", SUCCESSES)
@pytest.mark.parametrize("peer", PEERS)
def test_invite_client_2xx_accepted_passes_retransmissions(
    via_provisional: bool, status: int, peer: Peer
) -> None:
    h = Harness()
    inv = req(transport=peer.transport)
    tid = h.send(inv, peer)
    if via_provisional:
        h.recv(resp(inv, 180), peer)
    h.events()
    h.out()
    h.recv(resp(inv, status), peer)
    assert h.tl.state(tid) is State.ACCEPTED
    assert h.out() == []  # the TU ACKs a 2xx, not the transaction
    (ev,) = h.events()
    assert isinstance(ev, ResponseReceived) and ev.response.status == status
    # RFC 6026 §8.4: 2xx retransmissions (and other forks' 2xx) are passed up ...
    h.now = 10
    h.recv(resp(inv, status))
    h.recv(resp(inv, status, to_tag="other-fork"))
    evs = h.events()
    assert [type(e) for e in evs] == [ResponseReceived, ResponseReceived]
    # ... 1xx and non-2xx are absorbed.
    h.recv(resp(inv, 183))
    h.recv(resp(inv, 486))
    assert h.events() == [] and h.out() == []
    assert h.run_until(10 + 64 * 0.5 - 10 - 1e-3) == []
    # Timer M (64*T1 from the first 2xx at t=0) ends it; later 2xx are strays.
    h.run_until(32.0)
    assert h.tl.state(tid) is State.TERMINATED
    h.recv(resp(inv, status))
    (ev,) = h.events()
    assert isinstance(ev, StrayResponse) and ev.response.status == status


@pytest.mark.parametrize("via_provisional", [False, True])
@pytest.mark.parametrize("status", FAILURES)
def test_invite_client_non2xx_sends_ack(via_provisional: bool, status: int) -> None:
    h = Harness()
    inv = req(
        routes=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"),
        more_vias=("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKlower",),
    )
    tid = h.send(inv)
    if via_provisional:
        h.recv(resp(inv, 180, to_tag="tag-x"))
    h.events()
    h.out()
    h.recv(resp(inv, status, to_tag="tag-x"))
    (ev,) = h.events()
    assert isinstance(ev, ResponseReceived) and ev.txn_id == tid and ev.response.status == status
    assert h.tl.state(tid) is State.COMPLETED
    (ack,) = h.out()
    # RFC 3261 §17.1.1.3
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.uri == inv.uri
    assert ack.call_id == inv.call_id
    assert ack.headers.get("from") == inv.headers.get("from")
    assert ack.to.tag == "tag-x"
    assert ack.cseq.seq == inv.cseq.seq and ack.cseq.method == "ACK"
    assert [str(v) for v in ack.vias] == [str(inv.top_via)]
    assert ack.headers.get_all("route") == inv.headers.get_all("route")
    assert ack.headers.get("max-forwards") == "70"
    assert ack.body == b""


@pytest.mark.parametrize("status", [404, 486, 603])
def test_invite_client_completed_resends_ack_and_timer_d(status: int) -> None:
    h = Harness()
    inv = req()
    tid = h.send(inv)
    h.out()
    h.recv(resp(inv, status))
    h.events()
    (ack,) = h.out()
    h.now = 5
    h.recv(resp(inv, status))
    assert h.events() == []  # absorbed
    (again,) = h.out()
    assert bytes(again) == bytes(ack)
    h.recv(resp(inv, 180))
    h.recv(resp(inv, 200))  # 2xx after a non-2xx (another fork): the TU decides
    evs = h.events()
    assert len(evs) == 1 and isinstance(evs[0], StrayResponse)
    assert h.tl.get_timer() == pytest.approx(32.0)  # timer D from t=0
    h.run_until(31.9)
    assert h.tl.state(tid) is State.COMPLETED
    h.run_until(32.0)
    assert h.tl.state(tid) is State.TERMINATED
    assert h.tl.transaction_count() == 0


@pytest.mark.parametrize("peer", [TCP, TLS])
def test_invite_client_non2xx_reliable_terminates_at_once(peer: Peer) -> None:
    h = Harness()
    inv = req(transport=peer.transport)
    tid = h.send(inv, peer)
    h.recv(resp(inv, 486), peer)
    assert status_of(h.out()) == ["INVITE", "ACK"]
    assert h.tl.state(tid) is State.TERMINATED
    assert h.tl.get_timer() is None


def test_ack_is_sent_to_the_invite_peer() -> None:
    h = Harness()
    inv = req()
    other = Peer("UDP", "198.51.100.7", 5090)
    h.send(inv, other)
    h.recv(resp(inv, 404), UDP)
    sent = h.out_peers()
    assert [p for _, p in sent] == [other, other]


# --------------------------------------------------------------------------- CANCEL (client)


@pytest.mark.parametrize("prov", [100, 180, 183])
def test_cancel_before_provisional_waits_for_it(prov: int) -> None:
    h = Harness()
    inv = req(routes=("<sip:p1.example.com;lr>",))
    tid = h.send(inv)
    h.out()
    h.tl.cancel(tid, h.now)
    assert h.out() == []
    assert h.tl.transaction_count() == 1
    h.now = 0.3
    h.recv(resp(inv, prov))
    (cancel,) = h.out()
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert cancel.uri == inv.uri
    assert cancel.call_id == inv.call_id
    assert cancel.headers.get("to") == inv.headers.get("to")
    assert cancel.headers.get("from") == inv.headers.get("from")
    assert cancel.cseq.seq == inv.cseq.seq and cancel.cseq.method == "CANCEL"
    assert [str(v) for v in cancel.vias] == [str(inv.top_via)]
    assert cancel.headers.get_all("route") == ["<sip:p1.example.com;lr>"]
    assert h.tl.transaction_count() == 2
    # The provisional is passed up, the CANCEL's own transaction is invisible.
    assert [type(e) for e in h.events()] == [ResponseReceived]


def test_cancel_after_provisional_sent_at_once_and_retransmitted() -> None:
    h = Harness()
    inv = req()
    tid = h.send(inv)
    h.recv(resp(inv, 180))
    h.events()
    h.out()
    h.now = 2.0
    h.tl.cancel(tid, h.now)
    (cancel,) = h.out()
    assert cancel.method == "CANCEL"  # type: ignore[union-attr]
    # The CANCEL is a non-INVITE client transaction: timer E retransmits it.
    sent = h.run_until(3.0)
    assert [t for t, _ in sent] == approx_list([2.5])
    assert status_of([m for _, m in sent]) == ["CANCEL"]
    # 200 to the CANCEL: no event; 487 to the INVITE: ACK + event.
    h.recv(resp(cancel, 200))  # type: ignore[arg-type]
    assert h.events() == []
    h.recv(resp(inv, 487))
    (ev,) = h.events()
    assert isinstance(ev, ResponseReceived) and ev.response.status == 487 and ev.txn_id == tid
    assert status_of(h.out()) == ["ACK"]


def test_cancel_twice_sends_one() -> None:
    h = Harness()
    inv = req()
    tid = h.send(inv)
    h.recv(resp(inv, 180))
    h.out()
    h.tl.cancel(tid, 0)
    h.tl.cancel(tid, 0)
    assert status_of(h.out()) == ["CANCEL"]


@pytest.mark.parametrize("final", [200, 486])
def test_cancel_after_final_does_nothing(final: int) -> None:
    h = Harness()
    inv = req()
    tid = h.send(inv)
    h.recv(resp(inv, final))
    h.out()
    h.tl.cancel(tid, 0)
    assert h.out() == []


def test_cancel_pending_then_final_sends_nothing() -> None:
    h = Harness()
    inv = req()
    tid = h.send(inv)
    h.out()
    h.tl.cancel(tid, 0)
    h.recv(resp(inv, 200))
    assert h.out() == []
    (ev,) = h.events()
    assert isinstance(ev, ResponseReceived) and ev.response.status == 200


@pytest.mark.parametrize("txn", ["nonexistent", "non-invite"])
def test_cancel_ignores_unknown_and_non_invite(txn: str) -> None:
    h = Harness()
    tid = h.send(req("OPTIONS"))
    h.out()
    h.tl.cancel(tid if txn == "non-invite" else txn, 0)
    assert h.out() == []


def test_2xx_after_cancel_is_passed_up() -> None:
    h = Harness()
    inv = req()
    tid = h.send(inv)
    h.recv(resp(inv, 180))
    h.tl.cancel(tid, 0)
    h.events()
    h.recv(resp(inv, 200))
    evs = h.events()
    assert len(evs) == 1 and isinstance(evs[0], ResponseReceived) and evs[0].response.status == 200
    assert h.tl.state(tid) is State.ACCEPTED


def test_cancel_without_final_times_out_after_64_t1() -> None:
    # RFC 3261 §9.1: no final response 64*T1 after the CANCEL -> the INVITE is given up.
    h = Harness()
    inv = req()
    tid = h.send(inv)
    h.recv(resp(inv, 180))
    h.events()
    h.now = 10
    h.tl.cancel(tid, 10)
    h.run_until(41.9)
    assert h.tl.state(tid) is State.PROCEEDING
    assert not any(isinstance(e, TransactionTimeout) and e.txn_id == tid for e in h.events())
    h.run_until(42.0)
    assert TransactionTimeout(tid, "INVITE") in h.events()
    assert h.tl.state(tid) is State.TERMINATED


def test_cancel_timeout_of_cancel_txn_is_not_passed_up() -> None:
    h = Harness()
    inv = req()
    tid = h.send(inv)
    h.recv(resp(inv, 180))
    h.events()
    h.tl.cancel(tid, 0)
    h.recv(resp(inv, 487))  # INVITE completes; the CANCEL never gets its 200
    h.events()
    h.run_until(100)
    assert h.events() == []
    assert h.tl.transaction_count() == 0


# --------------------------------------------------------------------------- non-INVITE client


@pytest.mark.parametrize("method", NON_INVITE_METHODS)
@pytest.mark.parametrize("T1,T2,T4", CONFIGS)
def test_non_invite_client_timer_e_capped_then_timer_f(
    method: str, T1: float, T2: float, T4: float
) -> None:
    h = Harness(T1, T2, T4)
    r = req(method)
    tid = h.send(r)
    assert h.tl.state(tid) is State.TRYING
    h.out()
    sent = h.run_until(64 * T1 - 1e-6)
    assert [t for t, _ in sent] == approx_list(backoff(T1, T2, 64 * T1))
    assert h.events() == []
    h.run_until(64 * T1)
    assert h.events() == [TransactionTimeout(tid, method)]
    assert h.tl.transaction_count() == 0


def test_non_invite_client_proceeding_retransmits_at_t2() -> None:
    h = Harness()
    r = req("BYE")
    tid = h.send(r)
    h.out()
    h.run_until(0.6)  # E fired at 0.5; next at 1.5
    h.recv(resp(r, 100))
    assert h.tl.state(tid) is State.PROCEEDING
    assert [type(e) for e in h.events()] == [ResponseReceived]
    sent = h.run_until(20)
    # RFC 3261 §17.1.2.2: in Proceeding, each firing resets E to T2.
    assert [t for t, _ in sent] == approx_list([1.5, 5.5, 9.5, 13.5, 17.5])
    h.run_until(32)
    assert h.events() == [TransactionTimeout(tid, "BYE")]


@pytest.mark.parametrize("status", SUCCESSES + FAILURES)
@pytest.mark.parametrize("via_provisional", [False, True])
def test_non_invite_client_final_then_timer_k(status: int, via_provisional: bool) -> None:
    h = Harness()
    r = req("OPTIONS")
    tid = h.send(r)
    h.out()
    if via_provisional:
        h.recv(resp(r, 100))
    h.recv(resp(r, status))
    evs = h.events()
    assert isinstance(evs[-1], ResponseReceived) and evs[-1].response.status == status
    assert h.tl.state(tid) is State.COMPLETED
    assert h.out() == []  # no ACK for non-INVITE
    # Completed absorbs everything.
    for s in (100, status, 200, 500):
        h.recv(resp(r, s))
    assert h.events() == []
    assert h.run_until(4.99) == []
    assert h.tl.state(tid) is State.COMPLETED
    h.run_until(5.0)  # timer K = T4
    assert h.tl.state(tid) is State.TERMINATED
    h.recv(resp(r, status))
    assert isinstance(h.events()[0], StrayResponse)


@pytest.mark.parametrize("peer", [TCP, TLS])
@pytest.mark.parametrize("status", [200, 404])
def test_non_invite_client_reliable(peer: Peer, status: int) -> None:
    h = Harness()
    r = req("OPTIONS", transport=peer.transport)
    tid = h.send(r, peer)
    h.out()
    assert h.tl.get_timer() == 32.0  # only F
    h.recv(resp(r, status), peer)
    assert h.tl.state(tid) is State.TERMINATED  # timer K = 0
    assert h.tl.get_timer() is None
    assert h.run_until(100) == []


def test_send_request_rejects_ack_missing_branch_and_duplicates() -> None:
    h = Harness()
    with pytest.raises(ValueError):
        h.send(req("ACK"))
    r = req("OPTIONS")
    r.set_header("Via", "SIP/2.0/UDP 192.0.2.10:5060")
    with pytest.raises(ValueError):
        h.send(r)
    h.send(req("OPTIONS"))
    with pytest.raises(ValueError):
        h.send(req("OPTIONS"))


def test_same_branch_different_method_are_different_client_txns() -> None:
    h = Harness()
    a = h.send(req("OPTIONS"))
    b = h.send(req("INFO"))
    assert a != b and h.tl.transaction_count() == 2
    h.recv(resp(req("INFO"), 200))
    (ev,) = h.events()
    assert isinstance(ev, ResponseReceived) and ev.txn_id == b


@pytest.mark.parametrize("mutate", ["branch", "method"], ids=["other-branch", "other-cseq-method"])
def test_response_not_matching_is_stray(mutate: str) -> None:
    h = Harness()
    r = req("OPTIONS")
    h.send(r)
    other = req("OPTIONS", branch="z9hG4bKzzz") if mutate == "branch" else req("INFO")
    h.recv(resp(other, 200))
    (ev,) = h.events()
    assert isinstance(ev, StrayResponse) and ev.peer == UDP


# --------------------------------------------------------------------------- INVITE server


@pytest.mark.parametrize("peer", PEERS)
def test_invite_server_sends_100_at_once_and_absorbs_retransmissions(peer: Peer) -> None:
    h = Harness()
    inv = req(transport=peer.transport)
    h.recv(inv, peer)
    sent = h.out_peers()
    assert [(m.status, p) for m, p in sent] == [(100, peer)]  # type: ignore[union-attr]
    trying = sent[0][0]
    assert trying.to.tag is None  # RFC 3261 §8.2.6.2
    (ev,) = h.events()
    assert isinstance(ev, RequestReceived) and ev.peer == peer and ev.request.method == "INVITE"
    assert h.tl.server_request(ev.txn_id).call_id == inv.call_id
    assert h.tl.state(ev.txn_id) is State.PROCEEDING
    for _ in range(3):
        h.recv(inv, peer)
    assert h.events() == []
    assert status_of(h.out()) == [100, 100, 100]


def test_invite_server_resends_latest_provisional() -> None:
    h = Harness()
    inv = req()
    tid = h.new_server(inv)
    h.respond(tid, resp(inv, 180))
    assert status_of(h.out()) == [180]
    h.recv(inv)
    assert status_of(h.out()) == [180]
    h.respond(tid, resp(inv, 183))
    h.recv(inv)
    assert status_of(h.out()) == [183, 183]
    assert h.tl.get_timer() is None  # nothing runs in Proceeding


@pytest.mark.parametrize("status", FAILURES)
@pytest.mark.parametrize("T1,T2,T4", CONFIGS)
def test_invite_server_timer_g_then_timer_h(status: int, T1: float, T2: float, T4: float) -> None:
    h = Harness(T1, T2, T4)
    inv = req()
    tid = h.new_server(inv)
    h.respond(tid, resp(inv, status))
    assert status_of(h.out()) == [status]
    assert h.tl.state(tid) is State.COMPLETED
    sent = h.run_until(64 * T1 - 1e-6)
    # RFC 3261 §17.2.1: timer G at T1, doubling, capped at T2.
    assert [t for t, _ in sent] == approx_list(backoff(T1, T2, 64 * T1))
    assert {m.status for _, m in sent} == {status}  # type: ignore[union-attr]
    assert h.events() == []
    h.run_until(64 * T1)
    assert h.events() == [TransactionTimeout(tid, "INVITE")]
    assert h.tl.transaction_count() == 0


@pytest.mark.parametrize("status", [404, 486, 487, 603])
def test_invite_server_ack_confirms_then_timer_i(status: int) -> None:
    h = Harness()
    inv = req()
    tid = h.new_server(inv)
    h.respond(tid, resp(inv, status, to_tag="mytag"))
    h.out()
    h.run_until(0.7)  # one G retransmission at 0.5
    assert status_of(h.out()) == []
    h.now = 1.0
    h.recv(inv)  # retransmitted INVITE in Completed: resend the final
    assert status_of(h.out()) == [status]
    h.recv(ack_for(inv, "mytag"))
    assert h.tl.state(tid) is State.CONFIRMED
    assert h.events() == []  # the ACK of a non-2xx is absorbed
    h.recv(ack_for(inv, "mytag"))
    h.recv(inv)
    assert h.events() == [] and h.out() == []
    assert h.run_until(5.99) == []  # no more G
    assert h.tl.state(tid) is State.CONFIRMED
    h.run_until(6.0)  # timer I = T4 after the ACK at t=1
    assert h.tl.state(tid) is State.TERMINATED
    assert h.events() == []


@pytest.mark.parametrize("peer", [TCP, TLS])
def test_invite_server_non2xx_reliable(peer: Peer) -> None:
    h = Harness()
    inv = req(transport=peer.transport)
    tid = h.new_server(inv, peer)
    h.respond(tid, resp(inv, 486))
    h.out()
    assert h.tl.get_timer() == 32.0  # H only, no G
    h.recv(ack_for(inv, "tt1"), peer)
    assert h.tl.state(tid) is State.TERMINATED  # timer I = 0
    assert h.tl.get_timer() is None
    assert h.events() == []


@pytest.mark.parametrize("peer", [TCP, TLS])
def test_invite_server_non2xx_reliable_timer_h(peer: Peer) -> None:
    h = Harness()
    inv = req(transport=peer.transport)
    tid = h.new_server(inv, peer)
    h.respond(tid, resp(inv, 486))
    assert h.run_until(31.9)[1:] == []
    h.out()
    h.run_until(32)
    assert h.events() == [TransactionTimeout(tid, "INVITE")]


@pytest.mark.parametrize("T1,T2,T4", CONFIGS)
@pytest.mark.parametrize("peer", PEERS)
def test_invite_server_2xx_retransmitted_until_ack(
    T1: float, T2: float, T4: float, peer: Peer
) -> None:
    h = Harness(T1, T2, T4)
    inv = req(transport=peer.transport)
    tid = h.new_server(inv, peer)
    ok = resp(inv, 200)
    h.respond(tid, ok)
    assert status_of(h.out()) == [200]
    assert h.tl.state(tid) is State.ACCEPTED
    ack_at = 10.3 * T1  # off any retransmission instant
    sent = h.run_until(ack_at)
    # RFC 3261 §13.3.1.4: T1, 2T1 ... capped at T2, on every transport.
    assert [t for t, _ in sent] == approx_list(backoff(T1, T2, ack_at))
    assert all(bytes(m) == bytes(ok) for _, m in sent)
    h.recv(ack_for(inv, "tt1", branch="z9hG4bKack"), peer)
    (ev,) = h.events()
    assert isinstance(ev, AckReceived) and ev.peer == peer and ev.request.cseq.seq == 1
    assert h.tl.pending_2xx_count() == 0
    assert h.run_until(100 * T1) == []
    assert h.events() == []
    assert h.tl.transaction_count() == 0  # timer L


def test_invite_server_2xx_never_acked_ack_timeout() -> None:
    h = Harness()
    inv = req(cseq=7)
    tid = h.new_server(inv)
    h.respond(tid, resp(inv, 200))
    h.out()
    sent = h.run_until(31.99)
    assert [t for t, _ in sent] == approx_list(backoff(0.5, 4.0, 32))
    assert h.events() == []
    h.run_until(32)
    assert h.events() == [AckTimeout(inv.call_id, 7)]
    assert h.tl.pending_2xx_count() == 0
    assert h.tl.transaction_count() == 0
    assert h.tl.get_timer() is None
    # A late ACK is still passed up (the TU decides).
    h.recv(ack_for(inv, "tt1", branch="z9hG4bKlate"))
    assert [type(e) for e in h.events()] == [AckReceived]


def test_invite_server_accepted_absorbs_invite_retransmissions() -> None:
    h = Harness()
    inv = req()
    tid = h.new_server(inv)
    h.respond(tid, resp(inv, 200))
    h.out()
    h.now = 0.1
    h.recv(inv)
    assert h.out() == [] and h.events() == []  # RFC 6026 §8.7
    # Late responses from the TU: provisional/failure discarded, 2xx passed to the transport.
    h.respond(tid, resp(inv, 180))
    h.respond(tid, resp(inv, 500))
    assert h.out() == []
    h.respond(tid, resp(inv, 200))
    assert status_of(h.out()) == [200]
    assert h.tl.pending_2xx_count() == 1


def test_ack_with_invite_branch_in_accepted_is_ack_for_2xx() -> None:
    h = Harness()
    inv = req()
    tid = h.new_server(inv)
    h.respond(tid, resp(inv, 200))
    h.out()
    h.recv(ack_for(inv, "tt1"))  # same branch as the INVITE (some UAs do this)
    assert [type(e) for e in h.events()] == [AckReceived]
    assert h.tl.pending_2xx_count() == 0
    assert h.tl.state(tid) is State.ACCEPTED


def test_ack_before_final_is_absorbed() -> None:
    h = Harness()
    inv = req()
    tid = h.new_server(inv)
    h.recv(ack_for(inv, None))
    assert h.events() == []
    assert h.tl.state(tid) is State.PROCEEDING


def test_ack_for_unknown_is_passed_up() -> None:
    h = Harness()
    h.recv(req("ACK", branch="z9hG4bKnone", to_tag="x"))
    (ev,) = h.events()
    assert isinstance(ev, AckReceived)
    assert h.out() == []


@pytest.mark.parametrize("status", [200, 486])
def test_final_after_final_is_discarded(status: int) -> None:
    h = Harness()
    inv = req()
    tid = h.new_server(inv)
    h.respond(tid, resp(inv, status))
    h.out()
    for s in (180, 200, 404):
        if status == 200 and s == 200:
            continue
        h.respond(tid, resp(inv, s))
    assert h.out() == []


def test_send_response_unknown_or_terminated_raises() -> None:
    h = Harness()
    with pytest.raises(KeyError):
        h.respond("nope", resp(req(), 200))
    r = req("OPTIONS")
    tid = h.new_server(r, TCP)
    h.respond(tid, resp(r, 200))
    assert h.tl.state(tid) is State.TERMINATED  # timer J = 0 on TCP
    with pytest.raises(KeyError):
        h.respond(tid, resp(r, 200))
    with pytest.raises(KeyError):
        h.tl.server_request(tid)


# --------------------------------------------------------------------------- non-INVITE server


@pytest.mark.parametrize("method", NON_INVITE_METHODS)
@pytest.mark.parametrize("status", [200, 202, 404, 481, 500])
def test_non_invite_server_full_path(method: str, status: int) -> None:
    h = Harness()
    r = req(method)
    h.recv(r)
    assert h.out() == []  # no 100 for non-INVITE
    (ev,) = h.events()
    assert isinstance(ev, RequestReceived)
    tid = ev.txn_id
    assert h.tl.state(tid) is State.TRYING
    h.recv(r)  # Trying: absorbed without answer
    assert h.out() == [] and h.events() == []
    h.respond(tid, resp(r, 100))
    assert h.tl.state(tid) is State.PROCEEDING
    h.recv(r)
    assert status_of(h.out()) == [100, 100]
    h.respond(tid, resp(r, status))
    assert h.tl.state(tid) is State.COMPLETED
    h.recv(r)
    assert status_of(h.out()) == [status, status]
    h.respond(tid, resp(r, 500 if status != 500 else 200))  # discarded
    assert h.out() == []
    assert h.events() == []
    assert h.run_until(31.99) == []  # no retransmission of responses for non-INVITE
    assert h.tl.state(tid) is State.COMPLETED
    h.run_until(32.0)  # timer J
    assert h.tl.state(tid) is State.TERMINATED
    h.recv(r)  # now it is a new transaction
    assert [type(e) for e in h.events()] == [RequestReceived]


@pytest.mark.parametrize("peer", [TCP, TLS])
def test_non_invite_server_reliable_terminates_at_once(peer: Peer) -> None:
    h = Harness()
    r = req("BYE", transport=peer.transport)
    tid = h.new_server(r, peer)
    h.respond(tid, resp(r, 200))
    assert [p for _, p in h.out_peers()] == [peer]
    assert h.tl.transaction_count() == 0
    assert h.tl.get_timer() is None


def test_non_invite_server_direct_final_from_trying() -> None:
    h = Harness()
    r = req("OPTIONS")
    tid = h.new_server(r)
    h.respond(tid, resp(r, 200))
    h.recv(r)
    assert status_of(h.out()) == [200, 200]


# --------------------------------------------------------------------------- CANCEL (server)


@pytest.mark.parametrize("with_provisional", [False, True])
def test_cancel_matching_invite(with_provisional: bool) -> None:
    h = Harness()
    inv = req()
    tid = h.new_server(inv)
    if with_provisional:
        h.respond(tid, resp(inv, 180, to_tag="uas-tag"))
        h.out()
    cancel = cancel_for(inv)
    h.recv(cancel)
    (ok,) = h.out()
    assert isinstance(ok, Response) and ok.status == 200 and ok.cseq.method == "CANCEL"
    if with_provisional:
        assert ok.to.tag == "uas-tag"  # RFC 3261 §9.2 SHOULD
    else:
        assert ok.to.tag
    (ev,) = h.events()
    assert isinstance(ev, CancelReceived) and ev.txn_id == tid and ev.request.method == "CANCEL"
    # A retransmitted CANCEL gets the 200 again, no second event.
    h.recv(cancel)
    assert status_of(h.out()) == [200]
    assert h.events() == []
    # The TU answers 487 on the INVITE, the UAC ACKs.
    h.respond(tid, resp(inv, 487, to_tag="uas-tag"))
    assert status_of(h.out()) == [487]
    h.recv(ack_for(inv, "uas-tag"))
    assert h.tl.state(tid) is State.CONFIRMED
    assert h.events() == []


@pytest.mark.parametrize("final", [200, 486])
def test_cancel_after_final_gets_200_and_no_event(final: int) -> None:
    h = Harness()
    inv = req()
    tid = h.new_server(inv)
    h.respond(tid, resp(inv, final))
    h.out()
    h.recv(cancel_for(inv))
    assert status_of(h.out()) == [200]
    assert h.events() == []


def test_cancel_of_non_invite_gets_200_and_no_event() -> None:
    h = Harness()
    r = req("OPTIONS")
    h.new_server(r)
    h.recv(cancel_for(r))
    assert status_of(h.out()) == [200]
    assert h.events() == []


@pytest.mark.parametrize(
    "variant", ["no-txn", "other-branch", "other-sent-by-host", "other-sent-by-port"]
)
def test_cancel_matching_nothing_gets_481(variant: str) -> None:
    h = Harness()
    inv = req()
    if variant != "no-txn":
        h.new_server(inv)
    kwargs: dict[str, object] = {
        "no-txn": {},
        "other-branch": {"branch": "z9hG4bKother"},
        "other-sent-by-host": {"via_host": "192.0.2.99"},
        "other-sent-by-port": {"via_port": 5070},
    }[variant]  # type: ignore[assignment]
    cancel = req("CANCEL", **kwargs)  # type: ignore[arg-type]
    h.recv(cancel)
    (r481,) = h.out()
    assert isinstance(r481, Response) and r481.status == 481
    assert h.events() == []
    h.recv(cancel)  # a retransmission gets the same 481 (a server txn holds it)
    (again,) = h.out()
    assert bytes(again) == bytes(r481)
    assert h.events() == []


# --------------------------------------------------------------------------- merged requests


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS", "MESSAGE"])
def test_merged_request_gets_482(method: str) -> None:
    h = Harness()
    first = req(method, branch="z9hG4bKpath1")
    h.new_server(first)
    merged = req(method, branch="z9hG4bKpath2", via_host="192.0.2.20")
    h.recv(merged, Peer("UDP", "192.0.2.20", 5060))
    (r482,) = h.out()
    assert isinstance(r482, Response) and r482.status == 482 and r482.to.tag
    assert h.events() == []
    assert h.tl.transaction_count() == 2
    if method == "INVITE":
        # It is an INVITE server transaction: the 482 is retransmitted until ACKed.
        sent = h.run_until(0.6)
        assert status_of([m for _, m in sent]) == [482]


@pytest.mark.parametrize(
    "change",
    [{"to_tag": "x"}, {"from_tag": "other"}, {"call_id": "c2@h"}, {"cseq": 2}],
    ids=["with-to-tag", "from-tag", "call-id", "cseq"],
)
def test_not_merged(change: dict[str, object]) -> None:
    h = Harness()
    h.new_server(req("OPTIONS", branch="z9hG4bKpath1"))
    h.recv(req("OPTIONS", branch="z9hG4bKpath2", **change))  # type: ignore[arg-type]
    assert [type(e) for e in h.events()] == [RequestReceived]


def test_merge_forgotten_when_original_terminates() -> None:
    h = Harness()
    r = req("OPTIONS", branch="z9hG4bKpath1")
    tid = h.new_server(r, TCP)
    h.respond(tid, resp(r, 200))
    h.recv(req("OPTIONS", branch="z9hG4bKpath2"))
    assert [type(e) for e in h.events()] == [RequestReceived]


# --------------------------------------------------------------------------- rport / received


@pytest.mark.parametrize(
    "via_host,via_params,peer,expect",
    [
        ("192.0.2.10", "", UDP, {}),
        ("10.0.0.5", "", UDP, {"received": "192.0.2.10"}),
        ("phone.example.com", "", UDP, {"received": "192.0.2.10"}),
        ("192.0.2.10", ";rport", UDP, {"rport": "5060", "received": "192.0.2.10"}),
        ("10.0.0.5", ";rport", Peer("UDP", "203.0.113.9", 40001),
         {"rport": "40001", "received": "203.0.113.9"}),
        ("10.0.0.5", ";rport", Peer("TCP", "203.0.113.9", 40001),
         {"rport": "40001", "received": "203.0.113.9"}),
        ("10.0.0.5", ";received=203.0.113.9", Peer("UDP", "203.0.113.9", 5060),
         {"received": "203.0.113.9"}),
    ],
)  # fmt: skip
def test_via_received_and_rport(
    via_host: str, via_params: str, peer: Peer, expect: dict[str, str]
) -> None:
    h = Harness()
    r = req("OPTIONS", via_host=via_host, via_params=via_params, transport=peer.transport)
    h.recv(r, peer)
    (ev,) = h.events()
    assert isinstance(ev, RequestReceived)
    top = ev.request.top_via
    for k in ("rport", "received"):
        assert top.params.get(k) == expect.get(k)
    # The header text was rewritten too, so responses (and bytes()) carry it.
    reparsed = parse_message(bytes(ev.request))
    assert str(reparsed.top_via) == str(top)
    h.respond(ev.txn_id, resp(ev.request, 200))
    ((sent, to),) = h.out_peers()
    assert to == peer  # replies go where the request came from
    assert str(sent.top_via) == str(top)


def test_rport_keeps_other_vias_and_header_order() -> None:
    h = Harness()
    r = req(
        "OPTIONS",
        via_host="10.0.0.5",
        via_params=";rport",
        more_vias=("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2, SIP/2.0/TCP 10.0.0.2;branch=z9hG4bK3",),
    )
    h.recv(r, Peer("UDP", "203.0.113.9", 40001))
    (ev,) = h.events()
    assert isinstance(ev, RequestReceived)
    vias = parse_message(bytes(ev.request)).vias
    assert [v.host for v in vias] == ["10.0.0.5", "10.0.0.1", "10.0.0.2"]
    assert vias[0].params == {"branch": "z9hG4bKaaa1", "rport": "40001", "received": "203.0.113.9"}
    assert ev.request.headers.keys()[0] == "via"


def test_invite_100_trying_carries_rport() -> None:
    h = Harness()
    inv = req(via_host="10.0.0.5", via_params=";rport")
    peer = Peer("UDP", "203.0.113.9", 40001)
    h.recv(inv, peer)
    ((trying, to),) = h.out_peers()
    assert to == peer
    assert trying.top_via.params["rport"] == "40001"
    assert trying.top_via.params["received"] == "203.0.113.9"


def test_ipv6_via_host_matches_peer() -> None:
    h = Harness()
    peer = Peer("UDP", "2001:db8::1", 5060)
    h.recv(req("OPTIONS", via_host="[2001:db8::1]"), peer)
    (ev,) = h.events()
    assert isinstance(ev, RequestReceived)
    assert "received" not in ev.request.top_via.params


# --------------------------------------------------------------------------- matching rules


def test_server_matching_uses_sent_by() -> None:
    h = Harness()
    h.new_server(req("OPTIONS"))
    # Same branch from another sent-by is another transaction (RFC 3261 §17.2.3).
    h.recv(req("OPTIONS", via_host="192.0.2.30", call_id="c3@h"), Peer("UDP", "192.0.2.30", 5060))
    assert [type(e) for e in h.events()] == [RequestReceived]
    assert h.tl.transaction_count() == 2


def test_legacy_rfc2543_branch_matching() -> None:
    h = Harness()
    inv = req(branch="1")  # no magic cookie
    tid = h.new_server(inv)
    h.recv(inv)
    assert h.events() == [] and status_of(h.out()) == [100]
    h.recv(cancel_for(inv))
    assert status_of(h.out()) == [200]
    assert [type(e) for e in h.events()] == [CancelReceived]
    h.respond(tid, resp(inv, 487))
    h.recv(ack_for(inv, "tt1"))
    assert h.tl.state(tid) is State.CONFIRMED


def test_legacy_without_branch() -> None:
    h = Harness()
    r = req("OPTIONS")
    r.set_header("Via", "SIP/2.0/UDP 192.0.2.10:5060")
    h.tl.receive(r, UDP, 0)
    h.tl.receive(parse_message(bytes(r)), UDP, 0)
    assert [type(e) for e in h.events()] == [RequestReceived]


# --------------------------------------------------------------------------- timers API


def test_get_timer_empty_and_lazy_deletion() -> None:
    h = Harness()
    assert h.tl.get_timer() is None
    h.tl.handle_timer(100)  # nothing to do
    inv = req()
    tid = h.new_server(inv)
    h.respond(tid, resp(inv, 486))
    assert h.tl.get_timer() == pytest.approx(0.5)  # G
    h.recv(ack_for(inv, "tt1"))
    assert h.tl.get_timer() == pytest.approx(5.0)  # I (G and H were cancelled)


def test_late_handle_timer_fires_overdue_once() -> None:
    h = Harness()
    h.send(req("OPTIONS"))
    h.out()
    h.tl.handle_timer(3.0)  # E was due at 0.5; it fires once and rearms from now
    assert status_of(h.out()) == ["OPTIONS"]
    assert h.tl.get_timer() == pytest.approx(4.0)


def test_datagrams_drained() -> None:
    h = Harness()
    h.send(req("OPTIONS"))
    assert len(h.tl.datagrams_to_send()) == 1
    assert h.tl.datagrams_to_send() == []


def test_send_stateless() -> None:
    h = Harness()
    ack = req("ACK", to_tag="x")
    h.tl.send_stateless(ack, TCP)
    assert h.tl.datagrams_to_send() == [(bytes(ack), TCP)]
    assert h.tl.transaction_count() == 0
    r = resp(req("OPTIONS"), 503)
    h.tl.send_stateless(r, UDP)
    assert h.tl.datagrams_to_send() == [(bytes(r), UDP)]


def test_transaction_count_tracks_both_sides() -> None:
    h = Harness()
    h.send(req("OPTIONS", branch="z9hG4bKc1"))
    h.new_server(req("INVITE", branch="z9hG4bKs1"))
    h.new_server(req("BYE", branch="z9hG4bKs2", call_id="x@y"))
    assert h.tl.transaction_count() == 3
    h.run_until(1000)
    # The OPTIONS timed out, the server transactions wait for their TU.
    assert h.tl.transaction_count() == 2


def test_retransmissions_reuse_serialised_bytes() -> None:
    h = Harness()
    r = req("OPTIONS")
    h.send(r)
    ((first, _),) = h.tl.datagrams_to_send()
    r.set_header("Max-Forwards", "1")  # later edits of the object do not leak into the wire
    h.tl.handle_timer(0.5)
    assert h.tl.datagrams_to_send() == [(first, UDP)]


def test_build_helpers_standalone() -> None:
    inv = req(routes=("<sip:p.example.com;lr>",))
    c = build_cancel(inv)
    assert bytes(reparse(c)) == bytes(c)
    a = build_non2xx_ack(inv, resp(inv, 404, to_tag="t9"))
    assert a.to.tag == "t9" and a.method == "ACK"


# --------------------------------------------------------------------------- properties


_server_ops = st.lists(
    st.one_of(
        st.just(("retransmit", 0)),
        st.tuples(st.just("advance"), st.integers(1, 40)),
        st.tuples(st.just("respond"), st.sampled_from([100, 180, 183, 200, 404, 486])),
        st.just(("ack", 0)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from(["INVITE", "OPTIONS", "BYE"]), ops=_server_ops,
       reliable=st.booleans())  # fmt: skip
def test_any_interleaving_yields_one_request_received(
    method: str, ops: list[tuple[str, int]], reliable: bool
) -> None:
    peer = TCP if reliable else UDP
    h = Harness()
    r = req(method, transport=peer.transport)
    h.recv(r, peer)
    (ev,) = h.events()
    assert isinstance(ev, RequestReceived)
    tid = ev.txn_id
    final_sent = False
    for op, arg in ops:
        if op == "retransmit":
            if h.tl.state(tid) is State.TERMINATED:
                continue
            h.recv(r, peer)
        elif op == "advance":
            h.run_until(h.now + arg * 0.25)
        elif op == "respond":
            if h.tl.state(tid) is State.TERMINATED:
                continue
            h.respond(tid, resp(r, arg))
            final_sent = final_sent or arg >= 200
        elif op == "ack" and method == "INVITE":
            h.recv(ack_for(r, "tt1"), peer)
        h.out()
    evs = h.events()
    assert not any(isinstance(e, RequestReceived) for e in evs)
    assert not any(isinstance(e, CancelReceived) for e in evs)
    # Timeouts only ever concern this transaction, and at most once.
    assert sum(isinstance(e, TransactionTimeout) for e in evs) <= 1
    assert sum(isinstance(e, AckTimeout) for e in evs) <= 1
    if not final_sent:
        assert h.tl.state(tid) in (State.TRYING, State.PROCEEDING)


_client_ops = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(1, 40)),
        st.tuples(st.just("response"), st.sampled_from([100, 180, 200, 404, 487, 503])),
        st.just(("cancel", 0)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from(["INVITE", "OPTIONS"]), ops=_client_ops, reliable=st.booleans())
def test_client_passes_up_one_final_non2xx_and_ends(
    method: str, ops: list[tuple[str, int]], reliable: bool
) -> None:
    peer = TCP if reliable else UDP
    h = Harness()
    r = req(method, transport=peer.transport)
    tid = h.send(r, peer)
    evs: list[Event] = []
    for op, arg in ops:
        if op == "advance":
            h.run_until(h.now + arg * 0.25)
        elif op == "response":
            h.recv(resp(r, arg), peer)
        else:
            h.tl.cancel(tid, h.now)
        evs += h.events()
        h.out()
    h.run_until(h.now + 1000)
    evs += h.events()
    mine = [e for e in evs if isinstance(e, ResponseReceived)]
    assert all(e.txn_id == tid for e in mine)
    finals = [e.response.status for e in mine if e.response.status >= 200]
    non2xx = [s for s in finals if s >= 300]
    assert len(non2xx) <= 1
    if non2xx or (method != "INVITE" and finals):
        assert len(finals) == 1
    timeouts = [e for e in evs if isinstance(e, TransactionTimeout)]
    assert len(timeouts) <= 1
    assert not (timeouts and finals)
    if method == "INVITE" and not finals and not timeouts:
        # Only an INVITE stuck in Proceeding without CANCEL may live on.
        assert h.tl.state(tid) is State.PROCEEDING
    else:
        assert h.tl.transaction_count() == 0
    assert h.tl.get_timer() is None or h.tl.state(tid) is State.PROCEEDING


@settings(max_examples=200, deadline=None)
@given(T1=st.floats(0.01, 2.0), factor=st.floats(1.0, 16.0))
def test_retransmit_intervals_never_exceed_t2(T1: float, factor: float) -> None:
    T2 = T1 * factor
    h = Harness(T1, T2, 5.0)
    h.send(req("OPTIONS"))
    h.out()
    sent = h.run_until(64 * T1 - 1e-9)
    times = [0.0] + [t for t, _ in sent]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and gaps[0] == pytest.approx(T1)
    assert all(g <= T2 * (1 + 1e-9) for g in gaps)
    assert len(gaps) == len(backoff(T1, T2, 64 * T1))
    assert math.isclose(sum(gaps), times[-1])


def test_finished_transactions_leave_the_timer_heap() -> None:
    # Timer F (64*T1) of answered requests goes stale: the heap is compacted, so finished
    # transactions are not kept alive until their old deadlines.
    h = Harness()
    for i in range(1000):
        r = req("OPTIONS", transport="TCP", branch=f"z9hG4bKc{i}", call_id=f"c{i}")
        h.send(r, TCP)
        h.recv(resp(r, 200), TCP)
    h.out()
    assert h.tl.transaction_count() == 0
    assert len(h.tl._heap) < 200
    live = req("OPTIONS", transport="TCP", branch="z9hG4bKlive", call_id="live")
    tid = h.send(live, TCP)
    assert h.tl.get_timer() == 32.0  # the live timer F survives the compactions
    for i in range(300):
        r = req("OPTIONS", transport="TCP", branch=f"z9hG4bKd{i}", call_id=f"d{i}")
        h.send(r, TCP)
        h.recv(resp(r, 200), TCP)
    assert h.tl.get_timer() == 32.0 and h.tl.state(tid) is State.TRYING
    h.now = 32.0
    h.tl.handle_timer(h.now)
    assert h.tl.state(tid) is State.TERMINATED and h.tl.get_timer() is None
