"""What the test modules share: a real engine server, the CLI, polling for a condition, and a
drafter whose drafts are right as often as a test asks."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar

import httpx

from codestral_engine.core.speculative import PromptLookup

TOKEN = "test-token-123"
T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], timeout: float = 60.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `condition` until it returns something true (returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(interval)
    return value


async def wait_until_async(
    condition: Callable[[], T | Awaitable[T]],
    timeout: float = 60.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """`wait_until` for a test on an event loop: the pauses let the loop run, and `condition`
    may be a coroutine function (e.g. one that asks a route)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        await asyncio.sleep(interval)


def start_server(
    model: Path,
    runtime: Path,
    *extra: str,
    log: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> SimpleNamespace:
    """`codestral-engine serve` in a subprocess, ready (or failed); its stderr goes to a pipe
    or to `log`."""
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), **(extra_env or {})}
    command = [sys.executable, "-m", "codestral_engine", "serve", "--model", str(model), *extra]
    stderr = subprocess.PIPE if log is None else log.open("w")
    proc = subprocess.Popen(command, env=env, stderr=stderr, text=True)
    conn = runtime / "codestral-engine.json"

    def written() -> bool:  # by this server (a stale file may be there before)
        assert proc.poll() is None, proc.stderr.read() if log is None else log.read_text()
        try:
            return json.loads(conn.read_text())["pid"] == proc.pid
        except (OSError, ValueError, KeyError):
            return False

    wait_until(written, what="the server's connection file")
    info = json.loads(conn.read_text())
    wait_until(
        lambda: httpx.get(info["url"] + "/health").json()["status"] != "loading",
        what="the server to load its model",
    )
    return SimpleNamespace(proc=proc, env=env, runtime=runtime, conn=conn, **info)


@contextmanager
def engine_http(url: str) -> Iterator[httpx.Client]:
    """An HTTP client for an engine server at `url`, with the tests' token."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    ) as client:
        yield client


def run_cli(
    *args: str, env: dict | None = None, input_text: str | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """`codestral-engine ARGS` in a subprocess; `env` adds to (or replaces) this environment."""
    return subprocess.run(
        [sys.executable, "-m", "codestral_engine", *args],
        capture_output=True,
        text=True,
        input=input_text,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def run_in_kernel(kc, code: str, timeout: float = 120) -> tuple[dict, list[dict]]:
    """Execute `code` in a real kernel; return its execute_reply and its iopub messages.

    Replies and messages are matched to this request by their parent's msg_id: a reply left on
    the shell channel by an earlier request (e.g. the extra kernel_info_reply that
    `start_new_kernel` leaves when the kernel takes over a second to answer on a busy machine)
    is skipped, not taken for this one's."""
    msg_id = kc.execute(code)
    deadline = time.monotonic() + timeout

    def ours(get) -> dict:
        while True:
            msg = get(timeout=max(1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    messages = []
    while True:
        messages.append(msg := ours(kc.get_iopub_msg))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    return ours(kc.get_shell_msg)["content"], messages


def preempted(engine, chat: list[dict], fim: tuple[str, str], fim_tokens: int, **options):
    """Start a chat, let it decode, then submit an interactive FIM: (the chat's last event, the
    FIM's result, whether the FIM finished before the chat). The chat is consumed as it streams,
    on its own thread."""
    stream = iter(engine.chat(chat, **options))
    next(stream)  # the chat is decoding
    request = engine.fim(*fim, max_tokens=fim_tokens)
    finished: dict = {}

    def rest_of_chat():
        finished["events"] = list(stream)
        finished["chat"] = time.perf_counter()

    consumer = threading.Thread(target=rest_of_chat)
    consumer.start()
    result = request.result()
    fim_at = time.perf_counter()
    consumer.join(timeout=300)
    return finished["events"][-1], result, fim_at < finished["chat"]


class OracleDrafter(PromptLookup):
    """Drafts a known continuation (a reference greedy run), each token right with
    probability `p`: what a drafter that is right that often gives, for tests and benches.
    Adapts and pauses by counts as the real drafter does."""

    def __init__(self, context: list[int], reference: list[int], p: float = 1.0, seed: int = 0):
        super().__init__(context)
        self.prompt_length, self.reference, self.p = len(context), reference, p
        self._rng = random.Random(seed)

    def lookup(self, size: int) -> list[int]:
        at = len(self.context) - self.prompt_length
        right = self.reference[at : at + size]
        return [t if self._rng.random() < self.p else (t + 1) % 32768 for t in right]

    def restarted(self, context: list[int]) -> OracleDrafter:
        """A fresh drafter with the same reference for another request of the same prompt
        (the reference is the continuation of `context`'s prompt)."""
        return OracleDrafter(context, self.reference, self.p, self._rng.randrange(1 << 30))
