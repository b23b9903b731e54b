"""The PyTorch backend against Hugging Face transformers, the MLX backend, and its own options."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import MistralForCausalLM

import codestral_engine
from codestral_engine import EngineError, ModelLoadError
from codestral_engine.backends import resolve_backend
from codestral_engine.backends.torch import slot_step
from codestral_engine.backends.torch_cache import StaticSlot
from codestral_engine.backends.torch_quant import (
    Int4Linear,
    Int8Linear,
    int4_group,
    quantize_int4,
)
from codestral_engine.weights.checkpoint import inspect
from codestral_engine.weights.tiny import TinyShape, make_tiny

PROMPT, SUFFIX = "import numpy as np\n\ndef norm(v):\n    return", "\n\nprint(norm([3, 4]))\n"


@pytest.fixture(scope="module")
def torch_engine(models):
    with codestral_engine.load(models["hf"], "torch", dtype="float32") as eng:
        yield eng


@pytest.fixture(scope="module")
def reference(models):
    model = MistralForCausalLM.from_pretrained(models["hf"], dtype=torch.float32)
    return model.eval()


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def test_prefill_logits_match_transformers(torch_engine, reference):
    ids = torch_engine.tokenizer.encode_fim(PROMPT, SUFFIX)
    ours = torch_engine.backend.logits(ids)[0]
    with torch.no_grad():
        theirs = reference(torch.tensor([ids])).logits[0].numpy()
    assert ours.shape == theirs.shape == (len(ids), 32768)
    assert relative_error(ours, theirs) < 1e-4


def test_cached_decode_steps_match_transformers(torch_engine, reference):
    ids = torch_engine.tokenizer.encode_fim(PROMPT, SUFFIX)
    model, cache = torch_engine.backend.model, torch_engine.backend.new_cache()
    steps = [1234, 77, 29500, 5, 31000]
    with torch.no_grad():
        model(torch.tensor(ids[:-1]), cache)  # prefill in two chunks, then single tokens
        ours = [model(torch.tensor(ids[-1:]), cache)[-1].numpy()]
        out = reference(torch.tensor([ids]), use_cache=True)
        theirs, past = [out.logits[0, -1].numpy()], out.past_key_values
        for token in steps:
            ours.append(model(torch.tensor([token]), cache)[-1].numpy())
            out = reference(torch.tensor([[token]]), past_key_values=past, use_cache=True)
            theirs.append(out.logits[0, -1].numpy())
            past = out.past_key_values
    assert cache.length == len(ids) + len(steps)
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert relative_error(a, b) < 1e-4, step


def test_the_static_slot_and_the_growing_cache_give_the_same_logits(torch_engine):
    """One forward pass, two caches: the static decode slot (as `static_decode` steps through
    it) reads and writes the keys and values the growing cache does, position for position."""
    backend = torch_engine.backend
    model, device = backend.model, backend.torch_device
    ids = torch.tensor(torch_engine.tokenizer.encode_fim(PROMPT, SUFFIX))
    # After the prompt's body: one token, a block of three (a draft with its token), one more.
    body, feeds = ids[:-5], [ids[-5:-4], ids[-4:-1], ids[-1:]]
    grown = backend.new_cache()
    slot = StaticSlot(model.args, len(ids) + 16, backend.dtype, device)
    slot.keys.fill_(100.0)  # an unwritten position, were it read, would change every logit
    slot.values.fill_(100.0)
    step = slot_step(model, slot)
    with torch.inference_mode():
        model(body, grown, rows=0)
        slot.load(grown)
        start = position = grown.length
        for feed in feeds:
            want = model(feed, grown, rows=len(feed))  # (T, vocab)
            got = step(feed, torch.arange(position, position + len(feed), device=device))
            position += len(feed)
            assert got.shape == want.shape == (len(feed), 32768)
            assert relative_error(got.numpy(), want.numpy()) < 1e-5, position
        assert position == grown.length == len(ids)
        # Copied back, the slot's keys and values are the growing cache's.
        stored = grown.prefix_copy(start)
        slot.store(stored, start, position)
        assert stored.length == grown.length
        for ours, theirs in ((stored.keys, grown.keys), (stored.values, grown.values)):
            torch.testing.assert_close(ours[:, :, : len(ids)], theirs[:, :, : len(ids)])


def test_greedy_tokens_equal_the_mlx_backend(models):
    with codestral_engine.load(models["mistral"], "mlx") as mlx_engine:
        expected = mlx_engine.fim(PROMPT, SUFFIX, max_tokens=32).result().completion_token_ids
    with codestral_engine.load(models["mistral"], "torch") as torch_engine:
        assert (
            torch_engine.fim(PROMPT, SUFFIX, max_tokens=32).result().completion_token_ids
            == expected
        )


@pytest.mark.parametrize(
    "dtype,quantize,tolerance",
    [("bfloat16", None, 0.05), ("float32", "int8", 0.02), ("bfloat16", "int4", 0.2)],
)
def test_reduced_precision_stays_close(models, torch_engine, dtype, quantize, tolerance):
    ids = torch_engine.tokenizer.encode_fim(PROMPT, SUFFIX)
    full = torch_engine.backend.logits(ids)
    options = {"dtype": dtype, "quantize": quantize, "prefill_chunk": 8}  # chunked prompts too
    with codestral_engine.load(models["mistral"], "torch", **options) as eng:
        reduced = eng.backend.logits(ids)
        done = eng.fim(PROMPT, SUFFIX, max_tokens=8).result()
        assert len(ids) > 2 * 8
        if quantize:
            linear = eng.backend.model.model.layers[0].mlp.up_proj
            assert type(linear) is {"int8": Int8Linear, "int4": Int4Linear}[quantize]
    mean_error = np.abs(reduced - full).mean() / np.abs(full).mean()
    assert mean_error < tolerance, mean_error
    assert done.usage.completion_tokens == 8


@pytest.mark.parametrize("out_features,in_features,group", [(128, 256, 128), (64, 96, 32)])
def test_int4_layers_compute_with_the_weights_they_quantized(out_features, in_features, group):
    torch.manual_seed(0)
    weight = torch.randn(out_features, in_features)
    layer = Int4Linear(out_features, in_features, group, on_cuda=False)
    assert int4_group(out_features, in_features) == group
    layer.load_state_dict(layer.quantized(weight), assign=True)
    q, scales_zeros = quantize_int4(weight, group)
    # The reference dequantization, element by element: (q - 8) * scale + zero, per group.
    scales, zeros = (t.t().repeat_interleave(group, dim=1) for t in scales_zeros.unbind(-1))
    reference = ((q.to(torch.bfloat16) - 8) * scales + zeros).to(torch.bfloat16)
    # Rounding to 16 levels per group: half a level at most (plus bf16 rounding of the scale).
    step = scales.float()
    assert ((reference.float() - weight).abs() <= 0.5 * step + 0.02 * weight.abs() + 1e-2).all()
    with torch.inference_mode():
        # The int4 kernel for a few rows; for many, the packed layout read back into bf16.
        for rows in (1, 3, 40):
            x = torch.randn(rows, in_features, dtype=torch.bfloat16)
            expected = x.float() @ reference.float().t()
            error = (layer(x).float() - expected).abs().max() / expected.abs().max()
            assert error < 0.02, (rows, error)


INT4_LAYOUT = """
import torch
from codestral_engine.backends.torch_quant import Int4Linear, cpu_int4_layout
torch.manual_seed(0)
layer = Int4Linear(1152, 256, 128, on_cuda=False)  # two blocks of unpacked outputs
layer.load_state_dict(layer.quantized(torch.randn(1152, 256)), assign=True)
x = torch.randn(40, 256, dtype=torch.bfloat16)
kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(x, layer.weight, 128, layer.scales_zeros)
with torch.inference_mode():
    inside = layer(x).float()  # 40 rows: unpacked in the layout found for this kernel
outside = layer(x).float()  # the reused buffers also serve outside inference mode
error = max(float((o - kernel.float()).abs().max()) for o in (inside, outside))
print(error / float(kernel.float().abs().max()), torch.backends.cpu.get_cpu_capability(),
      cpu_int4_layout())
"""


@pytest.mark.parametrize("capability", ["default", "avx2", "native"])
def test_int4_prefill_unpacks_the_layout_of_the_kernel_this_cpu_runs(capability):
    # PyTorch's CPU int4 packing differs by the kernel it picks for the processor: every
    # one the CI machine can run is checked against the packed kernel itself.
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability != "native":
        env["ATEN_CPU_CAPABILITY"] = capability
    out = subprocess.run(
        [sys.executable, "-c", INT4_LAYOUT], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    error, running, layout = out.stdout.strip().split(maxsplit=2)
    assert capability == "native" or running == capability.upper()
    assert layout != "None" and float(error) < 0.02, out.stdout


def test_int4_on_a_gpu_older_than_ampere_is_refused_with_the_fix(models, monkeypatch):
    import codestral_engine.backends.torch as torch_backend

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Tesla T4")
    with pytest.raises(ModelLoadError, match=r"Ampere or newer.*Tesla T4 is 7\.5.*int8"):
        torch_backend.load(inspect(models["hf"]), lambda f, s: None, device="cuda", quantize="int4")


def test_int4_keeps_float_where_its_kernels_cannot_go(models):
    assert int4_group(96, 256) is None  # outputs come in blocks of 64
    assert int4_group(128, 48) is None  # inputs in groups of 32 at least
    with codestral_engine.load(models["mistral"], "torch", quantize="int4") as eng:
        attention = eng.backend.model.model.layers[0].self_attn
        assert isinstance(attention.q_proj, torch.nn.Linear)  # 96 outputs: stays float
        assert isinstance(eng.backend.model.lm_head, Int4Linear)


LOAD_MEMORY = """
import json, sys, threading, time
import psutil
import codestral_engine.backends.torch as tb
from codestral_engine.weights.checkpoint import inspect

checkpoint = inspect(sys.argv[1])
process, samples, done = psutil.Process(), [], threading.Event()

def poll():  # the process's lifetime peak would include import-time spikes: sample the load
    while not done.is_set():
        samples.append(process.memory_info().rss)
        time.sleep(0.002)

before = process.memory_info().rss
watcher = threading.Thread(target=poll)
watcher.start()
backend = tb.load(checkpoint, lambda f, s: None, dtype="float32")
backend.logits([1, 2, 3])  # every weight page is now resident
done.set()
watcher.join()
samples.append(process.memory_info().rss)  # one sample even if the watcher never ran
print(json.dumps({"before": before, "peak": max(samples), "weights": checkpoint.weight_bytes}))
"""


def test_loading_does_not_hold_two_copies_of_the_weights(tmp_path):
    shape = TinyShape(
        hidden_size=512,
        num_hidden_layers=4,
        intermediate_size=1536,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=64,
    )
    path = make_tiny(tmp_path / "m", "hf", shape=shape)
    out = subprocess.run(
        [sys.executable, "-c", LOAD_MEMORY, str(path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)
    assert m["weights"] > 150e6
    growth = m["peak"] - m["before"]
    assert growth < 1.4 * m["weights"], m  # two copies would be >= 2x


def test_mlx_quantized_checkpoint_is_refused_by_torch(models):
    with pytest.raises(ModelLoadError, match=r"MLX's format.*bf16 release"):
        codestral_engine.load(models["mlx-4bit"], "torch")


def test_backend_selection(models):
    assert resolve_backend("auto", inspect(models["mlx-8bit"])) == "mlx"
    if sys.platform == "linux":
        assert resolve_backend("auto", inspect(models["hf"])) == "torch"
    with pytest.raises(EngineError, match="MLX backend takes no dtype"):
        codestral_engine.load(models["mlx"], "mlx", dtype="float16")
    with pytest.raises(ModelLoadError, match=r"quantize must be 'int8' or 'int4'.*got 'int2'"):
        codestral_engine.load(models["mlx"], "torch", quantize="int2")
    with pytest.raises(ModelLoadError, match="dtype must be 'bfloat16', 'float16' or 'float32'"):
        codestral_engine.load(models["mlx"], "torch", dtype="float8")
    with pytest.raises(ModelLoadError, match="static_decode 'reduce-overhed' is not a way"):
        codestral_engine.load(models["hf"], "torch", static_decode="reduce-overhed")


def test_cpu_threads_follow_a_rule_and_a_setting(models, monkeypatch):
    """Physical cores but one by default (left to Jupyter and the browser), else the setting."""
    import psutil

    from codestral_engine.backends.torch import cpu_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("CODESTRAL_ENGINE_THREADS", raising=False)
        cores = min(psutil.cpu_count(logical=False), len(os.sched_getaffinity(0)))
        assert cpu_threads() == max(1, cores - 1)
        with codestral_engine.load(models["hf"], "torch", threads=1) as engine:
            assert engine.backend.threads == torch.get_num_threads() == 1
        monkeypatch.setenv("CODESTRAL_ENGINE_THREADS", "3")
        assert cpu_threads() == 3 and cpu_threads(2) == 2  # an explicit option wins
        monkeypatch.setenv("CODESTRAL_ENGINE_THREADS", "many")
        with pytest.raises(ModelLoadError, match="CODESTRAL_ENGINE_THREADS"):
            codestral_engine.load(models["hf"], "torch")
        with pytest.raises(ModelLoadError, match="at least 1"):
            codestral_engine.load(models["hf"], "torch", threads=0)
    finally:
        torch.set_num_threads(before)
