"""One statement of the sampling rules (`core/params.py`), and each backend's sampler held to it:
greedy, the min_tokens end-of-sequence mask, temperature, and the top-p nucleus."""

from __future__ import annotations

import numpy as np
import pytest

from codestral_engine.core.params import GenerationParams, sampling_distribution

LOGITS = np.array([2.0, 1.5, 1.2, 0.3, -0.5, -1.0, 0.9, 1.9], dtype=np.float32)
EOS = 0  # the most likely token here
DRAWS = 4000


def sampler_for(backend: str, params: GenerationParams):
    """The backend's own sampler, as a function from numpy logits to a token id."""
    if backend == "mlx":
        import mlx.core as mx

        from codestral_engine.backends.mlx import make_sampler

        sample = make_sampler(params, EOS)
        return lambda logits, index: int(sample(mx.array(logits[None, :]), index).item())
    if backend == "torch":
        import torch

        from codestral_engine.backends.torch import make_sampler

        sample = make_sampler(params, EOS, torch.device("cpu"))
        return lambda logits, index: int(sample(torch.from_numpy(logits.copy()), index))
    pytest.fail(f"no sampler adapter for the {backend} backend: add one here")


def frequencies(sample, index: int = 5) -> np.ndarray:
    counts = np.bincount([sample(LOGITS, index) for _ in range(DRAWS)], minlength=len(LOGITS))
    return counts / DRAWS


def test_greedy_takes_the_most_likely_token_after_the_eos_mask(backend):
    params = GenerationParams(temperature=0.0, min_tokens=2)
    sample = sampler_for(backend, params)
    assert sample(LOGITS, 0) == 7  # end of sequence is masked before min_tokens
    assert sample(LOGITS, 2) == EOS
    assert np.argmax(sampling_distribution(LOGITS, params, 0, EOS)) == 7


# The last two keep another nucleus than top_p taken before temperature would: the order counts.
@pytest.mark.parametrize(
    "temperature,top_p", [(1.0, 1.0), (0.6, 1.0), (1.5, 0.6), (2.0, 0.5), (0.5, 0.8)]
)
def test_sampling_follows_the_stated_distribution(backend, temperature, top_p):
    params = GenerationParams(temperature=temperature, top_p=top_p, random_seed=3)
    expected = sampling_distribution(LOGITS, params, 5, EOS)
    got = frequencies(sampler_for(backend, params))
    assert set(np.flatnonzero(got)) <= set(np.flatnonzero(expected))  # never outside the nucleus
    assert np.abs(got - expected).max() < 0.04, (got.round(3), expected.round(3))


def test_the_eos_mask_applies_when_sampling_too(backend):
    params = GenerationParams(temperature=1.0, min_tokens=10, random_seed=4)
    got = frequencies(sampler_for(backend, params), index=3)
    assert got[EOS] == 0.0
    assert np.abs(got - sampling_distribution(LOGITS, params, 3, EOS)).max() < 0.04


def test_the_reference_nucleus():
    params = GenerationParams(temperature=1.0, top_p=0.5)
    kept = np.flatnonzero(sampling_distribution(LOGITS, params, 5, EOS))
    assert set(kept) == {0, 7}  # the two most likely hold 0.5 of the mass only together
    assert sampling_distribution(LOGITS, GenerationParams(temperature=1.0, top_p=1e-9), 5, EOS)[
        0
    ] == pytest.approx(1.0)
