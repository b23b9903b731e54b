"""The model's architecture, typed and parsed once: what the backends, preflight and the engine
read from a checkpoint's `config.json` (or a Mistral-native `params.json` turned into it).
Unknown keys are ignored; a missing one is a `ModelLoadError` that names it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ModelLoadError


@dataclass(frozen=True)
class ModelConfig:
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> ModelConfig:
        try:
            heads = int(config["num_attention_heads"])
            hidden = int(config["hidden_size"])
            return cls(
                hidden_size=hidden,
                num_hidden_layers=int(config["num_hidden_layers"]),
                intermediate_size=int(config["intermediate_size"]),
                num_attention_heads=heads,
                num_key_value_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                vocab_size=int(config["vocab_size"]),
                rms_norm_eps=float(config["rms_norm_eps"]),
                rope_theta=float(config.get("rope_theta", 10000.0)),
            )
        except KeyError as exc:
            raise ModelLoadError(
                f"The model config has no {exc.args[0]!r}. Restore config.json (or params.json) "
                "from the model's release."
            ) from exc
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(
                f"The model config has a malformed value ({exc}). Restore it from the release."
            ) from exc

    @property
    def kv_values_per_token(self) -> int:
        """Keys and values one token adds to the KV cache, all layers."""
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim

    def parameter_counts(self) -> tuple[int, int]:
        """(parameters in Linear layers, all other parameters) of this Mistral-architecture
        model: what the backends' memory arithmetic (`backends/memory.py`) counts."""
        h, layers, vocab = self.hidden_size, self.num_hidden_layers, self.vocab_size
        heads, kv_heads = self.num_attention_heads, self.num_key_value_heads
        head_dim = self.head_dim
        attention = 2 * h * heads * head_dim + 2 * h * kv_heads * head_dim  # q, o; k, v
        per_layer = attention + 3 * h * self.intermediate_size
        linear = layers * per_layer + h * vocab  # + the output head
        other = h * vocab + layers * 2 * h + h  # embedding, two norms per layer, final norm
        return linear, other
