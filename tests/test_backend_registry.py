"""The backend registry is the one place a backend is described: what preflight, pull and the
CLI ask of each backend comes from it and agrees with itself."""

from __future__ import annotations

import pytest

from codestral_engine import hub
from codestral_engine.backends import REGISTRY, resolve
from codestral_engine.cli import build_parser
from codestral_engine.errors import EngineError
from codestral_engine.weights.checkpoint import inspect
from codestral_engine.weights.preflight import codestral_22b_plans


@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_spec_is_complete_and_consistent(name):
    spec = REGISTRY[name]
    assert spec.name == name and spec.label and spec.install_hint
    assert spec.automatic and set(spec.automatic) <= set(spec.releases)
    assert set(spec.release_plans) == set(spec.releases)
    assert set(spec.release_plans.values()) <= set(codestral_22b_plans(8192))
    for quant in spec.releases:  # pull can choose every release
        assert hub.choose(name, quant, None).repo == spec.releases[quant]


def test_the_cli_offers_every_registered_backend():
    serve = build_parser().parse_args(["serve", "--backend", list(REGISTRY)[-1]])
    assert serve.backend == list(REGISTRY)[-1]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--backend", "no-such-backend"])


def test_unknown_backends_and_options_say_what_exists(models):
    with pytest.raises(EngineError, match="Choose one of: auto, " + ", ".join(REGISTRY)):
        resolve("no-such-backend")
    assert resolve("auto").name in REGISTRY
    checkpoint = inspect(models["hf"])
    with pytest.raises(EngineError, match=r"PyTorch backend takes no colour option \(it takes"):
        REGISTRY["torch"].load(checkpoint, lambda f, s: None, colour="blue")
    with pytest.raises(EngineError, match=r"MLX backend takes no dtype.*backend='torch'"):
        REGISTRY["mlx"].load(checkpoint, lambda f, s: None, dtype="float16")
