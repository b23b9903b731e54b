"""Codestral (the Mistral architecture) as a compact PyTorch module, in the spirit of gpt-fast.

References: gpt-fast `model.py` (KV cache indexed by position, SDPA, weights assigned from the
meta device), Hugging Face `modeling_mistral.py` (the numerics to match: RMSNorm in float32,
half-split RoPE, SwiGLU). Module names follow Hugging Face's so a checkpoint's state dict maps
one to one. The model knows nothing of quantization: `quantize_int8` swaps its Linear layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..weights.model_config import ModelConfig

CACHE_STEP = 256  # KV capacity grows in steps of this many tokens
PACKED_MAX_ROWS = 16  # up to this many tokens, int8 matmuls read the packed weights directly
QUANTIZE_ROWS = 1024  # rows quantized together at load


class KVCache:
    """Keys and values of one token sequence, all layers, written at their positions."""

    def __init__(self, args: ModelConfig, dtype: torch.dtype, device: torch.device):
        self.shape = (args.num_hidden_layers, args.num_key_value_heads, 0, args.head_dim)
        self.dtype, self.device = dtype, device
        self.keys = torch.empty(self.shape, dtype=dtype, device=device)  # (L, n_kv, capacity, hd)
        self.values = torch.empty_like(self.keys)
        self.length = 0

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

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


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()  # normalise in float32, as the reference does
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, args: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = (
            args.num_attention_heads,
            args.num_key_value_heads,
            args.head_dim,
        )
        self.q_proj = nn.Linear(args.hidden_size, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(args.hidden_size, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(args.hidden_size, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, args.hidden_size, bias=False)

    def forward(self, x, rope, cache: KVCache, layer: int, start: int, mask) -> torch.Tensor:
        T = x.shape[1]
        q = self.q_proj(x).view(1, T, self.n_heads, self.head_dim).transpose(1, 2)  # (1, H, T, hd)
        k = self.k_proj(x).view(1, T, self.n_kv, self.head_dim).transpose(1, 2)  # (1, KV, T, hd)
        v = self.v_proj(x).view(1, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = _rotate(q, rope), _rotate(k, rope)
        end = start + T
        cache.keys[layer, :, start:end] = k[0]
        cache.values[layer, :, start:end] = v[0]
        keys = cache.keys[layer, :, :end].unsqueeze(0)  # (1, KV, S, hd)
        values = cache.values[layer, :, :end].unsqueeze(0)
        # From position 0 the mask is plain causal: let SDPA use its fused causal path.
        causal = mask is not None and start == 0
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=None if causal else mask, is_causal=causal, enable_gqa=True
        )
        return self.o_proj(out.transpose(1, 2).reshape(1, T, -1))  # (1, T, D)


class MLP(nn.Module):
    def __init__(self, args: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.up_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.down_proj = nn.Linear(args.intermediate_size, args.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, args: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.self_attn = Attention(args)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.mlp = MLP(args)

    def forward(self, x, rope, cache, layer, start, mask) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, cache, layer, start, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, args: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.num_hidden_layers))
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps)


class Transformer(nn.Module):
    """tokens at positions [start, start+T) -> the logits of the last `rows` of them (0: none,
    the prompt's body only), reading and writing `cache`."""

    def __init__(self, args: ModelConfig):
        super().__init__()
        self.args = args
        self.model = Body(args)
        self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor, cache: KVCache, *, rows: int = 1) -> torch.Tensor:
        T, start = tokens.shape[0], cache.length
        cache.reserve(start + T)
        positions = torch.arange(start, start + T, device=tokens.device)
        rope = _rope(positions, self.args, self.model.embed_tokens.weight.dtype)
        # Causal within the new block; every cached position is visible. One token needs none.
        mask = None
        if T > 1:
            mask = torch.ones(T, start + T, dtype=torch.bool, device=tokens.device).tril(start)
        x = self.model.embed_tokens(tokens)[None]  # (1, T, D)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, rope, cache, i, start, mask)
        cache.length = start + T
        x = self.model.norm(x[:, T - rows :])
        return self.lm_head(x)[0]  # (rows, vocab)


def _rope(
    positions: torch.Tensor, args: ModelConfig, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    half = torch.arange(0, args.head_dim, 2, dtype=torch.int64, device=positions.device).float()
    inv_freq = 1.0 / (args.rope_theta ** (half / args.head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (T, hd/2)
    angles = torch.cat((freqs, freqs), dim=-1)  # (T, hd)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    cos, sin = rope
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class Int8Linear(nn.Module):
    """Weight-only int8 (per output channel, symmetric) in place of an `nn.Linear`.

    On the CPU the matmul reads the int8 weights directly (`_weight_int8pack_mm`, bf16
    activations): a quarter of float32's bytes per decoded token, which is what decode speed
    is bound by. Elsewhere the weight is dequantized per call (fuse it with torch.compile).
    """

    def __init__(self, out_features: int, in_features: int, dtype: torch.dtype, packed: bool):
        super().__init__()
        self.packed = packed
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.empty(out_features, dtype=scale_dtype(dtype, packed)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if self.packed and rows <= PACKED_MAX_ROWS:  # decoding: bandwidth-bound
            flat = x.reshape(rows, x.shape[-1]).to(torch.bfloat16)  # (tokens, in)
            out = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales)
            return out.to(x.dtype).reshape(*x.shape[:-1], -1)
        # Prefill (many rows) is compute-bound: one dequantization, then a dense matmul.
        return F.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)


def scale_dtype(dtype: torch.dtype, packed: bool) -> torch.dtype:
    return torch.bfloat16 if packed else dtype


def quantize_weight(w: torch.Tensor, packed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, per-row scale) of a float weight (out, in), a block of rows at a time so
    the float32 temporaries stay small next to the weight itself."""
    q = torch.empty(w.shape, dtype=torch.int8, device=w.device)
    scales = torch.empty(w.shape[0], dtype=torch.float32, device=w.device)
    for start in range(0, w.shape[0], QUANTIZE_ROWS):
        block = w[start : start + QUANTIZE_ROWS].float()
        scale = block.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        q[start : start + QUANTIZE_ROWS] = torch.round(block / scale[:, None]).to(torch.int8)
        scales[start : start + QUANTIZE_ROWS] = scale
    return q, scales.to(scale_dtype(w.dtype, packed))


def quantize_int8(module: nn.Module, dtype: torch.dtype, packed: bool) -> list[str]:
    """Swap every Linear below `module` for an empty `Int8Linear`, in place (on the meta device
    before loading, so the float weights never all exist at once); returns their names."""
    swapped = []
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child.out_features, child.in_features, dtype, packed))
            swapped.append(name)
        else:
            swapped += [f"{name}.{inner}" for inner in quantize_int8(child, dtype, packed)]
    return swapped


class StaticDecoder(nn.Module):
    """A decode step with nothing dynamic in it, for CUDA graphs or `torch.compile`: one KV slot
    preallocated at a fixed capacity (module buffers, so a captured graph keeps their
    addresses), RoPE tables as buffers, positions as a tensor, attention over the whole slot
    with a mask, and the next token chosen on the device. Reading T tokens (1, or a
    speculative draft of k with its current token) is one call with a fixed T, so each T is one
    graph. The slot is filled from a request's KV cache before decoding and copied back after,
    so the prompt cache keeps exact-length entries (what it counts in `prompt_cache_bytes`).
    """

    def __init__(self, model: Transformer, capacity: int):
        super().__init__()
        args, weight = model.args, model.model.embed_tokens.weight
        self.model, self.capacity = model, capacity
        shape = (args.num_hidden_layers, args.num_key_value_heads, capacity, args.head_dim)
        self.register_buffer("keys", torch.zeros(shape, dtype=weight.dtype, device=weight.device))
        self.register_buffer("values", torch.zeros_like(self.keys))
        cos, sin = _rope(torch.arange(capacity, device=weight.device), args, weight.dtype)
        self.register_buffer("cos", cos)  # (capacity, hd)
        self.register_buffer("sin", sin)
        self.register_buffer("slots", torch.arange(capacity, device=weight.device))

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

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

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens, positions (T,) -> logits (T, vocab); writes their keys and values."""
        model, body = self.model, self.model.model
        T = tokens.shape[0]
        cos, sin = self.cos[positions], self.sin[positions]
        mask = self.slots[None, :] <= positions[:, None]  # (T, capacity): causal, and no
        x = body.embed_tokens(tokens)[None]  # unwritten slot is ever seen
        for i, block in enumerate(body.layers):
            attn, h = block.self_attn, block.input_layernorm(x)
            q = attn.q_proj(h).view(1, T, attn.n_heads, attn.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(1, T, attn.n_kv, attn.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(1, T, attn.n_kv, attn.head_dim).transpose(1, 2)
            q, k = _rotate(q, (cos, sin)), _rotate(k, (cos, sin))
            self.keys[i].index_copy_(1, positions, k[0])
            self.values[i].index_copy_(1, positions, v[0])
            out = F.scaled_dot_product_attention(
                q, self.keys[i][None], self.values[i][None], attn_mask=mask, enable_gqa=True
            )
            x = x + attn.o_proj(out.transpose(1, 2).reshape(1, T, -1))
            x = x + block.mlp(block.post_attention_layernorm(x))
        return model.lm_head(body.norm(x))[0]
