"""REST API of a site's contact centre: queues' live figures, agents' states, voicemail.

    GET  /api/queues                      every queue's figures
    GET  /api/queues/{name}               one queue
    GET  /api/agents                      every agent's state
    POST /api/agents/{ext}/{command}      login | logout | pause | unpause  (JSON {"reason": ...})
    GET  /api/interactions?limit=N        the newest contact records
    GET  /api/voicemail?box=B             voicemail messages (metadata)
    GET  /api/voicemail/{id}.wav          one message's audio
    GET  /api/callbacks?status=pending    callback requests (pending, connected, failed, all)
    POST /api/callbacks                   {"number", "queue", "at"}: a callback at a requested time
    GET  /api/calls/{call_id}/context     screen-pop: caller, customer, IVR choices, wait, origin
    GET  /api/agents/{ext}/offer          the context of the call at an agent now
    GET  /api/agents/{ext}/events         server-sent events: offer / answered, with the context

Errors are JSON ``{"error", "status", "reason"}`` (404 unknown queue/agent/message, 409 a state
change that is not possible now, 400 a bad command).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.cc.agents import AgentError, AgentState, AgentView
from gateway.cc.center import ContactCentre
from gateway.store.sqlite import SqliteSiteStore

from .server import error_response, json_object

_COMMANDS = ("login", "logout", "pause", "unpause")
_HEARTBEAT_S = 15.0


def _agent_json(view: AgentView) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(view):
        value = getattr(view, f.name)
        if isinstance(value, AgentState):
            value = value.value
        elif isinstance(value, frozenset | set | tuple):
            value = sorted(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[f.name] = value
    return out


def cc_routes(cc: ContactCentre, store: SqliteSiteStore) -> list[web.RouteDef]:
    """The contact-centre routes, for :func:`gateway.web.server.create_app`'s ``extra_routes``."""

    async def queues(request: web.Request) -> web.Response:
        return web.json_response([cc.queue_snapshot(name) for name in cc.queues])

    async def queue(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in cc.queues:
            return error_response(404, f"no queue {name!r}")
        return web.json_response(cc.queue_snapshot(name))

    async def agents(request: web.Request) -> web.Response:
        return web.json_response([_agent_json(v) for v in cc.agents.snapshot()])

    async def agent_command(request: web.Request) -> web.Response:
        ext, command = request.match_info["ext"], request.match_info["command"]
        if command not in _COMMANDS:
            return error_response(400, f"unknown command {command!r} (one of {_COMMANDS})")
        reason = ""
        if request.can_read_body:
            body = await json_object(request)
            reason = str(body.get("reason", ""))[:64]
        try:
            view = cc.agent_command(ext, command, reason)
        except AgentError as exc:
            return error_response(getattr(exc, "status", 409), str(exc))
        return web.json_response(_agent_json(view))

    async def interactions(request: web.Request) -> web.Response:
        limit = _limit(request)
        if limit is None:
            return error_response(400, "limit must be an integer 1..1000")
        return web.json_response(store.interactions(limit))

    async def voicemail(request: web.Request) -> web.Response:
        limit = _limit(request)
        if limit is None:
            return error_response(400, "limit must be an integer 1..1000")
        return web.json_response(store.voicemails(request.query.get("box"), limit))

    async def voicemail_audio(request: web.Request) -> web.StreamResponse:
        try:
            vid = int(request.match_info["id"])
        except ValueError:
            return error_response(404, "no such message")
        rows = [r for r in store.voicemails(None, 1000) if r["id"] == vid]
        if not rows or not Path(rows[0]["path"]).is_file():
            return error_response(404, "no such message")
        return web.FileResponse(rows[0]["path"], headers={"Content-Type": "audio/wav"})

    async def call_context(request: web.Request) -> web.Response:
        ctx = cc.call_context(request.match_info["call_id"])
        if ctx is None:
            return error_response(404, "no such call in the contact centre")
        return web.json_response(ctx)

    async def agent_offer(request: web.Request) -> web.Response:
        ext = request.match_info["ext"]
        if ext not in {a.extension for a in cc.agents.snapshot()}:
            return error_response(404, f"no agent {ext!r}")
        ctx = cc.offered_to(ext)
        if ctx is None:
            return error_response(404, f"no call at {ext!r} now")
        return web.json_response(ctx)

    async def agent_events(request: web.Request) -> web.StreamResponse:
        ext = request.match_info["ext"]
        if ext not in {a.extension for a in cc.agents.snapshot()}:
            return error_response(404, f"no agent {ext!r}")
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await resp.prepare(request)
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=64)
        cc.watch(ext, events)
        try:
            await resp.write(b": ccgw agent events\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), _HEARTBEAT_S)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                data = json.dumps(event, ensure_ascii=False)
                await resp.write(f"event: {event['event']}\ndata: {data}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            cc.unwatch(ext, events)
        return resp

    async def callbacks(request: web.Request) -> web.Response:
        status = request.query.get("status", "pending")
        if status not in ("pending", "connected", "failed", "cancelled", "all"):
            return error_response(400, "status is pending, connected, failed, cancelled or all")
        return web.json_response(store.callbacks(None if status == "all" else status))

    async def schedule_callback(request: web.Request) -> web.Response:
        body = await json_object(request, 'the body must be {"number", "queue", "at"}')
        number = str(body.get("number", ""))
        if not cc.cfg.dialplan.is_external(number):
            return error_response(400, f"number {number!r} is not an external number")
        try:
            at = _when(body.get("at"))
            cb_id = cc.schedule_callback(number, str(body.get("queue", "")), at)
        except ValueError as exc:
            return error_response(400, str(exc))
        return web.json_response({"id": cb_id, "at": at}, status=201)

    return [
        web.get("/api/callbacks", callbacks),
        web.post("/api/callbacks", schedule_callback),
        web.get("/api/calls/{call_id}/context", call_context),
        web.get("/api/agents/{ext}/offer", agent_offer),
        web.get("/api/agents/{ext}/events", agent_events),
        web.get("/api/queues", queues),
        web.get("/api/queues/{name}", queue),
        web.get("/api/agents", agents),
        web.post("/api/agents/{ext}/{command}", agent_command),
        web.get("/api/interactions", interactions),
        web.get("/api/voicemail", voicemail),
        web.get(r"/api/voicemail/{id:\d+}.wav", voicemail_audio),
    ]


def _when(raw: object) -> float:
    """``at`` as Unix seconds, or ISO 8601 with its UTC offset; absent: now."""
    if raw is None:
        return 0.0
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"at {raw!r} is not ISO 8601 (2026-11-26T09:30:00+08:00)") from None
        if when.tzinfo is None:
            raise ValueError(f"at {raw!r} has no UTC offset (write +08:00 or Z)")
        return when.timestamp()
    raise ValueError("at is Unix seconds or an ISO 8601 string")


def _limit(request: web.Request) -> int | None:
    text = request.query.get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        return None
    return int(text)
