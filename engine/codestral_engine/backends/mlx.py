"""MLX backend: mlx-lm's Mistral (llama) model code, its KV cache and its step loop.

References: mlx_lm/models/llama.py (the architecture, used as is), mlx_lm/generate.py
`generate_step` (whose shape the step loop here follows: chunked prefill, then decoding one
step ahead), mlx_lm/sample_utils.py `make_sampler`. The loop is ours so that the engine owns
cancellation points and sampling: greedy decoding takes the argmax of the logits without
normalising them into log-probabilities, and nothing else is evaluated per step. Also here:
strict weight checks, the three checkpoint layouts, and a KV cache trimmed and copied by prefix.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.generate import generation_stream
from mlx_lm.models import llama
from mlx_lm.models.cache import KVCache
from mlx_lm.sample_utils import apply_top_p

from ..core.backend import PrefillProgress, prefill_passes
from ..core.params import GenerationParams
from ..core.speculative import Acceptor, PromptLookup, decode
from ..errors import ModelLoadError
from ..weights.checkpoint import Checkpoint, check_tensors, hf_tensors

# Precomputed RoPE frequencies some Hugging Face exports carry; the model recomputes them.
_IGNORED_SUFFIX = "rotary_emb.inv_freq"


class MLXCache:
    """One mlx-lm `KVCache` per layer, seen as a single cache of one token sequence."""

    def __init__(self, layers: list[KVCache]):
        self.layers = layers

    @property
    def length(self) -> int:
        return self.layers[0].offset

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers)

    def trim_to(self, n: int) -> None:
        for layer in self.layers:
            layer.trim(layer.offset - n)

    def prefix_copy(self, n: int) -> MLXCache:
        copies = []
        for layer in self.layers:
            copy = KVCache()
            if layer.keys is not None and n > 0:
                # MLX arrays are values: the next write to the copy concatenates into a new
                # buffer and never touches the shared one.
                copy.keys = layer.keys[..., :n, :]
                copy.values = layer.values[..., :n, :]
                copy.offset = n
            copies.append(copy)
        return MLXCache(copies)


class MLXBackend:
    name = "mlx"
    # Off by default: on the CPU, reading 2 tokens in one pass costs 1.8x a step, so drafts do
    # not pay (bench/README.md); on Metal, measure with bench/bench_speculative.py first.
    speculates = False
    threads = None  # MLX chooses its own
    slot_limit: int | None = None  # mlx-lm's caches grow as needed: nothing preallocated

    def __init__(self, model: nn.Module):
        self.model = model
        self.device = str(mx.default_device().type).split(".")[-1]

    def new_cache(self) -> MLXCache:
        return MLXCache(self.model.make_cache())

    def generate(
        self,
        tokens: list[int],
        cache: MLXCache,
        params: GenerationParams,
        *,
        eos_id: int,
        max_new_tokens: int,
        prefill_chunk: int,
        on_prefill: PrefillProgress,
        drafter: PromptLookup | None = None,
    ) -> Iterator[int]:
        sample = make_sampler(params, eos_id)
        layers = cache.layers
        prompt = mx.array(tokens, dtype=mx.uint32)
        total, done = len(tokens), 0
        with mx.stream(generation_stream):
            on_prefill(0, total)
            # The transformer body only, no output head; the prompt's last part (on a warm
            # cache, the few typed tokens) is read by the first decode step: one pass, not two.
            for n in prefill_passes(total, prefill_chunk):
                self.model.model(prompt[None, done : done + n], cache=layers)
                mx.eval([layer.state for layer in layers])
                done += n
                on_prefill(done, total)
            if drafter is not None:
                verify = self._verifier(layers, params, eos_id)
                acceptor = Acceptor(params, eos_id)
                yield from decode(
                    verify,
                    lambda n: cache.trim_to(cache.length - n),
                    tokens[done:],
                    drafter,
                    acceptor,
                    max_new_tokens,
                )
                return
            # Decode one step ahead: the next token is computed while this one is handed out.
            y = sample(self._head(self.model.model(prompt[None, done:], cache=layers), 1), 0)
            mx.async_eval(y)
            for n in range(1, max_new_tokens):
                next_y = sample(self.model(y[:, None], cache=layers)[:, -1, :], n)
                mx.async_eval(next_y)
                yield y.item()
                y = next_y
            yield y.item()

    def _verifier(self, layers: list[KVCache], params: GenerationParams, eos_id: int):
        """The model's reading of a fed block: argmaxes (greedy) or float32 logits rows."""

        def verify(feed: list[int], rows: int, index: int, greedy: bool):
            hidden = self.model.model(mx.array(feed, dtype=mx.uint32)[None], cache=layers)
            logits = self._head(hidden, rows)
            masked = params.min_tokens - index  # rows whose token may not end the sequence
            if masked > 0:
                logits[:masked, eos_id] = -mx.inf
            if greedy:
                return mx.argmax(logits, axis=-1).tolist()
            return np.array(logits.astype(mx.float32))

        return verify

    def _head(self, hidden: mx.array, rows: int) -> mx.array:
        """The output head over the last `rows` positions of one sequence: (rows, vocab)."""
        hidden = hidden[0, -rows:]
        if self.model.args.tie_word_embeddings:
            return self.model.model.embed_tokens.as_linear(hidden)
        return self.model.lm_head(hidden)

    def logits(self, tokens: list[int]) -> np.ndarray:
        out = self.model(mx.array(tokens, dtype=mx.uint32)[None])  # (1, T, vocab)
        return np.array(out.astype(mx.float32))

    def reset_peak_memory(self) -> None:
        mx.reset_peak_memory()

    def peak_memory(self) -> int:
        return int(mx.get_peak_memory())

    def release_thread(self) -> None:
        mx.clear_streams()  # thread-local streams must not outlive their thread (mlx#3395)


def device_memory(_device: str) -> tuple[int, str] | None:
    """Apple unified memory's recommended working set, when running on Metal."""
    info = mx.device_info()
    if "max_recommended_working_set_size" in info:
        return int(
            info["max_recommended_working_set_size"]
        ), "Apple unified memory, recommended working set"
    return None


def physical_memory() -> int | None:
    return mx.device_info().get("memory_size")


def load(checkpoint: Checkpoint, progress: Callable[[float, str], None]) -> MLXBackend:
    """Build mlx-lm's model for `checkpoint`, check every tensor, then load the weights."""
    try:
        args = llama.ModelArgs.from_dict(checkpoint.config)
        model = llama.Model(args)  # parameters stay lazy: nothing is allocated yet
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"The config in {checkpoint.path} is not a valid Mistral config ({exc}). Restore it "
            "from the model's release."
        ) from exc
    stored = {checkpoint.hf_name(n) for n in checkpoint.tensors}
    if checkpoint.quantization:
        _quantize(model, checkpoint.quantization, stored)
    expected = {
        name: (tuple(p.shape), "U32" if p.dtype == mx.uint32 else "float")
        for name, p in tree_flatten(model.parameters())
    }
    check_tensors(_without_ignored(checkpoint), expected)
    model.load_weights(list(_read_weights(checkpoint).items()), strict=True)
    # Weights are read lazily: evaluating them part by part is the load, and its progress.
    parts = [model.model.embed_tokens, *model.model.layers, model.model.norm, model]
    for i, part in enumerate(parts):
        mx.eval(part.parameters())
        progress((i + 1) / len(parts), f"loading weights ({checkpoint.weight_bytes / 1e9:.1f} GB)")
    return MLXBackend(model)


def _without_ignored(checkpoint: Checkpoint) -> Checkpoint:
    tensors = {n: t for n, t in checkpoint.tensors.items() if not n.endswith(_IGNORED_SUFFIX)}
    return Checkpoint(checkpoint.path, checkpoint.layout, checkpoint.config, tensors)


def _quantize(model: nn.Module, quantization: dict, stored: set[str]) -> None:
    def predicate(path: str, module: nn.Module) -> bool | dict:
        if path in quantization:  # per-layer override written by mlx-lm's converter
            return quantization[path]
        return hasattr(module, "to_quantized") and f"{path}.scales" in stored

    nn.quantize(
        model,
        group_size=quantization.get("group_size", 64),
        bits=quantization.get("bits", 4),
        mode=quantization.get("mode", "affine"),
        class_predicate=predicate,
    )


def _read_weights(checkpoint: Checkpoint) -> dict[str, mx.array]:
    def read_file(file: Path) -> Iterator[tuple[str, mx.array]]:
        try:
            arrays = mx.load(str(file))  # lazy: read when evaluated
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelLoadError(
                f"Cannot read weight file {file} ({exc}). Delete it and download it again."
            ) from exc
        return ((n, a) for n, a in arrays.items() if not n.endswith(_IGNORED_SUFFIX))

    return dict(hf_tensors(checkpoint, read_file))


def make_sampler(params: GenerationParams, eos_id: int) -> Callable[[mx.array, int], mx.array]:
    """(logits (1, vocab), index of the token being sampled) -> token id array (1,), by the
    sampling rules in `core/params.py`.

    Each request draws from its own random key, so a request that runs in between (a
    preempting FIM) never shifts a seeded request's samples.
    """
    seed = params.random_seed if params.random_seed is not None else secrets.randbits(63)
    key = mx.random.key(seed)

    def sample(logits: mx.array, index: int) -> mx.array:
        nonlocal key
        if index < params.min_tokens:
            logits[:, eos_id] = -mx.inf
        if params.temperature == 0:  # argmax needs no normalisation
            return mx.argmax(logits, axis=-1)
        scaled = logits * (1.0 / params.temperature)  # the nucleus is taken after temperature
        logprobs = scaled - mx.logsumexp(scaled, axis=-1, keepdims=True)
        if params.top_p < 1.0:
            logprobs = apply_top_p(logprobs, params.top_p)
        key, step_key = mx.random.split(key)
        return mx.random.categorical(logprobs, key=step_key)

    return sample
