"""The codestral-engine command as a user runs it, in a subprocess."""

from __future__ import annotations

import json

import pytest
from mistral_common.protocol.fim.request import FIMRequest

from .helpers import run_cli


def test_complete_json_events(models, reference_tokenizer, mlx_lm_greedy):
    prompt, suffix = "def square(x):\n    return", "\n\nprint(square(3))"
    result = run_cli(
        "complete",
        "--model",
        str(models["mistral"]),
        "--prompt",
        prompt,
        "--suffix",
        suffix,
        "--max-tokens",
        "7",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    texts, final = events[:-1], events[-1]
    assert {e["type"] for e in texts} == {"text"}
    assert final["type"] == "finish"
    assert final["finish_reason"] == "length"
    expected_ids = reference_tokenizer.encode_fim(FIMRequest(prompt=prompt, suffix=suffix)).tokens
    assert final["prompt_token_ids"] == expected_ids
    assert final["completion_token_ids"] == mlx_lm_greedy(expected_ids, 7)
    assert [i for e in texts for i in e["token_ids"]] == final["completion_token_ids"]
    assert final["usage"]["completion_tokens"] == 7
    assert final["usage"]["cached_prompt_tokens"] == 0


def test_complete_reports_drafts_and_turns_speculation_off(models):
    """A prompt that starts with the model's own continuation of its end, so the first token
    it writes was seen before and lookup drafts what followed it; --no-speculative does not
    draft; both give the same tokens."""
    head = "import math\nradius = 3\narea = math.pi * radius"
    seen = run_cli(
        "complete",
        "--model",
        str(models["hf"]),
        "--backend",
        "torch",
        "--prompt",
        head,
        "--max-tokens",
        "12",
        "--no-speculative",
        "--json",
    )
    text = "".join(json.loads(line).get("text", "") for line in seen.stdout.splitlines())
    prompt = text + "\n" + head
    finals = {}
    for flag in ("--speculative", "--no-speculative"):
        result = run_cli(
            "complete",
            "--model",
            str(models["hf"]),
            "--backend",
            "torch",
            "--prompt",
            prompt,
            "--max-tokens",
            "12",
            "--json",
            flag,
        )
        assert result.returncode == 0, result.stderr
        finals[flag] = json.loads(result.stdout.splitlines()[-1])
    on, off = finals["--speculative"], finals["--no-speculative"]
    assert on["usage"]["draft_tokens"] > 0 and off["usage"]["draft_tokens"] == 0
    assert off["usage"]["accepted_draft_tokens"] == 0
    assert on["usage"]["accepted_draft_tokens"] <= on["usage"]["draft_tokens"]
    assert on["completion_token_ids"] == off["completion_token_ids"]


def test_complete_streams_plain_text(models, engine):
    result = run_cli(
        "complete", "--model", str(models["hf"]), "--prompt", "x =", "--max-tokens", "5"
    )
    assert result.returncode == 0, result.stderr
    expected = engine.fim("x =", max_tokens=5).result().text
    assert result.stdout == expected + "\n"


def test_builtin_tiny_model_and_codestral_model_env(models, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path), "CODESTRAL_MODEL": ""}
    first = run_cli("complete", "--prompt", "import os", "--max-tokens", "3", env=env)
    assert first.returncode == 0, first.stderr
    assert "built-in tiny demo model, whose output is gibberish" in first.stderr
    assert (tmp_path / "codestral-engine" / "tiny-mlx-v1" / "config.json").is_file()

    env["CODESTRAL_MODEL"] = str(models["mlx"])
    chosen = run_cli("complete", "--prompt", "import os", "--max-tokens", "3", env=env)
    assert chosen.returncode == 0, chosen.stderr
    assert "tiny demo model" not in chosen.stderr


def test_make_tiny_writes_a_loadable_native_model(tmp_path):
    result = run_cli("make-tiny", str(tmp_path / "m"), "--layout", "mistral", "--seed", "3")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["consolidated.safetensors", "params.json", "tokenizer.model.v3"]
    done = run_cli("complete", "--model", str(tmp_path / "m"), "--prompt", "a", "--max-tokens", "2")
    assert done.returncode == 0, done.stderr


def test_make_tiny_takes_a_shape(tmp_path):
    shape = ["--hidden", "64", "--heads", "4", "--kv-heads", "2", "--head-dim", "32"]
    result = run_cli("make-tiny", str(tmp_path / "m"), "--layout", "hf", *shape)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (config["hidden_size"], config["head_dim"], config["num_attention_heads"]) == (64, 32, 4)
    assert config["num_hidden_layers"] == 2  # the default where no option is given
    bad = run_cli("make-tiny", str(tmp_path / "n"), "--heads", "5")
    assert bad.returncode == 2 and "multiple of --kv-heads" in bad.stderr
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize(
    "args,code,fragment",
    [
        (["complete", "--prompt", "x", "--max-tokens", "many"], 2, "invalid int value"),
        (["complete"], 2, "--prompt"),
        (["complete", "--prompt", "x", "--backend", "tpu"], 2, "invalid choice"),
        (["complete", "--prompt", "x", "--max-tokens", "0"], 1, "max_tokens must be"),
        (["complete", "--prompt", "x", "--model", "/no/such/model"], 1, "does not exist"),
        (["frobnicate"], 2, "invalid choice"),
        (["serve", "--idle-timeout", "-5"], 2, "must be 0 (never) or more seconds"),
    ],
)
def test_bad_arguments_give_one_line_and_nonzero_exit(models, tmp_path, args, code, fragment):
    env = {"XDG_CACHE_HOME": str(tmp_path), "CODESTRAL_MODEL": str(models["mlx"])}
    result = run_cli(*args, env=env)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr
