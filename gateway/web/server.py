"""The site's HTTP server: ``/healthz``, ``/metrics``, and JSON errors for everything else.

``create_app`` builds the aiohttp application; other parts of the gateway (REST API, click-to-call,
wallboard) pass their routes as ``extra_routes`` and get the same JSON error handling. Every error
answer is ``{"error": <slug>, "status": <code>, "reason": <text>}``.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web

from gateway.metrics import CONTENT_TYPE, Registry

__all__ = [
    "REGISTRY_KEY",
    "HealthCheck",
    "create_app",
    "error_response",
    "start_http",
    "stop_http",
]

logger = logging.getLogger(__name__)

HealthCheck = Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]
"""Returns the health document (sync or async); ``"status": "ok"`` (the default when absent)
answers 200, any other status 503."""

REGISTRY_KEY: Final = web.AppKey("ccgw_registry", Registry)
"""``app[REGISTRY_KEY]``: the site's metrics registry, for handlers added as extra routes."""

_NO_STORE: Final = {"Cache-Control": "no-store"}


def error_response(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error answer: ``{"error": "not_found", "status": 404, "reason": "..."}``."""
    try:
        slug = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        slug = "error"
    body = {"error": slug, "status": status, "reason": reason}
    return web.json_response(body, status=status, headers={**_NO_STORE, **(headers or {})})


async def json_object(
    request: web.Request, not_object: str = "the body must be a JSON object"
) -> dict[str, Any]:
    """The request's body, a JSON object; otherwise a 400 (a JSON error answer through
    :func:`create_app`'s middleware) saying the body is not JSON, or ``not_object``."""
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=not_object)
    return body


def _reason(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{request.method} is not allowed on {request.path} (allowed: {allowed})"
    if exc.status == 404 and exc.text == "404: Not Found":
        return f"no such resource: {request.method} {request.path}"
    text = exc.text or ""
    if text and text != f"{exc.status}: {exc.reason}":
        return text
    return exc.reason


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every 4xx/5xx (routing misses, handler exceptions) into a JSON error answer."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, _reason(request, exc), headers)
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal server error")


def create_app(
    health: HealthCheck,
    registry: Registry,
    extra_routes: Iterable[web.AbstractRouteDef] | None = None,
    *,
    auth: Any = None,
) -> web.Application:
    """The site's aiohttp application: ``GET /healthz`` (200 or 503 JSON), ``GET /metrics``
    (Prometheus text 0.0.4), ``extra_routes``, and JSON 404/405/500 answers. ``auth`` (a
    :class:`gateway.web.auth.ApiAuth`) guards the ``/api/`` routes with bearer tokens."""

    async def healthz(request: web.Request) -> web.Response:
        try:
            result = health()
            if inspect.isawaitable(result):
                result = await result
            doc = dict(result)
        except Exception as exc:
            logger.exception("health check failed")
            doc = {"status": "error", "reason": f"health check failed: {type(exc).__name__}"}
        doc.setdefault("status", "ok")
        status = 200 if doc["status"] == "ok" else 503
        return web.json_response(doc, status=status, headers=_NO_STORE, dumps=_dumps)

    async def metrics(request: web.Request) -> web.Response:
        body = registry.render().encode()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, **_NO_STORE})

    middlewares: list[Any] = [_json_errors]
    if auth is not None and auth.enabled:
        middlewares.append(auth.middleware)
    app = web.Application(middlewares=middlewares)
    app[REGISTRY_KEY] = registry
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    if extra_routes is not None:
        app.add_routes(extra_routes)
    return app


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


async def start_http(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float = 5.0
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0 = a free port); return the runner and the bound port.
    ``shutdown_timeout`` is the grace (seconds) in-flight requests get at :func:`stop_http`."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = int(runner.addresses[0][1])
    return runner, bound


async def stop_http(runner: web.AppRunner) -> None:
    """Stop accepting, let in-flight requests finish (up to the grace), then close."""
    await runner.cleanup()
