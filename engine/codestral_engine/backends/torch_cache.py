"""Where the PyTorch model's one forward pass (`torch_model.Transformer`) keeps keys and values.

References: Hugging Face transformers' `Cache` classes (one forward, the cache swapped:
`DynamicCache`, `StaticCache`) and gpt-fast's `KVCache` (preallocated, indexed by position).
Both caches here hold keys and values as (layers, n_kv, capacity, head_dim), written by the
attention at the new tokens' positions; they differ in where those positions come from, how
much of the buffer a pass attends over, and with which mask:

- `KVCache` grows with the sequence: a request's cache, prefill, the CPU's decode steps and
  the prompt cache's entries.
- `StaticSlot` is fixed-size, for CUDA graphs and `torch.compile`: module buffers (a captured
  graph keeps their addresses), positions given as a tensor, attention over the whole slot
  with a mask, so a step has static shapes and no data-dependent Python.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import nn

from ..weights.model_config import ModelConfig

CACHE_STEP = 256  # KV capacity grows in steps of this many tokens


class Window(NamedTuple):
    """What one forward pass of T new tokens reads and writes of a cache."""

    positions: torch.Tensor  # (T,) where the new tokens' keys and values go
    visible: int  # the pass attends over the cache's positions [0, visible)
    mask: torch.Tensor | None  # (T, visible) bool, True where a token may attend, or None:
    causal: bool  # then True: plain causal from position 0 (SDPA's fused path); False: all


class Cache(Protocol):
    """The cache interface of the one forward pass."""

    keys: torch.Tensor  # (layers, n_kv, capacity, head_dim)
    values: torch.Tensor

    def window(self, count: int) -> Window:
        """Where the next `count` tokens go and what they attend over (room made for them)."""

    def advance(self, count: int) -> None:
        """The pass that asked for `window(count)` has written its keys and values."""


class KVCache:
    """Keys and values of one token sequence, all layers, growing as tokens are appended."""

    def __init__(self, args: ModelConfig, dtype: torch.dtype, device: torch.device):
        self.shape = (args.num_hidden_layers, args.num_key_value_heads, 0, args.head_dim)
        self.dtype, self.device = dtype, device
        self.keys = torch.empty(self.shape, dtype=dtype, device=device)  # (L, n_kv, capacity, hd)
        self.values = torch.empty_like(self.keys)
        self.length = 0

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def window(self, count: int) -> Window:
        """The next `count` positions: causal within them, every cached position visible."""
        start, end = self.length, self.length + count
        self.reserve(end)
        positions = torch.arange(start, end, device=self.device)
        if count == 1 or start == 0:  # no mask: SDPA's fused paths
            return Window(positions, end, None, count > 1)
        mask = torch.ones(count, end, dtype=torch.bool, device=self.device).tril(start)
        return Window(positions, end, mask, False)

    def advance(self, count: int) -> None:
        self.length += count

    def reserve(self, n: int) -> None:
        """Make room for `n` tokens (grows geometrically, so appends stay amortised O(1))."""
        capacity = self.keys.shape[2]
        if n <= capacity:
            return
        grown = max(n, 2 * capacity)
        grown = -(-grown // CACHE_STEP) * CACHE_STEP
        layers, heads, _, head_dim = self.shape
        keys = torch.empty((layers, heads, grown, head_dim), dtype=self.dtype, device=self.device)
        values = torch.empty_like(keys)
        keys[:, :, : self.length] = self.keys[:, :, : self.length]
        values[:, :, : self.length] = self.values[:, :, : self.length]
        self.keys, self.values = keys, values

    def trim_to(self, n: int) -> None:
        self.length = min(self.length, n)

    def prefix_copy(self, n: int) -> KVCache:
        copy = KVCache.__new__(KVCache)
        copy.shape, copy.dtype, copy.device = self.shape, self.dtype, self.device
        copy.keys = self.keys[:, :, :n].clone()
        copy.values = self.values[:, :, :n].clone()
        copy.length = n
        return copy


class StaticSlot(nn.Module):
    """One KV slot preallocated at a fixed capacity, for a decode step with nothing dynamic in
    it. A request's `KVCache` is copied in before decoding (`load`) and back after (`store`),
    so the prompt cache keeps exact-length entries (what it counts in `prompt_cache_bytes`).
    The forward pass reads it through `at(positions)`; which positions are taken is the
    caller's bookkeeping, so the slot has no length of its own."""

    def __init__(self, args: ModelConfig, capacity: int, dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.capacity = capacity
        shape = (args.num_hidden_layers, args.num_key_value_heads, capacity, args.head_dim)
        self.register_buffer("keys", torch.zeros(shape, dtype=dtype, device=device))
        self.register_buffer("values", torch.zeros_like(self.keys))
        self.register_buffer("slots", torch.arange(capacity, device=device))

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def at(self, positions: torch.Tensor) -> SlotPass:
        """The slot as the cache of one pass whose tokens go to `positions` (T,)."""
        return SlotPass(self, positions)

    def load(self, cache: KVCache) -> None:
        """Copy a request's cached keys and values into the slot."""
        n = cache.length
        self.keys[:, :, :n] = cache.keys[:, :, :n]
        self.values[:, :, :n] = cache.values[:, :, :n]

    def store(self, cache: KVCache, start: int, end: int) -> None:
        """Copy positions [start, end) back into the request's cache, which then ends there."""
        cache.reserve(end)
        cache.keys[:, :, start:end] = self.keys[:, :, start:end]
        cache.values[:, :, start:end] = self.values[:, :, start:end]
        cache.length = end


class SlotPass:
    """A `StaticSlot` as the cache of one pass: the whole slot visible, masked so that each
    token sees the positions up to its own and no unwritten slot is ever read."""

    def __init__(self, slot: StaticSlot, positions: torch.Tensor):
        self.keys, self.values = slot.keys, slot.values
        self.slots, self.positions = slot.slots, positions

    def window(self, count: int) -> Window:
        mask = self.slots[None, :] <= self.positions[:, None]  # (T, capacity)
        return Window(self.positions, self.slots.shape[0], mask, False)

    def advance(self, count: int) -> None:
        pass  # the caller keeps count (`backends.torch._SlotRun`)
