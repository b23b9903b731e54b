"""`codestral-engine` (also `python -m codestral_engine`): the command line's arguments, and
which command runs (what each does is in `commands.py`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from . import commands
from .assembly.download import add_pull_arguments, pull_command
from .assembly.model_choice import MODEL_ENV
from .backends import BACKENDS, LOAD_OPTIONS
from .backends.options import positive_int
from .backends.registry import MLXSpec
from .errors import EngineError
from .weights.tiny import DTYPES, LAYOUTS, TINY_SHAPE_FLAGS, TinyShape

MODEL_HELP = (
    f"model directory or hub id; 'tiny' for the demo model (default: ${MODEL_ENV}, else the "
    "release pull downloaded, else the tiny demo model)"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="codestral-engine", description="Codestral on this machine.")
    subcommands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_complete, _serve, _pull, _convert, _make_tiny):
        add(subcommands)
    return parser


def _complete(subcommands) -> None:
    complete = subcommands.add_parser(
        "complete",
        help="stream a fill-in-the-middle completion to stdout",
        description="Fill in the code between --prompt (before the cursor) and --suffix (after).",
    )
    complete.add_argument("--model", help=MODEL_HELP)
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
    _engine_options(complete)
    complete.add_argument("--json", action="store_true", help="print one JSON object per event")


def _serve(subcommands) -> None:
    serve = subcommands.add_parser(
        "serve",
        help="serve the model over Mistral's HTTP API (one server per user)",
        description="Load the model once and serve it over Mistral's HTTP API. A second serve "
        "finds the running server instead of loading the model again.",
    )
    serve.add_argument("--model", help=MODEL_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    serve.add_argument(
        "--token",
        help=f"API token clients must send (default: ${commands.TOKEN_ENV}, else --token-file, "
        "else a random one); a token given here shows in the process list",
    )
    serve.add_argument("--token-file", type=Path, help="read the API token from this file")
    serve.add_argument(
        "--prompt-cache-entries",
        type=int,
        default=8,
        help="prompts whose KV cache is kept for reuse (default 8; 0 turns the cache off)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=_not_negative,
        default=None,
        metavar="SECONDS",
        help="exit after this long without completion or chat requests and with no open "
        "stream, giving the model's memory back (default and 0: never; engines that Jupyter "
        "starts on demand pass their idle_timeout setting)",
    )
    serve.add_argument(
        "--log-file",
        type=Path,
        help="write messages to this file instead of stderr, rotated at 10 MB (one old file "
        "kept as FILE.1); engines that Jupyter starts log to codestral-engine.log in its "
        "runtime directory",
    )
    serve.add_argument(
        "--log-prompts",
        action="store_true",
        help="print each FIM prompt and suffix, and each chat request, to stderr (to see the "
        "context clients send)",
    )
    serve.add_argument(
        "--ollama-no-auth",
        action="store_true",
        help="let Ollama clients that send no token use the Ollama routes (/api/*), from this "
        "machine only (loopback peer and Host, no foreign browser Origin); needs a loopback "
        "--host. Other routes still need the token",
    )
    _engine_options(serve)


def _pull(subcommands) -> None:
    pull = subcommands.add_parser(
        "pull",
        help="download Codestral's weights for this machine (licence shown once)",
        description="Download the Codestral-22B checkpoint that suits the backend and memory "
        "into the Hugging Face cache (resumable), then verify every file's sha256. Then serve it "
        "with --model REPO (or CODESTRAL_MODEL=REPO): hub ids load offline from the cache.",
    )
    add_pull_arguments(pull)


def _convert(subcommands) -> None:
    convert = subcommands.add_parser(
        "convert",
        help="convert a local checkpoint to the MLX layout, quantized (mlx-lm)",
        description="Quantize a local Codestral checkpoint (Mistral-native or Hugging Face "
        "layout, bf16) into an MLX-layout directory with mlx-lm's quantization, and report how "
        "far the logits moved. For the torch backend, use --quantize int8 or int4 at load instead.",
    )
    convert.add_argument("src", type=Path, help="the checkpoint directory to convert")
    convert.add_argument("dst", type=Path, help="a new directory for the MLX checkpoint")
    conversions = tuple(f"{bits}bit" for bits in sorted(MLXSpec.conversions))
    convert.add_argument("--quant", choices=conversions, required=True)
    convert.add_argument("--group-size", type=int, default=64, choices=(32, 64, 128))


def _make_tiny(subcommands) -> None:
    tiny = subcommands.add_parser(
        "make-tiny",
        help="write a tiny random-weight model in Codestral's architecture",
        description="Write a tiny random-weight Codestral-architecture model for tests and demos.",
    )
    tiny.add_argument("dir", type=Path, help="output directory")
    tiny.add_argument("--layout", choices=LAYOUTS, default="mlx")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--dtype", choices=DTYPES, default="float32")
    tiny.add_argument(
        "--bits",
        type=int,
        choices=sorted(MLXSpec.conversions),
        default=None,
        help="quantize (mlx layout)",
    )
    shape = tiny.add_argument_group("shape (default: the small demo shape)")
    for flag, field in TINY_SHAPE_FLAGS.items():
        shape.add_argument(flag, dest=field, type=positive_int, default=getattr(TinyShape, field))


def _not_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 (never) or more seconds, got {text}")
    return value


def _engine_options(parser: argparse.ArgumentParser) -> None:
    """--backend, a flag for each backend load option (`backends/options.py`), and the
    engine's own options."""
    parser.add_argument(
        "--backend",
        choices=("auto", *BACKENDS),
        default="auto",
        help="auto: MLX on Apple Silicon, else PyTorch (CUDA, or the CPU)",
    )
    for option in LOAD_OPTIONS:
        parser.add_argument(
            option.flag,
            dest=option.name,
            type=option.type,
            choices=option.choices,
            metavar=option.metavar,
            help=option.help,
        )
    parser.add_argument(
        "--context-length", type=int, help="cap the context window (and its KV-cache memory)"
    )
    parser.add_argument(
        "--speculative",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="prompt-lookup speculative decoding: drafts from the prompt's own text, verified "
        "in one pass; the same greedy output in float32 (default: on where measured to win: "
        "torch on a CPU)",
    )


COMMANDS = {
    "complete": commands.complete,
    "serve": commands.serve,
    "pull": pull_command,
    "convert": commands.convert,
    "make-tiny": commands.make_tiny_model,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (EngineError, ValueError) as exc:
        print(f"codestral-engine: error: {exc}", file=sys.stderr)
        return 1
