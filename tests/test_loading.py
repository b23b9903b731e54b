"""Three checkpoint layouts, quantized variants, and clear errors for every broken checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import codestral_engine
from codestral_engine import EngineError, ModelLoadError
from codestral_engine.weights.checkpoint import inspect

PROMPT = "import numpy as np\n\ndef mean(xs):\n    return"
SUFFIX = "\n\nprint(mean([1, 2, 3]))\n"


@pytest.fixture(scope="module")
def loaded(models, backend):
    """Each layout on this backend."""
    engines = {
        name: codestral_engine.load(models[name], backend) for name in ("mlx", "hf", "mistral")
    }
    yield engines
    for eng in engines.values():
        eng.close()


def test_layouts_are_detected(loaded, backend):
    layouts = {name: eng.checkpoint.layout for name, eng in loaded.items()}
    assert layouts["mlx"] == "mlx" and layouts["hf"] == "hf" and layouts["mistral"] == "mistral"
    assert all(eng.backend.name == backend for eng in loaded.values())


def test_three_layouts_give_identical_logits(loaded):
    ids = loaded["mlx"].tokenizer.encode_fim(PROMPT, SUFFIX)
    reference = loaded["mlx"].backend.logits(ids)
    assert reference.shape == (1, len(ids), 32768)
    for layout in ("hf", "mistral"):
        np.testing.assert_array_equal(loaded[layout].backend.logits(ids), reference, err_msg=layout)


def test_native_layout_without_the_rope_reordering_would_differ(models, loaded):
    # Guards the test above: the native file really stores q/k rows in another order.
    native = mx.load(str(models["mistral"] / "consolidated.safetensors"))[
        "layers.0.attention.wq.weight"
    ]
    hf_files = sorted(models["hf"].glob("model-*.safetensors"))
    hf = {k: v for f in hf_files for k, v in mx.load(str(f)).items()}[
        "model.layers.0.self_attn.q_proj.weight"
    ]
    assert not np.array_equal(np.array(native), np.array(hf))


def test_greedy_tokens_equal_mlx_lm_generate_step(fresh_engine, mlx_lm_greedy):
    for prefix, suffix in [
        (PROMPT, SUFFIX),
        ("class Stack:\n    def push(self, x):\n", ""),
        ("", "x"),
    ]:
        done = fresh_engine.fim(prefix, suffix, max_tokens=24).result()
        expected = mlx_lm_greedy(list(done.prompt_token_ids), 24)
        assert list(done.completion_token_ids) == expected


@pytest.mark.parametrize("name,max_error", [("mlx-8bit", 0.05), ("mlx-4bit", 0.5)])
def test_mlx_quantized_models_load_and_stay_close(models, name, max_error):
    # MLX-format quantization runs on MLX only ("auto" picks it); torch quantizes at load.
    with codestral_engine.load(models["mlx"], "mlx") as full_engine:
        ids = full_engine.tokenizer.encode_fim(PROMPT, SUFFIX)
        full = full_engine.backend.logits(ids)
    with codestral_engine.load(models[name]) as quantized_engine:
        assert quantized_engine.backend.name == "mlx"
        quantized = quantized_engine.backend.logits(ids)
        done = quantized_engine.fim(PROMPT, SUFFIX, max_tokens=5).result()
    relative = np.abs(quantized - full).mean() / np.abs(full).mean()
    assert relative < max_error, relative
    assert done.usage.completion_tokens == 5


# Broken checkpoints: each gives a ModelLoadError that names the problem and the fix.


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite_tensors(file: Path, change) -> None:
    arrays = {k: np.array(v) for k, v in mx.load(str(file)).items()}
    change(arrays)
    mx.save_safetensors(
        str(file), {k: mx.array(v) for k, v in arrays.items()}, metadata={"format": "mlx"}
    )


def expect_load_error(backend: str, path: Path, *fragments: str) -> str:
    with pytest.raises(ModelLoadError) as info:
        codestral_engine.load(path, backend)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(info.value, EngineError)
    return message


def test_missing_directory(tmp_path, backend):
    expect_load_error(backend, tmp_path / "nope", "does not exist", "make-tiny")


def test_not_a_model_directory(tmp_path, backend):
    expect_load_error(backend, tmp_path, "neither config.json", "params.json")


def test_missing_tokenizer(models, tmp_path, backend):
    path = copy_model(models["mlx"], tmp_path / "m")
    (path / "tokenizer.model").unlink()
    expect_load_error(backend, path, "No tokenizer", "tokenizer.model.v3")


def test_missing_tensor_is_named(models, tmp_path, backend):
    path = copy_model(models["mlx"], tmp_path / "m")
    rewrite_tensors(
        path / "model.safetensors", lambda w: w.pop("model.layers.1.mlp.up_proj.weight")
    )
    expect_load_error(
        backend, path, "model.layers.1.mlp.up_proj.weight", "missing", "fetch the complete"
    )


def test_extra_tensor_is_named(models, tmp_path, backend):
    path = copy_model(models["mlx"], tmp_path / "m")
    rewrite_tensors(path / "model.safetensors", lambda w: w.update(stray=np.zeros(3, np.float32)))
    expect_load_error(backend, path, "stray", "model.safetensors", "not part of")


def test_shape_mismatch_names_tensor_and_file(models, tmp_path, backend):
    path = copy_model(models["mlx"], tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["intermediate_size"] = 128
    (path / "config.json").write_text(json.dumps(config))
    expect_load_error(
        backend, path, "mlp.", "model.safetensors", "[256, 96]", "[128, 96]", "config"
    )


def test_dtype_mismatch_names_tensor(models, tmp_path, backend):
    path = copy_model(models["mlx"], tmp_path / "m")

    def to_int(w):
        w["model.norm.weight"] = w["model.norm.weight"].astype(np.int32)

    rewrite_tensors(path / "model.safetensors", to_int)
    expect_load_error(backend, path, "model.norm.weight", "I32", "float")


def test_truncated_file(models, tmp_path, backend):
    path = copy_model(models["mlx"], tmp_path / "m")
    file = path / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    expect_load_error(
        backend, path, "model.safetensors", "truncated or corrupt", "download it again"
    )


def test_corrupt_header(models, tmp_path, backend):
    path = copy_model(models["hf"], tmp_path / "m")
    shard = path / "model-00002-of-00002.safetensors"
    shard.write_bytes(b"\xff" * 64 + shard.read_bytes()[64:])
    expect_load_error(backend, path, "model-00002-of-00002.safetensors", "corrupt")


def test_missing_shard_listed_in_index(models, tmp_path, backend):
    path = copy_model(models["hf"], tmp_path / "m")
    (path / "model-00001-of-00002.safetensors").unlink()
    expect_load_error(backend, path, "model-00001-of-00002.safetensors", "missing", "fetch")


def test_unknown_architecture(models, tmp_path, backend):
    path = copy_model(models["hf"], tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "gpt2"
    (path / "config.json").write_text(json.dumps(config))
    expect_load_error(backend, path, "'gpt2'", "Mistral-architecture")


def test_mixture_of_experts_native_params_are_refused(models, tmp_path, backend):
    path = copy_model(models["mistral"], tmp_path / "m")
    params = json.loads((path / "params.json").read_text())
    params["moe"] = {"num_experts": 8}
    (path / "params.json").write_text(json.dumps(params))
    expect_load_error(backend, path, "params.json", "'moe'")


def test_pickle_only_checkpoint_is_refused_without_unpickling(tmp_path, backend):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    expect_load_error(backend, tmp_path, "pytorch_model.bin", "safetensors only")


def test_unparsable_config(models, tmp_path, backend):
    path = copy_model(models["mlx"], tmp_path / "m")
    (path / "config.json").write_text("{not json")
    expect_load_error(backend, path, "config.json", "Cannot parse")


def test_incomplete_config(models, tmp_path, backend):
    path = copy_model(models["mlx"], tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    del config["num_hidden_layers"]
    (path / "config.json").write_text(json.dumps(config))
    expect_load_error(backend, path, "num_hidden_layers")


def test_tokenizer_of_another_size(models, tmp_path, backend):
    path = copy_model(models["mlx"], tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["vocab_size"] = 32000
    (path / "config.json").write_text(json.dumps(config))
    expect_load_error(backend, path, "32768", "32000", "tokenizer")


def test_unknown_backend(models):
    with pytest.raises(EngineError, match="Unknown backend 'cuda-magic'"):
        codestral_engine.load(models["mlx"], backend="cuda-magic")


def test_inspect_reads_headers_only(models):
    checkpoint = inspect(models["mistral"])
    assert checkpoint.layout == "mistral"
    assert checkpoint.context_length == 32768
    assert checkpoint.config["rope_theta"] == 1e6
    assert checkpoint.config["num_key_value_heads"] == 2
    assert checkpoint.tensors["layers.0.attention.wq.weight"].shape == (96, 96)
