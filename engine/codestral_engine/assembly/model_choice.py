"""Which model this process serves: one rule for `codestral-engine`, the demo, the magic and
JupyterLab.

The rule, first match wins: the explicit setting (`--model`, `%config Codestral.model`,
`c.CodestralCompletion.model`) → `$CODESTRAL_MODEL` → the Codestral release `pull` downloaded →
the built-in tiny demo model, with a loud note that its output is gibberish and how to get the
real one. "tiny" names the demo model anywhere a model is named.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MODEL_ENV = "CODESTRAL_MODEL"
TINY = "tiny"
TINY_NAME = "tiny-mlx-v1"  # the demo model's directory in the user's cache; bump on changes

Source = Literal["setting", "environment", "pulled", "demo"]


@dataclass(frozen=True)
class ModelChoice:
    """The model to serve (a local directory, a hub id, or "tiny") and why it was chosen."""

    model: str
    source: Source

    @property
    def is_demo(self) -> bool:
        return self.model == TINY

    @property
    def note(self) -> str:
        """What to tell the user about this choice ("" when they named the model)."""
        if self.is_demo:
            return (
                f"No Codestral model is set (no model setting, no ${MODEL_ENV}) and none was "
                "downloaded: serving the built-in tiny demo model, whose output is gibberish. "
                "For real completions run `codestral-engine pull` (or `%codestral pull` in a "
                "notebook)."
            )
        if self.source == "pulled":
            return f"Serving {self.model}, downloaded by `codestral-engine pull`."
        return ""

    def path(self) -> Path:
        """The model's local directory (the demo model is written on first use)."""
        if self.is_demo:
            return builtin_tiny_model()
        from .hub import resolve  # a hub id resolves offline, from the local cache

        return resolve(self.model).expanduser().resolve()

    def argument(self) -> str:
        """The model as a `--model` argument for a server started in another directory."""
        local = Path(self.model).expanduser()
        return str(local.resolve()) if local.is_dir() and not self.is_demo else self.model


def choose_model(setting: str | os.PathLike | None = None) -> ModelChoice:
    """The model this process serves, by the rule in this module's docstring."""
    if setting:
        return ModelChoice(str(setting), "setting")
    if chosen := os.environ.get(MODEL_ENV):
        return ModelChoice(chosen, "environment")
    from .hub import cached_release

    if repo := cached_release():
        return ModelChoice(repo, "pulled")
    return ModelChoice(TINY, "demo")


def is_demo_model(name: str) -> bool:
    """Whether a served model's name (its directory's) is the built-in demo model's."""
    return name.startswith(f"{TINY}-")


def builtin_tiny_model() -> Path:
    """The demo model: made once in the user's cache directory, then reused."""
    from ..weights.tiny import make_tiny

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "codestral-engine"
    target = cache / TINY_NAME
    if not (target / "config.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache))
        make_tiny(staging, "mlx")
        try:
            staging.rename(target)  # atomic: a concurrent first run never sees half a model
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another process won the race
    return target
