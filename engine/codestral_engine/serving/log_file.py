"""Where a detached server's messages go (`serve --log-file`, what Jupyter starts): a file the
standard library rotates, so a long-lived engine cannot fill the disk with its log."""

from __future__ import annotations

import io
import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

LOG_MAX_BYTES = 10 << 20  # then the file moves to PATH.1 (one old file kept)


class _Lines(io.TextIOBase):
    """A text stream that hands each complete line to a logging handler."""

    def __init__(self, handler: logging.Handler):
        self.handler = handler
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self.handler.emit(logging.makeLogRecord({"msg": line}))
        return len(text)


def log_to(path: Path) -> None:
    """Send this process's stderr (its messages, uvicorn's log, tracebacks) to `path`,
    rotated at LOG_MAX_BYTES; readable by this user only (prompts may be logged there)."""
    os.umask(0o077)
    handler = RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=1, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    sys.stderr = _Lines(handler)
