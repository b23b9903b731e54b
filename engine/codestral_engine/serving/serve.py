"""`codestral-engine serve`: one long-lived server per user, found instead of started twice."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from ..core.tokenizer import find_tokenizer_file
from ..errors import EngineError
from ..weights.checkpoint import inspect
from . import connection
from .app import create_app
from .http_limits import GuardedH11Protocol, raise_descriptor_limit
from .lifecycle import EngineServer, say
from .server import ServerState

WAIT_FOR_OTHER_SERVER_S = 30
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
# How long a server whose model failed to load keeps reporting why before it exits.
FAILED_EXIT_S = 30.0


def _failed_exit_s() -> float:
    try:
        return float(os.environ.get("CODESTRAL_ENGINE_FAILED_EXIT_S", FAILED_EXIT_S))
    except ValueError:
        return FAILED_EXIT_S


@dataclass(frozen=True)
class ServeOptions:
    """How `serve` listens and what it loads (`load`'s keyword arguments in `load_options`)."""

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None  # None: a random one
    backend: str = "auto"
    log_prompts: bool = False
    idle_timeout: float | None = None
    ollama_no_auth: bool = False
    load_options: dict[str, Any] = field(default_factory=dict)


def serve(model: Path, options: ServeOptions) -> int:
    """Serve `model` unless a server already runs for this user; the process's exit status."""
    if options.ollama_no_auth and options.host not in LOOPBACK_HOSTS:
        say(f"--ollama-no-auth is for loopback only (--host {options.host}); drop one of them.")
        return 2
    try:
        running = _running_engine()
    except OSError as exc:  # the runtime directory cannot be made or read
        say(_runtime_dir_problem(exc))
        return 1
    if running is not None:
        say(f"A server is already running at {running.url} (pid {running.pid}, {running.model}).")
        return 0
    try:  # a wrong path or broken checkpoint fails here, in seconds, not after listening
        find_tokenizer_file(inspect(model).path)
    except EngineError as exc:
        say(str(exc))
        return 1
    return _serve_holding_the_lock(model, options)


def _serve_holding_the_lock(model: Path, options: ServeOptions) -> int:
    """Take the one-per-user lock (or find who holds it), then serve."""
    try:
        lock = connection.ServerLock()
        acquired = _acquire_or_find(lock)
    except OSError as exc:
        say(_runtime_dir_problem(exc))
        return 1
    if isinstance(acquired, connection.ConnectionInfo):
        say(f"A server is already running at {acquired.url} (pid {acquired.pid}).")
        return 0
    if not acquired:
        holder = connection.describe_holder(connection.ServerLock.holder())
        say(
            f"Another serve ({holder}) holds {connection.ServerLock.path()} but has not "
            f"written its connection file within {WAIT_FOR_OTHER_SERVER_S} s; stop it."
        )
        return 1
    try:
        return _listen_and_serve(lock, model, options)
    finally:
        lock.release()


def _running_engine() -> connection.ConnectionInfo | None:
    """The engine the connection file names, if it is really one running (a file naming some
    other process is stale: removed)."""
    running = connection.read_live()
    if running is not None and not connection.is_engine(running):
        connection.remove(running.pid)
        return None
    return running


def _acquire_or_find(lock: connection.ServerLock) -> bool | connection.ConnectionInfo:
    """Take the lock (True), or find the server that holds it (its connection info): another
    serve may be starting right now, or exiting (then the lock frees). False: neither within
    WAIT_FOR_OTHER_SERVER_S."""
    deadline = time.monotonic() + WAIT_FOR_OTHER_SERVER_S
    while not lock.acquire():
        if (running := _running_engine()) is not None:
            return running
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _listen_and_serve(lock: connection.ServerLock, model: Path, options: ServeOptions) -> int:
    sock = _bind(options.host, options.port)
    if sock is None:
        return 1
    state = ServerState(
        model_path=model,
        token=options.token or secrets.token_urlsafe(32),
        backend=options.backend,
        log_prompts=options.log_prompts,
    )
    info = _announce(lock, model, state, _url(options.host, sock.getsockname()[1]))
    if info is None:
        return 1
    loading = state.load_in_background(**options.load_options)
    threading.Thread(target=_exit_after_failed_load, args=(state, loading), daemon=True).start()
    _say_serving(model, info, options, sock.getsockname()[1])
    raise_descriptor_limit()
    app = create_app(
        state, ollama_no_auth=options.ollama_no_auth, idle_timeout=options.idle_timeout
    )
    config = uvicorn.Config(
        app,
        http=GuardedH11Protocol,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=3,
    )
    # uvicorn re-raises a signal it handled under the previous handler once it has shut down:
    # make that an ordinary exit so the cleanup below always runs.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        EngineServer(config, state, info, options.idle_timeout).run(sockets=[sock])
    except (KeyboardInterrupt, SystemExit):  # Ctrl+C, or SIGTERM via _exit_cleanly
        pass
    finally:
        connection.remove(os.getpid())
        if state.engine is not None:
            state.engine.close()
    return 1 if state.state == "error" else 0  # a failed load is a failure for supervisors


def _bind(host: str, port: int) -> socket.socket | None:
    """A listening socket on host:port, or None (said) when it cannot be had."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        say(f"Cannot listen on {host}:{port} ({exc.strerror}). Choose another --port.")
        return None
    sock.listen(128)  # clients that read the connection file early wait in the backlog
    return sock


def _url(host: str, port: int) -> str:
    """Where clients on this machine reach a server listening on `host`."""
    url_host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(
        host, f"[{host}]" if ":" in host else host
    )
    return f"http://{url_host}:{port}"


def _announce(
    lock: connection.ServerLock, model: Path, state: ServerState, url: str
) -> connection.ConnectionInfo | None:
    """Write the connection file clients find the server by (None, said, if it cannot be)."""
    info = connection.ConnectionInfo(
        url=url,
        token=state.token,
        pid=os.getpid(),
        model=str(model),
        started=connection.process_started(os.getpid()),
    )
    try:
        connection.write(info)
        lock.record(info.url)
    except OSError as exc:
        say(_runtime_dir_problem(exc))
        return None
    return info


def _say_serving(
    model: Path, info: connection.ConnectionInfo, options: ServeOptions, port: int
) -> None:
    say(
        f"Serving {model.name} at {info.url} (pid {info.pid}); connection file "
        f"{connection.connection_path()}"
    )
    if options.idle_timeout:  # None or 0: stay
        say(f"Exits after {options.idle_timeout:.0f} s without requests (--idle-timeout).")
    if options.host in ("0.0.0.0", "::"):
        say(
            f"Listening on every network interface (port {port}): anyone who can "
            "reach this machine and has the token can use the engine."
        )


def _exit_after_failed_load(state: ServerState, loading: threading.Thread) -> None:
    """A model that failed to load leaves no server holding the one-per-user slot: the error
    stays readable (status, /health) for a while, then the server exits so the next client
    starts a fresh one."""
    loading.join()
    if state.state == "error":
        wait = _failed_exit_s()
        say(f"The model failed to load: {state.error.rstrip('.')}. Exiting in {wait:.0f} s.")
        time.sleep(wait)
        os.kill(os.getpid(), signal.SIGTERM)


def _runtime_dir_problem(exc: OSError) -> str:
    return (
        f"Cannot write to the runtime directory {connection.runtime_dir_path()} "
        f"({exc.strerror or exc}). Free some space there, or set JUPYTER_RUNTIME_DIR to a "
        "writable directory."
    )


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)
