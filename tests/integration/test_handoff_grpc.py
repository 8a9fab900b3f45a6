"""Site-to-site handoff over real gRPC (grpc.aio on 127.0.0.1, port 0)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.mesh.handoff import (
    Customer,
    HandoffClient,
    HandoffContext,
    HandoffServer,
    Reservation,
)

pytestmark = pytest.mark.integration

URI = "sip:overflow-{queue}@127.0.0.1:5070"


class Clock:
    """A settable Unix clock for the server."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def context(**kw: object) -> HandoffContext:
    args: dict[str, object] = {
        "from_site": "sh",
        "queue": "sales",
        "caller": "+8613800000000",
        "dialled": "+862160000000",
        "arrival_unix_ms": 1_699_999_990_000,
        "priority": 3,
        "language": "zh-CN",
        "ivr_path": ("2", "billing"),
        "variables": {"account": "42"},
        "customer": Customer(customer_id="c-9", name="王小明", tier="gold", vip=True),
        "notes": "invoice 7",
        "hops": 1,
        "required_skills": {"zh": 3},
        "call_id": "abc@sh",
        "visited": frozenset({"sh"}),
        **kw,
    }
    return HandoffContext(**args)  # type: ignore[arg-type]


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 20))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serving(server: HandoffServer, creds: object = None) -> str:
    port = await server.start("127.0.0.1:0", creds)
    assert port > 0
    return f"127.0.0.1:{port}"


def test_reserve_accepted_then_taken_once() -> None:
    async def main() -> None:
        clock = Clock()
        seen: list[HandoffContext] = []

        def admit(ctx: HandoffContext) -> str | None:
            seen.append(ctx)
            return None

        server = HandoffServer("gz", admit, sip_uri=URI, clock=clock)
        addr = await serving(server)
        client = HandoffClient("sh")
        try:
            sent = context()
            r = await client.reserve(addr, sent, timeout_s=2.0, ttl_s=8.0)
            assert r.accepted, r
            assert r.reason == "" and r.handoff_id and r.target == addr
            assert r.sip_uri == "sip:overflow-sales@127.0.0.1:5070"
            assert r.expires_unix_ms == round((clock.t + 8.0) * 1000)
            assert seen == [sent]  # admit saw the whole context
            assert len(server.book) == 1
            got = server.take(r.handoff_id)
            assert got is not None
            assert got.handoff_id == r.handoff_id
            assert got == dataclasses.replace(sent, handoff_id=r.handoff_id)
            assert server.take(r.handoff_id) is None  # single use
            assert len(server.book) == 0
        finally:
            await client.close()
            await server.stop(0.5)

    run(main)


def test_refusal_reason_is_passed_and_nothing_is_held() -> None:
    async def main() -> None:
        server = HandoffServer("gz", lambda ctx: "no_agents", sip_uri=URI)
        addr = await serving(server)
        client = HandoffClient("sh")
        try:
            r = await client.reserve(addr, context(), timeout_s=2.0)
            assert (r.accepted, r.reason, r.handoff_id) == (False, "no_agents", "")
            assert len(server.book) == 0
            # a call that has already been at gz is refused as a loop, before admit
            r = await client.reserve(addr, context(visited=frozenset({"sh", "gz"})), 2.0)
            assert (r.accepted, r.reason) == (False, "loop")
            r = await client.reserve(addr, context(hops=9), 2.0)
            assert (r.accepted, r.reason) == (False, "hops")
        finally:
            await client.close()
            await server.stop(0.5)

    run(main)


def test_admit_that_raises_is_a_refusal() -> None:
    def admit(ctx: HandoffContext) -> str | None:
        raise RuntimeError("boom")

    async def main() -> None:
        server = HandoffServer("gz", admit, sip_uri=URI)
        addr = await serving(server)
        client = HandoffClient("sh")
        try:
            r = await client.reserve(addr, context(), timeout_s=2.0)
            assert (r.accepted, r.reason) == (False, "error")
        finally:
            await client.close()
            await server.stop(0.5)

    run(main)


def test_malformed_context_is_invalid_argument_and_a_refusal_for_the_client() -> None:
    async def main() -> None:
        server = HandoffServer("gz", lambda ctx: None, sip_uri=URI)
        addr = await serving(server)
        client = HandoffClient("sh")
        try:
            # required skill level 0 passes protobuf but not the server's validation
            from gateway.protos import load

            pb2, pb2_grpc = load("handoff")
            import grpc

            async with grpc.aio.insecure_channel(addr) as ch:
                stub = pb2_grpc.HandoffStub(ch)
                bad = pb2.ReserveRequest(context=pb2.CallContext(from_site="sh", queue=""))
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Reserve(bad, timeout=2.0)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "queue" in (info.value.details() or "")
            assert len(server.book) == 0
        finally:
            await client.close()
            await server.stop(0.5)

    run(main)


def test_unreachable_target_is_a_refusal_within_the_timeout() -> None:
    async def main() -> None:
        client = HandoffClient("sh")
        try:
            addr = f"127.0.0.1:{free_port()}"  # nobody listens there
            t0 = time.monotonic()
            r = await client.reserve(addr, context(), timeout_s=1.0)
            assert not r.accepted and r.reason in ("unreachable", "timeout")
            assert time.monotonic() - t0 < 1.5
            assert not await client.release(addr, "h1", timeout_s=0.5)
        finally:
            await client.close()

    run(main)


def test_silent_target_times_out_as_a_refusal() -> None:
    """A peer that accepts TCP but never speaks HTTP/2 (a hung site)."""

    async def main() -> None:
        conns: list[asyncio.StreamWriter] = []

        async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            conns.append(w)

        srv = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        client = HandoffClient("sh")
        try:
            t0 = time.monotonic()
            r = await client.reserve(f"127.0.0.1:{port}", context(), timeout_s=0.5)
            elapsed = time.monotonic() - t0
            assert (r.accepted, r.reason) == (False, "timeout")
            assert elapsed < 1.2
        finally:
            await client.close()
            for w in conns:
                w.close()
            srv.close()
            await srv.wait_closed()

    run(main)


def test_reservation_expires_unused() -> None:
    async def main() -> None:
        clock = Clock()
        expired: list[Reservation] = []
        server = HandoffServer(
            "gz",
            lambda ctx: None,
            sip_uri=URI,
            clock=clock,
            expire_every_s=0.05,
            on_expired=expired.append,
            default_ttl_s=2.0,
            max_ttl_s=5.0,
        )
        addr = await serving(server)
        client = HandoffClient("sh")
        try:
            r = await client.reserve(addr, context(), timeout_s=2.0, ttl_s=60.0)
            assert r.accepted
            assert r.expires_unix_ms == round((clock.t + 5.0) * 1000)  # capped by the server
            clock.t += 5.0
            for _ in range(100):  # the server's sweeper notices within a tick or two
                if expired:
                    break
                await asyncio.sleep(0.02)
            assert [e.handoff_id for e in expired] == [r.handoff_id]
            assert server.take(r.handoff_id) is None
        finally:
            await client.close()
            await server.stop(0.5)

    run(main)


def test_release_over_grpc() -> None:
    async def main() -> None:
        server = HandoffServer("gz", lambda ctx: None, sip_uri=URI)
        addr = await serving(server)
        client = HandoffClient("sh")
        other = HandoffClient("bj")
        try:
            r = await client.reserve(addr, context(), timeout_s=2.0)
            assert r.accepted
            assert not await other.release(addr, r.handoff_id, timeout_s=2.0)  # not bj's
            assert await client.release(addr, r.handoff_id, timeout_s=2.0, reason="hangup")
            assert not await client.release(addr, r.handoff_id, timeout_s=2.0)
            assert server.take(r.handoff_id) is None
        finally:
            await client.close()
            await other.close()
            await server.stop(0.5)

    run(main)


def test_retry_with_a_proposed_id_is_idempotent() -> None:
    async def main() -> None:
        admitted: list[str] = []

        def admit(ctx: HandoffContext) -> str | None:
            admitted.append(ctx.handoff_id)
            return None if len(admitted) == 1 else "no_agents"

        server = HandoffServer("gz", admit, sip_uri=URI)
        addr = await serving(server)
        client = HandoffClient("sh")
        try:
            a = await client.reserve(addr, context(handoff_id="sh-1"), timeout_s=2.0)
            b = await client.reserve(addr, context(handoff_id="sh-1"), timeout_s=2.0)
            assert a == b and a.accepted and a.handoff_id == "sh-1"
            assert admitted == ["sh-1"] and len(server.book) == 1
        finally:
            await client.close()
            await server.stop(0.5)

    run(main)


def test_reserve_first_tries_the_next_target() -> None:
    async def main() -> None:
        seen_by_bj: list[HandoffContext] = []

        def bj_admit(ctx: HandoffContext) -> str | None:
            seen_by_bj.append(ctx)
            return None

        gz = HandoffServer("gz", lambda ctx: "no_agents", sip_uri=URI)
        bj = HandoffServer("bj", bj_admit, sip_uri="sip:overflow-{queue}@127.0.0.3:5060")
        gz_addr, bj_addr = await serving(gz), await serving(bj)
        client = HandoffClient("sh")
        try:
            dead = f"127.0.0.1:{free_port()}"
            out = await client.reserve_first(
                [("hz", dead), ("gz", gz_addr), ("bj", bj_addr)], context(), timeout_s=1.0
            )
            assert out.site == "bj" and out.result is not None and out.result.accepted
            assert out.result.sip_uri == "sip:overflow-sales@127.0.0.3:5060"
            assert [s for s, _ in out.refused] == ["hz", "gz"]
            assert out.refused[1][1] == "no_agents"
            assert seen_by_bj[0].visited == {"sh", "hz", "gz"}  # never sent back to them
            nobody = await client.reserve_first([("gz", gz_addr)], context(), timeout_s=1.0)
            assert nobody.site is None and nobody.refused == (("gz", "no_agents"),)
        finally:
            await client.close()
            await gz.stop(0.5)
            await bj.stop(0.5)

    run(main)


def test_mutual_tls(tmp_path: Path) -> None:
    tls = pytest.importorskip("gateway.mesh.tls", reason="gateway/mesh/tls.py not available")
    pki = tmp_path / "pki"
    tls.make_ca(pki)
    for name in ("gz", "sh", "bj"):
        tls.issue(pki, name, ips=["127.0.0.1"])

    async def main() -> None:
        server = HandoffServer("gz", lambda ctx: None, sip_uri=URI)
        addr = await serving(server, tls.server_credentials(pki, "gz"))
        client = HandoffClient("sh", tls.channel_credentials(pki, "sh"))
        liar = HandoffClient("bj", tls.channel_credentials(pki, "bj"))
        plain = HandoffClient("sh")
        try:
            r = await client.reserve(addr, context(), timeout_s=3.0)
            assert r.accepted, r
            assert server.take(r.handoff_id) is not None
            # bj's certificate claiming to be sh
            r = await liar.reserve(addr, context(from_site="sh"), timeout_s=3.0)
            assert (r.accepted, r.reason) == (False, "error:permission_denied")
            # no client certificate at all: the handshake fails, a refusal
            r = await plain.reserve(addr, context(), timeout_s=1.0)
            assert not r.accepted and r.reason in ("unreachable", "timeout")
            assert len(server.book) == 0
        finally:
            for c in (client, liar, plain):
                await c.close()
            await server.stop(0.5)

    run(main)
