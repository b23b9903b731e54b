"""Ollama's wire shapes (docs/api.md): the request bodies its clients send, and the bodies the
engine answers with (a reply's head and done fields, a model's card, details and model_info).
The routes that read and write them are `ollama_api.py`'s.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr

from ..core.engine import Engine
from ..core.events import Finished
from .http_input import APIError
from .state import ServerState

ARCHITECTURE = "llama"  # what Ollama reports for Codestral (its GGUF architecture)
_DURATION = re.compile(r"-?(\d+(\.\d*)?(ns|us|µs|ms|s|m|h))+|-?\d+(\.\d*)?")


class Options(BaseModel):
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


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # think, truncate, ...: nothing to do here

    model: StrictStr
    stream: StrictBool = True
    options: Options = Options()
    keep_alive: StrictStr | StrictInt | StrictFloat | None = None
    format: StrictStr | dict[str, Any] | None = None
    images: list[Any] | None = None

    def refuse_unsupported(self) -> None:
        """An error for what the engine cannot do (images, JSON output) or cannot read."""
        if self.images:
            raise APIError(400, "Codestral reads text only; send the request without images.")
        if self.format:
            raise APIError(400, "format (JSON output) is not supported by this engine.")
        if self.keep_alive is not None and seconds(self.keep_alive) is None:
            raise APIError(
                400, f"keep_alive {self.keep_alive!r} is not a duration (e.g. '5m', 300)."
            )


class GenerateBody(Body):
    prompt: StrictStr = ""
    suffix: StrictStr | None = None
    system: StrictStr | None = None
    template: StrictStr | None = None
    raw: StrictBool = False
    context: list[StrictInt] | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: StrictStr
    content: StrictStr = ""
    images: list[Any] | None = None


class ChatBody(Body):
    messages: list[Message] = []
    tools: list[Any] | None = None


class ShowBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    name: StrictStr | None = None  # the older field name clients still send


def seconds(keep_alive: str | int | float | None) -> float | None:
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


def done_fields(final: Finished, started: int, field: str) -> dict[str, Any]:
    """A reply's last fields: why it ended, its counts and durations (ns from `started`)."""
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


def head(model: str) -> dict[str, Any]:
    return {"model": model, "created_at": iso(datetime.now(timezone.utc))}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def line(body: dict[str, Any]) -> str:
    return json.dumps(body) + "\n"


def tagged(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def card(state: ServerState, name: str) -> dict[str, Any]:
    """A model as /api/tags and /api/ps list it."""
    files = list(state.model_path.glob("*.safetensors"))
    return {
        "name": name,
        "model": name,
        "modified_at": iso(_modified(state)),
        "size": sum(f.stat().st_size for f in files),
        "digest": hashlib.sha256(str(state.model_path.resolve()).encode()).hexdigest(),
        "details": _details(state),
    }


def shown(state: ServerState, engine: Engine) -> dict[str, Any]:
    """/api/show's answer: the model's template, details and architecture."""
    config = engine.checkpoint.config
    arch = ARCHITECTURE
    return {
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
        "modified_at": iso(_modified(state)),
    }


def _modified(state: ServerState) -> datetime:
    return datetime.fromtimestamp(state.model_path.stat().st_mtime, timezone.utc)


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
