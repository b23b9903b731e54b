"""Where the one engine server of this user is: a connection file in Jupyter's runtime directory.

The server writes `codestral-engine.json` (url, token, pid, model; mode 0600) when it starts
listening and removes it when it exits. Clients trust the file only while its pid is alive and
is the same process (its start time matches); a file left by a killed server is removed by the
next reader. A lock file held for the server's
whole life stops two `serve` commands started together from both loading the model.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from jupyter_core.paths import jupyter_runtime_dir

CONNECTION_FILE = "codestral-engine.json"
LOCK_FILE = "codestral-engine.lock"


@dataclass(frozen=True)
class ConnectionInfo:
    url: str
    token: str
    pid: int
    model: str
    # When the server process started (psutil's create_time): a pid that the system reused
    # for an unrelated process does not match it.
    started: float | None = None


def runtime_dir_path() -> Path:
    return Path(jupyter_runtime_dir())


def runtime_dir() -> Path:
    path = runtime_dir_path()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def connection_path() -> Path:
    return runtime_dir() / CONNECTION_FILE


def write(info: ConnectionInfo) -> Path:
    """Write the connection file atomically, readable by this user only."""
    target = connection_path()
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".codestral-engine-")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(info), handle)
        os.replace(temp, target)
    except BaseException:  # a full disk: leave no temp file behind
        Path(temp).unlink(missing_ok=True)
        raise
    return target


def process_started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def read_live() -> ConnectionInfo | None:
    """The running server's connection info, or None (a stale or broken file is removed)."""
    path = connection_path()
    try:
        info = ConnectionInfo(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        path.unlink(missing_ok=True)
        return None
    started = process_started(info.pid)
    # A second of slack: the start time is derived from the boot time, which a clock step moves.
    reused = info.started is not None and (started is None or abs(started - info.started) > 1.0)
    if reused or not pid_alive(info.pid):  # killed, or its pid now names another process
        remove(info.pid)
        return None
    return info


def remove(pid: int) -> None:
    """Remove the connection file if it still belongs to `pid`."""
    path = connection_path()
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == pid:
            path.unlink()


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (exited, not yet reaped by its parent) is not running."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # exists, owned by someone else


class ServerLock:
    """Held by the one server process; released by the OS even if the process is killed."""

    def __init__(self) -> None:
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(runtime_dir() / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
