"""The receiving side's reservation book (pure, time passed in) and the handoff context."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mesh.handoff import (
    HANDOFF_HEADER,
    HOPS_HEADER,
    Customer,
    HandoffContext,
    Refusal,
    Reservation,
    ReservationBook,
    incoming_refusal,
    invite_headers,
    parse_handoff_id,
    parse_hops,
)


def counter_ids() -> ReservationBook:
    n = itertools.count(1)
    return ReservationBook(max_pending=3, new_id=lambda: f"h{next(n)}")


def ctx(**kw: object) -> HandoffContext:
    args: dict[str, object] = {"from_site": "sh", "queue": "sales", "hops": 1, **kw}
    return HandoffContext(**args)  # type: ignore[arg-type]


FULL = HandoffContext(
    from_site="sh",
    queue="sales",
    handoff_id="abc-1",
    caller="+8613800000000",
    dialled="+862160000000",
    arrival_unix_ms=1_700_000_000_123,
    priority=5,
    language="zh-CN",
    ivr_path=("1", "3", "billing"),
    variables={"account": "42", "page": "https://example.com/pricing"},
    customer=Customer(
        customer_id="c-9",
        name="王小明",
        region="shanghai",
        tier="gold",
        named_agent="1001",
        phones=("+8613800000000", "+862161111111"),
        notes="prefers Mandarin",
        vip=True,
    ),
    notes="asked about invoice 7",
    hops=1,
    required_skills={"zh": 3, "billing": 1},
    call_id="a84b4c76e66710@sh",
    visited=frozenset({"sh"}),
)


# --- reserve / take / release / expire ---------------------------------------------------


def test_reserve_then_take_once() -> None:
    book = counter_ids()
    r = book.reserve(ctx(call_id="c1"), now=100.0, ttl_s=5.0)
    assert isinstance(r, Reservation)
    assert (r.handoff_id, r.created_at, r.expires_at) == ("h1", 100.0, 105.0)
    assert r.context.handoff_id == "h1" and r.context.call_id == "c1"
    assert len(book) == 1 and "h1" in book and book.pending("sales") == 1
    taken = book.take("h1", 104.9)
    assert taken == r.context
    assert book.take("h1", 104.9) is None  # single use
    assert len(book) == 0


def test_refusal_is_passed_through_and_holds_nothing() -> None:
    book = counter_ids()
    assert book.reserve(ctx(), 0.0, 5.0, "no_agents") == Refusal("no_agents")
    assert len(book) == 0


def test_expiry_is_exact_and_reported_once() -> None:
    book = counter_ids()
    book.reserve(ctx(), 0.0, 5.0)
    book.reserve(ctx(), 1.0, 5.0)
    assert book.next_expiry() == 5.0
    assert book.get("h1", 4.999) is not None
    assert book.get("h1", 5.0) is None  # gone at expires_at
    assert [r.handoff_id for r in book.expire(5.0)] == ["h1"]
    assert book.expire(5.0) == []
    assert book.take("h1", 5.0) is None
    assert book.take("h2", 6.0) is None  # expired but not swept yet: still unusable
    assert [r.handoff_id for r in book.expire(6.0)] == ["h2"]  # ... and still reported
    assert len(book) == 0


def test_release_only_by_the_sending_site() -> None:
    book = counter_ids()
    book.reserve(ctx(from_site="sh"), 0.0, 5.0)
    assert not book.release("h1", 1.0, from_site="gz")
    assert not book.release("nope", 1.0)
    assert book.release("h1", 1.0, from_site="sh")
    assert not book.release("h1", 1.0, from_site="sh")
    assert book.take("h1", 1.0) is None


def test_max_pending() -> None:
    book = counter_ids()
    for t in range(3):
        assert isinstance(book.reserve(ctx(), float(t), 10.0), Reservation)
    assert book.reserve(ctx(), 3.0, 10.0) == Refusal("too_many_pending")
    # expired ones are dropped before counting
    assert isinstance(book.reserve(ctx(), 10.0, 10.0), Reservation)
    assert len(book) == 3


def test_proposed_id_retry_is_idempotent_and_collision_refused() -> None:
    book = counter_ids()
    first = book.reserve(ctx(handoff_id="sh-77"), 0.0, 5.0)
    assert isinstance(first, Reservation) and first.handoff_id == "sh-77"
    # the same site retrying (its reply was lost) gets the same reservation, even if the
    # capacity check would now say no (the capacity is this very reservation)
    assert book.reserve(ctx(handoff_id="sh-77"), 1.0, 5.0, "no_agents") is first
    assert book.reserve(ctx(handoff_id="sh-77", from_site="gz"), 1.0, 5.0) == Refusal(
        "duplicate_id"
    )
    assert len(book) == 1


def test_id_factory_repeating_itself_never_clobbers() -> None:
    ids = iter(["x", "x", "x", "y"])
    book = ReservationBook(new_id=lambda: next(ids))
    a = book.reserve(ctx(), 0.0, 5.0)
    b = book.reserve(ctx(), 0.0, 5.0)
    assert isinstance(a, Reservation) and isinstance(b, Reservation)
    assert (a.handoff_id, b.handoff_id) == ("x", "y")


def test_bad_ttl_and_capacity() -> None:
    with pytest.raises(ValueError):
        ReservationBook(max_pending=0)
    for ttl in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            ReservationBook().reserve(ctx(), 0.0, ttl)


def test_reservations_oldest_first() -> None:
    book = counter_ids()
    book.reserve(ctx(queue="b"), 2.0, 5.0)
    book.reserve(ctx(queue="a"), 1.0, 5.0)
    assert [r.context.queue for r in book.reservations()] == ["a", "b"]
    assert book.pending("a") == 1 and book.pending() == 2


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["reserve", "take", "release", "expire"]),
            st.floats(0, 2),  # time step
            st.integers(1, 4),  # which id
        ),
        max_size=40,
    )
)
def test_book_model(ops: list[tuple[str, float, int]]) -> None:
    """Against a dictionary model: a context is taken at most once, never after expiry."""
    book = ReservationBook(max_pending=3, new_id=iter(f"h{i}" for i in range(1000)).__next__)
    model: dict[str, float] = {}  # id -> expires_at
    taken: set[str] = set()
    now = 0.0
    for op, dt, k in ops:
        now += dt
        hid = f"h{k}"
        model = {i: e for i, e in model.items() if now < e} if op == "reserve" else model
        if op == "reserve":
            r = book.reserve(ctx(), now, 2.5)
            if len(model) >= 3:
                assert r == Refusal("too_many_pending")
            else:
                assert isinstance(r, Reservation)
                model[r.handoff_id] = r.expires_at
        elif op == "take":
            got = book.take(hid, now)
            live = hid in model and now < model[hid]
            assert (got is not None) == live
            if got is not None:
                assert hid not in taken
                taken.add(hid)
                del model[hid]
        elif op == "release":
            live = hid in model and now < model[hid]
            assert book.release(hid, now) == live
            if live:
                del model[hid]
        else:
            gone = {r.handoff_id for r in book.expire(now)}
            assert gone == {i for i, e in model.items() if now >= e}
            model = {i: e for i, e in model.items() if now < e}
        assert all(book.get(i, now) is not None for i, e in model.items() if now < e)


# --- loops and hops ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("c", "reason"),
    [
        (ctx(from_site="gz", visited=frozenset({"gz"})), None),
        (ctx(from_site="bj", visited=frozenset({"gz", "bj"})), "loop"),  # been here
        (ctx(from_site="bj", visited=frozenset({"bj"})), None),
        (ctx(from_site="gz"), None),
        (ctx(from_site="gz", hops=2), None),
        (ctx(from_site="gz", hops=3), "hops"),
    ],
)
def test_incoming_refusal(c: HandoffContext, reason: str | None) -> None:
    me = "gz" if c.from_site == "bj" else "bj"
    assert incoming_refusal(c, site=me, max_hops=2) == reason


def test_incoming_from_myself_is_a_loop() -> None:
    assert incoming_refusal(ctx(from_site="gz"), site="gz", max_hops=5) == "loop"


def test_next_hop() -> None:
    first = FULL.next_hop("gz")
    assert (first.from_site, first.hops, first.handoff_id) == ("gz", 2, "")
    assert first.visited == {"sh", "gz"}
    assert first.caller == FULL.caller and first.arrival_unix_ms == FULL.arrival_unix_ms


# --- the context on the wire -------------------------------------------------------------


def test_context_round_trips_through_protobuf() -> None:
    msg = FULL.to_proto()
    wire = msg.SerializeToString()
    back = HandoffContext.from_proto(type(msg).FromString(wire))
    assert back == FULL
    assert msg.customer.name == "王小明" and msg.arrival_unix_ms == 1_700_000_000_123


def test_context_without_customer() -> None:
    c = ctx(caller="+1", required_skills={"en": 1})
    back = HandoffContext.from_proto(c.to_proto())
    assert back == c and back.customer is None


@pytest.mark.parametrize(
    "kw",
    [
        {"from_site": ""},
        {"queue": ""},
        {"handoff_id": "has space"},
        {"handoff_id": "x" * 65},
        {"hops": -1},
        {"required_skills": {"zh": 0}},
        {"required_skills": {"zh": 11}},
        {"ivr_path": tuple(str(i) for i in range(65))},
    ],
)
def test_bad_context_is_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ctx(**kw)


def test_bad_context_from_the_wire_is_refused() -> None:
    msg = ctx().to_proto()
    msg.queue = ""
    with pytest.raises(ValueError, match="queue"):
        HandoffContext.from_proto(msg)


texts = st.text(max_size=20)


@settings(max_examples=100, deadline=None)
@given(
    st.builds(
        HandoffContext,
        from_site=st.text(min_size=1, max_size=8),
        queue=st.text(min_size=1, max_size=8),
        handoff_id=st.from_regex(r"[A-Za-z0-9._~-]{0,64}", fullmatch=True),
        caller=texts,
        dialled=texts,
        arrival_unix_ms=st.integers(0, 2**62),
        priority=st.integers(-(2**31), 2**31 - 1),
        language=texts,
        ivr_path=st.lists(texts, max_size=5).map(tuple),
        variables=st.dictionaries(texts, texts, max_size=4),
        customer=st.one_of(
            st.none(),
            st.builds(Customer, phones=st.lists(texts, max_size=3).map(tuple), vip=st.booleans()),
        ),
        notes=texts,
        hops=st.integers(0, 2**32 - 1),
        required_skills=st.dictionaries(texts, st.integers(1, 10), max_size=4),
        call_id=texts,
        visited=st.frozensets(texts, max_size=4),
    )
)
def test_any_context_round_trips(c: HandoffContext) -> None:
    assert (
        HandoffContext.from_proto(type(c.to_proto()).FromString(c.to_proto().SerializeToString()))
        == c
    )


# --- SIP header helpers ------------------------------------------------------------------


def test_invite_headers() -> None:
    assert invite_headers("h1", 2) == {HANDOFF_HEADER: "h1", HOPS_HEADER: "2"}
    assert HANDOFF_HEADER == "X-Ccgw-Handoff" and HOPS_HEADER == "X-Ccgw-Hops"
    with pytest.raises(ValueError):
        invite_headers("bad id", 1)


@pytest.mark.parametrize(
    ("value", "hops"),
    [
        (None, 0),
        ("0", 0),
        (" 2 ", 2),
        ("17", 17),
        ("", None),
        ("-1", None),
        ("1.5", None),
        ("١", None),
        ("9999", None),
    ],
)
def test_parse_hops(value: str | None, hops: int | None) -> None:
    if hops is None:
        with pytest.raises(ValueError):
            parse_hops(value)
    else:
        assert parse_hops(value) == hops


def test_parse_handoff_id() -> None:
    assert parse_handoff_id(" h1 ") == "h1"
    for bad in ("", "a b", "a;b", "x" * 65):
        with pytest.raises(ValueError):
            parse_handoff_id(bad)
