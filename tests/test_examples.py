"""The examples a new user opens first run as shipped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_engine_quickstart_runs(tmp_path):
    env = {**os.environ, "CODESTRAL_MODEL": "", "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "engine_quickstart.py")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    reused = re.search(r"reused (\d+) of (\d+) prompt tokens", result.stdout)
    assert reused and 0 < int(reused.group(2)) - int(reused.group(1)) <= 4
    assert "cancelled a long request" in result.stdout
