"""The backend registry is the one place a backend is described: what preflight, pull and the
CLI ask of each backend comes from it and agrees with itself."""

from __future__ import annotations

import pytest

from codestral_engine import commands, hub
from codestral_engine.assembly.preflight import codestral_22b_plans
from codestral_engine.assembly.releases import releases_for
from codestral_engine.backends import LOAD_OPTIONS, REGISTRY, resolve
from codestral_engine.backends.memory import MEMORY
from codestral_engine.backends.options import QUANTIZERS
from codestral_engine.cli import build_parser
from codestral_engine.errors import EngineError
from codestral_engine.weights.checkpoint import inspect


@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_spec_is_complete_and_consistent(name):
    spec = REGISTRY[name]
    assert spec.name == name and spec.label and spec.install_hint
    assert MEMORY[name].name == name  # what it holds, beside how it runs
    releases = releases_for(name)
    assert any(release.automatic for release in releases.values())
    assert {release.form for release in releases.values()} <= set(codestral_22b_plans(8192))
    for quant, release in releases.items():  # pull can choose every release
        assert hub.choose(name, quant, None).repo == release.repo


def test_each_load_option_and_quantizer_is_declared_once_and_reaches_the_cli():
    """`--static-decode` and friends come from the declarations: each one a flag of the
    commands that load, its value handed to `load` under the declared name."""
    assert len({option.name for option in LOAD_OPTIONS}) == len(LOAD_OPTIONS)
    for command in (["serve"], ["complete", "--prompt", "x"]):
        args = build_parser().parse_args([*command, "--static-decode", "off", "--quantize", "int4"])
        options = commands._load_options(args)
        assert {option.name for option in LOAD_OPTIONS} <= set(options)
        assert options["static_decode"] == "off" and options["quantize"] == "int4"
    quantize = next(option for option in LOAD_OPTIONS if option.name == "quantize")
    assert quantize.choices == tuple(q.name for q in QUANTIZERS) == REGISTRY["torch"].quantizers
    assert set(codestral_22b_plans(8192)) >= {q.name for q in QUANTIZERS}


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
