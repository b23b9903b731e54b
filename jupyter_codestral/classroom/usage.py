"""Use of the class's Codestral per student and day, kept across restarts in SQLite (the
standard library's): requests answered, prompt and completion tokens, refusals (turned off by
the course, over the fair-share bound). Read as rows for `/usage` (JSON) and as a small HTML
table for the teacher.
"""

from __future__ import annotations

import datetime
import html
import sqlite3
from pathlib import Path
from typing import Any

COLUMNS = ("requests", "prompt_tokens", "completion_tokens", "refusals")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL,
    user TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    refusals INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user)
)
"""


class UsageLog:
    """Counters per (day, student) in one SQLite file; one writer (the service's event loop)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)  # autocommit
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add(self, user: str, **counts: int) -> None:
        """Add `counts` (names from COLUMNS) to today's row of `user` (UTC days)."""
        unknown = set(counts) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown usage counters: {sorted(unknown)}")
        day = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        names = ", ".join(counts)
        marks = ", ".join("?" for _ in counts)
        updates = ", ".join(f"{n} = {n} + excluded.{n}" for n in counts)
        self._db.execute(
            f"INSERT INTO usage (day, user, {names}) VALUES (?, ?, {marks}) "
            f"ON CONFLICT (day, user) DO UPDATE SET {updates}",
            (day, user, *counts.values()),
        )

    def rows(self, user: str | None = None) -> list[dict[str, Any]]:
        """Every row (user=None), or one student's, newest day first."""
        query = f"SELECT day, user, {', '.join(COLUMNS)} FROM usage"
        args: tuple[str, ...] = ()
        if user is not None:
            query, args = query + " WHERE user = ?", (user,)
        cursor = self._db.execute(query + " ORDER BY day DESC, user", args)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]


def usage_html(rows: list[dict[str, Any]]) -> str:
    """The rows as a small HTML page (a teacher opens it in the browser)."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in ("day", "user", *COLUMNS))
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(str(row[k]))}</td>" for k in ("day", "user", *COLUMNS))
        + "</tr>"
        for row in rows
    )
    return (
        "<!doctype html><meta charset='utf-8'><title>Codestral use per student</title>"
        "<style>td,th{padding:2px 8px;text-align:right}td:nth-child(-n+2){text-align:left}"
        "</style><h1>Codestral use per student</h1>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
