"""The TCP/TLS transport on loopback sockets: framing, mutual TLS by name, refusals, idle close."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.mesh import tls as mesh_tls
from gateway.sip.peer import Peer
from gateway.transport.tcp import TcpTransport, TlsContexts

OPTIONS = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pki")
    mesh_tls.make_ca(path)
    for name in ("sh", "gz", "bj"):
        mesh_tls.issue(path, name, ips=["127.0.0.1"])
    return path


def _contexts(pki: Path, name: str) -> TlsContexts:
    return TlsContexts(*mesh_tls.sip_contexts(pki, name))


async def _pair(
    pki: Path | None, got: list[tuple[str, bytes, Peer]], **kw: Any
) -> tuple[TcpTransport, TcpTransport]:
    loop = asyncio.get_running_loop()

    def rx(name: str) -> Any:
        return lambda msg, peer, stream: got.append((name, msg, peer))

    a = await TcpTransport.bind(
        loop, "127.0.0.1", 0, rx("sh"), tls=_contexts(pki, "sh") if pki else None, **kw
    )
    b = await TcpTransport.bind(
        loop, "127.0.0.1", 0, rx("gz"), tls=_contexts(pki, "gz") if pki else None, **kw
    )
    return a, b


async def _until(cond: Any, timeout: float = 3.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)


def test_tls_both_ends_know_each_other_by_certificate_name(pki: Path) -> None:
    async def run() -> None:
        got: list[tuple[str, bytes, Peer]] = []
        a, b = await _pair(pki, got)
        a.expect[b.local] = "gz"
        a.send(OPTIONS, Peer("TLS", *b.local))
        a.send(OPTIONS, Peer("TLS", *b.local))  # queued behind the handshake, in order
        await _until(lambda: len(got) == 2)
        (_, _, peer), _ = got
        assert peer.transport == "TLS" and b.identity(peer) == "sh"
        assert a.identity(Peer("TLS", *b.local)) == "gz"
        b.send(OPTIONS, peer)  # the answer goes back on the same connection
        await _until(lambda: len(got) == 3)
        assert got[2][0] == "sh"
        a.close()
        b.close()

    asyncio.run(run())


def test_a_server_with_another_name_is_refused_and_nothing_is_sent(pki: Path) -> None:
    async def run() -> None:
        got: list[tuple[str, bytes, Peer]] = []
        a, b = await _pair(pki, got)
        a.expect[b.local] = "bj"  # we meant to reach bj; gz answers
        a.send(OPTIONS, Peer("TLS", *b.local))
        await _until(lambda: a.connect_failures == 1)
        await asyncio.sleep(0.1)
        assert got == [] and not a.connections
        a.close()
        b.close()

    asyncio.run(run())


def test_plain_text_on_the_tls_port_is_a_refused_handshake(pki: Path) -> None:
    async def run() -> None:
        got: list[tuple[str, bytes, Peer]] = []
        a, b = await _pair(pki, got)
        reader, writer = await asyncio.open_connection(*b.local)
        writer.write(OPTIONS)
        assert await asyncio.wait_for(reader.read(), 3) != OPTIONS  # an alert, then EOF
        await _until(lambda: b.handshake_failures == 1)
        assert got == [] and not b.connections
        writer.close()
        a.close()
        b.close()

    asyncio.run(run())


def test_a_silent_connection_is_closed_after_the_idle_timeout() -> None:
    async def run() -> None:
        got: list[tuple[str, bytes, Peer]] = []
        a, b = await _pair(None, got, idle_timeout=0.4)
        reader, writer = await asyncio.open_connection(*b.local)
        writer.write(OPTIONS)
        await _until(lambda: len(got) == 1)
        assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by b
        assert b.idle_closed == 1 and not b.connections
        writer.close()
        a.close()
        b.close()

    asyncio.run(run())
