"""Codestral-22B's published checkpoints, one line each: which backend runs it, what `pull
--quant` calls it, where it is on the hub, the memory it needs (a form of
`preflight.codestral_22b_plans`) and whether `pull` may pick it by itself. `pull`, its
`--quant` choices, the note it prints and the model a process finds pulled all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.options import QUANTIZERS

MISTRAL_RELEASE = "mistralai/Codestral-22B-v0.1"


@dataclass(frozen=True)
class Release:
    backend: str
    quant: str  # pull --quant: "4bit", "8bit", "bf16"
    repo: str
    form: str  # its plan in `preflight.codestral_22b_plans`: "bf16", "int8", "mlx-4bit", ...
    automatic: bool = True  # pull may choose it by itself (a backend's largest that fits first)

    @property
    def held_as(self) -> str | None:
        """The torch quantizer that holds this bf16 release at load, if one does."""
        return self.form if self.form in {q.name for q in QUANTIZERS} else None

    @property
    def note(self) -> str:
        """What to know before serving it ("" when nothing)."""
        if (kind := self.held_as) is None:
            return ""
        return f"bf16 weights, held as {kind} at load: serve with --quantize {kind}."

    def describe(self) -> str:
        return f"{self.backend}: " + (
            f"bf16 held as {self.held_as} at load" if self.held_as else self.repo
        )


RELEASES = (  # each backend's largest first
    Release("mlx", "8bit", "mlx-community/Codestral-22B-v0.1-8bit", "mlx-8bit"),
    Release("mlx", "4bit", "mlx-community/Codestral-22B-v0.1-4bit", "mlx-4bit"),
    # bf16 would read 3.5x the bytes of 4-bit per token: pull picks the conversions.
    Release("mlx", "bf16", MISTRAL_RELEASE, "bf16", automatic=False),
    # 8bit / 4bit on torch: Mistral's bf16 release, held as int8 / int4 at load.
    Release("torch", "bf16", MISTRAL_RELEASE, "bf16"),
    Release("torch", "8bit", MISTRAL_RELEASE, "int8"),
    Release("torch", "4bit", MISTRAL_RELEASE, "int4"),
)
QUANTS = tuple(sorted({release.quant for release in RELEASES}))  # pull's --quant choices


def releases_for(backend: str) -> dict[str, Release]:
    """The releases `backend` runs, by their --quant name, largest first."""
    return {r.quant: r for r in RELEASES if r.backend == backend}


def quant_help() -> str:
    """pull's --quant help: what each choice fetches on each backend."""
    per_quant = (
        f"{quant}: " + ", ".join(r.describe() for r in RELEASES if r.quant == quant)
        for quant in QUANTS
    )
    return "; ".join(per_quant) + ". Default: the largest that fits this machine's memory."
