"""The contact centre's side of the mesh: live load out, overflow decisions, calls handed in.

:class:`ContactCentre` owns one :class:`MeshSide` when the site is in a mesh. The decisions are
:mod:`gateway.routing.overflow`'s pure functions; the I/O (etcd, gRPC) sits behind
:class:`MeshPort`, which :mod:`gateway.mesh.node` implements.

A call's *context* travels as a plain mapping (the handoff contract in
``protos/ccgw/v1/handoff.proto``): ``handoff_id``, ``from_site``, ``queue``, ``caller``,
``dialled``, ``arrival_ts`` (Unix seconds of the original arrival), ``priority``, ``language``,
``ivr_path`` (list), ``variables`` (dict), ``customer`` (dict), ``notes``, ``hops``,
``required_skills`` (dict), ``visited`` (list of sites).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from gateway.cc.agents import AgentState
from gateway.cc.figures import Exit
from gateway.cc.queue import NotQueued
from gateway.routing.overflow import (
    CallInfo,
    LocalState,
    OverflowPolicy,
    RemoteQueue,
    choose_targets,
    overflow_reason,
)
from gateway.sip.errors import SipError
from gateway.sip.uri import SipUri

if TYPE_CHECKING:
    from gateway.cc.center import ContactCentre, _Contact

__all__ = ["SITE_LABEL", "MeshPort", "MeshSide", "Reservation"]

log = logging.getLogger(__name__)

SITE_LABEL = "site:"
"""Offer label prefix of an overflow leg (``site:guangzhou``), beside agents' extensions."""
RETRY_S = 5.0
"""Seconds before a call whose overflow failed is considered again."""
OVERFLOW_RING_S = 5.0
"""Seconds the far site has to answer an overflow INVITE (its gateway answers at once)."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """A target site's answer to a handoff request."""

    accepted: bool
    reason: str = ""
    handoff_id: str = ""
    sip_uri: str = ""
    """Where to send the overflow INVITE (``sip:overflow-<queue>@host:port``)."""


class MeshPort(Protocol):
    """What the contact centre needs of the mesh (etcd view, handoff client and server)."""

    site: str

    def remote_queues(self, queue: str) -> list[RemoteQueue]:
        """Live load of ``queue`` at every other site in the current view."""
        ...

    def trunk_to(self, site: str) -> str | None:
        """The inter-site trunk to ``site`` (only those sites can be reached)."""
        ...

    async def reserve(self, site: str, context: Mapping[str, Any]) -> Reservation:
        """Ask ``site`` to hold capacity for the call; never raises for network faults."""
        ...

    def release(self, site: str, handoff_id: str) -> None:
        """Give an unused reservation back (best effort)."""
        ...

    def take(self, handoff_id: str) -> Mapping[str, Any] | None:
        """The context of an overflow call arriving here (single use), or None."""
        ...


@dataclass(slots=True)
class _Attempt:
    site: str
    handoff_id: str
    label: str


class MeshSide:
    """Overflow out, handoffs in, and the load this site publishes."""

    def __init__(self, centre: ContactCentre, port: MeshPort) -> None:
        self.centre = centre
        self.port = port
        self.policies: dict[str, OverflowPolicy] = {}
        self.hours: dict[str, str] = {}  # queue → schedule of opening hours (when_closed)
        self.apply_policy("overflow", None)
        self.attempts: dict[str, _Attempt] = {}  # call id → overflow leg in flight
        self.retry_at: dict[str, float] = {}  # call id → no new attempt before
        self.overflowed_out = 0
        self.overflowed_in = 0
        self.refused = 0
        self.decision_ts: dict[str, float] = {}  # call id → wall time of the decision
        self.decisions: dict[str, float] = {}  # handoff id → wall time of the decision (last 1000)
        self._tasks: set[asyncio.Task[None]] = set()

    def apply_policy(self, name: str, value: object) -> None:
        """Apply a policy HQ published (``value`` from
        :func:`gateway.config_mesh.parse_policy`), or with ``None`` return to this site's own
        configuration: ``overflow``, ``service`` and ``prompts``; queues this site lacks are
        ignored."""
        if name == "prompts":
            lang = value.get("language") if isinstance(value, Mapping) else None
            self.centre.language = lang if lang in ("en", "cmn") else self.centre.cfg.cc.language
            log.info("prompt set: %s", self.centre.language)
            return
        if name == "service":
            rules: Mapping[str, Any] = value if isinstance(value, Mapping) else {}
            for queue in self.centre.queues:
                self.centre.apply_service_rules(queue, rules.get(queue) or {})
            if value is not None:
                log.info(
                    "service rules from HQ applied to %s",
                    sorted(set(rules) & set(self.centre.queues)),
                )
            return
        if name != "overflow":
            return
        own = {q.name: q.overflow for q in self.centre.cfg.queues}
        published: Mapping[str, Any] = value if isinstance(value, Mapping) else {}
        policies: dict[str, OverflowPolicy] = {}
        hours: dict[str, str] = {}
        for queue, mine in own.items():
            o = published.get(queue, mine)
            if o is None or not o.enabled:
                continue
            if o.hours is not None:
                hours[queue] = o.hours
            policies[queue] = OverflowPolicy(
                queue=queue,
                max_ewt_s=o.max_ewt,
                max_waiting=o.max_waiting,
                max_wait_s=o.max_wait,
                when_no_skill=o.when_no_skill,
                when_closed=o.when_closed,
                targets=o.targets,
                target_queue=o.target_queue,
                max_hops=o.max_hops,
                min_gain_s=o.min_gain,
            )
        if value is not None:
            log.info("overflow policy from HQ applied to %s", sorted(set(published) & set(own)))
        self.policies = policies
        self.hours = hours

    # ------------------------------------------------------------------ load out

    def local_state(self, queue: str, now: float) -> LocalState:
        """This site's view of ``queue`` as the overflow rules see it."""
        centre = self.centre
        q = centre.queues[queue]
        by_skill, _ = self._skills(queue)
        logged_in, _ = centre._staffing(queue)
        return LocalState(
            queue=queue,
            waiting=q.line.live_count(),
            ewt_s=self._ewt(queue, now, q.line.live_count() + 1),
            logged_in_by_skill=by_skill,
            open=self.is_open(queue, now),
            site=self.port.site,
            logged_in=logged_in,
        )

    def is_open(self, queue: str, now: float) -> bool:
        """Whether the queue's opening hours (``overflow.hours``) say open at ``now``."""
        name = self.hours.get(queue)
        schedule = self.centre.schedules.get(name) if name is not None else None
        if schedule is None:
            return True
        return bool(schedule.is_open(datetime.fromtimestamp(now, UTC)))

    def _skills(self, queue: str) -> tuple[dict[str, int], dict[str, int]]:
        logged: dict[str, int] = {}
        avail: dict[str, int] = {}
        for a in self.centre.agents.snapshot():
            if a.state is AgentState.LOGGED_OUT or queue not in a.queues:
                continue
            for skill in a.skills:
                logged[skill] = logged.get(skill, 0) + 1
                if a.state is AgentState.AVAILABLE:
                    avail[skill] = avail.get(skill, 0) + 1
        return logged, avail

    def _ewt(self, queue: str, now: float, position: int) -> float:
        centre = self.centre
        logged_in, available = centre._staffing(queue)
        if logged_in == 0:
            return math.inf
        q = centre.queues[queue]
        return float(q.estimator.estimate(position, logged_in, now, available).seconds)

    def loads(self, now: float | None = None) -> list[dict[str, Any]]:
        """Per-queue live load for the registry: JSON-able dicts."""
        centre = self.centre
        now = centre.clock() if now is None else now
        out = []
        for name, q in centre.queues.items():
            logged, avail = self._skills(name)
            _, available = centre._staffing(name)
            waiting = q.line.live_count()
            ewt = self._ewt(name, now, waiting + 1)
            snap = q.figures.snapshot(now)
            out.append(
                {
                    "queue": name,
                    "waiting": waiting,
                    "available": available,
                    "available_by_skill": avail,
                    "logged_in_by_skill": logged,
                    "ewt_s": ewt if math.isfinite(ewt) else -1.0,
                    "service_level": snap.rolling.service_level,
                    "oldest_wait_s": round(q.line.longest_wait(now), 3),
                    "ts": now,
                }
            )
        return out

    # ------------------------------------------------------------------ overflow out

    def consider(self, now: float) -> None:
        """Start an overflow for each waiting call whose queue's policy says so (from tick)."""
        centre = self.centre
        for name, policy in self.policies.items():
            q = centre.queues.get(name)
            if q is None or not len(q.line):
                continue
            local = self.local_state(name, now)
            remotes: list[RemoteQueue] | None = None
            for entry in q.line.ordered(now):
                call_id = entry.call_id
                contact = centre.contacts.get(call_id)
                if contact is None or call_id in self.attempts or contact.ringing:
                    continue
                if self.retry_at.get(call_id, 0.0) > now:
                    continue
                info = CallInfo(
                    waited_s=now - contact.record.arrived_at,
                    required_skills=dict(entry.required_skills),
                    hops=contact.hops,
                    visited=frozenset(contact.visited),
                )
                if overflow_reason(policy, local, info) is None:
                    continue
                if remotes is None:
                    remotes = self.port.remote_queues(policy.remote_queue)
                targets = [
                    t
                    for t in choose_targets(policy, local, info, remotes)
                    if self.port.trunk_to(t.site) is not None
                ]
                if not targets:
                    self.retry_at[call_id] = now + RETRY_S
                    continue
                self.decision_ts[call_id] = time.time()
                self.attempts[call_id] = _Attempt("", "", "")
                task = centre.loop.create_task(self._overflow(contact, policy, targets))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def context_of(self, contact: _Contact, queue: str) -> dict[str, Any]:
        """The handoff context of a waiting call."""
        record = contact.record
        entry = None
        try:
            entry = self.centre.queues[contact.queue or queue].line.get(contact.call.a.call_id)
        except (NotQueued, KeyError):
            pass
        ivr = contact.ivr.record() if contact.ivr is not None else None
        inherited = contact.context or {}
        return {
            "from_site": self.port.site,
            "queue": queue,
            "caller": inherited.get("caller", contact.call.caller),
            "dialled": inherited.get("dialled", contact.call.callee),
            "arrival_ts": record.arrived_at,
            "priority": entry.priority if entry is not None else 0,
            "language": contact.lang,
            "ivr_path": (
                ivr.path_text().split(">")
                if ivr is not None
                else list(inherited.get("ivr_path", []))
            ),
            "variables": dict(record.variables),
            "customer": dict(contact.customer or {}),
            "notes": str(inherited.get("notes", "")),
            "hops": contact.hops + 1,
            "required_skills": dict(entry.required_skills) if entry is not None else {},
            "visited": sorted({*contact.visited, self.port.site}),
        }

    async def _overflow(
        self, contact: _Contact, policy: OverflowPolicy, targets: list[RemoteQueue]
    ) -> None:
        centre = self.centre
        call_id = contact.call.a.call_id
        queue = policy.remote_queue
        try:
            for target in targets:
                if contact.ended or contact.queue is None:
                    return
                ctx = self.context_of(contact, queue)
                reply = await self.port.reserve(target.site, ctx)
                if not reply.accepted:
                    log.info("[%s] %s refused the overflow: %s", call_id, target.site, reply.reason)
                    continue
                if contact.ended or contact.queue is None:
                    self.port.release(target.site, reply.handoff_id)
                    return
                trunk = self.port.trunk_to(target.site)
                try:
                    uri = SipUri.parse(reply.sip_uri)
                except (SipError, ValueError):
                    log.warning(
                        "[%s] %s sent a bad SIP URI %r", call_id, target.site, reply.sip_uri
                    )
                    self.port.release(target.site, reply.handoff_id)
                    continue
                label = SITE_LABEL + target.site
                headers = {
                    "X-Ccgw-Handoff": reply.handoff_id,
                    "X-Ccgw-Hops": str(ctx["hops"]),
                }
                if trunk is None or not centre.b2bua.offer_site(
                    contact.call, label, uri, trunk, OVERFLOW_RING_S, headers
                ):
                    self.port.release(target.site, reply.handoff_id)
                    continue
                self.attempts[call_id] = _Attempt(target.site, reply.handoff_id, label)
                self.decisions[reply.handoff_id] = self.decision_ts.get(call_id, time.time())
                if len(self.decisions) > 1000:
                    del self.decisions[next(iter(self.decisions))]
                log.info(
                    "[%s] overflowing to %s (handoff %s)", call_id, target.site, reply.handoff_id
                )
                return
            self._give_up(call_id)
        except Exception:
            log.exception("[%s] overflow failed", call_id)
            self._give_up(call_id)

    def _give_up(self, call_id: str) -> None:
        self.attempts.pop(call_id, None)
        self.decision_ts.pop(call_id, None)
        self.retry_at[call_id] = self.centre.clock() + RETRY_S

    def is_site(self, label: str) -> bool:
        """Whether an offer label is an overflow leg."""
        return label.startswith(SITE_LABEL)

    def answered(self, contact: _Contact, label: str) -> None:
        """The far site took the call: it leaves this queue as overflowed."""
        centre = self.centre
        call_id = contact.call.a.call_id
        attempt = self.attempts.pop(call_id, None)
        self.retry_at.pop(call_id, None)
        self.decision_ts.pop(call_id, None)
        now = centre.clock()
        site = label[len(SITE_LABEL) :]
        queue = contact.queue
        for agent in contact.ringing:
            centre._agent_input(centre.agents.withdraw, agent, call_id, now)
            centre.b2bua.withdraw(contact.call, agent)
        contact.ringing.clear()
        if queue is not None:
            q = centre.queues[queue]
            try:
                q.line.remove(call_id)
                q.figures.record_exit(call_id, now, Exit.OVERFLOWED)
            except (NotQueued, KeyError):
                pass
        contact.queue = None
        contact.record.outcome = "overflowed"
        contact.record.overflow_to = site
        if attempt is not None:
            contact.record.handoff_id = attempt.handoff_id
        self.overflowed_out += 1
        log.info("[%s] overflowed to %s", call_id, site)

    def failed(self, contact: _Contact, label: str, status: int) -> None:
        """The overflow INVITE failed: the call keeps its place here."""
        call_id = contact.call.a.call_id
        attempt = self.attempts.get(call_id)
        if attempt is not None and attempt.handoff_id:
            self.port.release(attempt.site, attempt.handoff_id)
        log.info("[%s] overflow to %s failed (%d): staying", call_id, label, status)
        self._give_up(call_id)

    def local_answer(self, contact: _Contact) -> None:
        """A local agent answered first: stop the overflow leg."""
        call_id = contact.call.a.call_id
        attempt = self.attempts.pop(call_id, None)
        self.retry_at.pop(call_id, None)
        self.decision_ts.pop(call_id, None)
        if attempt is not None and attempt.label:
            self.centre.b2bua.withdraw(contact.call, attempt.label)
            self.port.release(attempt.site, attempt.handoff_id)

    def ended(self, call_id: str) -> None:
        """Forget a call that ended."""
        attempt = self.attempts.pop(call_id, None)
        self.retry_at.pop(call_id, None)
        self.decision_ts.pop(call_id, None)
        if attempt is not None and attempt.handoff_id and attempt.label:
            self.port.release(attempt.site, attempt.handoff_id)

    # ------------------------------------------------------------------ handoffs in

    def admit(self, context: Mapping[str, Any]) -> str | None:
        """Whether this site takes a call another site wants to send (None = yes, else why
        not): the queue exists, someone who can serve it is logged in, it is not our own
        call coming back."""
        centre = self.centre
        queue = str(context.get("queue", ""))
        if queue not in centre.queues:
            return "no_queue"
        if self.port.site in context.get("visited", ()):
            return "loop"
        logged, _ = self._skills(queue)
        logged_in, _ = centre._staffing(queue)
        if logged_in == 0:
            return "no_agents"
        skills = context.get("required_skills") or {}
        if any(logged.get(s, 0) == 0 for s in skills):
            return "no_skill"
        return None

    def arrived(self, contact: _Contact, handoff_id: str, hops: int) -> Mapping[str, Any] | None:
        """An overflow INVITE arrived: take its context (the reservation), or None."""
        ctx = self.port.take(handoff_id)
        if ctx is None:
            log.warning(
                "[%s] overflow with unknown or expired handoff %s: queued as a new call",
                contact.call.a.call_id,
                handoff_id,
            )
            contact.hops = hops
            return None
        self.overflowed_in += 1
        contact.context = dict(ctx)
        contact.hops = max(hops, int(ctx.get("hops", hops) or 0))
        contact.visited = set(ctx.get("visited", ()))
        contact.customer = dict(ctx.get("customer") or {}) or None
        record = contact.record
        arrival = float(ctx.get("arrival_ts") or record.arrived_at)
        record.arrived_at = min(arrival, record.arrived_at)
        record.variables.update({str(k): str(v) for k, v in (ctx.get("variables") or {}).items()})
        record.handoff_id = handoff_id
        record.from_site = str(ctx.get("from_site", ""))
        cid = (contact.customer or {}).get("customer_id")
        if cid:
            record.customer_id = str(cid)
        lang = ctx.get("language")
        if isinstance(lang, str) and lang:
            contact.lang = lang
        return ctx


def offer_headers(contact: _Contact) -> dict[str, str]:
    """Headers on the INVITE that rings an agent with a call's context (a screen-pop for any
    SIP phone that can show them): the original arrival, origin site, customer."""
    ctx = contact.context or {}
    h = {
        "X-Ccgw-Arrival": f"{contact.record.arrived_at:.3f}",
        "X-Ccgw-Caller": quote(str(ctx.get("caller", contact.call.caller)), safe="+"),
    }
    if contact.record.from_site:
        h["X-Ccgw-From-Site"] = contact.record.from_site
    if contact.record.handoff_id:
        h["X-Ccgw-Handoff"] = contact.record.handoff_id
    cust = contact.customer or {}
    if cust:
        parts = [
            f"{k}={quote(str(cust[k]), safe='')}"
            for k in ("customer_id", "name", "tier", "region")
            if cust.get(k)
        ]
        if parts:
            h["X-Ccgw-Customer"] = ";".join(parts)
    return h
