"""Bearer tokens for the REST API (``/api/...``), with the SIP edge's failure bans.

The API can place calls (callbacks reach the PSTN), edit customer records and publish routing
policy, so when ``[http] api_token`` is set every ``/api/`` request must carry it
(``Authorization: Bearer <token>``, RFC 6750; an ``EventSource`` in a browser, which cannot set
headers, may pass ``?access_token=`` on a GET). ``api_read_token`` is a second token good for
reads only (a wallboard). ``/healthz`` and ``/metrics`` stay open for probes and Prometheus.

A missing and a wrong token get the same 401, so a scanner learns nothing; every failure counts
against the source address, and ``[security] fail_limit`` of them within ``fail_window`` ban it
for ``ban_time`` seconds (answered 429 with ``Retry-After``), logged and counted.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.edge.guard import Guard
from gateway.web.server import error_response

if TYPE_CHECKING:
    from gateway.config import SiteConfig

__all__ = ["ApiAuth", "api_auth"]

log = logging.getLogger(__name__)

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, text: str, **headers: str) -> web.Response:
    return error_response(status, text, headers)


class ApiAuth:
    """The aiohttp middleware (:attr:`middleware`) checking the API's bearer tokens."""

    def __init__(
        self,
        token: str,
        read_token: str = "",
        guard: Guard | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        prefix: str = "/api/",
    ) -> None:
        self.token = token.encode()
        self.read_token = read_token.encode()
        self.guard = guard or Guard(rate_limit=1_000_000)
        self.clock = clock
        self.prefix = prefix
        self.failures = 0
        self.bans = 0

    @property
    def enabled(self) -> bool:
        """Whether requests need a token (``api_token`` is set)."""
        return bool(self.token)

    def _presented(self, request: web.Request) -> bytes | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip().encode()
        if request.method in _READ_METHODS:
            query = request.query.get("access_token")
            if query:
                return query.encode()
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Let ``/api/`` requests through only with a valid token for their method."""
        if not self.token or not request.path.startswith(self.prefix):
            return await handler(request)
        source = request.remote or "?"
        now = self.clock()
        guard = self.guard
        if guard.is_banned(source, now):
            retry = str(guard.retry_after(source, now))
            return _error(429, "too many failed attempts", **{"Retry-After": retry})
        presented = self._presented(request)
        full = presented is not None and hmac.compare_digest(presented, self.token)
        read = (
            not full
            and presented is not None
            and bool(self.read_token)
            and hmac.compare_digest(presented, self.read_token)
        )
        if not (full or read):
            self.failures += 1
            if guard.auth_failed(source, now):
                self.bans += 1
                log.warning(
                    "API: banning %s for %.0f s after %d failed attempts",
                    source, guard.ban_time, guard.fail_limit,
                )  # fmt: skip
            else:
                log.info("API: refused %s %s from %s: no valid token", request.method,
                         request.path, source)  # fmt: skip
            return _error(
                401, "a valid API token is required", **{"WWW-Authenticate": 'Bearer realm="ccgw"'}
            )
        guard.auth_ok(source)
        if read and request.method not in _READ_METHODS:
            return _error(403, "this token may only read")
        return await handler(request)


def api_auth(cfg: SiteConfig) -> ApiAuth:
    """The REST API's token check for a site's (or HQ's) file: ``[http]`` tokens, banning like
    the SIP edge (``[security]`` fail limits)."""
    sec = cfg.security
    guard = Guard(
        rate_limit=1_000_000,  # rate is not limited here; failures are
        fail_window=sec.fail_window,
        fail_limit=sec.fail_limit,
        ban_time=sec.ban_time,
    )
    return ApiAuth(cfg.http.api_token, cfg.http.api_read_token, guard)
