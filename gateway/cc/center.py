"""The contact centre of one site: IVR, queues, agents, voicemail — the asyncio glue.

Decisions live in the pure modules beside this one (``ivr``, ``queue``, ``acd``, ``agents``,
``erlang``, ``figures``); this module feeds them events from call control (a
:class:`~gateway.calls.b2bua.CallApp`), carries out their commands (play prompts, ring agents,
record) and keeps the one timer each of them asks for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.calls.b2bua import B2bua, Call
from gateway.cc.mesh_side import MeshPort, MeshSide, offer_headers
from gateway.media.player import BEEP, Clip, Loop, music_on_hold, read_wav
from gateway.media.recorder import Recorder
from gateway.routing.dialplan import AppDestination, FeatureCode, ToFlow, ToQueue, ToVoicemail

from .acd import Offer, QueuePolicy, Strategy, StrategyState, dispatch_all
from .agents import AgentConfig, AgentError, AgentState, AgentTable, AgentView, Transition
from .erlang import EstimatorConfig, WaitEstimator
from .figures import Exit, FiguresConfig, QueueFigures
from .ivr import (
    AgentAction,
    CallbackAction,
    CallerInfo,
    CollectDigits,
    Command,
    FlowSet,
    Hangup,
    IvrSession,
    Play,
    QueueAction,
    Route,
    SetVar,
    StopPlayback,
    TransferAction,
    VoicemailAction,
)
from .prompts import PROMPT_ROOT, PromptLibrary, say_position, say_wait
from .queue import JoinRule, LeaveRule, NotQueued, QueueEntry, WaitingLine
from .queue import QueueConfig as LineConfig
from .schedule import parse_schedules

if TYPE_CHECKING:
    from gateway.config import SiteConfig

log = logging.getLogger(__name__)

TICK = 0.5
"""Seconds between housekeeping passes (wrap-ups, queue timeouts, announcements)."""


@dataclass(slots=True)
class Interaction:
    """What one contact leaves behind (written to the store when it ends)."""

    call_id: str
    caller: str
    dialled: str
    arrived_at: float
    queue: str | None = None
    agent: str | None = None
    queued_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    outcome: str = "ivr"  # answered | abandoned | voicemail | callback | overflowed | ivr | hangup
    ivr_path: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    customer_id: str | None = None
    wrapup_s: float = 0.0
    handoff_id: str | None = None
    """Overflow between sites: the handoff id both sites' records share."""
    overflow_to: str | None = None
    """The site this call overflowed to (sending side)."""
    from_site: str | None = None
    """The site this call overflowed from (receiving side)."""

    @property
    def wait_s(self) -> float:
        """Seconds in queue until answered (or until the caller left)."""
        if self.queued_at is None:
            return 0.0
        end = self.answered_at or self.ended_at or self.queued_at
        return max(0.0, end - self.queued_at)

    @property
    def talk_s(self) -> float:
        """Seconds talking to the agent."""
        if self.answered_at is None or self.ended_at is None:
            return 0.0
        return max(0.0, self.ended_at - self.answered_at)


@dataclass(slots=True)
class _Contact:
    """One call the contact centre holds."""

    call: Call
    record: Interaction
    lang: str
    ivr: IvrSession | None = None
    ivr_timer: asyncio.TimerHandle | None = None
    queue: str | None = None
    ringing: set[str] = field(default_factory=set)
    next_announce: float = 0.0
    recorder: Recorder | None = None
    voicemail_box: str | None = None
    ended: bool = False
    context: dict[str, Any] | None = None  # handed over by another site (overflow)
    customer: dict[str, Any] | None = None  # the caller's customer record, when known
    hops: int = 0  # sites this call has crossed
    visited: set[str] = field(default_factory=set)  # sites it has been at


@dataclass(slots=True)
class _Callback:
    """A callback request waiting in a queue as a virtual entry (``key`` = ``cb-<id>``)."""

    id: int
    key: str
    number: str
    queue: str
    arrived_at: float
    attempts: int = 0
    agent: str | None = None
    call: Call | None = None


@dataclass(slots=True)
class _Queue:
    cfg: Any  # gateway.config.QueueConfig
    line: WaitingLine
    policy: QueuePolicy
    figures: QueueFigures
    estimator: WaitEstimator
    music: Any
    state: StrategyState = field(default_factory=StrategyState)


class ContactCentre:
    """IVR, queues and agents of one site, driving call control through a :class:`B2bua`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        b2bua: B2bua,
        cfg: SiteConfig,
        *,
        on_interaction: Callable[[Interaction], None] | None = None,
        on_voicemail: Callable[[dict[str, Any]], None] | None = None,
        store: Any = None,
        clock: Callable[[], float] = time.time,
        mesh: MeshPort | None = None,
        customers: Callable[[str], dict[str, Any] | None] | None = None,
        lookup: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.loop = loop
        self.b2bua = b2bua
        self.cfg = cfg
        self.clock = clock
        self.on_interaction = on_interaction
        self.on_voicemail = on_voicemail
        self.store = store  # callbacks are kept there (they survive a restart)
        self.callbacks: dict[str, _Callback] = {}
        self.scheduled: dict[str, tuple[float, _Callback]] = {}  # not yet due: key → (when, cb)
        self.max_callback_attempts = 3
        self.callback_retry_s = 60.0
        cc = cfg.cc
        self.prompts = PromptLibrary(Path(cc.prompts) if cc.prompts else PROMPT_ROOT)
        schedules = parse_schedules(dict(cfg.schedules)) if cfg.schedules else {}
        self.schedules = schedules
        self.flows: FlowSet | None = (
            FlowSet.parse(dict(cfg.ivr), schedules=schedules, prompts=self.prompts)
            if cfg.ivr
            else None
        )
        for w in self.flows.warnings if self.flows else ():
            log.warning("ivr: %s", w)
        self.language = cc.language
        self.agents = AgentTable(AgentConfig())
        now = clock()
        membership: dict[str, set[str]] = {a.extension: set() for a in cfg.agents}
        for q in cfg.queues:
            for m in q.members:
                membership[m].add(q.name)
        for a in cfg.agents:
            self.agents.add(
                a.extension,
                name=a.name,
                skills=dict(a.skills),
                member_of=membership[a.extension],
                now=now,
            )
        self.queues: dict[str, _Queue] = {}
        default_music = Loop(music_on_hold(), "moh")
        for q in cfg.queues:
            line = WaitingLine(
                LineConfig(
                    q.name,
                    aging_s=q.aging_s,
                    max_wait_s=q.max_wait,
                    join_rule=JoinRule(q.join_rule),
                    leave_rule=LeaveRule(q.leave_rule),
                )
            )
            music = default_music.pcm
            if q.music != "default":
                music = read_wav(q.music)
            self.queues[q.name] = _Queue(
                q,
                line,
                QueuePolicy(q.name, Strategy(q.strategy), tuple(q.members), q.best_skill_first),
                QueueFigures(
                    q.name,
                    FiguresConfig(
                        service_level_s=q.service_level_s, short_abandon_s=q.short_abandon_s
                    ),
                    now,
                ),
                WaitEstimator(EstimatorConfig(aht_s=q.aht_s)),
                music,
            )
        self.contacts: dict[str, _Contact] = {}
        self.voicemail_dir = Path(cc.voicemail_dir)
        self._task: asyncio.Task[None] | None = None
        self.mesh: MeshSide | None = MeshSide(self, mesh) if mesh is not None else None
        self.rng = rng or random.Random()  # the ``random`` strategy's choices
        self.customers = customers  # caller number → this site's customer record, or None
        self.lookup = lookup  # caller number → HQ's record (time-boxed), or None
        self._lookups: set[asyncio.Task[None]] = set()
        self.watchers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}  # ext → event streams

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Log every agent in (they log out or pause with feature codes or the REST API) and
        start housekeeping."""
        now = self.clock()
        for view in self.agents.snapshot():
            self.agents.login(view.extension, now)
        if self.store is not None:
            for row in self.store.callbacks("pending"):
                if row["queue"] in self.queues:
                    cb = _Callback(
                        row["id"], f"cb-{row['id']}", row["number"], row["queue"],
                        row["arrived_ts"], row["attempts"],
                    )  # fmt: skip
                    if row["not_before"] > now:
                        self.scheduled[cb.key] = (row["not_before"], cb)
                    else:
                        self._queue_callback(cb, now)
            if self.callbacks:
                log.info("%d pending callback(s) back in their queues", len(self.callbacks))
        self._task = self.loop.create_task(self._housekeeping())

    async def stop(self) -> None:
        """Stop housekeeping."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.tick()
            except Exception:
                log.exception("contact centre housekeeping failed")

    def tick(self) -> None:
        """Wrap-ups that ended, queue time-outs, position announcements; then dispatch."""
        now = self.clock()
        for ext in self.agents.due_wrapups(now):
            self._agent_input(self.agents.wrapup_done, ext, now)
        for name, q in self.queues.items():
            for entry in q.line.timed_out(now):
                self._leave_queue(entry.call_id, name, Exit.TIMED_OUT, fallback=True)
            logged_in, available = self._staffing(name)
            for entry in q.line.must_leave(logged_in, available):
                self._leave_queue(entry.call_id, name, Exit.LEFT, fallback=True)
        for key, (when, cb) in list(self.scheduled.items()):
            if when <= now:  # a scheduled callback (or a retry) is due: into its queue
                del self.scheduled[key]
                self._queue_callback(cb, now)
        if self.mesh is not None:
            self.mesh.consider(now)
        for contact in list(self.contacts.values()):
            if contact.queue and not contact.ringing and now >= contact.next_announce:
                self._announce(contact, now)
        self.dispatch()

    # ------------------------------------------------------------------ CallApp

    def on_app_call(self, call: Call, dest: AppDestination) -> None:
        """A call the gateway answered: start its IVR flow, queue it, or take a message."""
        now = self.clock()
        record = Interaction(call.a.call_id, call.caller, call.callee, now)
        contact = _Contact(call, record, self.language)
        self.contacts[call.a.call_id] = contact
        handoff = call.data.get("x-ccgw-handoff")
        ctx = None
        if isinstance(handoff, str) and self.mesh is not None:
            hops = str(call.data.get("x-ccgw-hops", "1"))
            ctx = self.mesh.arrived(contact, handoff, int(hops) if hops.isdigit() else 1)
        if ctx is None:
            self._find_customer(contact)
        if isinstance(dest, ToFlow):
            self._start_ivr(contact, dest.name, now)
        elif isinstance(dest, ToQueue) and ctx is not None:
            skills = {str(k): int(v) for k, v in (ctx.get("required_skills") or {}).items()}
            self._join_queue(contact, dest.name, int(ctx.get("priority") or 0), skills, now)
        elif isinstance(dest, ToQueue):
            self._join_queue(contact, dest.name, None, {}, now)
        elif isinstance(dest, ToVoicemail):
            self._voicemail(contact, dest.box)
        elif isinstance(dest, FeatureCode):
            self._feature(contact, dest.code, now)

    def on_dtmf(self, call: Call, digit: str) -> None:
        """A caller's key press: to the IVR (or ``#`` ends a voicemail)."""
        contact = self.contacts.get(call.a.call_id)
        if contact is None:
            return
        if contact.ivr is not None and not contact.ivr.done:
            self._run(contact, contact.ivr.on_digit(digit, self.loop.time()))
        elif contact.recorder is not None and digit == "#":
            self.b2bua.hangup_call(call)

    def on_offer_answered(self, call: Call, agent: str) -> None:
        """An agent picked up: the others stop ringing; the caller leaves the queue."""
        contact = self.contacts.get(call.a.call_id)
        if contact is None or contact.queue is None:
            return
        if self.mesh is not None:
            if self.mesh.is_site(agent):
                self.mesh.answered(contact, agent)
                return
            self.mesh.local_answer(contact)
        now = self.clock()
        q = self.queues[contact.queue]
        self._agent_input(self.agents.answer, agent, call.a.call_id, now)
        for other in contact.ringing - {agent}:
            self._agent_input(self.agents.withdraw, other, call.a.call_id, now)
        contact.ringing.clear()
        try:
            q.line.remove(call.a.call_id)
        except NotQueued:
            pass
        q.figures.record_answered(call.a.call_id, now)
        self._event(agent, "answered", contact)
        contact.record.agent = agent
        contact.record.answered_at = now
        contact.record.outcome = "answered"
        log.info("[%s] %s answered from queue %s", call.a.call_id, agent, contact.queue)

    def on_offer_failed(self, call: Call, agent: str, status: int) -> None:
        """An offer ended unanswered: the agent is freed (or auto-paused), the call waits on."""
        cb_key = call.data.get("callback")
        if isinstance(cb_key, str):
            self._callback_agent_failed(cb_key, agent)
            return
        contact = self.contacts.get(call.a.call_id)
        if contact is None:
            return
        if self.mesh is not None and self.mesh.is_site(agent):
            self.mesh.failed(contact, agent, status)
            return
        contact.ringing.discard(agent)
        now = self.clock()
        self._agent_input(self.agents.no_answer, agent, call.a.call_id, now)
        if contact.queue is not None:
            try:
                self.queues[contact.queue].line.offer_failed(call.a.call_id, agent, now)
            except NotQueued:
                pass
        self.loop.call_soon(self.dispatch)

    def on_call_ended(self, call: Call) -> None:
        """Either side hung up: abandon or wrap-up, and the interaction record."""
        cb_key = call.data.get("callback")
        if isinstance(cb_key, str):
            self._callback_ended(cb_key, call)
            return
        contact = self.contacts.pop(call.a.call_id, None)
        if self.mesh is not None:
            self.mesh.ended(call.a.call_id)
        if contact is None or contact.ended:
            return
        contact.ended = True
        now = self.clock()
        if contact.ivr_timer is not None:
            contact.ivr_timer.cancel()
        if contact.ivr is not None and not contact.ivr.done:
            contact.ivr.on_hangup(self.loop.time())
        record = contact.record
        record.ended_at = now
        if contact.ivr is not None:
            ivr = contact.ivr.record()
            record.ivr_path = ivr.path_text()
            record.variables = dict(ivr.variables)
        for agent in contact.ringing:
            self._agent_input(self.agents.withdraw, agent, call.a.call_id, now)
            self.b2bua.withdraw(call, agent)
        contact.ringing.clear()
        if contact.queue is not None:
            q = self.queues[contact.queue]
            if record.answered_at is None:
                try:
                    q.line.remove(call.a.call_id)
                    q.figures.record_abandoned(call.a.call_id, now)
                except (NotQueued, KeyError):
                    pass
                if record.outcome == "ivr":
                    record.outcome = "abandoned"
            elif record.agent is not None:
                wrapup = float(q.cfg.wrapup)
                record.wrapup_s = wrapup
                self._agent_input(
                    self.agents.hangup, record.agent or "", call.a.call_id, now, wrapup
                )
                q.figures.record_handled(record.talk_s, wrapup, now)
                q.estimator.record_handled(now, record.talk_s + wrapup)
        if contact.recorder is not None:
            self._save_voicemail(contact, now)
        if self.on_interaction is not None:
            try:
                self.on_interaction(record)
            except Exception:
                log.exception("[%s] could not store the interaction", record.call_id)
        self.loop.call_soon(self.dispatch)

    # ------------------------------------------------------------------ IVR

    def _start_ivr(self, contact: _Contact, flow: str, now: float) -> None:
        if self.flows is None:
            log.warning("[%s] no IVR flows configured: hanging up", contact.call.a.call_id)
            self.b2bua.hangup_call(contact.call)
            return
        caller = CallerInfo(number=contact.call.caller, dialled=contact.call.callee)
        contact.ivr = IvrSession(self.flows, caller, self.loop.time(), datetime.now(UTC))
        self._run(contact, contact.ivr.start(self.loop.time()))

    def _run(self, contact: _Contact, commands: list[Command]) -> None:
        """Carry out the IVR's commands, then re-arm its timer."""
        ivr = contact.ivr
        assert ivr is not None
        for cmd in commands:
            if isinstance(cmd, Play):
                self._play_prompts(contact, cmd)
            elif isinstance(cmd, StopPlayback):
                self._player_stop(contact)
            elif isinstance(cmd, SetVar):
                if cmd.name == "lang":
                    contact.lang = cmd.value
            elif isinstance(cmd, CollectDigits):
                pass  # the session times the collection; digits arrive through on_dtmf
            elif isinstance(cmd, Route):
                self._route(contact, cmd)
            elif isinstance(cmd, Hangup):
                self.b2bua.hangup_call(contact.call)
        if contact.ivr_timer is not None:
            contact.ivr_timer.cancel()
            contact.ivr_timer = None
        deadline = ivr.deadline()
        if deadline is not None and not ivr.done:
            contact.ivr_timer = self.loop.call_at(deadline, self._ivr_timer, contact)

    def _ivr_timer(self, contact: _Contact) -> None:
        contact.ivr_timer = None
        if contact.ivr is not None and not contact.ended:
            self._run(contact, contact.ivr.on_timer(self.loop.time()))

    def _play_prompts(self, contact: _Contact, cmd: Play) -> None:
        player = self._player(contact)
        if player is None:
            return
        keys = cmd.prompts
        for i, key in enumerate(keys):
            pcm = self.prompts[key.lang].samples(key.id)
            last = i == len(keys) - 1
            done = (lambda c=contact, s=cmd.seq: self._prompt_done(c, s)) if last else None
            player.play(Clip(pcm, key.id), done)
        if not keys:
            self.loop.call_soon(self._prompt_done, contact, cmd.seq)

    def _prompt_done(self, contact: _Contact, seq: int) -> None:
        if contact.ivr is not None and not contact.ended:
            self._run(contact, contact.ivr.on_prompt_done(self.loop.time(), seq))

    def _player(self, contact: _Contact) -> Any:
        ep = contact.call.endpoint
        return None if ep is None else ep.player

    def _player_stop(self, contact: _Contact) -> None:
        player = self._player(contact)
        if player is not None:
            player.stop_playback()

    def _route(self, contact: _Contact, route: Route) -> None:
        action = route.action
        now = self.clock()
        ivr = contact.ivr
        if ivr is not None:
            contact.record.ivr_path = ivr.record().path_text()
            contact.record.variables = dict(ivr.variables)
        if isinstance(action, QueueAction):
            self._join_queue(contact, action.queue, action.priority, dict(action.skills), now)
        elif isinstance(action, VoicemailAction):
            self._voicemail(contact, action.box)
        elif isinstance(action, AgentAction):
            # A direct extension: a one-agent queue of its own would be overkill; ring it.
            contact.ringing.add(action.extension)
            if not self.b2bua.offer(contact.call, action.extension, 20.0):
                self._voicemail(contact, action.extension)
        elif isinstance(action, CallbackAction):
            self._request_callback(contact, action.number, action.queue or contact.queue)
        elif isinstance(action, TransferAction):
            log.info("[%s] %s is not available yet: voicemail", contact.call.a.call_id, action)
            self._voicemail(contact, "general")

    # ------------------------------------------------------------------ queues

    def _staffing(self, queue: str) -> tuple[int, int]:
        counts = self.agents.counts(queue)
        logged_in = sum(n for s, n in counts.items() if s is not AgentState.LOGGED_OUT)
        return logged_in, counts.get(AgentState.AVAILABLE, 0)

    def _join_queue(
        self,
        contact: _Contact,
        name: str,
        priority: int | None,
        skills: Mapping[str, int],
        now: float,
    ) -> None:
        q = self.queues.get(name)
        call_id = contact.call.a.call_id
        if q is None:
            log.warning("[%s] no queue %r: voicemail", call_id, name)
            self._voicemail(contact, name)
            return
        logged_in, available = self._staffing(name)
        if not q.line.may_join(logged_in, available):
            log.info("[%s] queue %s refuses new callers (no agents)", call_id, name)
            self._fallback(contact, q)
            return
        required = dict(q.cfg.required_skills)
        required.update(skills)
        entry = QueueEntry(
            call_id,
            arrived_at=contact.record.arrived_at,
            priority=priority if priority is not None else 0,
            required_skills=required,
            language=contact.lang,
            customer_id=contact.record.customer_id,
        )
        entry = self._customer_entry(q, contact, entry, now)
        q.line.join(entry, now)
        q.figures.record_joined(call_id, now, contact.record.arrived_at)
        if contact.context is not None or contact.customer is not None:
            contact.call.data["offer_headers"] = offer_headers(contact)
        contact.queue = name
        contact.record.queue = name
        contact.record.queued_at = now
        self._announce(contact, now, first=True)
        self.dispatch()

    def apply_service_rules(self, queue: str, rules: Mapping[str, Any]) -> None:
        """Override some of ``queue``'s own settings (HQ's ``service`` policy); empty
        ``rules``: back to the site's file."""
        q = self.queues[queue]
        own = self.cfg.queue(queue)
        assert own is not None
        q.cfg = dataclasses.replace(own, **rules)
        q.figures.config = dataclasses.replace(
            q.figures.config,
            service_level_s=q.cfg.service_level_s,
            short_abandon_s=q.cfg.short_abandon_s,
        )

    # ------------------------------------------------------------------ screen-pop

    def call_context(self, call_id: str) -> dict[str, Any] | None:
        """What an agent's screen shows for a call: caller, customer record, IVR choices, time
        waited, and where it came from (another site's handoff), or None."""
        contact = self.contacts.get(call_id)
        if contact is None:
            return None
        record = contact.record
        ctx = contact.context or {}
        ivr = contact.ivr.record() if contact.ivr is not None else None
        return {
            "call_id": call_id,
            "caller": ctx.get("caller", contact.call.caller),
            "dialled": ctx.get("dialled", contact.call.callee),
            "queue": contact.queue or record.queue,
            "arrived_at": record.arrived_at,
            "waited_s": round(max(0.0, self.clock() - record.arrived_at), 1),
            "language": contact.lang,
            "ivr_path": ivr.path_text() if ivr is not None else record.ivr_path,
            "variables": dict(ivr.variables) if ivr is not None else dict(record.variables),
            "customer": dict(contact.customer or {}),
            "from_site": record.from_site,
            "handoff_id": record.handoff_id,
            "notes": ctx.get("notes", ""),
        }

    def offered_to(self, extension: str) -> dict[str, Any] | None:
        """The context of the call ringing or connected at ``extension``, or None."""
        try:
            call_id = self.agents.get(extension).call_id
        except AgentError:
            return None
        return self.call_context(call_id) if call_id else None

    def watch(self, extension: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Deliver ``extension``'s events (offer, answered) to ``queue`` (the agent desktop)."""
        self.watchers.setdefault(extension, set()).add(queue)

    def unwatch(self, extension: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Stop delivering to ``queue``."""
        self.watchers.get(extension, set()).discard(queue)

    def _event(self, extension: str, kind: str, contact: _Contact) -> None:
        queues = self.watchers.get(extension)
        if not queues:
            return
        event = {
            "event": kind,
            "agent": extension,
            **(self.call_context(contact.call.a.call_id) or {}),
        }
        for q in queues:
            if q.full():  # a slow reader loses its oldest events, never blocks the call
                q.get_nowait()
            q.put_nowait(event)

    # ------------------------------------------------------------------ customers

    def _find_customer(self, contact: _Contact) -> None:
        """The caller's record: this site's first, else HQ's within its time budget (the call
        never waits for it: a record that arrives later still raises a waiting call)."""
        number = contact.call.caller
        record = None
        if self.customers is not None:
            try:
                record = self.customers(number)
            except Exception:
                log.exception("[%s] customer look-up failed", contact.call.a.call_id)
        if record is not None:
            self._set_customer(contact, record)
        elif self.lookup is not None and number and number != "anonymous":
            task = self.loop.create_task(self._remote_customer(contact, number))
            self._lookups.add(task)
            task.add_done_callback(self._lookups.discard)

    async def _remote_customer(self, contact: _Contact, number: str) -> None:
        assert self.lookup is not None
        try:
            record = await self.lookup(number)
        except Exception:
            log.exception("[%s] HQ customer look-up failed", contact.call.a.call_id)
            return
        if record is not None and not contact.ended:
            self._set_customer(contact, record)

    def _set_customer(self, contact: _Contact, record: Mapping[str, Any]) -> None:
        contact.customer = {k: v for k, v in record.items() if not k.startswith("_")}
        contact.record.customer_id = str(record.get("customer_id") or "") or None
        if contact.queue is None:
            return
        q = self.queues[contact.queue]
        call_id = contact.call.a.call_id
        try:
            entry = q.line.get(call_id)
        except NotQueued:
            return
        now = self.clock()
        updated = self._customer_entry(q, contact, entry, now)
        if updated is not entry:
            q.line.update(updated)
            contact.call.data["offer_headers"] = offer_headers(contact)
            self.dispatch()

    def _customer_entry(
        self, q: _Queue, contact: _Contact, entry: QueueEntry, now: float
    ) -> QueueEntry:
        """A VIP customer waits at the queue's VIP priority; a customer with a named agent
        who serves this queue is offered to that agent first, for ``sticky_s``."""
        cust = contact.customer
        if not cust:
            return entry
        changes: dict[str, Any] = {}
        vip = bool(cust.get("vip")) or str(cust.get("tier", "")).lower() == "vip"
        if vip and entry.priority < q.cfg.vip_priority:
            changes["priority"] = q.cfg.vip_priority
        named = cust.get("named_agent")
        if named and named in q.policy.members and entry.sticky_agent is None:
            changes["sticky_agent"] = str(named)
            changes["sticky_until"] = now + float(q.cfg.sticky_s)
        if cust.get("customer_id") and entry.customer_id is None:
            changes["customer_id"] = str(cust["customer_id"])
        return dataclasses.replace(entry, **changes) if changes else entry

    def _announce(self, contact: _Contact, now: float, *, first: bool = False) -> None:
        """Position and estimated wait, then music (RFC-free: what callers expect)."""
        assert contact.queue is not None
        q = self.queues[contact.queue]
        contact.next_announce = now + float(q.cfg.announce_every)
        player = self._player(contact)
        if player is None:
            return
        ids: list[str] = ["please_hold"] if first else []
        if q.cfg.announce_position:
            try:
                pos = q.line.position(contact.call.a.call_id, now)
            except NotQueued:
                return
            logged_in, available = self._staffing(contact.queue)
            est = q.estimator.estimate(pos, max(1, logged_in), now, available)
            ids += say_position(pos, contact.lang)
            ids += say_wait(est.seconds, contact.lang)
        pset = self.prompts[contact.lang]
        player.stop_playback()
        for pid in ids:
            player.play(Clip(pset.samples(pid), pid))
        player.play(Loop(q.music, "moh"))

    def _leave_queue(self, call_id: str, queue: str, how: Exit, *, fallback: bool) -> None:
        contact = self.contacts.get(call_id)
        q = self.queues[queue]
        try:
            q.line.remove(call_id)
            q.figures.record_exit(call_id, self.clock(), how)
        except (NotQueued, KeyError):
            return
        if contact is None:
            return
        now = self.clock()
        for agent in contact.ringing:
            self._agent_input(self.agents.withdraw, agent, call_id, now)
            self.b2bua.withdraw(contact.call, agent)
        contact.ringing.clear()
        contact.queue = None
        if fallback:
            self._fallback(contact, q)

    def _fallback(self, contact: _Contact, q: _Queue) -> None:
        target = q.cfg.fallback
        contact.record.outcome = "overflowed"
        if target is None:
            self._voicemail(contact, q.cfg.name)
            return
        kind, target_name = target.kind, target.target
        now = self.clock()
        if kind == "queue":
            self._join_queue(contact, target_name, None, {}, now)
        elif kind == "agent":
            contact.ringing.add(target_name)
            if not self.b2bua.offer(contact.call, target_name, float(q.cfg.ring_timeout)):
                self._voicemail(contact, target_name)
        else:
            self._voicemail(contact, target_name)

    def dispatch(self) -> None:
        """Offer waiting calls to free agents, per each queue's strategy."""
        if not self.queues:
            return
        now = self.clock()
        agents = self.agents.snapshot()
        registered = {a.extension for a in agents if self.b2bua.edge.locate(a.extension)}
        exclude = frozenset(a.extension for a in agents) - registered
        work = [(q.line, q.policy, q.state) for q in self.queues.values() if len(q.line)]
        if not work:
            return
        offers = dispatch_all(work, agents, now, self.rng, exclude=exclude)
        for offer in offers:
            self._make_offer(offer, now)
        for q in self.queues.values():
            q.state = q.state.after(offers, q.cfg.name)

    def _make_offer(self, offer: Offer, now: float) -> None:
        if offer.virtual:
            self._offer_callback(offer, now)
            return
        contact = self.contacts.get(offer.call_id)
        if contact is None:
            return
        q = self.queues[offer.queue]
        ring = float(q.cfg.ring_timeout)
        rung: list[str] = []
        for agent in offer.agents:
            if not self._agent_input(self.agents.offer, agent, offer.call_id, now, ring):
                continue
            if self.b2bua.offer(contact.call, agent, ring):
                contact.ringing.add(agent)
                rung.append(agent)
                self._event(agent, "offer", contact)
            else:
                self._agent_input(self.agents.leg_failed, agent, now, offer.call_id)
        if rung:  # the caller keeps hearing the queue's music while the phones ring
            q.line.mark_offered(offer.call_id, rung)

    def _agent_input(self, method: Callable[..., Transition], *args: Any) -> bool:
        """Apply an agent-table input; log (not raise) an impossible transition."""
        try:
            tr = method(*args)
        except AgentError as exc:
            log.info("agent state: %s", exc)
            return False
        if tr.auto_paused:
            log.warning("agent %s paused automatically (%s)", tr.extension, tr.auto_paused)
        now = self.clock()
        for q in self.queues.values():
            if tr.extension in q.policy.members:
                q.figures.record_agent_state(tr.extension, tr.after, now)
        return True

    # ------------------------------------------------------------------ agents (REST, codes)

    def agent_command(self, extension: str, command: str, reason: str = "") -> AgentView:
        """``login`` / ``logout`` / ``pause`` / ``unpause`` for an agent; AgentError if not
        possible now."""
        now = self.clock()
        table = self.agents
        if command == "login":
            table.login(extension, now)
        elif command == "logout":
            table.logout(extension, now)
        elif command == "pause":
            table.pause(extension, now, reason or "paused")
        elif command == "unpause":
            table.unpause(extension, now)
        else:
            raise ValueError(f"unknown agent command {command!r}")
        self.loop.call_soon(self.dispatch)
        return table.get(extension)

    def _feature(self, contact: _Contact, code: str, now: float) -> None:
        cc = self.cfg.cc
        commands = {
            cc.login_code: "login",
            cc.logout_code: "logout",
            cc.pause_code: "pause",
            cc.unpause_code: "unpause",
        }
        agent = contact.call.caller
        ok = True
        try:
            self.agent_command(agent, commands[code])
        except (AgentError, KeyError, ValueError) as exc:
            log.info("feature code %s from %s refused: %s", code, agent, exc)
            ok = False
        contact.record.outcome = "feature"
        player = self._player(contact)
        if player is None:
            self.b2bua.hangup_call(contact.call)
            return
        pset = self.prompts[contact.lang]
        player.play(Clip(BEEP) if ok else Clip(pset.samples("invalid")))
        player.play(Clip(pset.samples("goodbye")), lambda: self.b2bua.hangup_call(contact.call))

    # ------------------------------------------------------------------ callbacks

    def _request_callback(self, contact: _Contact, number: str, queue: str | None) -> None:
        """The caller leaves a number and keeps their place: a virtual entry in the queue."""
        name = queue if queue in self.queues else next(iter(self.queues), None)
        if name is None or self.store is None:
            self._voicemail(contact, "general")
            return
        now = self.clock()
        call_id = contact.call.a.call_id
        if contact.queue is not None:  # leaving the live queue for the virtual entry
            q = self.queues[contact.queue]
            try:
                q.line.remove(call_id)
                q.figures.record_exit(call_id, now, Exit.CALLBACK)
            except (NotQueued, KeyError):
                pass
            contact.queue = None
        row = {
            "number": number,
            "queue": name,
            "call_id": call_id,
            "caller": contact.call.caller,
            "arrived_ts": contact.record.arrived_at,
            "requested_ts": now,
            "not_before": now,
        }
        cb_id = self.store.add_callback(row)
        self._queue_callback(
            _Callback(cb_id, f"cb-{cb_id}", number, name, contact.record.arrived_at), now
        )
        contact.record.outcome = "callback"
        log.info("[%s] callback %d to %s queued in %s", call_id, cb_id, number, name)
        player = self._player(contact)
        if player is not None:
            pset = self.prompts[contact.lang]
            player.stop_playback()
            player.play(Clip(pset.samples("callback_done")))
            player.play(Clip(pset.samples("goodbye")), lambda: self.b2bua.hangup_call(contact.call))
        else:
            self.b2bua.hangup_call(contact.call)
        self.dispatch()

    def schedule_callback(self, number: str, queue: str, at: float, caller: str = "") -> int:
        """A callback to ``number`` at ``at`` (Unix seconds; now or earlier: at once), e.g. a
        customer's requested time: stored (it survives a restart), then offered agent-first
        from ``queue`` when due, with the usual retries. ``ValueError`` when not possible."""
        if queue not in self.queues:
            raise ValueError(f"no queue {queue!r}")
        if self.store is None:
            raise ValueError("no store to keep callbacks in")
        now = self.clock()
        when = max(now, at)
        cb_id = int(
            self.store.add_callback(
                {
                    "number": number,
                    "queue": queue,
                    "call_id": f"scheduled-{secrets.token_hex(6)}",
                    "caller": caller or number,
                    "arrived_ts": when,  # its place in line is its due time
                    "requested_ts": now,
                    "not_before": when,
                }
            )
        )
        cb = _Callback(cb_id, f"cb-{cb_id}", number, queue, when)
        if when <= now:
            self._queue_callback(cb, now)
            self.loop.call_soon(self.dispatch)
        else:
            self.scheduled[cb.key] = (when, cb)
        log.info("callback %d to %s scheduled in %s for %.0f", cb_id, number, queue, when)
        return cb_id

    def _queue_callback(self, cb: _Callback, now: float) -> None:
        q = self.queues[cb.queue]
        entry = QueueEntry(cb.key, arrived_at=cb.arrived_at, virtual=True)
        q.line.join(entry, now)
        self.callbacks[cb.key] = cb

    def _offer_callback(self, offer: Offer, now: float) -> None:
        """Agent first: ring the agent; once they answer, dial the customer (RFC-free practice
        of every outbound dialler: the customer never waits for an agent)."""
        cb = self.callbacks.get(offer.call_id)
        trunk = self.cfg.dialplan.outbound_trunk
        if cb is None or cb.call is not None or not offer.agents or trunk is None:
            return
        agent = offer.agents[0]
        q = self.queues[offer.queue]
        ring = float(q.cfg.ring_timeout)
        if not self._agent_input(self.agents.offer, agent, cb.key, now, ring):
            return
        q.line.mark_offered(cb.key, [agent])
        cb.agent = agent
        trunk_cfg = self.cfg.trunk(trunk)
        caller_id = next(iter(trunk_cfg.dids), None) if trunk_cfg is not None else None

        async def go() -> None:
            call = await self.b2bua.originate(cb.key, agent, cb.number, trunk, ring, caller_id)
            if call is None:
                self._agent_input(self.agents.leg_failed, agent, self.clock(), cb.key)
                try:
                    q.line.offer_failed(cb.key, agent, self.clock())
                except NotQueued:
                    pass
                return
            cb.call = call

        self.loop.create_task(go())

    def _callback_agent_failed(self, key: str, agent: str) -> None:
        cb = self.callbacks.get(key)
        if cb is None:
            return
        now = self.clock()
        cb.call = None
        self._agent_input(self.agents.no_answer, agent, key, now)
        try:
            self.queues[cb.queue].line.offer_failed(key, agent, now)
        except NotQueued:
            pass
        self.loop.call_soon(self.dispatch)

    def on_callback_result(self, call: Call, status: int) -> None:
        """The customer answered (200) or not; the callback leaves the queue either way."""
        key = call.data.get("callback")
        cb = self.callbacks.get(key) if isinstance(key, str) else None
        if cb is None:
            return
        now = self.clock()
        q = self.queues[cb.queue]
        agent = cb.agent or ""
        cb.attempts += 1
        if status == 200:
            self._agent_input(self.agents.answer, agent, cb.key, now)
            try:
                q.line.remove(cb.key)
                q.figures.record_exit(cb.key, now, Exit.CALLBACK)
            except (NotQueued, KeyError):
                pass
            if self.store is not None:
                self.store.update_callback(
                    cb.id, status="connected", attempts=cb.attempts, agent=agent,
                    last_status=200, done_ts=now,
                )  # fmt: skip
            return
        # The agent answered, the customer did not: free the agent, try again later.
        self._agent_input(self.agents.answer, agent, cb.key, now)
        self._agent_input(self.agents.hangup, agent, cb.key, now, 0.0)
        try:
            q.line.remove(cb.key)
        except NotQueued:
            pass
        del self.callbacks[cb.key]
        failed = cb.attempts >= self.max_callback_attempts
        if self.store is not None:
            self.store.update_callback(
                cb.id,
                status="failed" if failed else "pending",
                attempts=cb.attempts,
                last_status=status,
                not_before=now + self.callback_retry_s,
                **({"done_ts": now} if failed else {}),
            )
        if not failed:
            retry = _Callback(cb.id, cb.key, cb.number, cb.queue, cb.arrived_at, cb.attempts)
            self.scheduled[cb.key] = (now + self.callback_retry_s, retry)
        log.info("callback %d to %s: %d (attempt %d)", cb.id, cb.number, status, cb.attempts)

    def _callback_ended(self, key: str, call: Call) -> None:
        cb = self.callbacks.get(key)
        if cb is None:
            return  # done, or failed and waiting for its retry
        if call.answer_wall is None:
            cb.call = None  # the agent never answered: it waits on in the queue
        else:
            del self.callbacks[key]
            now = self.clock()
            q = self.queues[cb.queue]
            wrapup = float(q.cfg.wrapup)
            if cb.agent:
                self._agent_input(self.agents.hangup, cb.agent, cb.key, now, wrapup)
            talk = max(0.0, now - call.answer_wall)
            q.figures.record_handled(talk, wrapup, now)
            q.estimator.record_handled(now, talk + wrapup)
        self.loop.call_soon(self.dispatch)

    # ------------------------------------------------------------------ voicemail

    def _voicemail(self, contact: _Contact, box: str) -> None:
        contact.record.outcome = "voicemail"
        contact.voicemail_box = box
        player = self._player(contact)
        ep = contact.call.endpoint
        if player is None or ep is None:
            self.b2bua.hangup_call(contact.call)
            return
        pset = self.prompts[contact.lang]

        def record() -> None:
            rec = Recorder(max_seconds=float(self.cfg.cc.voicemail_max_s))
            contact.recorder = rec

            def feed(pkt: bytes) -> None:
                rec.feed(pkt)
                if rec.full:
                    self.b2bua.hangup_call(contact.call)

            ep.on_packet = feed

        player.stop_playback()
        player.play(Clip(pset.samples("voicemail_intro")))
        player.play(Clip(BEEP), record)

    def _save_voicemail(self, contact: _Contact, now: float) -> None:
        rec = contact.recorder
        if rec is None or rec.seconds < 0.5:
            return
        box = contact.voicemail_box or "general"
        folder = self.voicemail_dir / box
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        path = folder / f"{stamp}-{abs(hash(contact.call.a.call_id)) % 10**8:08d}.wav"
        seconds = rec.save(path)
        meta = {
            "box": box,
            "call_id": contact.call.a.call_id,
            "caller": contact.call.caller,
            "queue": contact.record.queue,
            "path": str(path),
            "seconds": round(seconds, 2),
            "created_ts": now,
        }
        log.info("[%s] voicemail of %.1f s in box %s", contact.call.a.call_id, seconds, box)
        if self.on_voicemail is not None:
            self.on_voicemail(meta)

    # ------------------------------------------------------------------ figures

    def queue_snapshot(self, name: str) -> dict[str, Any]:
        """Live figures of one queue (for /metrics and the REST API)."""
        q = self.queues[name]
        now = self.clock()
        snap = q.figures.snapshot(now)
        logged_in, available = self._staffing(name)
        return {
            "queue": name,
            "waiting": q.line.live_count(),
            "longest_wait_s": round(q.line.longest_wait(now), 1),
            "logged_in": logged_in,
            "available": available,
            "agents": {s.value: n for s, n in self.agents.counts(name).items()},
            "day": _window(snap.day),
            "rolling": _window(snap.rolling),
        }


def _window(w: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in (
        "offered",
        "answered",
        "abandoned",
        "short_abandoned",
        "service_level",
        "asa_s",
        "aht_s",
        "occupancy",
        "answer_rate",
        "abandon_rate",
    ):
        value = getattr(w, name, None)
        if value is not None:
            out[name] = round(value, 4) if isinstance(value, float) else value
    return out
