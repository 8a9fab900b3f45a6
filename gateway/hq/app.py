"""``ccgw hq``: the HQ service process — central store, gRPC service, /healthz and /metrics."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from gateway.config import SiteConfig
from gateway.hq.service import HqServer
from gateway.hq.store import CentralStore, open_central_store
from gateway.metrics import Registry

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
        from gateway.web.server import create_app, start_http

        if self._http_host is not None:
            app = create_app(self.health, self.registry)
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
