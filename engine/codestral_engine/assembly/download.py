"""`pull` for this machine, shared by `codestral-engine pull` and `%codestral pull`: its options
and what it does (choose the release that fits, download it, say how to use it)."""

from __future__ import annotations

import argparse
import sys

from ..backends import BACKENDS
from .releases import QUANTS, quant_help


def add_pull_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", help="a hub id to download instead of the automatic choice")
    parser.add_argument(
        "--quant",
        choices=QUANTS,
        help=quant_help(),
    )
    parser.add_argument("--backend", default="auto", choices=("auto", *BACKENDS))
    parser.add_argument("--device", help="torch: the device whose memory counts (default: cuda)")
    parser.add_argument(
        "--accept-license", action="store_true", help="accept the model licence without asking"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the sha256 check after downloading"
    )


def pull_command(args: argparse.Namespace, ask=None) -> int:
    """`pull`, also run by `%codestral pull` (whose kernel can ask through the notebook)."""
    from ..backends import resolve
    from .hub import choose, pull
    from .preflight import available_memory

    if args.repo:
        repo = args.repo
    else:
        spec = resolve(args.backend)
        backend = spec.name
        memory, what = available_memory(backend, args.device or spec.default_device())
        choice = choose(backend, args.quant, memory)
        repo = choice.repo
        held = f"{memory / 1e9:.0f} GB {what}" if memory else "memory unknown"
        print(f"Chose {repo} ({choice.quant}, {backend} backend; {held}).")
        if choice.note:
            print(choice.note)
    ask = ask or (input if sys.stdin.isatty() else None)
    path = pull(repo, accept_license=args.accept_license, ask=ask, verify=not args.no_verify)
    print(
        f"Use it: codestral-engine serve --model {repo}, or CODESTRAL_MODEL={repo}, or in a "
        f"notebook %config Codestral.model = '{repo}'   (files in {path})"
    )
    return 0
