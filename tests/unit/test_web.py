"""The site HTTP server over a real loopback socket (asyncio.run + aiohttp.ClientSession)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.metrics import Registry
from gateway.web import REGISTRY_KEY, create_app, start_http, stop_http

Check = Callable[[aiohttp.ClientSession, str], Awaitable[None]]


def serve(
    check: Check,
    health: Callable[[], Any] | None = None,
    registry: Registry | None = None,
    extra_routes: list[web.RouteDef] | None = None,
) -> None:
    async def main() -> None:
        app = create_app(health or (lambda: {"status": "ok"}), registry or Registry(), extra_routes)
        runner, port = await start_http(app, "127.0.0.1", 0)
        try:
            assert port > 0
            timeout = aiohttp.ClientTimeout(total=5)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await check(session, f"http://127.0.0.1:{port}")
        finally:
            await stop_http(runner)

    asyncio.run(asyncio.wait_for(main(), 20))


def test_healthz_ok_adds_status_and_extra_fields() -> None:
    async def check(s: aiohttp.ClientSession, base: str) -> None:
        async with s.get(base + "/healthz") as r:
            assert r.status == 200
            assert r.content_type == "application/json"
            assert r.headers["Cache-Control"] == "no-store"
            assert await r.json() == {"status": "ok", "site": "shanghai", "calls": 3}

    serve(check, health=lambda: {"site": "shanghai", "calls": 3})


def test_healthz_not_ok_is_503() -> None:
    async def check(s: aiohttp.ClientSession, base: str) -> None:
        async with s.get(base + "/healthz") as r:
            assert r.status == 503
            assert (await r.json())["status"] == "degraded"

    serve(check, health=lambda: {"status": "degraded", "store": "locked"})


def test_healthz_async_callable() -> None:
    async def health() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"status": "ok", "async": True}

    async def check(s: aiohttp.ClientSession, base: str) -> None:
        async with s.get(base + "/healthz") as r:
            assert r.status == 200
            assert (await r.json())["async"] is True

    serve(check, health=health)


def test_healthz_raising_check_is_503_not_crash() -> None:
    def health() -> dict[str, Any]:
        raise RuntimeError("db gone")

    async def check(s: aiohttp.ClientSession, base: str) -> None:
        async with s.get(base + "/healthz") as r:
            assert r.status == 503
            body = await r.json()
            assert body["status"] == "error"
            assert "RuntimeError" in body["reason"]
        async with s.get(base + "/healthz") as r:  # the server is still up
            assert r.status == 503

    serve(check, health=health)


def test_metrics_text_format() -> None:
    reg = Registry()
    reg.counter("ccgw_sip_requests_total", "SIP requests", ["method"]).labels("INVITE").inc(2)

    async def check(s: aiohttp.ClientSession, base: str) -> None:
        async with s.get(base + "/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = await r.text()
            assert "# TYPE ccgw_sip_requests_total counter\n" in text
            assert 'ccgw_sip_requests_total{method="INVITE"} 2\n' in text

    serve(check, registry=reg)


def test_unknown_path_is_json_404() -> None:
    async def check(s: aiohttp.ClientSession, base: str) -> None:
        async with s.get(base + "/nope") as r:
            assert r.status == 404
            body = await r.json()
            assert body["error"] == "not_found"
            assert body["status"] == 404
            assert "/nope" in body["reason"]

    serve(check)


def test_wrong_method_is_json_405_with_allow() -> None:
    async def check(s: aiohttp.ClientSession, base: str) -> None:
        async with s.post(base + "/metrics", data=b"x") as r:
            assert r.status == 405
            body = await r.json()
            assert body["error"] == "method_not_allowed"
            assert "POST" in body["reason"] and "GET" in body["reason"]
            assert "GET" in r.headers["Allow"]

    serve(check)


def test_extra_routes_share_registry_and_error_handling() -> None:
    async def hello(request: web.Request) -> web.Response:
        request.app[REGISTRY_KEY].get("ccgw_hello_total").inc()  # type: ignore[union-attr]
        return web.json_response({"hello": "world"})

    async def bad(request: web.Request) -> web.Response:
        raise web.HTTPBadRequest(text="number must be E.164")

    async def boom(request: web.Request) -> web.Response:
        raise ZeroDivisionError

    reg = Registry()
    hello_total = reg.counter("ccgw_hello_total", "hellos")
    routes = [web.get("/hello", hello), web.post("/bad", bad), web.get("/boom", boom)]

    async def check(s: aiohttp.ClientSession, base: str) -> None:
        async with s.get(base + "/hello") as r:
            assert await r.json() == {"hello": "world"}
        assert hello_total.value == 1
        async with s.post(base + "/bad") as r:
            assert r.status == 400
            assert await r.json() == {
                "error": "bad_request",
                "status": 400,
                "reason": "number must be E.164",
            }
        async with s.get(base + "/boom") as r:
            assert r.status == 500
            assert (await r.json())["reason"] == "internal server error"

    serve(check, registry=reg, extra_routes=routes)


def test_stop_releases_port() -> None:
    async def main() -> None:
        app = create_app(lambda: {}, Registry())
        runner, port = await start_http(app, "127.0.0.1", 0)
        await stop_http(runner)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz"):
                pass
        # The port can be bound again.
        runner2, port2 = await start_http(create_app(lambda: {}, Registry()), "127.0.0.1", port)
        assert port2 == port
        await stop_http(runner2)

    asyncio.run(asyncio.wait_for(main(), 20))
