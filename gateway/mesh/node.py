"""One site's place in the mesh: registry, handoff server and client, wired for the contact centre.

:class:`MeshNode` implements :class:`gateway.cc.mesh_side.MeshPort` over the etcd registry
(:mod:`gateway.mesh.registry`) and the gRPC handoff (:mod:`gateway.mesh.handoff`). Every part is
optional: a site without ``[mesh] etcd`` sees no other site (and never overflows), one without
``handoff_listen`` accepts no overflow.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.cc.mesh_side import Reservation
from gateway.config import ConfigError, SiteConfig
from gateway.config_mesh import etcd_access, parse_policy
from gateway.mesh.etcd import connect
from gateway.mesh.handoff import Customer, HandoffClient, HandoffContext, HandoffServer
from gateway.mesh.registry import MeshView, QueueLoad, SiteRecord, SiteRegistry
from gateway.mesh.sync import CustomerFeed, StoreOutbox, SyncClient, lookup
from gateway.metrics import Registry
from gateway.routing.overflow import RemoteQueue
from gateway.store.customers import SiteCustomers
from gateway.store.hlc import HlcClock
from gateway.store.sqlite import SqliteSiteStore

__all__ = ["MeshNode", "context_from_dict", "context_to_dict"]

log = logging.getLogger(__name__)

_CUSTOMER_KEYS = ("customer_id", "name", "region", "tier", "named_agent", "notes")


def context_to_dict(ctx: HandoffContext) -> dict[str, Any]:
    """A handoff context as the contact centre's plain mapping."""
    cust = ctx.customer
    customer: dict[str, Any] = {}
    if cust is not None:
        customer = {k: getattr(cust, k) for k in _CUSTOMER_KEYS if getattr(cust, k)}
        if cust.phones:
            customer["phones"] = list(cust.phones)
        if cust.vip:
            customer["vip"] = True
    return {
        "handoff_id": ctx.handoff_id,
        "from_site": ctx.from_site,
        "queue": ctx.queue,
        "caller": ctx.caller,
        "dialled": ctx.dialled,
        "arrival_ts": ctx.arrival_unix_ms / 1000.0,
        "priority": ctx.priority,
        "language": ctx.language,
        "ivr_path": list(ctx.ivr_path),
        "variables": dict(ctx.variables),
        "customer": customer,
        "notes": ctx.notes,
        "hops": ctx.hops,
        "required_skills": dict(ctx.required_skills),
        "visited": sorted(ctx.visited),
        "call_id": ctx.call_id,
    }


def context_from_dict(d: Mapping[str, Any]) -> HandoffContext:
    """The contact centre's mapping as a handoff context (ValueError if malformed)."""
    cust = d.get("customer") or {}
    customer = None
    if cust:
        customer = Customer(
            **{k: str(cust[k]) for k in _CUSTOMER_KEYS if cust.get(k)},
            phones=tuple(str(p) for p in cust.get("phones", ()) or ()),
            vip=bool(cust.get("vip", False)),
        )
    return HandoffContext(
        from_site=str(d["from_site"]),
        queue=str(d["queue"]),
        caller=str(d.get("caller", "")),
        dialled=str(d.get("dialled", "")),
        arrival_unix_ms=round(float(d.get("arrival_ts", 0.0)) * 1000),
        priority=int(d.get("priority", 0)),
        language=str(d.get("language", "")),
        ivr_path=tuple(str(p) for p in d.get("ivr_path", ()) if p),
        variables={str(k): str(v) for k, v in (d.get("variables") or {}).items()},
        customer=customer,
        notes=str(d.get("notes", "")),
        hops=int(d.get("hops", 0)),
        required_skills={str(k): int(v) for k, v in (d.get("required_skills") or {}).items()},
        call_id=str(d.get("call_id", "")),
        visited=frozenset(str(s) for s in d.get("visited", ())),
    )


class MeshNode:
    """The mesh as one site's contact centre sees it (a ``MeshPort``)."""

    def __init__(
        self,
        cfg: SiteConfig,
        *,
        sip: str,
        http: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert cfg.mesh is not None
        self.cfg = cfg
        self.mesh = cfg.mesh
        self.site = cfg.name
        self.sip = sip
        self.http = http
        self.clock = clock
        self.registry: SiteRegistry | None = None
        self.server: HandoffServer | None = None
        self.client: HandoffClient | None = None
        self.handoff_port: int | None = None
        self._loads: Callable[[], list[dict[str, Any]]] = list
        self._admit: Callable[[Mapping[str, Any]], str | None] = lambda _ctx: "not_ready"
        self._tasks: set[asyncio.Task[Any]] = set()
        self.reserve_ms: list[float] = []  # recent Reserve round trips (for figures)
        self.sync: SyncClient | None = None
        self.feed: CustomerFeed | None = None
        self._customers: SiteCustomers | None = None
        self._channel_creds: Any = None
        self._hlc: HlcClock | None = None
        self.on_policy: Callable[[str, object], None] | None = None
        """Called with each policy HQ publishes (validated) or ``None`` when it is withdrawn."""

    # ------------------------------------------------------------------ lifecycle

    def _credentials(self) -> tuple[Any, Any]:
        if self.mesh.pki is None:
            return None, None
        from gateway.mesh.tls import channel_credentials, missing, server_credentials

        pki = Path(self.mesh.pki)
        problem = missing(pki, self.site, self.sip.rpartition(":")[0])
        if problem is not None:
            raise ConfigError(self.cfg.source, "mesh.pki", problem)
        return server_credentials(pki, self.site), channel_credentials(pki, self.site)

    async def start(
        self,
        loads: Callable[[], list[dict[str, Any]]],
        admit: Callable[[Mapping[str, Any]], str | None],
    ) -> None:
        """Serve handoffs, register in etcd and start publishing ``loads()``."""
        self._loads = loads
        self._admit = admit
        server_creds, channel_creds = self._credentials()
        mesh = self.mesh
        handoff = ""
        if mesh.handoff_listen is not None:
            self.server = HandoffServer(
                self.site,
                self._admit_ctx,
                sip_uri=f"sip:overflow-{{queue}}@{self.sip}",
                default_ttl_s=mesh.reservation_ttl,
                max_ttl_s=max(30.0, mesh.reservation_ttl),
                max_hops=8,
            )
            self.handoff_port = await self.server.start(str(mesh.handoff_listen), server_creds)
            handoff = f"{mesh.handoff_listen.host}:{self.handoff_port}"
        self.client = HandoffClient(self.site, channel_creds)
        if mesh.etcd:
            skills = sorted({s for a in self.cfg.agents for s in a.skills})
            me = SiteRecord(
                site=self.site,
                region=self.cfg.site.region,
                sip=self.sip,
                handoff=handoff,
                http=self.http,
                skills=tuple(skills),
                started=self.clock(),
            )
            endpoints = list(mesh.etcd)
            access = etcd_access(mesh, self.site)
            self.registry = SiteRegistry(
                lambda: connect(endpoints, access=access),
                me,
                ttl=mesh.lease_ttl,
                load_interval=mesh.load_interval,
                load_source=self._queue_loads,
                policy_validator=parse_policy,
                on_policy=self._policy,
            )
            await self.registry.start()

    async def start_sync(
        self,
        store: SqliteSiteStore,
        run: Callable[..., Awaitable[Any]],
        customers: SiteCustomers,
        registry: Registry,
        hlc: HlcClock,
    ) -> None:
        """Stream the outbox to HQ and apply HQ's customer changes (with ``[mesh] hq``).
        ``run(fn, *args)`` runs a store call on the site's writer thread."""
        if self.mesh.hq is None:
            return
        _, channel_creds = self._credentials()
        target = str(self.mesh.hq)

        outbox = StoreOutbox(store, raw=True)  # payloads go as stored
        self.sync = SyncClient(
            self.site,
            target,
            channel_creds,
            peek=outbox.peek,
            trim=outbox.trim,
            depth=outbox.depth,
            batch=self.mesh.sync_batch,
            backoff_max=2.0,  # back soon after HQ is: the catch-up is mostly this wait
        )
        self.sync.register_metrics(registry)
        await self.sync.start()
        self._customers = customers
        self._hlc = hlc

        def apply(record: dict[str, Any]) -> None:
            customers.apply_remote_record(record, clock=hlc)

        async def on_update(rev: int, record: dict[str, Any]) -> None:
            await run(apply, record)

        self.feed = CustomerFeed(
            self.site, target, channel_creds, on_update=on_update, channel=self.sync.channel
        )
        await self.feed.start()

    def notify_sync(self) -> None:
        """A write was committed: the sync client may send it at once."""
        if self.sync is not None:
            self.sync.notify()

    async def lookup(self, phone: str) -> dict[str, Any] | None:
        """HQ's record of the customer calling from ``phone``, within ``lookup_budget``;
        None when unknown, too slow or HQ is unreachable (the call never waits longer)."""
        if self.sync is None or self.sync.channel is None:
            return None
        found = await lookup(
            self.sync.channel, phone=phone, site=self.site, budget_s=self.mesh.lookup_budget
        )
        return found[0] if found else None

    async def stop(self) -> None:
        """Leave the registry (at once: the lease is revoked) and stop serving."""
        if self.feed is not None:
            await self.feed.stop()
        if self.sync is not None:
            await self.sync.stop()
        if self.registry is not None:
            await self.registry.stop()
        if self.server is not None:
            await self.server.stop(1.0)
        if self.client is not None:
            await self.client.close()
        for task in list(self._tasks):
            task.cancel()

    def _queue_loads(self) -> list[QueueLoad]:
        out = []
        for d in self._loads():
            sl = d.get("service_level")
            out.append(
                QueueLoad(
                    site=self.site,
                    queue=d["queue"],
                    waiting=d["waiting"],
                    available=d["available"],
                    available_by_skill=d["available_by_skill"],
                    logged_in_by_skill=d["logged_in_by_skill"],
                    ewt_s=d["ewt_s"],
                    service_level=None if sl is None else min(1.0, max(0.0, float(sl))),
                    oldest_wait_s=d["oldest_wait_s"],
                    ts=d["ts"],
                )
            )
        return out

    def _policy(self, name: str, value: object) -> None:
        if self.on_policy is not None:
            self.on_policy(name, value)

    def _admit_ctx(self, ctx: HandoffContext) -> str | None:
        return self._admit(context_to_dict(ctx))

    # ------------------------------------------------------------------ MeshPort

    def view(self) -> MeshView | None:
        """The registry's current view (None without etcd)."""
        return self.registry.view() if self.registry is not None else None

    def remote_queues(self, queue: str) -> list[RemoteQueue]:
        """Every other live site's figures for ``queue``. Liveness is the site's lease; a
        view that lost etcd is stale and offers no target (never overflow blind)."""
        view = self.view()
        if view is None or not view.connected:
            return []
        out = []
        for load in view.loads_for(queue):
            if load.site == self.site or not view.alive(load.site):
                continue
            out.append(
                RemoteQueue(
                    site=load.site,
                    queue=load.queue,
                    waiting=load.waiting,
                    available=load.available,
                    available_by_skill=dict(load.available_by_skill),
                    ewt_s=math.inf if load.ewt_s < 0 else load.ewt_s,
                    service_level=load.service_level if load.service_level is not None else 1.0,
                    path_cost=float(self.mesh.path_cost.get(load.site, 1.0)),
                    alive=True,
                    # Liveness is the lease; unchanged figures are republished only now and
                    # then, so their timestamp says nothing about staleness.
                    age_s=0.0,
                    logged_in_by_skill=dict(load.logged_in_by_skill),
                )
            )
        return out

    def trunk_to(self, site: str) -> str | None:
        """The inter-site trunk to ``site``, if configured."""
        trunk = self.cfg.mesh_trunk(site)
        return trunk.name if trunk is not None else None

    async def reserve(self, site: str, context: Mapping[str, Any]) -> Reservation:
        """Ask ``site`` to hold capacity for the call (refusal on any network fault)."""
        view = self.view()
        record = view.sites.get(site) if view is not None else None
        if record is None or not record.handoff or self.client is None:
            return Reservation(False, "unknown_site")
        try:
            ctx = context_from_dict(context)
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("handoff context for %s is invalid: %s", site, exc)
            return Reservation(False, "bad_context")
        t0 = time.monotonic()
        result = await self.client.reserve(
            record.handoff, ctx, self.mesh.reserve_timeout, ttl_s=self.mesh.reservation_ttl
        )
        self.reserve_ms.append((time.monotonic() - t0) * 1000)
        del self.reserve_ms[:-1000]
        return Reservation(result.accepted, result.reason, result.handoff_id, result.sip_uri)

    def release(self, site: str, handoff_id: str) -> None:
        """Give a reservation back in the background."""
        view = self.view()
        record = view.sites.get(site) if view is not None else None
        if record is None or self.client is None:
            return
        task = asyncio.get_running_loop().create_task(
            self.client.release(record.handoff, handoff_id, self.mesh.reserve_timeout)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def take(self, handoff_id: str) -> Mapping[str, Any] | None:
        """The context of an arriving overflow call (single use)."""
        if self.server is None:
            return None
        ctx = self.server.take(handoff_id)
        if ctx is None:
            return None
        out = context_to_dict(ctx)
        out["handoff_id"] = handoff_id
        return out
