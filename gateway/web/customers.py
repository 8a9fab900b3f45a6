"""REST for customer records, the same at a site and at HQ.

    GET  /api/customers?phone=&customer_id=&region=&name=&limit=   look-up (at least one key)
    GET  /api/customers/{id}                                       one record
    POST /api/customers/{id}     JSON {"fields": {...}, "author": "1001"}: create or edit
    GET  /api/customers/{id}/history                               every change, oldest first

There is no DELETE: records are append-only (history is kept; an agent cannot delete). A bad
field or value is 400 with the reason; an unknown record 404.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from .server import error_response, json_object

__all__ = ["CustomerBook", "customer_routes"]

log = logging.getLogger(__name__)

_KEYS = ("phone", "customer_id", "region", "name")


class CustomerBook(Protocol):
    """What the routes need (a site's :class:`SiteCustomers` behind its writer thread, or
    HQ's central store)."""

    def search(self, criteria: Mapping[str, str], limit: int) -> Awaitable[list[dict[str, Any]]]:
        """Records matching every given key."""
        ...

    def upsert(
        self, customer_id: str, fields: Mapping[str, Any], author: str
    ) -> Awaitable[dict[str, Any]]:
        """Merge ``fields`` into the record (ValueError when invalid); the merged record."""
        ...

    def history(self, customer_id: str) -> Awaitable[list[dict[str, Any]]]:
        """Every change to the record, oldest first."""
        ...


def _public(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def customer_routes(book: CustomerBook) -> list[web.RouteDef]:
    """The routes, for :func:`gateway.web.server.create_app`'s ``extra_routes``."""

    async def search(request: web.Request) -> web.Response:
        criteria = {k: request.query[k] for k in _KEYS if request.query.get(k)}
        if not criteria:
            return error_response(400, f"give at least one of {', '.join(_KEYS)}")
        text = request.query.get("limit", "10")
        if not text.isdigit() or not 1 <= int(text) <= 100:
            return error_response(400, "limit must be an integer 1..100")
        found = await book.search(criteria, int(text))
        return web.json_response([_public(r) for r in found])

    async def one(request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        found = await book.search({"customer_id": cid}, 1)
        if not found:
            return error_response(404, f"no customer {cid!r}")
        return web.json_response(_public(found[0]))

    async def upsert(request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        shape = 'the body must be {"fields": {...}, "author": "..."}'
        body = await json_object(request, shape)
        if not isinstance(body.get("fields"), dict):
            return error_response(400, shape)
        author = str(body.get("author") or "api")[:64]
        try:
            record = await book.upsert(cid, body["fields"], author)
        except (ValueError, TypeError) as exc:
            return error_response(400, str(exc))
        log.info("customer %s changed by %s: %s", cid, author, sorted(body["fields"]))
        return web.json_response(_public(record))

    async def history(request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        rows = await book.history(cid)
        if not rows:
            return error_response(404, f"no customer {cid!r}")
        return web.json_response(rows)

    async def refuse_delete(request: web.Request) -> web.Response:
        return error_response(
            405,
            "customer records are never deleted (edit them; history is kept)",
            {"Allow": "GET, POST"},
        )

    return [
        web.get("/api/customers", search),
        web.get("/api/customers/{id}", one),
        web.post("/api/customers/{id}", upsert),
        web.delete("/api/customers/{id}", refuse_delete),
        web.get("/api/customers/{id}/history", history),
    ]


def threaded_book(
    run: Callable[..., Awaitable[Any]],
    search: Callable[..., list[dict[str, Any]]],
    upsert: Callable[[str, Mapping[str, Any], str], dict[str, Any]],
    history: Callable[[str], list[dict[str, Any]]],
) -> CustomerBook:
    """A :class:`CustomerBook` over synchronous calls run by ``run(fn, *args)`` (a site's
    writer thread)."""

    class _Book:
        async def search(self, criteria: Mapping[str, str], limit: int) -> list[dict[str, Any]]:
            return list(await run(lambda: search(**criteria, limit=limit)))

        async def upsert(
            self, customer_id: str, fields: Mapping[str, Any], author: str
        ) -> dict[str, Any]:
            return dict(await run(upsert, customer_id, fields, author))

        async def history(self, customer_id: str) -> list[dict[str, Any]]:
            return list(await run(history, customer_id))

    return _Book()
