"""Codestral (the Mistral architecture) as a compact PyTorch module, in the spirit of gpt-fast.

References: gpt-fast `model.py` (KV cache indexed by position, SDPA, weights assigned from the
meta device), Hugging Face `modeling_mistral.py` (the numerics to match: RMSNorm in float32,
half-split RoPE, SwiGLU). Module names follow Hugging Face's so a checkpoint's state dict maps
one to one. There is one forward pass; the cache it reads and writes is swapped, as in
Hugging Face's `Cache` classes: a growing `KVCache` or the static decode slot
(`torch_cache.py`). The model knows nothing of quantization: `torch_quant.quantize_linears`
swaps its Linear layers for int8 or int4 ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..weights.model_config import ModelConfig
from .torch_cache import Cache, Window


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

    def forward(self, x, rope, cache: Cache, layer: int, window: Window) -> torch.Tensor:
        """x (1, T, D) -> (1, T, D): the attention of the new tokens over the cache's window,
        whose keys and values they first write at their positions."""
        T = x.shape[1]
        q = self.q_proj(x).view(1, T, self.n_heads, self.head_dim).transpose(1, 2)  # (1, H, T, hd)
        k = self.k_proj(x).view(1, T, self.n_kv, self.head_dim).transpose(1, 2)  # (1, KV, T, hd)
        v = self.v_proj(x).view(1, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = _rotate(q, rope), _rotate(k, rope)
        cache.keys[layer].index_copy_(1, window.positions, k[0])  # (KV, capacity, hd)
        cache.values[layer].index_copy_(1, window.positions, v[0])
        keys = cache.keys[layer, :, : window.visible][None]  # (1, KV, S, hd)
        values = cache.values[layer, :, : window.visible][None]
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=window.mask, is_causal=window.causal, enable_gqa=True
        )  # (1, H, T, hd)
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

    def forward(self, x, rope, cache: Cache, layer: int, window: Window) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, cache, layer, window)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, args: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.num_hidden_layers))
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps)


class Transformer(nn.Module):
    """tokens (T,) at the cache's next positions -> the logits of the last `rows` of them (0:
    none, the prompt's body only), their keys and values written to `cache`: a growing
    `KVCache`, or a static slot's `at(positions)` (`torch_cache.py`)."""

    def __init__(self, args: ModelConfig):
        super().__init__()
        self.args = args
        self.model = Body(args)
        self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor, cache: Cache, *, rows: int = 1) -> torch.Tensor:
        T = tokens.shape[0]
        window = cache.window(T)
        rope = _rope(window.positions, self.args, self.model.embed_tokens.weight.dtype)
        x = self.model.embed_tokens(tokens)[None]  # (1, T, D)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, rope, cache, i, window)
        cache.advance(T)
        if rows == 0:  # a prompt chunk: no output head
            return x.new_empty((0, self.args.vocab_size))
        x = self.model.norm(x[:, T - rows :])
        return self.lm_head(x)[0]  # (rows, vocab)


def _rope(
    positions: torch.Tensor, args: ModelConfig, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (T, hd) of the rotary angles at `positions` (T,), half-split."""
    half = torch.arange(0, args.head_dim, 2, dtype=torch.int64, device=positions.device).float()
    inv_freq = 1.0 / (args.rope_theta ** (half / args.head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (T, hd/2)
    angles = torch.cat((freqs, freqs), dim=-1)  # (T, hd)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    cos, sin = rope
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin
