"""Bearer tokens on the REST API: open probes, one answer for a missing and a wrong token,
read-only tokens, bans after repeated failures; and the config rules around them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.config import ConfigError, parse_config
from gateway.edge.guard import Guard
from gateway.metrics import Registry
from gateway.web.auth import ApiAuth
from gateway.web.server import create_app

TOKEN = "t0ken-for-writing-0123"
READ = "t0ken-for-reading-0123"


async def _hello(request: web.Request) -> web.Response:
    return web.json_response({"ok": request.method})


def _serve(auth: ApiAuth, body: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    routes = [web.get("/api/thing", _hello), web.post("/api/thing", _hello)]
    app = create_app(lambda: {"status": "ok"}, Registry(), routes, auth=auth)

    async def main() -> None:
        async with TestClient(TestServer(app)) as client:
            await body(client)

    asyncio.run(main())


def _auth(**guard: Any) -> ApiAuth:
    return ApiAuth(TOKEN, READ, Guard(rate_limit=1_000_000, **guard))


def test_without_a_token_configured_the_api_is_open() -> None:
    async def body(client: TestClient[Any, Any]) -> None:
        assert (await client.post("/api/thing")).status == 200

    _serve(ApiAuth(""), body)


def test_a_missing_and_a_wrong_token_get_the_same_answer_and_probes_stay_open() -> None:
    async def body(client: TestClient[Any, Any]) -> None:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/metrics")).status == 200
        missing = await client.get("/api/thing")
        wrong = await client.get("/api/thing", headers={"Authorization": "Bearer nope-nope"})
        for r in (missing, wrong):
            assert r.status == 401
            assert r.headers["WWW-Authenticate"] == 'Bearer realm="ccgw"'
        assert await missing.json() == await wrong.json()
        ok = await client.post("/api/thing", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200 and await ok.json() == {"ok": "POST"}

    auth = _auth()
    _serve(auth, body)
    assert auth.failures == 2 and auth.bans == 0


def test_the_read_token_reads_and_an_event_stream_may_pass_it_in_the_query() -> None:
    async def body(client: TestClient[Any, Any]) -> None:
        read = {"Authorization": f"Bearer {READ}"}
        assert (await client.get("/api/thing", headers=read)).status == 200
        assert (await client.post("/api/thing", headers=read)).status == 403
        assert (await client.get(f"/api/thing?access_token={READ}")).status == 200
        # a write never takes the token from the URL (it would end up in logs and histories)
        assert (await client.post(f"/api/thing?access_token={TOKEN}")).status == 401

    _serve(_auth(), body)


def test_repeated_failures_ban_the_source_even_with_the_right_token() -> None:
    async def body(client: TestClient[Any, Any]) -> None:
        for _ in range(3):
            assert (await client.get("/api/thing")).status == 401
        right = await client.get("/api/thing", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status == 429 and int(right.headers["Retry-After"]) >= 1
        assert (await client.get("/healthz")).status == 200

    auth = _auth(fail_limit=3, fail_window=60, ban_time=30)
    _serve(auth, body)
    assert auth.bans == 1


def _doc(**http: Any) -> dict[str, Any]:
    return {"site": {"name": "x"}, "http": http}


def test_config_needs_a_token_off_loopback_and_takes_the_environment_first() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_doc(listen="192.0.2.10"), env={})
    assert err.value.key == "http.api_token"
    cfg = parse_config(_doc(listen="192.0.2.10", api_token=TOKEN), env={})
    assert cfg.http.api_token == TOKEN and TOKEN not in repr(cfg.http)
    env = parse_config(_doc(listen="192.0.2.10"), env={"CCGW_API_TOKEN": READ})
    assert env.http.api_token == READ
    both = parse_config(_doc(api_token=TOKEN), env={"CCGW_API_TOKEN": READ})
    assert both.http.api_token == READ  # the environment wins over the file
    for bad, key in (
        ({"api_token": "short"}, "http.api_token"),
        ({"api_read_token": READ}, "http.api_read_token"),
        ({"api_token": TOKEN, "api_read_token": TOKEN}, "http.api_read_token"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config(_doc(**bad), env={})
        assert err.value.key == key
    assert parse_config(_doc(), env={}).http.api_token == ""  # loopback: open is allowed
