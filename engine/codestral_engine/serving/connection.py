"""Where the one engine server of this user is: a connection file in Jupyter's runtime directory.

The server writes `codestral-engine.json` (url, token, pid, model, start time; mode 0600) when
it starts listening, writes it again if it disappears or is overwritten while it runs, and
removes it when it exits. Clients trust the file only while its pid is alive and is the same
process (its recorded start time matches: a file without one, from an older version, is
stale), and before a signal also check that the process is `codestral-engine serve`; a stale
file is removed by the next reader. A lock file held for the server's whole life stops two
`serve` commands started together from both loading the model, and records who holds it (pid,
start time, url) so every message about it can name the process.
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


def read() -> ConnectionInfo | None:
    """What the connection file says, unchecked; None if there is none or it is garbage."""
    try:
        info = ConnectionInfo(**json.loads(connection_path().read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    valid = isinstance(info.pid, int) and isinstance(info.started, int | float)
    return info if valid and isinstance(info.url, str) and isinstance(info.token, str) else None


def read_live() -> ConnectionInfo | None:
    """The running server's connection info, or None (a stale or broken file is removed)."""
    path = connection_path()
    info = read()
    if info is None:
        if path.exists():  # garbage, or written by a version that recorded no start time
            path.unlink(missing_ok=True)
        return None
    if not is_running(info.pid, info.started):  # killed, or its pid now names another process
        remove(info.pid)
        return None
    return info


def is_running(pid: int, started: float | None) -> bool:
    """Whether `pid` runs and is the process that started at `started` (not a process that
    reused the pid). A second of slack: the start time derives from the boot time, which a
    clock step moves."""
    now = process_started(pid)
    return started is not None and now is not None and abs(now - started) <= 1.0 and pid_alive(pid)


def is_engine(info: ConnectionInfo) -> bool:
    """Whether `info` names a running `codestral-engine serve`: the process it names, started
    when it says, running our server. Check this before signalling the process."""
    if not is_running(info.pid, info.started):
        return False
    try:
        args = psutil.Process(info.pid).cmdline()
    except psutil.Error:
        return False
    ours = any(a.endswith(("codestral_engine", "codestral-engine")) for a in args)
    return ours and "serve" in args


def keep(info: ConnectionInfo) -> bool:
    """Write the file again if it no longer says `info` (deleted, emptied, overwritten):
    the running server calls this, so no client is left without a way to reach it. True if
    it was rewritten."""
    if read() == info:
        return False
    write(info)
    return True


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
    """Held by the one server process; released by the OS even if the process is killed.
    While held, the file says who holds it: {"pid", "started", "url"} (url once listening)."""

    def __init__(self) -> None:
        self._fd: int | None = None

    @staticmethod
    def path() -> Path:
        return runtime_dir() / LOCK_FILE

    def acquire(self) -> bool:
        fd = os.open(self.path(), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        self.record(None)
        return True

    def record(self, url: str | None) -> None:
        """Say in the lock file who holds it (this process) and where it listens."""
        pid = os.getpid()
        holder = {"pid": pid, "started": process_started(pid), "url": url}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(holder).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    @classmethod
    def holder(cls) -> dict:
        """Who holds the lock, as its holder recorded it ({} if unknown: not held, or held by
        a version that recorded nothing)."""
        try:
            holder = json.loads(cls.path().read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}


def describe_holder(holder: dict) -> str:
    """'pid N at URL' for messages, from a lock record."""
    if not isinstance(holder.get("pid"), int):
        return "an unknown process (one that records nothing: an older version?)"
    where = f" at {holder['url']}" if holder.get("url") else " (not listening yet)"
    state = "" if is_running(holder["pid"], holder.get("started")) else ", no longer running"
    return f"pid {holder['pid']}{where}{state}"
