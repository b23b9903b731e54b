"""Ollama's API on the engine, for the tools that speak it (Continue's Ollama provider, Zed,
Notebook Intelligence, CellSense, Open WebUI): the model loaded once serves them too.

Reference: Ollama's docs/api.md. Routes: POST /api/generate, POST /api/chat, GET /api/tags,
POST /api/show, GET /api/ps, GET /api/version, and GET / ("Ollama is running").

- /api/generate with a `suffix` (even "": a cursor at the end of a file) is Codestral FIM by
  token ids, exactly `encode_fim(prompt, suffix)`; without one it is one instruct turn (with
  `system`), as Ollama's Codestral template makes it; `raw` takes a ready prompt whose control
  tokens (`<s>[SUFFIX]...[PREFIX]...`) become their ids. An empty prompt only loads (done_reason
  "load"). `context` echoes the prompt and completion ids.
- options: num_predict (-1, -2: no limit), temperature (default 0: greedy, the engine's
  default), top_p, seed, stop; Ollama's other options (num_ctx, top_k, ...) are accepted and
  have no effect (Ollama ignores what it does not know too).
- keep_alive: the engine is shared (the notebook, the editor), so no client unloads it. Any
  request counts as activity; an engine started with --idle-timeout exits that long after the
  last request whatever keep_alive says, one started by hand stays. keep_alive 0 with an empty
  prompt answers done_reason "unload" and leaves the model loaded. /api/ps says when it expires.
- Errors: {"error": message}, with the status the Mistral routes give the same problem.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..core.engine import Engine
from ..core.events import Finished, TextDelta
from ..errors import EngineError
from .dialect import collect_unless_gone, dialect_route
from .http_input import parse
from .server import (
    MODEL_ALIASES,
    APIError,
    ServerState,
    _active,
    _log,
    _served,
    _submit,
    track_running,
)

OLLAMA_VERSION = "0.12.0"  # what /api/version reports: clients gate features on it
OLLAMA_NAMES = ("codestral:latest", "codestral:22b")  # what users put in their tool's config
ARCHITECTURE = "llama"  # what Ollama reports for Codestral (its GGUF architecture)
PATHS = ("/", "/api/generate", "/api/chat", "/api/tags", "/api/show", "/api/ps", "/api/version")
_DURATION = re.compile(r"-?(\d+(\.\d*)?(ns|us|µs|ms|s|m|h))+|-?\d+(\.\d*)?")
_FOREVER = datetime(2318, 1, 1, tzinfo=timezone.utc)  # Ollama's "never expires"


class _Options(BaseModel):
    model_config = ConfigDict(extra="ignore")

    num_predict: StrictInt | None = None
    temperature: StrictFloat | StrictInt | None = None
    top_p: StrictFloat | StrictInt | None = None
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None

    def engine_options(self) -> dict[str, Any]:
        if self.num_predict is not None and (self.num_predict == 0 or self.num_predict < -2):
            raise APIError(422, "options.num_predict must be >= 1, or -1 for no limit.")
        limit = self.num_predict if self.num_predict and self.num_predict > 0 else None
        return {
            "max_tokens": limit,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "random_seed": self.seed,
            "stop": self.stop or None,
        }


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # think, truncate, ...: nothing to do here

    model: StrictStr
    stream: StrictBool = True
    options: _Options = _Options()
    keep_alive: StrictStr | StrictInt | StrictFloat | None = None
    format: StrictStr | dict[str, Any] | None = None
    images: list[Any] | None = None


class GenerateBody(_Body):
    prompt: StrictStr = ""
    suffix: StrictStr | None = None
    system: StrictStr | None = None
    template: StrictStr | None = None
    raw: StrictBool = False
    context: list[StrictInt] | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: StrictStr
    content: StrictStr = ""
    images: list[Any] | None = None


class ChatBody(_Body):
    messages: list[_Message] = []
    tools: list[Any] | None = None


class ShowBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    name: StrictStr | None = None  # the older field name clients still send


def error_body(_status: int, message: str) -> dict[str, Any]:
    return {"error": message}


def routes(state: ServerState, idle_timeout: float | None) -> list[Route]:
    """Ollama's routes on `state`'s engine."""

    def names() -> list[str]:
        return [*OLLAMA_NAMES, _tagged(state.model_id)]

    def engine_for(model: str) -> Engine:
        if _tagged(model) not in {*names(), *map(_tagged, MODEL_ALIASES)}:
            raise APIError(
                404,
                f"model '{model}' not found; this server serves "
                f"{', '.join(names())} (also {_served(state)}).",
            )
        return state.ready_engine()

    async def generate(request: Request) -> Response:
        started = time.perf_counter_ns()
        body = await parse(request, GenerateBody, mistral_fields=False)
        _refuse_unsupported(body)
        if body.template or body.context:
            raise APIError(
                400,
                "template and context are not supported: Codestral's prompt "
                "is built by the engine (or send raw: true).",
            )
        engine, options = engine_for(body.model), body.options.engine_options()
        if not body.prompt and body.suffix is None:  # Ollama's "load the model" request
            state.begin()
            state.end()
            reason = "unload" if _seconds(body.keep_alive) == 0 else "load"
            done = {**_head(body.model), "response": "", "done": True, "done_reason": reason}
            return _one_or_stream(body.stream, done)
        if body.raw:
            if len(body.prompt) > engine.context_length * engine.tokenizer.max_token_chars:
                raise APIError(
                    413,
                    f"The prompt cannot fit the model's context window of "
                    f"{engine.context_length} tokens; shorten it.",
                )
            if state.log_prompts:
                _log({"event": "raw_prompt", "prompt": body.prompt})

            def submit():  # tokenized off the event loop, as every prompt is
                return engine.submit(engine.tokenizer.encode_raw(body.prompt), **options)
        elif body.suffix is not None:
            if state.log_prompts:
                _log({"event": "fim_prompt", "prompt": body.prompt, "suffix": body.suffix})
            submit = partial(engine.fim, body.prompt, body.suffix, **options)
        else:
            turn = [{"role": "user", "content": body.prompt}]
            system = [{"role": "system", "content": body.system}] if body.system else []
            submit = partial(engine.chat, system + turn, **options)
        return await _active(state, _answer(state, submit, body, request, started, "response"))

    async def chat(request: Request) -> Response:
        started = time.perf_counter_ns()
        body = await parse(request, ChatBody, mistral_fields=False)
        _refuse_unsupported(body)
        if body.tools:
            raise APIError(400, f"{body.model} does not support tools")
        if any(m.images for m in body.messages):
            raise APIError(400, "Codestral reads text only; send messages without images.")
        engine, options = engine_for(body.model), body.options.engine_options()
        if not body.messages:  # a load request, as in Ollama
            state.begin()
            state.end()
            done = {**_head(body.model), "message": _message(""), "done": True,
                    "done_reason": "load"}  # fmt: skip
            return _one_or_stream(body.stream, done)
        messages = [{"role": m.role, "content": m.content} for m in body.messages]
        if state.log_prompts:
            _log({"event": "chat_messages", "messages": messages})
        submit = partial(engine.chat, messages, **options)
        return await _active(state, _answer(state, submit, body, request, started, "message"))

    async def tags(_request: Request) -> Response:
        return JSONResponse({"models": [_card(state, name) for name in names()]})

    async def show(request: Request) -> Response:
        body = await parse(request, ShowBody, mistral_fields=False)
        name = body.model or body.name
        if not name:
            raise APIError(400, "model is required")
        engine = engine_for(name)
        config = engine.checkpoint.config
        arch = ARCHITECTURE
        return JSONResponse(
            {
                "modelfile": f"FROM {engine.model_path}\n",
                "parameters": "",
                "template": "[SUFFIX]{{ .Suffix }}[PREFIX] {{ .Prompt }}",
                "details": _details(state),
                "model_info": {
                    "general.architecture": arch,
                    "general.parameter_count": _parameters(config),
                    f"{arch}.context_length": engine.context_length,
                    f"{arch}.embedding_length": config.get("hidden_size"),
                    f"{arch}.block_count": config.get("num_hidden_layers"),
                },
                "capabilities": ["completion", "insert"],  # insert: FIM with a suffix
                "modified_at": _iso(_modified(state)),
            }
        )

    async def ps(_request: Request) -> Response:
        if state.state != "ready":
            return JSONResponse({"models": []})
        idle = state.idle_seconds() or 0.0
        left = timedelta(seconds=max(0.0, (idle_timeout or 0) - idle))
        expires = datetime.now(timezone.utc) + left if idle_timeout else _FOREVER
        running = [
            {
                **_card(state, name),
                "expires_at": _iso(expires),
                "size_vram": 0,
                "context_length": state.ready_engine().context_length,
            }
            for name in names()[:1]
        ]
        return JSONResponse({"models": running})

    async def version(_request: Request) -> Response:
        return JSONResponse({"version": OLLAMA_VERSION})

    async def root(_request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    handlers = [("/", root, ["GET"]), ("/api/generate", generate, ["POST"]),
                ("/api/chat", chat, ["POST"]), ("/api/tags", tags, ["GET"]),
                ("/api/show", show, ["POST"]), ("/api/ps", ps, ["GET"]),
                ("/api/version", version, ["GET"])]  # fmt: skip
    return [dialect_route(path, fn, methods, error_body) for path, fn, methods in handlers]


def _refuse_unsupported(body: _Body) -> None:
    if body.images:
        raise APIError(400, "Codestral reads text only; send the request without images.")
    if body.format:
        raise APIError(400, "format (JSON output) is not supported by this engine.")
    if body.keep_alive is not None and _seconds(body.keep_alive) is None:
        raise APIError(400, f"keep_alive {body.keep_alive!r} is not a duration (e.g. '5m', 300).")


def _seconds(keep_alive: str | int | float | None) -> float | None:
    """keep_alive in seconds (a number, or a Go duration such as '5m' or '1h30m')."""
    if keep_alive is None or isinstance(keep_alive, (int, float)):
        return keep_alive
    text = keep_alive.strip()
    if not _DURATION.fullmatch(text):
        return None
    if re.fullmatch(r"-?\d+(\.\d*)?", text):
        return float(text)
    unit = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    total = sum(
        float(n) * unit[u] for n, _, u in re.findall(r"(\d+(\.\d*)?)(ns|us|µs|ms|s|m|h)", text)
    )
    return -total if text.startswith("-") else total


async def _answer(
    state: ServerState, submit, body: _Body, http: Request, started: int, field: str
) -> Response:
    """Tokenize and queue the request (off the event loop), then answer it, cut with an error
    line if the server exits meanwhile."""
    submitted = await _submit(state, submit)
    return await track_running(state, submitted, _reply(body, submitted, http, started, field))


async def _reply(body: _Body, submitted, http: Request, started: int, field: str) -> Response:
    if body.stream:
        return StreamingResponse(
            _ndjson(body.model, submitted, started, field), media_type="application/x-ndjson"
        )
    collected = await collect_unless_gone(submitted, http)
    if collected is None:
        return Response(status_code=499)  # nobody reads it
    text, final = collected
    content = text if field == "response" else _message(text)
    return JSONResponse({**_head(body.model), field: content, **_done(final, started, field)})


async def _ndjson(model: str, submitted, started: int, field: str) -> AsyncIterator[str]:
    empty = "" if field == "response" else _message("")
    try:
        async for event in submitted.events():  # leaving early (disconnect) cancels it
            if isinstance(event, TextDelta) and event.text:
                content = event.text if field == "response" else _message(event.text)
                yield _line({**_head(model), field: content, "done": False})
            elif isinstance(event, Finished):
                yield _line({**_head(model), field: empty, **_done(event, started, field)})
    except EngineError as exc:
        yield _line({"error": str(exc)})


def _done(final: Finished, started: int, field: str) -> dict[str, Any]:
    usage = final.usage
    total = time.perf_counter_ns() - started
    prompt_ns = int((usage.time_to_first_token_s or 0) * 1e9)
    done = {
        "done": True,
        "done_reason": {"model_length": "length"}.get(final.finish_reason, final.finish_reason),
        "total_duration": total,
        "load_duration": 0,
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": usage.completion_tokens,
        "eval_duration": max(0, total - prompt_ns),
    }
    if field == "response":
        done["context"] = [*final.prompt_token_ids, *final.completion_token_ids]
    return done


def _one_or_stream(stream: bool, body: dict[str, Any]) -> Response:
    if stream:
        return StreamingResponse(iter([_line(body)]), media_type="application/x-ndjson")
    return JSONResponse(body)


def _head(model: str) -> dict[str, Any]:
    return {"model": model, "created_at": _iso(datetime.now(timezone.utc))}


def _message(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def _line(body: dict[str, Any]) -> str:
    return json.dumps(body) + "\n"


def _tagged(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _modified(state: ServerState) -> datetime:
    return datetime.fromtimestamp(state.model_path.stat().st_mtime, timezone.utc)


def _card(state: ServerState, name: str) -> dict[str, Any]:
    files = list(state.model_path.glob("*.safetensors"))
    return {
        "name": name,
        "model": name,
        "modified_at": _iso(_modified(state)),
        "size": sum(f.stat().st_size for f in files),
        "digest": hashlib.sha256(str(state.model_path.resolve()).encode()).hexdigest(),
        "details": _details(state),
    }


def _details(state: ServerState) -> dict[str, Any]:
    engine = state.engine
    quantization = engine.checkpoint.quantization if engine else None
    bits = (quantization or {}).get("bits")
    return {
        "parent_model": "",
        "format": "safetensors",
        "family": ARCHITECTURE,  # model_info's keys start with it (clients look them up so)
        "families": [ARCHITECTURE],
        "parameter_size": _billions(_parameters(engine.checkpoint.config)) if engine else "",
        "quantization_level": f"Q{bits}" if bits else "BF16",
    }


def _parameters(config: dict[str, Any]) -> int:
    """Parameters from the architecture (quantized files do not say it by their sizes)."""
    hidden, layers = config.get("hidden_size", 0), config.get("num_hidden_layers", 0)
    heads, kv_heads = config.get("num_attention_heads", 1), config.get("num_key_value_heads", 1)
    head_dim = config.get("head_dim") or hidden // max(heads, 1)
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    mlp = 3 * hidden * config.get("intermediate_size", 0)
    return 2 * config.get("vocab_size", 0) * hidden + layers * (attention + mlp)


def _billions(count: int) -> str:
    return f"{count / 1e9:.1f}B" if count >= 1e8 else f"{count / 1e6:.1f}M"
