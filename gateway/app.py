"""Wires one site gateway: transports, SIP endpoint, edge, call control, media relay, store, web."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from gateway.calls.b2bua import B2bua, Call, CallRecord, GroupInfo, TrunkInfo
from gateway.cc.center import ContactCentre, Interaction
from gateway.config import ConfigError, SiteConfig
from gateway.edge.guard import Guard
from gateway.edge.registrar import Registrar
from gateway.edge.service import EdgeService
from gateway.media.relay import MediaRelay
from gateway.metrics import Registry
from gateway.routing.dialplan import Destination, DialPlan, parse_destination
from gateway.sip.digest import DigestAuthenticator
from gateway.sip.peer import Peer
from gateway.sip.transaction import TimerConfig
from gateway.store.customers import ExportFilter, SiteCustomers
from gateway.store.hlc import HlcClock
from gateway.store.model import Cdr
from gateway.store.sqlite import SqliteSiteStore
from gateway.store.writer import Result, StoreWriter
from gateway.transport.endpoint import SipEndpoint
from gateway.transport.tcp import TcpTransport, TlsContexts
from gateway.transport.udp import UdpTransport
from gateway.web.api import cc_routes
from gateway.web.auth import api_auth
from gateway.web.customers import customer_routes, threaded_book

log = logging.getLogger(__name__)

_SIDES = {"a": "caller", "b": "callee"}

LOOP_STALL = 0.2
"""Seconds of event-loop lag logged as a stall (T1 is 0.5 s: peers start retransmitting)."""


def dial_plan(cfg: SiteConfig) -> DialPlan:
    """The routing view of a site's configuration."""

    def dest(d: Any) -> Destination:
        return parse_destination(str(d))

    dids = {t.name: {num: dest(d) for num, d in t.dids.items()} for t in cfg.trunks}
    defaults = {t.name: dest(t.default_destination) for t in cfg.trunks if t.default_destination}
    cc = cfg.cc
    return DialPlan(
        agents=frozenset(a.extension for a in cfg.agents),
        group_numbers={g.number: g.name for g in cfg.groups if g.number},
        queue_numbers={q.number: q.name for q in cfg.queues if q.number},
        feature_codes=frozenset((cc.login_code, cc.logout_code, cc.pause_code, cc.unpause_code)),
        dids=dids,
        trunk_defaults=defaults,
        external_pattern=cfg.dialplan.external_pattern,
        outbound_trunk=cfg.dialplan.outbound_trunk,
        site_prefixes={p: t.name for t in cfg.trunks for p in t.extensions},
        mesh_trunks=frozenset(t.name for t in cfg.trunks if t.site is not None),
    )


class SiteGateway:
    """One site's gateway process, started and stopped on an asyncio loop."""

    def __init__(
        self,
        cfg: SiteConfig,
        *,
        sip_port: int | None = None,
        http_port: int | None = None,
        store_path: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self._sip_port = cfg.sip.port if sip_port is None else sip_port
        self._http_port = cfg.http.port if http_port is None else http_port
        self._store_path = store_path or cfg.store.path
        self.clock = clock
        self.registry = Registry()
        self.started_at = 0.0
        self.sip_port = 0
        self.tls_port = 0
        self.loop_stalls = 0
        self.gc_full_passes = 0
        self.gc_last_pause = 0.0
        self.http_port = 0
        self.cdrs_written = 0
        self.store_errors = 0
        self.mails_sent = 0
        self.mail_errors = 0  # voicemail e-mails the SMTP server did not take
        self.dtmf_total = 0
        self._queue_snaps: dict[str, dict[str, Any]] = {}
        self._queue_snaps_at = float("-inf")
        self.dtmf_recent: deque[tuple[str, str, str]] = deque(maxlen=256)  # (call, leg, digit)

    async def start(self) -> None:
        """Bind every socket and start serving."""
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.endpoint = SipEndpoint(loop, TimerConfig(T1=cfg.sip.T1, T2=cfg.sip.T2, T4=cfg.sip.T4))
        ep = self.endpoint
        host = cfg.sip.listen
        # UDP and TCP share one port. With port 0 (any), the port the kernel picks for UDP may
        # be taken for TCP: pick again.
        for attempt in range(20):
            self.udp = await UdpTransport.bind(loop, host, self._sip_port, ep.datagram_received)
            self.sip_port = self.udp.local[1]
            if "tcp" not in cfg.sip.transports:
                break
            try:
                self.tcp = await TcpTransport.bind(loop, host, self.sip_port, ep.datagram_received)
            except OSError:
                self.udp.close()
                if self._sip_port != 0 or attempt == 19:
                    raise
                continue
            ep.transports["TCP"] = self.tcp
            break
        ep.transports["UDP"] = self.udp
        ports = {"UDP": self.sip_port, "TCP": self.sip_port}
        self.tls: TcpTransport | None = None
        if "tls" in cfg.sip.transports:
            self.tls = await self._bind_tls(loop, host, ep)
            ports["TLS"] = self.tls_port = self.tls.local[1]
        self.store = SqliteSiteStore(self._store_path)
        mesh_cfg = cfg.mesh
        if mesh_cfg is not None:
            self.store.export_kinds = frozenset(mesh_cfg.export)
        self.hlc = HlcClock(cfg.site.name, lambda: int(time.time() * 1000))
        self.customers = SiteCustomers(
            self.store,
            cfg.site.name,
            export_filter=ExportFilter(
                customer_fields=frozenset(mesh_cfg.customer_fields)
                if mesh_cfg is not None
                else None
            ),
        )
        # One writer thread: commits happen off the event loop, in order (the store locks).
        self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"store-{cfg.site.name}")
        self._writes = StoreWriter(self.store, loop, self._writer, self._committed)
        self._notifications: set[asyncio.Task[None]] = set()
        self.relay = MediaRelay(
            host=cfg.media.host or host,
            port_range=(cfg.media.rtp_port_min, cfg.media.rtp_port_max),
            stall_timeout=cfg.media.stall_timeout,
            advertise=cfg.media.advertise or None,
        )
        public = cfg.sip.advertise or host  # what Via, Contact and the mesh record carry
        secret = cfg.sip.auth_secret.encode() or secrets.token_bytes(32)
        auth = DigestAuthenticator(
            realm=cfg.sip.realm or cfg.sip.domain or cfg.site.name,
            secret=secret,
            nonce_lifetime=cfg.sip.nonce_lifetime,
            algorithms=("MD5",),
        )
        sec = cfg.security
        trusted = [str(n) for n in sec.trusted]
        for t in cfg.trunks:
            trusted.extend(p.host for p in t.peers)
        self.api_auth = api_auth(cfg)
        self.guard = Guard(
            rate_window=sec.rate_window,
            rate_limit=sec.rate_limit,
            fail_window=sec.fail_window,
            fail_limit=sec.fail_limit,
            ban_time=sec.ban_time,
            allow_list=trusted,
        )
        self.registrar = Registrar(
            max_contacts=max((a.max_contacts for a in cfg.agents), default=5)
        )
        self.edge = EdgeService(
            ep,
            self.registrar,
            auth,
            self.guard,
            {a.extension: a.password for a in cfg.agents},
            host=public,
            port=self.sip_port,
            user_agent=cfg.sip.user_agent,
            ping_interval=cfg.sip.options_ping_interval,
            clock=self.clock,
        )
        ep.admit = self.edge.admit
        trunks = {
            t.name: TrunkInfo(
                t.name,
                tuple(Peer(t.transport.upper(), p.host, p.port) for p in t.peers),
                t.username,
                t.password,
                t.inbound_auth,
                t.site,
            )
            for t in cfg.trunks
        }
        groups = {
            g.name: GroupInfo(g.name, g.strategy, tuple(g.members), g.ring_timeout)
            for g in cfg.groups
        }
        self.b2bua = B2bua(
            loop,
            ep,
            self.edge,
            self.relay,
            dial_plan(cfg),
            local_host=public,
            local_port=self.sip_port,
            local_ports=ports,
            peer_name=self.tls.identity if self.tls is not None else None,
            trunks=trunks,
            groups=groups,
            no_answer_timeout=cfg.dialplan.no_answer_timeout,
            user_agent=cfg.sip.user_agent,
            on_record=self._write_cdr,
            on_dtmf=self._on_dtmf,
        )
        ep.tu = self.b2bua
        self.cc: ContactCentre | None = None
        self.mesh: Any = None  # gateway.mesh.node.MeshNode when [mesh] is set
        extra_routes: list[Any] = []
        if cfg.mesh is not None and cfg.mesh.enabled:
            from gateway.mesh.node import MeshNode

            sip_host = public
            self.mesh = MeshNode(
                cfg, sip=f"{sip_host}:{self.sip_port}", http=f"{cfg.http.listen}:0"
            )
        if cfg.queues or cfg.ivr:
            self.cc = ContactCentre(
                loop,
                self.b2bua,
                cfg,
                on_interaction=self._write_interaction,
                on_voicemail=self._write_voicemail,
                store=self.store,
                mesh=self.mesh,
                customers=self._customer_by_phone,
                lookup=self.mesh.lookup if mesh_cfg is not None and mesh_cfg.hq else None,
            )
            self.b2bua.app = self.cc
            self.cc.start()
            extra_routes = cc_routes(self.cc, self.store)
        extra_routes += customer_routes(
            threaded_book(
                self._in_writer, self.customers.search, self._upsert_customer, self._history
            )
        )
        self.edge.start(loop)
        self._cps_samples: deque[int] = deque([0], maxlen=11)
        self._lag_samples: deque[float] = deque([0.0], maxlen=10)
        self._cps_task = loop.create_task(self._sample_cps())
        self._metrics()
        from gateway.web.server import create_app, start_http

        app = create_app(self.health, self.registry, extra_routes, auth=self.api_auth)
        self.http_runner, self.http_port = await start_http(app, cfg.http.listen, self._http_port)
        if self.mesh is not None:
            if self.cc is not None and self.cc.mesh is not None:
                self.mesh.on_policy = self.cc.mesh.apply_policy
            await self.mesh.start_sync(
                self.store, self._in_writer, self.customers, self.registry, self.hlc
            )
            self.mesh.http = f"{cfg.http.listen}:{self.http_port}"
            side = self.cc.mesh if self.cc is not None else None
            await self.mesh.start(
                side.loads if side is not None else list,
                side.admit if side is not None else (lambda _ctx: "no_contact_centre"),
            )
        self.started_at = time.time()
        log.info(
            "site %s: SIP on %s:%d (%s), HTTP on %s:%d",
            cfg.site.name,
            host,
            self.sip_port,
            "/".join(f"{k}:{ports[k]}" if k == "TLS" else k for k in ep.transports),
            cfg.http.listen,
            self.http_port,
        )

    async def _bind_tls(
        self, loop: asyncio.AbstractEventLoop, host: str, ep: SipEndpoint
    ) -> TcpTransport:
        """The SIP-over-TLS listener between sites, with the mesh PKI's certificate."""
        from gateway.mesh.tls import missing, sip_contexts

        cfg = self.cfg
        assert cfg.mesh is not None and cfg.mesh.pki is not None  # the config check saw to it
        problem = missing(Path(cfg.mesh.pki), cfg.site.name, host)
        if problem is not None:
            raise ConfigError(cfg.source, "mesh.pki", problem)
        try:
            contexts = TlsContexts(*sip_contexts(Path(cfg.mesh.pki), cfg.site.name))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                cfg.source, "mesh.pki", f"cannot load the SIP TLS certificate: {exc}"
            ) from exc
        tls = await TcpTransport.bind(
            loop, host, cfg.sip.tls_port, ep.datagram_received, tls=contexts
        )
        for t in cfg.trunks:
            if t.transport == "tls" and t.site is not None:
                for p in t.peers:
                    tls.expect[(p.host, p.port)] = t.site
        ep.transports["TLS"] = tls
        return tls

    def on_gc_pass(self, seconds: float, freed: int) -> None:
        """A full collection ran (see ``gateway.cli.full_collections``)."""
        self.gc_full_passes += 1
        self.gc_last_pause = seconds
        log.info("full garbage collection: %.0f ms, %d objects freed", seconds * 1000, freed)

    async def _sample_cps(self) -> None:
        """Once a second: the CPS sample; every 50 ms: how late the loop woke us (its lag)."""
        loop = asyncio.get_running_loop()
        tick, per_second = 0.05, 20
        n = 0
        worst = 0.0
        while True:
            due = loop.time() + tick
            await asyncio.sleep(tick)
            lag = loop.time() - due
            worst = max(worst, lag)
            if lag > LOOP_STALL:
                self.loop_stalls += 1
                log.warning("event loop stalled %.0f ms (calls in progress %d)",
                            lag * 1000, self.b2bua.active_calls)  # fmt: skip
            n += 1
            if n == per_second:
                n = 0
                self._cps_samples.append(self.b2bua.counters.offered)
                self._lag_samples.append(worst)
                worst = 0.0

    @property
    def cps(self) -> float:
        """Calls offered per second over the last ten seconds."""
        s = self._cps_samples
        return 0.0 if len(s) < 2 else (s[-1] - s[0]) / (len(s) - 1)

    def _on_dtmf(self, call: Call, leg: str, digit: str) -> None:
        # The IVR (contact-centre issue) consumes these; for now they are counted and kept.
        self.dtmf_total += 1
        self.dtmf_recent.append((call.a.call_id, leg, digit))

    def _write_interaction(self, rec: Interaction) -> None:
        self._store_write(
            self.store.write_interaction,
            {
                "call_id": rec.call_id,
                "site": self.cfg.site.name,
                "caller": rec.caller,
                "dialled": rec.dialled,
                "queue": rec.queue,
                "agent": rec.agent,
                "arrived_ts": rec.arrived_at,
                "queued_ts": rec.queued_at,
                "answered_ts": rec.answered_at,
                "ended_ts": rec.ended_at or rec.arrived_at,
                "wait_s": round(rec.wait_s, 3),
                "talk_s": round(rec.talk_s, 3),
                "wrapup_s": rec.wrapup_s,
                "outcome": rec.outcome,
                "ivr_path": rec.ivr_path,
                "variables": rec.variables,
                "customer_id": rec.customer_id,
                "handoff_id": rec.handoff_id,
                "overflow_to": rec.overflow_to,
                "from_site": rec.from_site,
            },
            what=f"interaction of {rec.call_id}",
        )

    def _write_voicemail(self, meta: dict[str, Any]) -> None:
        self._store_write(self.store.write_voicemail, meta, what=f"voicemail of {meta['call_id']}")
        if self.cfg.cc.smtp:
            fut = self.loop.run_in_executor(None, self._mail_voicemail, dict(meta))
            fut.add_done_callback(self._mailed)
        if self.cfg.cc.webhook:
            task = self.loop.create_task(self._notify(self.cfg.cc.webhook, "voicemail", meta))
            self._notifications.add(task)
            task.add_done_callback(self._notifications.discard)

    def _mail_voicemail(self, meta: dict[str, Any]) -> None:
        """E-mail a voicemail with its recording (in a worker thread; 10 s budget)."""
        import smtplib
        from email.message import EmailMessage
        from pathlib import Path

        cc = self.cfg.cc
        assert cc.smtp is not None
        host, _, port = cc.smtp.rpartition(":")
        msg = EmailMessage()
        msg["From"] = cc.mail_from
        msg["To"] = ", ".join(cc.mail_to)
        msg["Subject"] = f"Voicemail from {meta.get('caller', '?')} in {meta.get('box', '?')}"
        msg.set_content(
            f"Site: {self.cfg.site.name}\nBox: {meta.get('box')}\nCaller: {meta.get('caller')}\n"
            f"Queue: {meta.get('queue') or '-'}\nLength: {meta.get('seconds', 0):.0f} s\n"
            f"Call: {meta.get('call_id')}\n"
        )
        path = Path(str(meta.get("path", "")))
        if path.is_file() and path.stat().st_size <= 5_000_000:
            msg.add_attachment(
                path.read_bytes(), maintype="audio", subtype="wav", filename=path.name
            )
        with smtplib.SMTP(host.strip("[]"), int(port), timeout=10) as smtp:
            smtp.send_message(msg)

    def _mailed(self, fut: asyncio.Future[None]) -> None:
        exc = fut.exception()
        if exc is not None:
            self.mail_errors += 1
            log.warning("voicemail e-mail via %s failed: %s", self.cfg.cc.smtp, exc)
        else:
            self.mails_sent += 1

    async def _notify(self, url: str, event: str, data: dict[str, Any]) -> None:
        """POST ``{"event", "site", "data"}`` to the configured webhook (5 s budget, logged)."""
        import aiohttp

        body = {"event": event, "site": self.cfg.site.name, "data": data}
        try:
            timeout = aiohttp.ClientTimeout(total=5.0)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(url, json=body) as resp,
            ):
                if resp.status >= 300:
                    log.warning("webhook %s answered %d to %s", url, resp.status, event)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("webhook %s failed for %s: %s", url, event, exc)

    def _write_cdr(self, rec: CallRecord) -> None:
        try:
            cdr = Cdr(
                call_id=rec.call_id,
                site=self.cfg.site.name,
                direction=rec.direction,  # type: ignore[arg-type]
                caller=rec.caller,
                callee=rec.callee,
                start_ts=rec.start_ts,
                end_ts=max(rec.end_ts, rec.start_ts),
                cause_code=200 if rec.answer_ts is not None else rec.cause,
                cause_text=rec.cause_text,
                answer_ts=rec.answer_ts,
                destination=rec.destination,
                agent=rec.agent,
                hangup_side=_SIDES.get(rec.hangup_side, "system"),  # type: ignore[arg-type]
                trunk=rec.trunk,
            )
        except ValueError:
            self.store_errors += 1
            log.exception("[%s] could not build the CDR", rec.call_id)
            return
        self._store_write(self.store.write_cdr, cdr, what=f"CDR of {rec.call_id}")

    def _upsert_customer(
        self, customer_id: str, fields: Mapping[str, Any], author: str
    ) -> dict[str, Any]:
        self.customers.upsert(customer_id, fields, author, clock=self.hlc)
        record = self.customers.get(customer_id)
        assert record is not None
        return record

    def _history(self, customer_id: str) -> list[dict[str, Any]]:
        return [c.to_payload() for c in self.customers.history(customer_id)]

    def _customer_by_phone(self, number: str) -> dict[str, Any] | None:
        found = self.customers.by_phone(number)
        return found[0] if found else None

    async def _in_writer(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a store call on the writer thread (in order with the writes) and wait for it."""
        return await self.loop.run_in_executor(self._writer, fn, *args)

    def _store_write(self, fn: Callable[..., Any], *args: Any, what: str) -> None:
        """Queue a store write for the writer thread (committed in groups; the event loop
        never waits for a commit)."""
        self._writes.write(fn, *args, what=what)

    def _committed(self, results: list[Result]) -> None:
        for fn, what, exc in results:
            if exc is not None:
                self.store_errors += 1
                log.error("could not write the %s: %r", what, exc)
            elif fn == self.store.write_cdr:
                self.cdrs_written += 1
        if self.mesh is not None:
            self.mesh.notify_sync()  # committed: the sync client may send them now

    def health(self) -> dict[str, Any]:
        """What /healthz reports."""
        return {
            "status": "ok",
            "site": self.cfg.site.name,
            "uptime_s": round(time.time() - self.started_at, 1),
            "active_calls": self.b2bua.active_calls,
            "registered_contacts": self.registrar.bindings_count(),
        }

    def _metrics(self) -> None:
        r = self.registry
        ep, b, e = self.endpoint.counters, self.b2bua.counters, self.edge.counters

        def g(name: str, doc: str, fn: Callable[[], float]) -> None:
            if name.endswith("_total"):
                r.counter(name, doc, callback=fn)
            else:
                r.gauge(name, doc, callback=fn)

        g("ccgw_active_calls", "Calls in progress.", lambda: self.b2bua.active_calls)
        g("ccgw_calls_per_second", "Calls offered per second, last 10 s.", lambda: self.cps)
        g(
            "ccgw_loop_lag_seconds",
            "Worst event-loop lag over the last 10 s (how late a 50 ms timer fired).",
            lambda: max(self._lag_samples),
        )
        g(
            "ccgw_gc_full_passes_total",
            "Full garbage collections run (one every 10 minutes).",
            lambda: self.gc_full_passes,
        )
        g(
            "ccgw_gc_full_pause_seconds",
            "How long the last full garbage collection held the event loop.",
            lambda: self.gc_last_pause,
        )
        g(
            "ccgw_loop_stalls_total",
            f"Event-loop lags over {LOOP_STALL:g} s (each logged).",
            lambda: self.loop_stalls,
        )
        g("ccgw_calls_offered_total", "Calls offered (new INVITEs).", lambda: b.offered)
        g("ccgw_calls_answered_total", "Calls answered.", lambda: b.answered)
        g("ccgw_calls_failed_total", "Calls that could not be connected.", lambda: b.failed)
        g("ccgw_calls_refused_total", "Calls refused by routing or auth.", lambda: b.refused)
        g("ccgw_calls_stalled_total", "Calls ended because media stopped.", lambda: b.stalled)
        g("ccgw_sip_transactions", "Live SIP transactions.", self.endpoint.layer.transaction_count)
        g("ccgw_sip_messages_in_total", "SIP messages received.", lambda: ep.messages_in)
        g("ccgw_sip_messages_out_total", "SIP messages sent.", lambda: ep.messages_out)
        r.counter(
            "ccgw_sip_errors_total",
            "SIP errors by cause.",
            ["cause"],
            callback=self._error_samples,
        )
        g("ccgw_registrations_total", "Successful REGISTERs.", lambda: e.registrations)
        g("ccgw_registered_contacts", "Live agent bindings.", self.registrar.bindings_count)
        g("ccgw_auth_challenges_total", "Digest challenges sent.", lambda: e.challenges)
        g("ccgw_bans_total", "Sources banned after repeated failures.", lambda: e.bans)
        g(
            "ccgw_throttled_total",
            "Messages dropped by the rate limit or a ban.",
            lambda: e.throttled,
        )
        g("ccgw_media_sessions", "Open RTP relay sessions.", lambda: self.relay.active_sessions)
        api = self.api_auth
        g(
            "ccgw_http_auth_failures_total",
            "API requests without a valid token.",
            lambda: api.failures,
        )
        g("ccgw_http_auth_bans_total", "Sources banned after failed API tokens.", lambda: api.bans)
        tls = self.tls
        if tls is not None:
            g("ccgw_sip_tls_connections", "Open SIP-over-TLS connections.", lambda: len(tls.names))
            g(
                "ccgw_sip_tls_handshake_failures_total",
                "Inbound TLS handshakes refused (no certificate, or not from the mesh CA).",
                lambda: tls.handshake_failures,
            )
            g(
                "ccgw_sip_tls_connect_failures_total",
                "Outbound TLS connections that failed (refused, or the wrong certificate).",
                lambda: tls.connect_failures,
            )
        g(
            "ccgw_dtmf_digits_total",
            "DTMF digits received (RFC 4733 and INFO).",
            lambda: self.dtmf_total,
        )
        g("ccgw_cdrs_written_total", "CDRs written to the site store.", lambda: self.cdrs_written)
        g("ccgw_outbox_depth", "Outbox rows not yet acknowledged by HQ.", self.store.outbox_depth)
        for key, doc in (
            ("waiting", "Callers waiting in the queue."),
            ("longest_wait_s", "Longest current wait in the queue, seconds."),
            ("available", "Agents available for the queue."),
            ("logged_in", "Agents logged into the queue."),
            ("offered", "Calls offered to the queue today (short abandons excluded)."),
            ("answered", "Calls answered from the queue today."),
            ("abandoned", "Calls abandoned in the queue today (after the short-abandon time)."),
            ("service_level", "Answered within the target / (answered + abandoned after it)."),
            ("asa_s", "Average speed of answer today, seconds."),
            ("aht_s", "Average handle time (talk + wrap-up) today, seconds."),
        ):
            r.gauge(
                f"ccgw_queue_{key}",
                doc,
                ["queue"],
                callback=partial(self._queue_samples, key),
            )
        r.counter(
            "ccgw_rtp_packets_total",
            "RTP packets relayed, by direction.",
            ["direction"],
            callback=self._rtp_samples,
        )

    def _error_samples(self) -> Mapping[tuple[str, ...], float]:
        ep, e = self.endpoint.counters, self.edge.counters
        return {
            ("bad_request",): ep.bad_requests,
            ("unparseable",): ep.dropped,
            ("refused_source",): ep.refused_source,
            ("internal",): ep.tu_errors,
            ("auth_failed",): e.auth_failed,
        }

    def _rtp_samples(self) -> Mapping[tuple[str, ...], float]:
        return {(k,): float(v) for k, v in self.relay_totals().items()}

    def relay_totals(self) -> dict[str, int]:
        """RTP packets relayed, by direction (``in``: received from a leg, ``out``: sent)."""
        t = self.relay.totals
        return {"in": t.get("packets_in", 0), "out": t.get("packets_relayed", 0)}

    def _queue_samples(self, key: str) -> Mapping[tuple[str, ...], float]:
        cc = self.cc
        if cc is None:
            return {}
        # One scrape reads ten queue gauges: build each queue's snapshot once per scrape.
        now = self.loop.time()
        if now - self._queue_snaps_at > 0.5:
            self._queue_snaps = {name: cc.queue_snapshot(name) for name in cc.queues}
            self._queue_snaps_at = now
        out: dict[tuple[str, ...], float] = {}
        for name, snap in self._queue_snaps.items():
            value = snap[key] if key in snap else snap["day"].get(key)
            if value is not None:
                out[(name,)] = float(value)
        return out

    async def stop(self) -> None:
        """End calls, close sockets and the store."""
        self._cps_task.cancel()
        if self.mesh is not None:
            await self.mesh.stop()
        await self.b2bua.close()
        await asyncio.sleep(0.05)
        await self.edge.stop()
        if self.cc is not None:
            await self.cc.stop()
        await self.http_runner.cleanup()
        self.endpoint.close()
        await self.relay.close()
        self._writer.shutdown(wait=True)  # every acknowledged write reaches the store
        self._committed(self._writes.close())  # and what was queued after the last batch
        self.store.close()
