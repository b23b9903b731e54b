"""`python -m jupyter_codestral.classroom`: the service process the hub starts (see
`hub_config.configure_hub`). The hub gives it its identity in the environment
(`JUPYTERHUB_API_TOKEN`, `JUPYTERHUB_API_URL`, `JUPYTERHUB_SERVICE_URL`,
`JUPYTERHUB_SERVICE_PREFIX`); the upstream and the limits come as options, the class's key
from a file that only this process reads.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubAuth

from ..client.engine_client import AsyncEngineClient
from ..client.protocol import DEFAULT_MODEL, PROTOCOLS
from .app import Classroom, make_app
from .fair_share import FairShare
from .policy import Groups
from .usage import UsageLog


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jupyter_codestral.classroom")
    parser.add_argument("--upstream", required=True, help="URL of vLLM / serve / Mistral's API")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="vllm")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the upstream's model name")
    parser.add_argument("--api-key-file", type=Path, help="file holding the upstream's key")
    parser.add_argument("--usage-db", type=Path, default=Path("codestral-usage.sqlite"))
    parser.add_argument("--slots", type=int, default=8, help="requests upstream at once")
    parser.add_argument("--running", type=int, default=2, help="per student, in flight")
    parser.add_argument("--waiting", type=int, default=4, help="per student, queued")
    return parser.parse_args(argv)


def read_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        sys.exit(f"codestral classroom: cannot read the key file {path}: {exc.strerror}")


async def serve(args: argparse.Namespace) -> None:
    env = os.environ
    upstream = AsyncEngineClient(
        args.upstream, read_key(args.api_key_file), protocol_name=args.protocol
    )
    room = Classroom(
        upstream=upstream,
        model=args.model,
        groups=Groups(env["JUPYTERHUB_API_URL"], env["JUPYTERHUB_API_TOKEN"]),
        share=FairShare(args.slots, args.running, args.waiting),
        usage=UsageLog(args.usage_db),
        auth=HubAuth(),  # tokens from the environment the hub set
    )
    where = urlparse(env["JUPYTERHUB_SERVICE_URL"])
    app = make_app(room, env.get("JUPYTERHUB_SERVICE_PREFIX", "/services/codestral/"))
    app.listen(where.port or 80, where.hostname or "127.0.0.1")
    logging.getLogger(__name__).info("codestral classroom service at %s", where.geturl())
    try:
        await asyncio.Event().wait()
    finally:
        await upstream.aclose()
        await room.groups.aclose()
        room.usage.close()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[codestral %(levelname)s] %(message)s")
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
