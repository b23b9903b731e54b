"""PyTorch backend: CUDA GPUs, and the fast CPU fallback on machines without MLX's Metal.

Weights are created on the meta device and loaded by assignment, tensor by tensor, from the
same three checkpoint layouts as the MLX backend, so loading never holds two copies
(`torch_weights.py`). The step loop mirrors the MLX one (chunked prefill with cancellation
points, then one token at a time).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
import psutil
import torch

from ..core.backend import PrefillProgress, prefill_passes
from ..core.params import GenerationParams
from ..core.speculative import MAX_DRAFT, Acceptor, PromptLookup, decode
from ..errors import ModelLoadError
from ..weights.checkpoint import Checkpoint
from .registry import TorchSpec
from .torch_cache import KVCache, StaticSlot
from .torch_model import Transformer
from .torch_weights import DTYPES, build_model

MIN_SLOT = 1024  # tokens: the static slot's smallest capacity (it doubles as needed)
SLOT_SLACK = 64  # room for this many new tokens before the slot must grow


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        model: Transformer,
        device: torch.device,
        dtype: torch.dtype,
        static_decode: str | None = None,
        quantize: str | None = None,
    ):
        self.model = model
        self.torch_device = device
        self.device = str(device)
        self.dtype = dtype
        self._peak_rss = 0
        self.threads = torch.get_num_threads() if device.type == "cpu" else None
        self.static_decode = static_decode  # how decode steps run (see `load`)
        self._slot: StaticSlot | None = None
        self._step = None
        self.slot_owner: _SlotRun | None = None  # whose tokens the slot holds now
        self.slot_limit: int | None = None  # the engine's context window, when it says
        # Speculative decoding by default where it was measured to win: float weights on the
        # CPU (1.95x at 60% acceptance, 0.95x at 0%: bench/README.md). Not int8 or int4 there,
        # whose multi-row passes cost more (0.88x at 0%, 1.0x at 60%). CUDA: not measured yet.
        self.speculates = device.type == "cpu" and quantize is None

    def new_cache(self) -> KVCache:
        return KVCache(self.model.args, self.dtype, self.torch_device)

    @torch.inference_mode()
    def generate(
        self,
        tokens: list[int],
        cache: KVCache,
        params: GenerationParams,
        *,
        eos_id: int,
        max_new_tokens: int,
        prefill_chunk: int,
        on_prefill: PrefillProgress,
        drafter: PromptLookup | None = None,
    ) -> Iterator[int]:
        sample = make_sampler(params, eos_id, self.torch_device)
        prompt = torch.tensor(tokens, dtype=torch.long, device=self.torch_device)
        total, done = len(tokens), 0
        # The prompt's last part (on a warm cache, the few typed tokens) is read by the first
        # decode step itself: one pass instead of two. The static slot takes one token.
        on_prefill(0, total)
        for n in prefill_passes(total, prefill_chunk, to_last_token=bool(self.static_decode)):
            self.model(prompt[done : done + n], cache, rows=0)
            done += n
            self._note_memory()
            on_prefill(done, total)
        if self.static_decode:
            yield from self._static(
                tokens[done:], cache, params, sample, eos_id, max_new_tokens, drafter
            )
            self._note_memory()
            return
        if drafter is not None:
            verify = self._verifier(cache, params, eos_id)
            acceptor = Acceptor(params, eos_id)
            yield from decode(
                verify,
                lambda n: cache.trim_to(cache.length - n),
                tokens[done:],
                drafter,
                acceptor,
                max_new_tokens,
            )
            self._note_memory()
            return
        logits = self.model(prompt[done:], cache)  # (1, vocab)
        for index in range(max_new_tokens):
            token = int(sample(logits[-1], index))
            yield token
            if index + 1 < max_new_tokens:
                logits = self.model(torch.tensor([token], device=self.torch_device), cache)
        self._note_memory()

    def _static(
        self,
        last: list[int],
        cache: KVCache,
        params,
        sample,
        eos_id: int,
        max_new_tokens: int,
        drafter: PromptLookup | None,
    ) -> Iterator[int]:
        """Decode through the static slot: the request's cache is copied in, every step reads
        and writes the slot, and what was fed is copied back at the end (also when the caller
        stops early). Plain decoding runs one step ahead: the next step is queued on the
        device before the current token is read back."""
        start = cache.length
        end = start + len(last) + max_new_tokens  # the most this request can fill
        run = _SlotRun(self, cache, min(end, start + len(last) + SLOT_SLACK), end)
        try:
            if drafter is not None:
                acceptor = Acceptor(params, eos_id)
                yield from decode(
                    run.verifier(params, eos_id), run.trim, last, drafter, acceptor, max_new_tokens
                )
                return
            token = sample(run.step(last)[-1], 0)
            for index in range(max_new_tokens):
                following = None
                if index + 1 < max_new_tokens:
                    following = sample(run.step(token.view(1))[-1], index + 1)
                yield int(token)
                token = following
        finally:
            run.finish()

    def slot(self, capacity: int) -> tuple[StaticSlot, Callable]:
        """The static slot with room for `capacity` tokens, and its step compiled as
        `static_decode` says. Sizes are powers of two from MIN_SLOT (at most the context
        window), so a growing notebook meets a handful of shapes, each compiled once."""
        if self._slot is None or self._slot.capacity < capacity:
            size = MIN_SLOT
            while size < capacity:
                size *= 2
            if self.slot_limit is not None:
                size = max(capacity, min(size, self.slot_limit))
            self._slot = StaticSlot(self.model.args, size, self.dtype, self.torch_device)
            self._step = compiled(slot_step(self.model, self._slot), self.static_decode)
        return self._slot, self._step

    def _verifier(self, cache: KVCache, params: GenerationParams, eos_id: int):
        """The model's reading of a fed block: argmaxes (greedy) or float32 logits rows."""

        def verify(feed: list[int], rows: int, index: int, greedy: bool):
            ids = torch.tensor(feed, dtype=torch.long, device=self.torch_device)
            logits = self.model(ids, cache, rows=rows)  # (rows, vocab)
            return _verdict(logits, params, eos_id, index, greedy)

        return verify

    @torch.inference_mode()
    def logits(self, tokens: list[int]) -> np.ndarray:
        cache = self.new_cache()
        ids = torch.tensor(tokens, dtype=torch.long, device=self.torch_device)
        out = self.model(ids, cache, rows=len(tokens))  # (T, vocab)
        return out.float().cpu().numpy()[None]

    def reset_peak_memory(self) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.torch_device)
        self._peak_rss = psutil.Process().memory_info().rss

    def peak_memory(self) -> int:
        if self.torch_device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.torch_device))
        return self._peak_rss

    def release_thread(self) -> None:
        pass

    def _note_memory(self) -> None:
        if self.torch_device.type != "cuda":
            self._peak_rss = max(self._peak_rss, psutil.Process().memory_info().rss)


class _SlotRun:
    """One request's decoding through the static slot: where it stands in the slot. A more
    urgent request may run between two of its steps (the engine's preemption) and take the
    slot: its tokens are first copied back to its cache, and reloaded when it goes on."""

    def __init__(self, backend: TorchBackend, cache: KVCache, capacity: int, end: int):
        self.backend, self.cache, self.end = backend, cache, end
        self.start = self.position = cache.length
        self.device = backend.torch_device
        self._claim(capacity)

    def _claim(self, capacity: int) -> None:
        owner = self.backend.slot_owner
        if owner is not None and owner is not self:
            owner.flush()
        self.flush()
        self.slot, self.compiled = self.backend.slot(capacity)
        self.slot.load(self.cache)
        self.backend.slot_owner = self

    def flush(self) -> None:
        """Copy what the slot holds of this request back to its cache."""
        if self.backend.slot_owner is self and self.position > self.start:
            self.slot.store(self.cache, self.start, self.position)
        self.start = self.position

    def step(self, tokens) -> torch.Tensor:
        """Feed `tokens` (a list or a device tensor) at the next positions: their logits."""
        ids = tokens if isinstance(tokens, torch.Tensor) else torch.tensor(tokens)
        n = ids.shape[0]
        if self.backend.slot_owner is not self or self.position + n > self.slot.capacity:
            # Preempted meanwhile, or the slot must grow: through the request's cache.
            self._claim(min(self.position + n + SLOT_SLACK, self.end))
        positions = torch.arange(self.position, self.position + n, device=self.device)
        self.position += n
        return self.compiled(ids.to(self.device), positions)

    def trim(self, n: int) -> None:
        """Forget the last `n` positions: rejected drafts, written by the step just before
        (a preemption only comes between yielded tokens, so they are never copied back)."""
        self.position -= n

    def verifier(self, params: GenerationParams, eos_id: int):
        def verify(feed: list[int], rows: int, index: int, greedy: bool):
            # (a graph's output is overwritten by its next run: hence the copy)
            logits = self.step(feed)[len(feed) - rows :].clone()
            return _verdict(logits, params, eos_id, index, greedy)

        return verify

    def finish(self) -> None:
        self.flush()
        self.cache.trim_to(self.position)
        if self.backend.slot_owner is self:
            self.backend.slot_owner = None


def _verdict(logits: torch.Tensor, params: GenerationParams, eos_id: int, index: int, greedy: bool):
    """What speculative decoding reads of the logits rows of a verified block (the first row's
    token is number `index`): argmaxes, or float32 rows for sampling."""
    masked = params.min_tokens - index  # rows whose token may not end the sequence
    if masked > 0:
        logits[:masked, eos_id] = -float("inf")
    return logits.argmax(-1).tolist() if greedy else logits.float().cpu().numpy()


def slot_step(model: Transformer, slot: StaticSlot) -> Callable:
    """The decode step through the static slot: tokens, positions (T,) -> logits (T, vocab),
    their keys and values written at those positions. Nothing dynamic in it (the positions are
    a tensor, every shape is fixed by T and the slot's capacity), so each T is one graph."""

    def step(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return model(tokens, slot.at(positions), rows=tokens.shape[0])

    return step


def compiled(step: Callable, how: str) -> Callable:
    """The slot's step: as is ("eager"), or through `torch.compile`: "reduce-overhead"
    (inductor with CUDA graphs: the decode path for CUDA), or another compile backend by name
    ("aot_eager" checks the whole graph cheaply in tests)."""
    if how == "eager":
        return step
    # One graph per slot size (powers of two up to the window) and block length (1 to
    # MAX_DRAFT + 1): room for all of them, instead of dynamo's default of 8.
    graphs = 2 * (MAX_DRAFT + 1) * 16
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, graphs)
    torch._dynamo.config.accumulated_recompile_limit = max(
        torch._dynamo.config.accumulated_recompile_limit, 4 * graphs
    )
    if how == "reduce-overhead":
        return torch.compile(step, mode=how, fullgraph=True, dynamic=False)
    return torch.compile(step, backend=how, fullgraph=True, dynamic=False)


def device_memory(device: str) -> tuple[int, str] | None:
    """Free memory on a CUDA device (None on the CPU: the caller uses available RAM)."""
    if not device.startswith("cuda"):
        return None
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free), f"free memory on {device}"


THREADS_ENV = "CODESTRAL_ENGINE_THREADS"


def cpu_threads(asked: int | None = None) -> int:
    """Compute threads on the CPU: `asked`, else $CODESTRAL_ENGINE_THREADS, else one per
    physical core but one, which is left to JupyterLab, the browser and the kernel (on a busy
    2-core machine, two threads ran ~10x slower than one: bench/README.md)."""
    if asked is None and os.environ.get(THREADS_ENV, "").strip():
        try:
            asked = int(os.environ[THREADS_ENV])
        except ValueError:
            raise ModelLoadError(
                f"${THREADS_ENV} must be a whole number of threads, got "
                f"{os.environ[THREADS_ENV]!r}."
            ) from None
    if asked is not None:
        if asked < 1:
            raise ModelLoadError(f"threads must be at least 1, got {asked}.")
        return asked
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):  # a container or taskset may allow fewer
        cores = min(cores, len(os.sched_getaffinity(0)))
    return max(1, cores - 1)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load(
    checkpoint: Checkpoint,
    progress: Callable[[float, str], None],
    *,
    device: str | None = None,
    dtype: str | None = None,
    quantize: str | None = None,
    threads: int | None = None,
    static_decode: str | None = None,
) -> TorchBackend:
    """The backend running `checkpoint` (built by `torch_weights.build_model`). The options
    are those `TorchSpec.accepted` has let through (`options.py` declares their values).

    dtype: float32 / float16 / bfloat16 (default: bfloat16 on CUDA, the checkpoint's own
    float type on CPU, float32 if that is half precision); quantize: None, "int8" or "int4"
    (weight-only, quantized as the weights are read: `quantize_linears`);
    threads: CPU compute threads (default: `cpu_threads()`); static_decode: decode steps
    through a preallocated KV slot with a graph-safe step (`slot_step`), compiled by
    `torch.compile` as named ("reduce-overhead": inductor and CUDA graphs; "aot_eager"; or
    "eager", not compiled); "off" for the dynamic step. Default: "reduce-overhead" on CUDA,
    off on the CPU (where the dynamic step is as fast: bench/README.md).
    """
    device, dtype = TorchSpec().target(checkpoint, device, dtype)
    target, chosen = torch.device(device), DTYPES[dtype]
    if target.type == "cpu":
        torch.set_num_threads(cpu_threads(threads))
    static = TorchSpec.static_decode(static_decode, device)
    if static not in (None, "reduce-overhead", *torch._dynamo.list_backends(exclude_tags=())):
        raise ModelLoadError(
            f"static_decode {static!r} is not a way to run decode steps: use off, eager, "
            "reduce-overhead or a torch.compile backend (aot_eager, inductor)."
        )  # checked before the weights are read: a typo fails at once, not at the first request
    model = build_model(checkpoint, target, chosen, quantize, progress)
    return TorchBackend(model, target, chosen, static, quantize)


def make_sampler(
    params: GenerationParams, eos_id: int, device: torch.device
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """(logits (vocab,), index of the token being sampled) -> token id (0-d tensor), by the
    sampling rules in `core/params.py`.

    A generator per request keeps seeded sampling reproducible whatever runs in between.
    """
    generator = torch.Generator(device=device)
    if params.random_seed is not None:
        generator.manual_seed(params.random_seed)
    else:
        generator.seed()

    def sample(logits: torch.Tensor, index: int) -> torch.Tensor:
        if index < params.min_tokens:
            logits = logits.clone()
            logits[eos_id] = -float("inf")
        if params.temperature == 0:
            return logits.argmax()
        probs = torch.softmax(logits.float() / params.temperature, dim=-1)
        if params.top_p < 1.0:
            ordered, order = probs.sort(descending=True)
            outside = ordered.cumsum(-1) - ordered >= params.top_p  # keep the smallest nucleus
            probs = probs.scatter(0, order, ordered.masked_fill(outside, 0.0))
        return torch.multinomial(probs, 1, generator=generator)[0]

    return sample
