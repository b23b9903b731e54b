"""Memory preflight: the estimate for the real Codestral-22B, and refusal before loading."""

from __future__ import annotations

from pathlib import Path

import pytest

import codestral_engine
import codestral_engine.assembly.loading as loading
from codestral_engine import ContextLengthError, preflight
from codestral_engine.assembly.preflight import InsufficientMemoryError, plan
from codestral_engine.backends import REGISTRY
from codestral_engine.backends.memory import MEMORY
from codestral_engine.weights.checkpoint import CODESTRAL_22B_CONFIG, Checkpoint, inspect


def test_codestral_22b_estimates_match_its_published_sizes():
    checkpoint = Checkpoint(Path("/nowhere"), "hf", CODESTRAL_22B_CONFIG, {})
    bf16 = plan(checkpoint, "torch", "bfloat16", None, 32768)
    assert round(bf16.weight_bytes / 1e9, 1) == 44.5  # 22.25B parameters x 2 bytes
    assert bf16.kv_bytes_per_token == 224 * 1024  # 224 KiB per token in bf16
    assert round(bf16.kv_bytes / 2**30, 2) == 7.0  # the full 32K window
    int8 = plan(checkpoint, "torch", "bfloat16", "int8", 32768)
    assert 0.5 < int8.weight_bytes / bf16.weight_bytes < 0.53
    int4 = plan(checkpoint, "torch", "bfloat16", "int4", 32768)
    assert round(int4.weight_bytes / 1e9, 1) == 12.1  # half a byte, plus a group's scale/zero
    assert plan(checkpoint, "torch", "float32", None, 1).kv_bytes_per_token == 448 * 1024
    # CUDA's static decode step holds a slot besides the request's cache: the window twice.
    static = plan(checkpoint, "torch", "bfloat16", None, 32768, static_slot=True)
    assert static.kv_bytes == 2 * bf16.kv_bytes and static.weight_bytes == bf16.weight_bytes


def test_the_static_slot_is_counted_where_decoding_uses_it():
    """One rule decides how torch decodes and what the preflight counts: the slot on CUDA
    unless turned off, the dynamic step elsewhere unless asked for."""
    torch_spec = REGISTRY["torch"]
    assert torch_spec.static_decode(None, "cuda:1") == "reduce-overhead"
    assert torch_spec.static_decode("off", "cuda") is None
    assert torch_spec.static_decode(None, "cpu") is None
    assert torch_spec.static_decode("aot_eager", "cpu") == "aot_eager"
    assert MEMORY["torch"].holds_decode_slot("cuda", None)
    assert not MEMORY["torch"].holds_decode_slot("cpu", None)
    assert not MEMORY["mlx"].holds_decode_slot("gpu", None)


def simulate(monkeypatch, available: int) -> None:
    monkeypatch.setattr(
        preflight, "available_memory", lambda backend, device: (available, "simulated")
    )


def test_too_little_memory_is_refused_before_loading_with_numbers_and_fixes(models, monkeypatch):
    need = plan(inspect(models["mlx"]), "torch", "float32", None, 32768)
    simulate(monkeypatch, int(need.total * 0.9))
    loads = []
    monkeypatch.setattr(loading, "load_backend", lambda *a, **k: loads.append(a))
    with pytest.raises(InsufficientMemoryError) as info:
        codestral_engine.load(models["mlx"], "torch")
    message = str(info.value)
    assert loads == []  # refused before any weight was read
    assert f"{need.total / 1e9:.1f} GB" in message and "KV cache for 32768 tokens" in message
    assert "(simulated)" in message
    assert "context_length=16384" in message and "quantize='int8'" in message
    assert "quantize='int4'" in message  # a quarter of bf16
    int8 = plan(inspect(models["mlx"]), "torch", "bfloat16", "int8", 32768)
    simulate(monkeypatch, int(int8.total * 0.9))
    with pytest.raises(InsufficientMemoryError) as info:  # int8 already: only int4 is smaller
        codestral_engine.load(models["mlx"], "torch", quantize="int8", dtype="bfloat16")
    assert "quantize='int4'" in str(info.value) and "quantize='int8'" not in str(info.value)


def test_enough_memory_loads_and_preflight_can_be_skipped(models, monkeypatch):
    need = plan(inspect(models["mlx"]), "torch", "float32", None, 2048)
    simulate(monkeypatch, int(need.total * 1.1))
    with codestral_engine.load(models["mlx"], "torch", context_length=2048) as eng:
        assert eng.fim("x = 1", max_tokens=2).result().usage.completion_tokens == 2
    simulate(monkeypatch, 1)
    with codestral_engine.load(models["mlx"], "torch", preflight=False) as eng:
        assert eng.context_length == 32768


def test_mlx_estimate_uses_the_stored_tensors(models):
    stored = inspect(models["mlx-4bit"])
    assert plan(stored, "mlx", "as stored", None, 1).weight_bytes == stored.weight_bytes


def test_context_length_caps_the_window(models, backend):
    with codestral_engine.load(models["mlx"], backend, context_length=48) as eng:
        assert eng.context_length == 48
        with pytest.raises(ContextLengthError, match="context window is 48"):
            eng.fim("x = 1\n" * 30)
        prompt = "y = 2\n" * 4
        done = eng.fim(prompt).result()  # no max_tokens: until the window is full
        assert done.finish_reason == "model_length"
        assert done.usage.prompt_tokens + done.usage.completion_tokens == 48


def test_the_model_config_is_parsed_once_typed_with_clear_errors(models):
    from codestral_engine.errors import ModelLoadError
    from codestral_engine.weights.model_config import ModelConfig

    typed = inspect(models["mistral"]).model_config  # from params.json, via the HF config
    assert typed == inspect(models["hf"]).model_config
    assert typed.head_dim * typed.num_attention_heads == typed.hidden_size
    full = ModelConfig.from_dict(CODESTRAL_22B_CONFIG)
    assert full.kv_values_per_token * 2 == 224 * 1024  # 224 KiB per token in bf16
    broken = {k: v for k, v in CODESTRAL_22B_CONFIG.items() if k != "vocab_size"}
    with pytest.raises(ModelLoadError, match="no 'vocab_size'"):
        ModelConfig.from_dict(broken)
