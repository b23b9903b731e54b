"""This machine's engine server as a process: start it detached (its log rotated by the engine),
stop it (only once verified as our engine), and what to say when it refuses the token of its own
connection file. `client.EngineClient.local()` uses these to find or start the engine."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from codestral_engine import ModelChoice, connection

from ..errors import CodestralError
from .settings import DEFAULT_IDLE_TIMEOUT_S


def refused_token(error: CodestralError, url: str, pid: int | None = None) -> CodestralError:
    """This machine's engine refused the token of its connection file (something changed the
    file): the advice for that, not a remote server's API key advice."""
    engine = f"The engine at {url}" + (f" (pid {pid})" if pid else "")
    return CodestralError(
        f"{engine} refused the token in its connection file: {error.message}",
        401,
        kind="auth",
        fix="Something changed the file; the engine writes it again within a second, so run "
        "again. If it persists, `%codestral stop` (or stop its `codestral-engine serve`) and "
        "run again.",
    )


def stop_local_server(timeout: float = 30.0) -> connection.ConnectionInfo | None:
    """Stop this user's engine server and wait until it is gone; None if none was running."""
    running = connection.read_live()
    if running is None:
        return None
    if not connection.is_engine(running):  # never signal a process not verified as ours
        connection.remove(running.pid)
        return None
    os.kill(running.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while connection.read_live() is not None:
        if time.monotonic() > deadline:
            raise CodestralError(
                f"The engine (pid {running.pid}) did not stop within {timeout:.0f} s."
            )
        time.sleep(0.1)
    return running


def start_local_server(
    model: ModelChoice, idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S
) -> connection.ConnectionInfo:
    """Start `codestral-engine serve` detached from this process; wait for its connection file.
    It exits after `idle_timeout` seconds without requests (0: never)."""
    command = [sys.executable, "-m", "codestral_engine", "serve", "--model", model.argument()]
    if idle_timeout:
        command += ["--idle-timeout", str(idle_timeout)]
    log_path = connection.runtime_dir() / "codestral-engine.log"
    command += ["--log-file", str(log_path)]  # the engine rotates it
    # Readable by this user only, like the connection file (prompts may be logged there); what
    # the process writes before it takes the log over goes here too.
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    # Reap the server when it ends, so a long-lived kernel collects no zombie processes.
    threading.Thread(target=process.wait, name="codestral-engine-reaper", daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (info := connection.read_live()) is not None:
            return info
        if process.poll() is not None:
            raise CodestralError(f"The engine server exited at start: {_last_line(log_path)}")
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    raise CodestralError(f"The engine server did not start within 60 s; see {log_path}.")


def serves_model(info: connection.ConnectionInfo, model: ModelChoice) -> bool:
    try:
        return Path(info.model).expanduser().resolve() == model.path()
    except Exception:  # a hub id not in the local cache: cannot be the running one's
        return False


def _last_line(path: Path) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return lines[-1] if lines else f"no output (see {path})"
