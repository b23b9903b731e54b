"""`codestral-engine` (also `python -m codestral_engine`): complete code, make tiny test models."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

from .backends import BACKENDS
from .errors import EngineError
from .events import Finished, TextDelta
from .tiny import DTYPES, LAYOUTS, make_tiny

MODEL_ENV = "CODESTRAL_MODEL"
TINY_NAME = "tiny-mlx-v1"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="codestral-engine", description="Codestral on this machine.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    complete = commands.add_parser(
        "complete",
        help="stream a fill-in-the-middle completion to stdout",
        description="Fill in the code between --prompt (before the cursor) and --suffix (after).",
    )
    complete.add_argument(
        "--model",
        help=f"model directory (default: ${MODEL_ENV}, else the built-in tiny random model)",
    )
    complete.add_argument("--prompt", required=True, help="code before the cursor")
    complete.add_argument("--suffix", default="", help="code after the cursor")
    complete.add_argument(
        "--max-tokens", type=int, default=128, help="most tokens to generate (128)"
    )
    complete.add_argument("--min-tokens", type=int, default=0, help="fewest tokens to generate (0)")
    complete.add_argument(
        "--stop", nargs="+", default=None, metavar="S", help="stop strings (not printed)"
    )
    complete.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    complete.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0)")
    complete.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    _backend_options(complete)
    complete.add_argument("--json", action="store_true", help="print one JSON object per event")

    serve = commands.add_parser(
        "serve",
        help="serve the model over Mistral's HTTP API (one server per user)",
        description="Load the model once and serve it over Mistral's HTTP API. A second serve "
        "finds the running server instead of loading the model again.",
    )
    serve.add_argument(
        "--model", help=f"model directory (default: ${MODEL_ENV}, else the tiny model)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    serve.add_argument("--token", help="API token clients must send (default: a random one)")
    serve.add_argument(
        "--prompt-cache-entries",
        type=int,
        default=8,
        help="prompts whose KV cache is kept for reuse (default 8; 0 turns the cache off)",
    )
    serve.add_argument(
        "--log-prompts",
        action="store_true",
        help="print each FIM prompt and suffix to stderr (to see the context clients send)",
    )
    _backend_options(serve)

    tiny = commands.add_parser(
        "make-tiny",
        help="write a tiny random-weight model in Codestral's architecture",
        description="Write a tiny random-weight Codestral-architecture model for tests and demos.",
    )
    tiny.add_argument("dir", type=Path, help="output directory")
    tiny.add_argument("--layout", choices=LAYOUTS, default="mlx")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--dtype", choices=DTYPES, default="float32")
    tiny.add_argument(
        "--bits", type=int, choices=(4, 8), default=None, help="quantize (mlx layout)"
    )
    return parser


def _backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", choices=("auto", *BACKENDS), default="auto",
        help="auto: MLX on Apple Silicon, else PyTorch (CUDA, or the CPU)",
    )  # fmt: skip
    parser.add_argument("--device", help="torch: cuda, cuda:N or cpu (default: cuda if present)")
    parser.add_argument(
        "--dtype", choices=("bfloat16", "float16", "float32"), help="torch precision"
    )
    parser.add_argument("--quantize", choices=("int8",), help="torch: int8 weights at load")
    parser.add_argument(
        "--context-length", type=int, help="cap the context window (and its KV-cache memory)"
    )


def _load_options(args: argparse.Namespace) -> dict:
    return {
        "device": args.device,
        "dtype": args.dtype,
        "quantize": args.quantize,
        "context_length": args.context_length,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "make-tiny":
            path = make_tiny(
                args.dir, args.layout, seed=args.seed, dtype=args.dtype, bits=args.bits
            )
            print(f"Wrote a tiny {args.layout} model to {path}")
            return 0
        if args.command == "serve":
            from .serve import serve

            model = Path(args.model or os.environ.get(MODEL_ENV) or _tiny_with_note())
            return serve(
                model.expanduser().resolve(), args.host, args.port, args.token, args.backend,
                log_prompts=args.log_prompts, prompt_cache_entries=args.prompt_cache_entries,
                **_load_options(args),
            )  # fmt: skip
        return _complete(args)
    except (EngineError, ValueError) as exc:
        print(f"codestral-engine: error: {exc}", file=sys.stderr)
        return 1


def _complete(args: argparse.Namespace) -> int:
    from .engine import load  # the backend import is the slow part; --help stays instant

    model = args.model or os.environ.get(MODEL_ENV) or _tiny_with_note()
    with load(model, backend=args.backend, **_load_options(args)) as engine:
        request = engine.fim(
            args.prompt,
            args.suffix,
            max_tokens=args.max_tokens,
            min_tokens=args.min_tokens,
            stop=args.stop,
            temperature=args.temperature,
            top_p=args.top_p,
            random_seed=args.seed,
        )
        try:
            for event in request:
                _print_event(event, args.json)
        except KeyboardInterrupt:
            request.cancel()
            return 130
    return 0


def _print_event(event: TextDelta | Finished, as_json: bool) -> None:
    if as_json:
        if isinstance(event, TextDelta):
            line = {"type": "text", "text": event.text, "token_ids": list(event.token_ids)}
        else:
            line = {"type": "finish", **asdict(event)}
            line["prompt_token_ids"] = list(event.prompt_token_ids)
            line["completion_token_ids"] = list(event.completion_token_ids)
        print(json.dumps(line), flush=True)
    elif isinstance(event, TextDelta):
        print(event.text, end="", flush=True)
    else:
        print(flush=True)


def builtin_tiny_model() -> Path:
    """The demo model: made once in the user's cache directory, then reused."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "codestral-engine"
    target = cache / TINY_NAME
    if not (target / "config.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache))
        make_tiny(staging, "mlx")
        try:
            staging.rename(target)  # atomic: a concurrent first run never sees half a model
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another process won the race
    return target


def _tiny_with_note() -> Path:
    print(
        f"codestral-engine: no --model and no ${MODEL_ENV}: using the built-in tiny random model "
        f"(its output is gibberish). Point ${MODEL_ENV} at Codestral-22B-v0.1 for real "
        "completions.",
        file=sys.stderr,
    )
    return builtin_tiny_model()
