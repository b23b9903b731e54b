"""What each `codestral-engine` command does, once `cli.py` has parsed its arguments."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from .assembly.model_choice import choose_model
from .backends.registry import LOAD_OPTIONS
from .core.events import Finished, TextDelta
from .weights.tiny import TINY_SHAPE_FLAGS, TinyShape, make_tiny


def make_tiny_model(args: argparse.Namespace) -> int:
    shape = TinyShape(**{field: getattr(args, field) for field in TINY_SHAPE_FLAGS.values()})
    try:
        path = make_tiny(
            args.dir, args.layout, seed=args.seed, dtype=args.dtype, bits=args.bits, shape=shape
        )
    except ValueError as exc:
        print(f"codestral-engine make-tiny: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote a tiny {args.layout} model to {path}")
    return 0


TOKEN_ENV = "CODESTRAL_ENGINE_TOKEN"


def serve(args: argparse.Namespace) -> int:
    from .serving.serve import ServeOptions
    from .serving.serve import serve as run_server

    token = _token(args)
    if token is False:
        return 2
    if args.log_file:
        from .serving.log_file import log_to

        log_to(args.log_file)
    options = ServeOptions(
        host=args.host,
        port=args.port,
        token=token,
        backend=args.backend,
        log_prompts=args.log_prompts,
        idle_timeout=args.idle_timeout,
        ollama_no_auth=args.ollama_no_auth,
        load_options={**_load_options(args), "prompt_cache_entries": args.prompt_cache_entries},
    )
    return run_server(chosen_model_path(args.model), options)


def _token(args: argparse.Namespace) -> str | Literal[False] | None:
    """serve's API token: --token, else --token-file, else $CODESTRAL_ENGINE_TOKEN, else None
    (a random one); False when --token-file cannot give one (said on stderr)."""
    token = args.token or None
    if not token and args.token_file:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            print(f"codestral-engine serve: cannot read --token-file: {exc}", file=sys.stderr)
            return False
        if not token:
            print(f"codestral-engine serve: {args.token_file} is empty", file=sys.stderr)
            return False
    return token or os.environ.get(TOKEN_ENV) or None


def _load_options(args: argparse.Namespace) -> dict[str, Any]:
    """What `load` takes from the command line: every backend load option (`--device`,
    `--static-decode`, ...: `backends/options.py`) and the engine's own."""
    backend = {option.name: getattr(args, option.name) for option in LOAD_OPTIONS}
    return {**backend, "context_length": args.context_length, "speculative": args.speculative}


def convert(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .assembly.hub import resolve
    from .backends.mlx_convert import convert as quantize_checkpoint
    from .weights.checkpoint import inspect

    checkpoint = inspect(resolve(args.src))
    bits = int(args.quant[0])
    with tqdm(total=100, desc="Converting", unit="%", bar_format="{l_bar}{bar}| {n:.0f}%") as bar:

        def progress(fraction: float, stage: str) -> None:
            bar.set_postfix_str(stage)
            bar.update(round(fraction * 100) - bar.n)

        report = quantize_checkpoint(checkpoint, args.dst, bits, args.group_size, progress)
    print(
        f"Wrote {args.dst} ({report.weight_bytes / 1e9:.2f} GB, {bits}-bit, group size "
        f"{report.group_size}). Logits against the unquantized model on a probe prompt: "
        f"relative error {report.relative_error:.2%}, max |diff| {report.max_abs_error:.3g}, "
        f"same top token at {report.top1_agreement:.0%} of positions."
    )
    return 0


def complete(args: argparse.Namespace) -> int:
    from .assembly.loading import load  # the backend import is the slow part; --help stays instant

    with load(chosen_model_path(args.model), backend=args.backend, **_load_options(args)) as engine:
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


def chosen_model_path(setting: str | None) -> Path:
    """The model a command runs: `--model`, else the one rule (`model_choice`), said aloud."""
    choice = choose_model(setting)
    if choice.note:
        print(f"codestral-engine: {choice.note}", file=sys.stderr)
    return choice.path()
