"""The HTTP side of the model server: an Anthropic Messages API look-alike.

Routes::

    POST /v1/messages               scripted reply; SSE when "stream": true, else JSON
    POST /v1/messages/count_tokens  {"input_tokens": estimate}
    GET  /v1/models                 one model, so model pickers have something to show
    GET  /requests[?since=ID]       the request log, oldest first (for tests and other processes)
    POST /reset                     clear the log and the ``times`` counters
    GET|HEAD /                      health

Errors, scripted or not, have the API's shape: ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from maos.modelserver.script import (
    Choice,
    Conversation,
    RenderedReply,
    Reply,
    Script,
    estimate_tokens,
)

log = logging.getLogger("maos.modelserver")

MAX_LOG_ENTRIES = 10_000  # oldest entries are dropped past this; ids keep counting
CHUNK_CHARS = 40  # streamed text and tool input arrive in pieces this long
MODEL_ID = "maos-scripted"
_LOG_TEXT_CHARS = 4000
_SYSTEM_TAIL_CHARS = 4000


@dataclass
class RequestRecord:
    """One entry of the request log (``GET /requests``, ``--log FILE.jsonl``)."""

    id: int
    path: str
    received_at: float
    answered_at: float | None
    agent: str | None
    session: str | None
    task: str | None  # the current task, as the rules see it
    turn: int
    model: str
    stream: bool
    tools: list[str]
    system_tail: str  # the end of the system prompt, where --append-system-prompt text lands
    last_user: str
    tool_result: bool
    rule: int | None
    rule_name: str | None
    status: int | None
    stop_reason: str | None
    input_tokens: int | None
    output_tokens: int | None


class ScriptedModel:
    """The state behind one server: the script, the ``times`` counters and the request log."""

    def __init__(self, script: Script, *, log_path: Path | None = None) -> None:
        self.script = script
        self.log_path = log_path
        self.records: deque[RequestRecord] = deque(maxlen=MAX_LOG_ENTRIES)
        self.counters: dict[tuple[int, str], int] = {}
        # Set when the server shuts down: scripted delays end at once (see ``pause``).
        self.stopping = asyncio.Event()
        self._next_id = 1

    async def pause(self, delay_s: float) -> bool:
        """Sleep ``delay_s`` unless the server stops first; True if it did not stop."""
        if delay_s > 0 and not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self.stopping.wait()
        return not self.stopping.is_set()

    def reset(self) -> None:
        self.records.clear()
        self.counters.clear()

    def begin(self, path: str, body: dict[str, Any], conv: Conversation, choice: Choice) -> RequestRecord:
        record = RequestRecord(
            id=self._next_id,
            path=path,
            received_at=time.time(),
            answered_at=None,
            agent=conv.agent,
            session=conv.session,
            task=conv.task,
            turn=conv.turn,
            model=conv.model,
            stream=bool(body.get("stream")),
            tools=list(conv.tool_names),
            system_tail=conv.system_text[-_SYSTEM_TAIL_CHARS:],
            last_user=conv.last_user_text[:_LOG_TEXT_CHARS],
            tool_result=conv.tool_results is not None,
            rule=choice.rule,
            rule_name=choice.rule_name,
            status=None,
            stop_reason=None,
            input_tokens=None,
            output_tokens=None,
        )
        self._next_id += 1
        self.records.append(record)
        return record

    def finish(self, record: RequestRecord, status: int) -> None:
        record.status = status
        record.answered_at = time.time()
        log.info(
            "request %d agent=%s turn=%d rule=%s status=%d stop=%s took=%.3fs",
            record.id,
            record.agent or "-",
            record.turn,
            record.rule if record.rule is not None else (record.rule_name or "default"),
            status,
            record.stop_reason or "-",
            record.answered_at - record.received_at,
        )
        if self.log_path is not None:
            with self.log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(record)) + "\n")


def create_app(script: Script, *, log_path: Path | None = None) -> Starlette:
    """A Starlette app serving ``script``; its state is ``app.state.model``."""
    model = ScriptedModel(script, log_path=log_path)

    async def messages(request: Request) -> Response:
        body = await _json_body(request)
        conv = Conversation.from_request(body, request.headers)
        choice = script.choose(conv, model.counters)
        record = model.begin(request.url.path, body, conv, choice)
        reply = choice.reply
        try:
            if not await model.pause(reply.delay_s):
                response: Response = _api_error(503, "api_error", "the model server is stopping")
                model.finish(record, response.status_code)
                return response
            if reply.error is not None:
                response = _error_reply(reply)
                model.finish(record, response.status_code)
                return response
            rendered = reply.render(choice.variables)
            usage = _usage(reply, rendered, body)
            record.stop_reason = rendered.stop_reason
            record.input_tokens = usage["input_tokens"]
            record.output_tokens = usage["output_tokens"]
            if body.get("stream"):
                return StreamingResponse(
                    _sse(model, record, reply, rendered, usage),
                    media_type="text/event-stream",
                    headers={"cache-control": "no-cache", "request-id": _request_id()},
                )
            model.finish(record, 200)
            return JSONResponse(_message(rendered, conv.model, usage), headers={"request-id": _request_id()})
        except BaseException:
            if record.status is None:
                model.finish(record, 499)  # the client went away (or the server stopped) first
            raise

    async def count_tokens(request: Request) -> Response:
        body = await _json_body(request)
        return JSONResponse({"input_tokens": _estimate_input(body)})

    async def models(request: Request) -> Response:
        entry = {
            "type": "model",
            "id": MODEL_ID,
            "display_name": "MAOS scripted model",
            "created_at": "2026-01-01T00:00:00Z",
        }
        return JSONResponse({"data": [entry], "has_more": False, "first_id": MODEL_ID, "last_id": MODEL_ID})

    async def requests_log(request: Request) -> Response:
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            return _api_error(400, "invalid_request_error", "since must be an integer")
        return JSONResponse({"requests": [asdict(r) for r in model.records if r.id > since]})

    async def reset(request: Request) -> Response:
        model.reset()
        return JSONResponse({"ok": True})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "rules": len(script.rules)})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kinds = {404: "not_found_error", 405: "invalid_request_error"}
        return _api_error(
            exc.status_code,
            kinds.get(exc.status_code, "invalid_request_error"),
            str(exc.detail),
            headers=exc.headers,
        )

    app = Starlette(
        routes=[
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/requests", requests_log, methods=["GET"]),
            Route("/reset", reset, methods=["POST"]),
            Route("/", health, methods=["GET", "HEAD"]),
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.model = model
    return app


# --------------------------------------------------------------------------- bodies


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise HTTPException(400, f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise HTTPException(400, "messages: field required (a list)")
    return body


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex[:24]}"


def _api_error(
    status: int, kind: str, message: str, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": _request_id()}
    return JSONResponse(body, status_code=status, headers=headers)


def _error_reply(reply: Reply) -> JSONResponse:
    assert reply.error is not None
    error = reply.error
    headers: dict[str, str] = {}
    if error.retry_after_s is not None:
        # Claude Code reads retry-after-ms first; other clients know only retry-after.
        headers["retry-after-ms"] = str(round(error.retry_after_s * 1000))
        headers["retry-after"] = str(max(0, round(error.retry_after_s)))
    return _api_error(error.status, error.error_type, error.error_message, headers=headers)


def _estimate_input(body: dict[str, Any]) -> int:
    sized = {k: body.get(k) for k in ("system", "messages", "tools")}
    return estimate_tokens(len(json.dumps(sized, default=str)))


def _usage(reply: Reply, rendered: RenderedReply, body: dict[str, Any]) -> dict[str, int]:
    scripted = reply.usage
    return {
        "input_tokens": (
            scripted.input_tokens if scripted.input_tokens is not None else _estimate_input(body)
        ),
        "output_tokens": (
            scripted.output_tokens
            if scripted.output_tokens is not None
            else estimate_tokens(rendered.size_chars())
        ),
        "cache_creation_input_tokens": scripted.cache_creation_input_tokens,
        "cache_read_input_tokens": scripted.cache_read_input_tokens,
    }


def _content(rendered: RenderedReply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if rendered.text is not None:
        blocks.append({"type": "text", "text": rendered.text})
    for call in rendered.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.input})
    return blocks


def _message(rendered: RenderedReply, model: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model or MODEL_ID,
        "content": _content(rendered),
        "stop_reason": rendered.stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


# --------------------------------------------------------------------------- streaming


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _chunks(text: str) -> list[str]:
    return [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]


async def _sse(
    model: ScriptedModel,
    record: RequestRecord,
    reply: Reply,
    rendered: RenderedReply,
    usage: dict[str, int],
) -> AsyncIterator[bytes]:
    status = 499  # stays so if the client disconnects mid-stream
    try:
        message = _message(rendered, record.model, usage)
        start = message | {"content": [], "stop_reason": None, "usage": usage | {"output_tokens": 1}}
        yield _event("message_start", {"type": "message_start", "message": start})
        yield _event("ping", {"type": "ping"})
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                pieces = _chunks(block["text"])
                yield _event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
                delta = {"type": "text_delta"}
                key = "text"
            else:
                pieces = _chunks(json.dumps(block["input"]))
                empty = block | {"input": {}}
                yield _event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": empty},
                )
                delta = {"type": "input_json_delta"}
                key = "partial_json"
            for piece in pieces:
                await model.pause(reply.chunk_delay_s)  # when stopping: the rest at once
                yield _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta | {key: piece}},
                )
            yield _event("content_block_stop", {"type": "content_block_stop", "index": index})
        yield _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": rendered.stop_reason, "stop_sequence": None},
                "usage": usage,
            },
        )
        yield _event("message_stop", {"type": "message_stop"})
        status = 200
    finally:
        model.finish(record, status)
