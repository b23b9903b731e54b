"""The extension's TypeScript unit tests (vitest): debounce, abort, typed-ahead reuse, partial
accept and post-processing. Run here so one pytest run covers both languages."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LABEXTENSION = Path(__file__).resolve().parent.parent / "labextension"


def test_typescript_unit_tests_pass():
    jlpm = shutil.which("jlpm") or shutil.which("jlpm", path=str(Path(sys.executable).parent))
    if not (LABEXTENSION / "node_modules").is_dir() or jlpm is None:
        pytest.fail("labextension/node_modules is missing: install with `jlpm install` there.")
    result = subprocess.run(
        [jlpm, "test"], cwd=LABEXTENSION, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
