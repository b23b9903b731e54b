"""The settings the magic and JupyterLab share, and the one rule for a remote endpoint."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from jupyter_codestral.client.settings import (
    CODESTRAL_URL,
    ENV_SETTINGS,
    PLATFORM_URL,
    CodestralSettings,
)
from jupyter_codestral.errors import CodestralError
from jupyter_codestral.lab.engine_link import CodestralCompletion
from jupyter_codestral.magic.magics import Codestral


@pytest.fixture
def no_keys(monkeypatch):
    for name in ("CODESTRAL_API_KEY", "MISTRAL_API_KEY", *ENV_SETTINGS.values()):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_endpoint_follows_the_key_the_user_has(no_keys):
    settings = CodestralSettings()
    with pytest.raises(CodestralError, match="needs an API key") as missing:
        settings.remote_endpoint()
    assert "CODESTRAL_API_KEY" in missing.value.fix and missing.value.kind == "auth"
    no_keys.setenv("MISTRAL_API_KEY", "platform-key")
    assert settings.remote_endpoint() == (PLATFORM_URL, "platform-key")
    no_keys.setenv("CODESTRAL_API_KEY", "codestral-key")  # a Codestral key goes first
    assert settings.remote_endpoint() == (CODESTRAL_URL, "codestral-key")
    settings.api_key = "explicit"
    assert settings.remote_endpoint() == (CODESTRAL_URL, "explicit")
    settings.url = "http://team-server:8000/"  # an explicit URL always wins
    assert settings.remote_endpoint() == ("http://team-server:8000", "explicit")
    settings.api_key = ""
    no_keys.delenv("CODESTRAL_API_KEY")
    no_keys.delenv("MISTRAL_API_KEY")
    assert settings.remote_endpoint() == ("http://team-server:8000", "")  # a server without auth


def test_the_vllm_protocol_needs_the_servers_url(no_keys):
    no_keys.setenv("MISTRAL_API_KEY", "platform-key")
    settings = CodestralSettings(protocol="vllm")
    with pytest.raises(CodestralError, match="needs the url") as missing:
        settings.remote_endpoint()  # never Mistral's hosted API, which has no token-id route
    assert "url" in missing.value.fix
    settings.url = "http://gpu-box:8000"
    assert settings.remote_endpoint() == ("http://gpu-box:8000", "platform-key")


def test_magic_and_lab_share_the_base_and_keep_their_own_names(no_keys):
    config = Config()
    config.CodestralSettings.url = "http://shared:1"  # both
    config.CodestralSettings.protocol = "vllm"
    config.CodestralCompletion.remote_model = "lab-model"  # the lab only
    config.Codestral.api_key = "magic-key"  # the magic only
    magic = Codestral(InteractiveShell.instance())
    magic.update_config(config)  # as %config and ipython_config.py do
    lab = CodestralCompletion(config=config)
    assert magic.remote_endpoint() == ("http://shared:1", "magic-key")
    assert lab.remote_endpoint() == ("http://shared:1", "")  # a url needs no key
    assert (magic.remote_model, lab.remote_model) == ("codestral-latest", "lab-model")
    assert magic.protocol == lab.protocol == "vllm"
    assert "in-process" in magic.traits()["engine"].values  # kernels only
    assert "in-process" not in lab.traits()["engine"].values


def test_the_environment_sets_defaults_for_the_lab_and_every_kernel(no_keys):
    """JupyterHub's spawner environment reaches the server and its kernels alike."""
    no_keys.setenv("CODESTRAL_ENGINE", "remote")
    no_keys.setenv("CODESTRAL_PROTOCOL", "vllm")
    no_keys.setenv("CODESTRAL_URL", "http://gpu-box:8000")
    no_keys.setenv("CODESTRAL_REMOTE_MODEL", "codestral-class")
    shell = InteractiveShell.instance()
    no_keys.setattr(shell, "config", Config())  # as a fresh kernel: no %config, no profile
    magic, lab = Codestral(shell), CodestralCompletion()
    for settings in (magic, lab):
        got = (settings.engine, settings.protocol, settings.url, settings.remote_model)
        assert got == ("remote", "vllm", "http://gpu-box:8000", "codestral-class")
    config = Config()
    config.CodestralCompletion.engine = "shared"  # a configuration file still wins
    assert CodestralCompletion(config=config).engine == "shared"
    no_keys.setenv("CODESTRAL_PROTOCOL", "openai")
    with pytest.raises(CodestralError, match="CODESTRAL_PROTOCOL") as bad:
        _ = CodestralCompletion().protocol
    assert "mistral, vllm" in bad.value.fix
