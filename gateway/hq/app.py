"""``ccgw hq``: the HQ service process — central store, gRPC service, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.config import SiteConfig
from gateway.config_mesh import etcd_access
from gateway.hq.service import EDITOR, HqServer
from gateway.hq.store import CentralStore, SyncEntry, open_central_store
from gateway.metrics import Registry
from gateway.store.hlc import HlcClock
from gateway.store.merge import CustomerChange

__all__ = ["HqApp"]

log = logging.getLogger(__name__)


class HqApp:
    """HQ's central database and its gRPC service, started and stopped on an asyncio loop.

    ``listen`` / ``http_port`` override ``[hq] listen`` and ``[hq] http``'s port (tests pass 0).
    """

    def __init__(
        self,
        cfg: SiteConfig,
        *,
        listen: str | None = None,
        http_port: int | None = None,
        database: str | None = None,
    ) -> None:
        if cfg.hq is None:
            raise ValueError(f"{cfg.source}: no [hq] table: not an HQ configuration")
        self.cfg = cfg
        self.hq = cfg.hq
        self.listen = listen or str(cfg.hq.listen)
        self.database = database or cfg.hq.database
        http = cfg.hq.http
        self._http_host = http.host if http is not None else None
        self._http_port = http.port if http is not None and http_port is None else http_port or 0
        self.registry = Registry()
        self.store: CentralStore | None = None
        self.server: HqServer | None = None
        self.http_runner: Any = None
        self.http_port = 0
        self.port = 0
        self.started_at = time.time()
        self.hlc = HlcClock(EDITOR, lambda: int(time.time() * 1000))
        self._edit_lock = asyncio.Lock()

    async def start(self) -> None:
        """Open (and migrate) the database, then serve gRPC and HTTP."""
        self.store = await open_central_store(self.database)
        credentials = None
        if self.hq.pki is not None:
            from gateway.mesh.tls import server_credentials

            credentials = server_credentials(Path(self.hq.pki), self.hq.name)
        self.server = HqServer(self.store, listen=self.listen, credentials=credentials)
        self.port = await self.server.start()
        self.server.register_metrics(self.registry)
        from gateway.web.customers import customer_routes
        from gateway.web.server import create_app, start_http

        if self._http_host is not None:
            routes = customer_routes(_HqBook(self))
            if self.cfg.mesh is not None and self.cfg.mesh.etcd:
                access = etcd_access(self.cfg.mesh, self.hq.name)
                routes += policy_routes(self.cfg.mesh.etcd, access)
            from gateway.web.auth import api_auth

            auth = api_auth(self.cfg)
            app = create_app(self.health, self.registry, routes, auth=auth)
            self.registry.counter(
                "ccgw_http_auth_failures_total",
                "API requests without a valid token.",
                callback=lambda: auth.failures,
            )
            self.http_runner, self.http_port = await start_http(
                app, self._http_host, self._http_port
            )
        self.started_at = time.time()
        log.info(
            "HQ: gRPC on %s (port %d, tls=%s), HTTP on %s:%d, database %s",
            self.listen,
            self.port,
            credentials is not None,
            self._http_host or "-",
            self.http_port,
            self.database.split("@")[-1],  # never log a password
        )

    def health(self) -> dict[str, Any]:
        """What /healthz reports."""
        server = self.server
        return {
            "status": "ok",
            "role": "hq",
            "uptime_s": round(time.time() - self.started_at, 1),
            "sites": server.high_water if server is not None else {},
            "backlog": server.backlog if server is not None else {},
        }

    async def stop(self) -> None:
        """Stop serving (in-flight RPCs get their grace), then close the database."""
        if self.server is not None:
            await self.server.stop()
        if self.http_runner is not None:
            await self.http_runner.cleanup()
        if self.store is not None:
            await self.store.close()


def policy_routes(endpoints: tuple[str, ...], access: Any = None) -> list[Any]:
    """``GET /api/policies`` and ``PUT /api/policies/{name}``: the routing policy HQ publishes
    to every site through etcd (validated here first; each site validates again and keeps its
    last good one if it refuses)."""
    from aiohttp import web

    from gateway.config_mesh import parse_policy
    from gateway.mesh.etcd import EtcdUnavailable, connect
    from gateway.mesh.registry import CONFIG_PREFIX, publish_policy
    from gateway.web.server import error_response, json_object

    async def listing(request: web.Request) -> web.Response:
        try:
            client = await connect(endpoints, access=access)
            try:
                items, _ = await client.get_prefix(CONFIG_PREFIX)
            finally:
                await client.close()
        except EtcdUnavailable as exc:
            return error_response(503, f"etcd unreachable: {exc}")
        prefix = CONFIG_PREFIX
        return web.json_response({k[len(prefix) :]: json.loads(v) for k, v in items})

    async def publish(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        doc = await json_object(request, "a policy is a JSON object")
        try:
            parse_policy(name, doc)
        except ValueError as exc:
            return error_response(400, str(exc))
        try:
            client = await connect(endpoints, access=access)
            try:
                await publish_policy(client, name, doc)
            finally:
                await client.close()
        except EtcdUnavailable as exc:
            return error_response(503, f"etcd unreachable: {exc}")
        log.info("published policy %s: %s", name, sorted(doc))
        return web.json_response({"published": name})

    return [web.get("/api/policies", listing), web.put("/api/policies/{name}", publish)]


class _HqBook:
    """Customer records as HQ edits them: a change made at HQ is applied like a site's (origin
    :data:`EDITOR`, its own sequence), then pushed to the sites that serve the customer."""

    def __init__(self, app: HqApp) -> None:
        self.app = app

    async def search(self, criteria: Mapping[str, str], limit: int) -> list[dict[str, Any]]:
        assert self.app.store is not None
        return await self.app.store.lookup_customers(**criteria, limit=limit)

    async def upsert(
        self, customer_id: str, fields: Mapping[str, Any], author: str
    ) -> dict[str, Any]:
        app = self.app
        assert app.store is not None and app.server is not None
        async with app._edit_lock:
            change = CustomerChange(customer_id, dict(fields), app.hlc.tick(), EDITOR, author)
            seq = await app.store.high_water(EDITOR) + 1
            entry = SyncEntry(seq, "customer", change.to_payload(), time.time())
            await app.store.apply_batch(EDITOR, [entry])
        app.server.notify_changes()
        found = await app.store.lookup_customers(customer_id=customer_id, limit=1)
        return found[0] if found else {}

    async def history(self, customer_id: str) -> list[dict[str, Any]]:
        store = self.app.store
        assert store is not None
        history = getattr(store, "customer_history", None)
        return list(await history(customer_id)) if history is not None else []
