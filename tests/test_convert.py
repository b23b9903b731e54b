"""`codestral-engine convert`: a Mistral-native checkpoint to MLX 4-bit and 8-bit with mlx-lm's
quantization; the result loads and generates, and its logits stay close to the original."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import codestral_engine
from codestral_engine.backends.mlx_convert import convert
from codestral_engine.errors import ModelLoadError
from codestral_engine.weights.checkpoint import inspect


@pytest.fixture(scope="module")
def converted(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("converted")
    return {
        bits: (convert(inspect(models["mistral"]), root / f"q{bits}", bits), root / f"q{bits}")
        for bits in (4, 8)
    }


def test_conversions_load_generate_and_stay_close_to_the_original(converted, models):
    prompt = "def mean(xs):\n    return "
    with codestral_engine.load(models["mistral"], "mlx") as original:
        ids = original.tokenizer.encode_fim(prompt, "\n")
        reference = original.backend.logits(ids)[0]
    errors = {}
    for bits, (report, path) in converted.items():
        checkpoint = inspect(path)
        assert checkpoint.layout == "mlx" and checkpoint.quantization["bits"] == bits
        with codestral_engine.load(path, "mlx") as engine:
            result = engine.fim(prompt, "\n", max_tokens=8).result()
            assert result.usage.completion_tokens == 8
            logits = engine.backend.logits(ids)[0]
        errors[bits] = np.linalg.norm(logits - reference) / np.linalg.norm(reference)
        # The report measured the same thing on its own probe prompt.
        assert report.relative_error < (0.15 if bits == 4 else 0.02)
    assert errors[8] < errors[4] < 0.15
    assert errors[8] < 0.02
    assert converted[8][0].top1_agreement >= 0.9


def test_cli_reports_the_error_and_refuses_bad_targets(models, converted, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "codestral_engine",
            "convert",
            str(models["hf"]),
            str(tmp_path / "q8"),
            "--quant",
            "8bit",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "relative error" in out.stdout and "same top token" in out.stdout
    with pytest.raises(ModelLoadError, match="not empty"):
        convert(inspect(models["hf"]), tmp_path / "q8", 8)
    with pytest.raises(ModelLoadError, match="already quantized"):
        convert(inspect(converted[4][1]), tmp_path / "again", 4)
