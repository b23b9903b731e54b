"""The wire protocols to a Codestral server, in one place: request bodies, the SSE stream
(chunks, `[DONE]`, errors sent inside the stream) and HTTP failures mapped to `CodestralError`
with the fix. `engine_client.py`'s sync and async faces send and receive through this module;
no other module parses the stream.

Two protocols (the `protocol` setting):
- "mistral": Mistral's API (`/v1/fim/completions`, `/v1/chat/completions`), spoken by our
  `codestral-engine serve` and Mistral's hosted API.
- "vllm": an OpenAI-compatible server that takes token-id prompts (vLLM, SGLang). It has no FIM
  route and does not render FIM for Mistral models, so a FIM prompt goes to `/v1/completions` as
  the token ids Codestral's tokenizer makes of it (mistral_common's `encode_fim`, the engine's
  own encoder: control-token look-alikes in user code stay text); chat is OpenAI's.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from ..errors import CodestralError
from .shapes import Sampling

DEFAULT_MODEL = "codestral-latest"
FIM_PATH = "/v1/fim/completions"
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
DONE = "[DONE]"
PROTOCOLS = ("mistral", "vllm")
# A short FIM-like text whose plain-text ids tell Codestral's tokenizer from others.
TOKENIZER_PROBE = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # Codestral"


def _tokenizer():
    from codestral_engine import codestral_tokenizer  # loaded on first use, once per process

    return codestral_tokenizer()


class Wire:
    """How one protocol asks for FIM and chat: (path, body) for a request."""

    name = "mistral"

    def fim(self, prompt: str, suffix: str, model: str, params: Sampling):
        return FIM_PATH, {"model": model, "prompt": prompt, "suffix": suffix, **params.mistral()}

    def chat(self, messages: list[dict[str, Any]], model: str, params: Sampling):
        return CHAT_PATH, {"model": model, "messages": messages, **params.mistral()}

    def streaming(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "stream": True}


class VLLMWire(Wire):
    """OpenAI-compatible completions with Codestral's FIM prompt as token ids."""

    name = "vllm"

    def fim(self, prompt: str, suffix: str, model: str, params: Sampling):
        ids = _tokenizer().encode_fim(prompt, suffix)
        return COMPLETIONS_PATH, {"model": model, "prompt": ids, **params.openai()}

    def chat(self, messages: list[dict[str, Any]], model: str, params: Sampling):
        return CHAT_PATH, {"model": model, "messages": messages, **params.openai()}

    def streaming(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "stream": True, "stream_options": {"include_usage": True}}


WIRES: dict[str, Wire] = {"mistral": Wire(), "vllm": VLLMWire()}


def wire(name: str) -> Wire:
    if name not in WIRES:
        raise CodestralError(
            f"Unknown protocol {name!r}.",
            kind="bad_request",
            fix=f"Set protocol to one of: {', '.join(PROTOCOLS)}.",
        )
    return WIRES[name]


def stream_chunk(data: str) -> dict[str, Any] | None:
    """One SSE event's data as a chunk; None at `[DONE]`. An error sent inside the stream
    (after the 200 status) is raised."""
    if data == DONE:
        return None
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise CodestralError(f"Codestral sent a malformed stream event: {data[:200]!r}.") from exc
    if not isinstance(chunk, dict):
        raise CodestralError(f"Codestral sent an unexpected stream event: {data[:200]!r}.")
    error = chunk if chunk.get("object") == "error" else chunk.get("error")
    if isinstance(error, dict) and not chunk.get("choices"):  # Mistral's shape, or OpenAI's
        message = str(error.get("message") or "engine error")
        code = error.get("code")
        status = int(code) if str(code).isdigit() else 500  # some servers send names here
        if error.get("type") in STOPPING_KINDS:  # our engine exited while answering
            raise stopping_error(message, status, str(error["type"]))
        raise CodestralError(
            f"The server failed mid-answer: {message}", status, kind="engine_error"
        )
    return chunk


# The error types our engine gives a request it refuses or cuts because it exits (also the
# error kinds here): after its idle timeout (retried at once on a fresh engine), or stopped.
STOPPING_KINDS = ("engine_idle_exit", "engine_stopped")


def stopping_error(message: str, status: int, kind: str) -> CodestralError:
    return CodestralError(message, status, kind=kind)  # the engine's message says what to do


def cut_short(url: str) -> CodestralError:
    """A stream that ended without its end marker: the answer may be incomplete."""
    return CodestralError(
        f"The connection to Codestral at {url} broke: the stream ended before the answer "
        "was complete.",
        kind="unreachable",
        fix="The server went away or restarted; run it again.",
    )


def response_text(response: dict[str, Any]) -> str:
    """The text of a non-streamed completion (Mistral's and OpenAI's shapes)."""
    choice = (response.get("choices") or [{}])[0]
    return (choice.get("message") or {}).get("content") or choice.get("text") or ""


def served_models(listing: dict[str, Any]) -> list[str]:
    """Model names in a `/v1/models` answer (Mistral's and OpenAI's shape), aliases too."""
    names: list[str] = []
    for card in listing.get("data") or []:
        if isinstance(card, dict) and "id" in card:
            names += [card["id"], *(card.get("aliases") or [])]
    return names


def error_message(response: httpx.Response) -> str:
    """The human message of an error answer: Mistral's `message`/`detail`, OpenAI's
    `error.message`, or the text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        detail = body.get("message") or body.get("detail")
        if detail:
            return str(detail) if not isinstance(detail, list) else json.dumps(detail)[:500]
    return response.text or response.reason_phrase


def error_type(response: httpx.Response) -> str | None:
    """The `type` of an error answer in Mistral's shape (None for other shapes)."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("type") if isinstance(body, dict) else None


CONTEXT_TOO_LONG = re.compile(
    r"maximum context length|context length|too long|exceeds|longer than the maximum", re.I
)


def http_error(response: httpx.Response, protocol: str = "mistral") -> CodestralError:
    """A non-200 answer as the error a user can act on (read the body first)."""
    message = error_message(response)
    status = response.status_code
    if status == 401:
        return CodestralError(
            f"The server refused the API key: {message}",
            401,
            kind="auth",
            fix="Set the api_key setting (or $CODESTRAL_API_KEY for codestral.mistral.ai, "
            "$MISTRAL_API_KEY for api.mistral.ai, each with its own kind of key; a team "
            "server's key comes from its administrator).",
        )
    if status == 503 and error_type(response) in STOPPING_KINDS:
        return stopping_error(message, 503, error_type(response))
    if status == 503:
        return CodestralError(
            message, 503, kind="engine_starting", fix="Wait until the model has loaded."
        )
    if status == 429:
        return CodestralError(
            message, 429, kind="busy", fix="Requests resume when the queue drains."
        )
    if status == 413 or (status == 400 and CONTEXT_TOO_LONG.search(message)):
        return CodestralError(
            message,
            status,
            kind="context",
            fix="Send less context (lower the context budget) or ask for fewer tokens.",
        )
    if status == 404:
        return CodestralError(
            f"The server answered 404: {message}",
            404,
            kind="not_found",
            fix=WRONG_PROTOCOL[protocol],
        )
    if status == 400 and protocol == "vllm" and "prompt" in message.lower():
        return CodestralError(
            f"The server refused a token-id prompt: {message}",
            400,
            kind="protocol",
            fix=WRONG_PROTOCOL["vllm"],
        )
    if 400 <= status < 500:
        return CodestralError(
            f"The server refused the request ({status}): {message}", status, kind="bad_request"
        )
    return CodestralError(f"Codestral answered {status}: {message}", status, kind="engine_error")


# The fix when a route or a prompt shape is missing: probably the other protocol.
WRONG_PROTOCOL = {
    "mistral": "Mistral's API has /v1/fim/completions; a vLLM or other OpenAI-compatible "
    "server does not: set protocol = 'vllm' for it. Also check the url setting.",
    "vllm": "protocol = 'vllm' needs an OpenAI-compatible server that takes token-id prompts on "
    "/v1/completions (vLLM, SGLang); for codestral-engine serve or Mistral's API set protocol "
    "= 'mistral'. Also check the url setting.",
}


def unknown_model(model: str, served: list[str]) -> CodestralError:
    return CodestralError(
        f"The server does not serve a model named {model!r}; it serves: "
        f"{', '.join(served) or 'nothing'}.",
        404,
        kind="unknown_model",
        fix="Set remote_model to one of those names.",
    )


def tokenizer_mismatch(url: str, model: str) -> CodestralError:
    return CodestralError(
        f"The model {model!r} at {url} does not use Codestral's tokenizer: FIM prompts sent "
        "as token ids would be garbage.",
        kind="tokenizer",
        fix="Serve Codestral there (vLLM: --tokenizer-mode mistral with Codestral's "
        "tokenizer.model.v3), or set remote_model to the server's Codestral.",
    )


# What the clients ask a remote server beyond completions, written once for the sync and the
# async client: each step yields a request (method, path, JSON body or None), receives the
# `httpx.Response`, and returns its conclusion; `engine_client.py` runs it over HTTP.


def check_served(wire: Wire, url: str, model: str):
    """Raises the error a user can act on when `model` is not served or (protocol "vllm")
    does not tokenize as Codestral; returns the names the server serves."""
    listing = yield "GET", MODELS_PATH, None
    if listing.status_code in (401, 403, 404) and wire.name == "mistral":
        # A Mistral-compatible server that does not list models to this key (Codestral's own
        # endpoint may not): nothing to check; a wrong key shows at the first request.
        return []
    if listing.status_code != 200:
        raise http_error(listing, wire.name)
    served = served_models(listing.json())
    owners = {card.get("owned_by") for card in listing.json().get("data") or []}
    if wire.name == "mistral" and "vllm" in owners:
        raise CodestralError(
            f"The server at {url} is vLLM, which has no FIM route.",
            kind="protocol",
            fix="Set protocol = 'vllm' to send it FIM prompts as Codestral token ids.",
        )
    if wire.name == "vllm" and "codestral-engine" in owners:
        raise CodestralError(
            f"The server at {url} is codestral-engine, which speaks Mistral's API.",
            kind="protocol",
            fix="Set protocol = 'mistral'.",
        )
    if served and model not in served:
        raise unknown_model(model, served)
    if wire.name == "vllm":
        probe = {"model": model, "prompt": TOKENIZER_PROBE, "add_special_tokens": False}
        answer = yield "POST", "/tokenize", probe
        # No /tokenize (an OpenAI-compatible server other than vLLM): nothing to compare.
        ours = _tokenizer().encode(TOKENIZER_PROBE)
        if answer.status_code == 200 and list(answer.json().get("tokens") or []) != ours:
            raise tokenizer_mismatch(url, model)
    return served


def remote_status(wire: Wire, url: str, model: str):
    """What the status displays show for a remote server: reachable or not, the model and
    what it serves; an error state carries the message and the fix."""
    base = {"state": "ready", "url": url, "protocol": wire.name, "model": model}
    try:
        served = yield from check_served(wire, url, model)
    except CodestralError as exc:
        state = "loading" if exc.kind == "engine_starting" else "error"
        return base | {"state": state, "error": str(exc), "kind": exc.kind, "fix": exc.fix}
    if wire.name == "mistral" and url.rstrip("/").endswith(CLASSROOM_PATH):
        # A course's JupyterHub service (jupyter_codestral.classroom): the student's mode.
        course = yield "GET", "/status", None
        if course.status_code == 200:
            return base | {"served_models": served, "classroom": course.json()}
    return base | {"served_models": served}


CLASSROOM_PATH = "/services/codestral"  # where JupyterHub serves the classroom service


def explain_not_found(wire: Wire, model: str, error: CodestralError):
    """A 404 from a completion: an unknown model when the server lists others, else the
    route is missing (the other protocol, or a wrong url)."""
    listing = yield "GET", MODELS_PATH, None
    if listing.status_code == 200:
        served = served_models(listing.json())
        if model not in served:
            return unknown_model(model, served)
    return error


def unreachable(url: str, exc: Exception) -> CodestralError:
    if isinstance(exc, httpx.ReadTimeout):
        return CodestralError(
            f"Codestral at {url} is not responding: it accepted the request but has not answered.",
            kind="not_responding",
            fix="It may be frozen or swamped; if it stays so, stop it (`%codestral stop` "
            "for this machine's engine) and run again.",
        )
    if not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return CodestralError(
            f"The connection to Codestral at {url} broke ({exc or type(exc).__name__}).",
            kind="unreachable",
            fix="The server went away or restarted; try again, and check it with "
            "`%codestral status` in a notebook.",
        )
    if url.rstrip("/").endswith(CLASSROOM_PATH):  # students cannot start or fix it
        return CodestralError(
            f"The course's Codestral service at {url} is unreachable ({exc}).",
            kind="unreachable",
            fix="Tell your teacher (the JupyterHub service `codestral` is not running).",
        )
    return CodestralError(
        f"Cannot reach Codestral at {url} ({exc}).",
        kind="unreachable",
        fix="Is it running? Check with `%codestral status` in a notebook or `codestral-engine "
        "serve` in a terminal (it reports a running server), or the url setting.",
    )
