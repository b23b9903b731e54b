"""Shared fixtures: tiny Codestral-architecture models written by the engine itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model

import codestral_engine
from codestral_engine.backends import REGISTRY
from codestral_engine.weights.tiny import TinyShape, make_tiny

# jp_serverapp / jp_fetch: a real jupyter_server for the extension's route tests.
pytest_plugins = ["pytest_jupyter.jupyter_server"]

PREFILL_CHUNK = 16  # small chunks so a few hundred tokens give many cancellation points


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same seed-0 weights in each layout, plus quantized MLX variants."""
    root = tmp_path_factory.mktemp("models")
    dirs = {layout: make_tiny(root / layout, layout, seed=0) for layout in ("mlx", "hf", "mistral")}
    dirs["mlx-8bit"] = make_tiny(root / "mlx-8bit", "mlx", seed=0, bits=8)
    dirs["mlx-4bit"] = make_tiny(root / "mlx-4bit", "mlx", seed=0, bits=4)
    return dirs


@pytest.fixture(scope="session", params=list(REGISTRY))
def backend(request: pytest.FixtureRequest) -> str:
    """Every engine behaviour test runs on every registered backend (the conformance suite)."""
    return request.param


def loaded(model: Path, backend: str, **options) -> Iterator[codestral_engine.Engine]:
    """An engine on `model` with small prefill chunks, closed after (for fixtures)."""
    with codestral_engine.load(model, backend, prefill_chunk=PREFILL_CHUNK, **options) as eng:
        yield eng


@pytest.fixture(scope="session")
def engine(models: dict[str, Path], backend: str) -> codestral_engine.Engine:
    yield from loaded(models["mlx"], backend)


@pytest.fixture
def fresh_engine(engine: codestral_engine.Engine) -> codestral_engine.Engine:
    """The shared engine with an empty prompt cache (the worker is idle between tests)."""
    engine.prompt_cache.clear()
    return engine


@pytest.fixture(scope="session")
def reference_tokenizer() -> MistralTokenizer:
    return MistralTokenizer.v3()


@pytest.fixture(scope="session")
def mlx_lm_greedy(models: dict[str, Path]):
    """Greedy tokens from mlx-lm's own model loading and generate_step, with a cold cache."""
    model, _config = load_model(models["mlx"])

    def greedy(prompt_ids: list[int], n: int) -> list[int]:
        steps = generate_step(mx.array(prompt_ids, dtype=mx.uint32), model, max_tokens=n)
        return [token for token, _ in steps]

    return greedy


@pytest.fixture(scope="session")
def eos_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose greedy choice is always end of sequence.

    With every layer's output projection zeroed, the final hidden state is the token's own
    embedding; embedding column 0 is positive for every token and the final norm keeps only that
    column, so the end-of-sequence row of the output head (weight on column 0 only) always wins.
    """
    path = make_tiny(tmp_path_factory.mktemp("eos") / "mlx", "mlx", seed=1)
    file = path / "model.safetensors"
    w = {k: np.array(v) for k, v in mx.load(str(file)).items()}
    for name in w:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            w[name][:] = 0
    w["model.embed_tokens.weight"][:, 0] = 3.0
    w["model.norm.weight"][:] = 0
    w["model.norm.weight"][0] = 1.0
    w["lm_head.weight"][2, :] = 0
    w["lm_head.weight"][2, 0] = 100.0
    mx.save_safetensors(
        str(file), {k: mx.array(v) for k, v in w.items()}, metadata={"format": "mlx"}
    )
    return path


@pytest.fixture(scope="session")
def short_context_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shape = TinyShape(context_length=64)
    return make_tiny(tmp_path_factory.mktemp("short") / "mlx", "mlx", seed=2, shape=shape)


@pytest.fixture(scope="session")
def vllm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model in a shape vLLM's CPU attention takes (head_dim 32), float32."""
    from .vllm_server import tiny_model

    return tiny_model(tmp_path_factory.mktemp("vllm-model"))


@pytest.fixture(scope="session")
def vllm(vllm_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real vLLM serving `vllm_model` on loopback, with an API key (started once)."""
    from .vllm_server import start_vllm

    yield from start_vllm(vllm_model, tmp_path_factory.mktemp("vllm") / "vllm.log")
