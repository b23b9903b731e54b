"""What the magic (`%config Codestral.<name>`) and JupyterLab (`c.CodestralCompletion.<name>`)
share: where Codestral runs and how to reach a remote server. Each reads its settings on every
request, so a change takes effect on the next one.

Remote endpoint rule (Mistral serves Codestral at two addresses, each with its own kind of key):
the `api_key` setting, else `$CODESTRAL_API_KEY`, else `$MISTRAL_API_KEY`; with no `url` set,
a key from `$MISTRAL_API_KEY` goes to https://api.mistral.ai (La Plateforme keys) and any other
to https://codestral.mistral.ai (Codestral keys). A `url` setting always wins: a team server,
whose key is optional (a server without auth needs none). `protocol` says how to speak to it.
Defaults for engine, url, protocol and remote_model may come from $CODESTRAL_ENGINE,
$CODESTRAL_URL, $CODESTRAL_PROTOCOL and $CODESTRAL_REMOTE_MODEL (`ENV_SETTINGS`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from traitlets import Enum, Float, Unicode, default
from traitlets.config import Configurable

from ..errors import CodestralError
from .protocol import PROTOCOLS

# An engine started on demand gives its 12-44 GB back after this long unused. Reloading
# Codestral-22B takes minutes, so a pause (reading, a meeting) keeps it; an afternoon away
# does not.
DEFAULT_IDLE_TIMEOUT_S = 1800.0
CODESTRAL_URL = "https://codestral.mistral.ai"
PLATFORM_URL = "https://api.mistral.ai"
CODESTRAL_KEY_ENV = "CODESTRAL_API_KEY"
PLATFORM_KEY_ENV = "MISTRAL_API_KEY"


@dataclass(frozen=True)
class Where:
    """Where requests go, as `CodestralSettings.where` decides it for the magic and the lab
    alike: a client is made for one `Where`, and any change to it makes a new one."""

    engine: str  # "shared", "remote" or (the magic only) "in-process"
    model: str  # the local model asked for ("" = the default choice), or the remote name
    url: str = ""  # remote only: the endpoint and its key, by `remote_endpoint`'s rule
    api_key: str = ""
    protocol: str = "mistral"

    @property
    def remote(self) -> bool:
        return self.engine == "remote"


class CodestralSettings(Configurable):
    """Where Codestral runs, for the magic and for JupyterLab."""

    engine = Enum(
        ["shared", "remote"],
        default_value="shared",
        help="'shared': this machine's engine server, started on first use. 'remote': a "
        "Mistral-compatible API at `url` (Mistral's hosted API, a team server).",
    ).tag(config=True)
    model = Unicode(
        "",
        help="Model the local engine serves: a directory or hub id, 'tiny' for the demo model "
        "(default: $CODESTRAL_MODEL, else the release `codestral-engine pull` downloaded, else "
        "the tiny demo model).",
    ).tag(config=True)
    url = Unicode(
        "",
        help="Remote API URL (engine = 'remote'). Default: https://codestral.mistral.ai, or "
        "https://api.mistral.ai when the key comes from $MISTRAL_API_KEY.",
    ).tag(config=True)
    api_key = Unicode(
        "", help="Remote API key (default: $CODESTRAL_API_KEY, else $MISTRAL_API_KEY)."
    ).tag(config=True)
    remote_model = Unicode("codestral-latest", help="Model name on the remote API.").tag(
        config=True
    )
    idle_timeout = Float(
        DEFAULT_IDLE_TIMEOUT_S,
        help="Seconds without completion or chat requests after which a shared engine started "
        "on demand (by a kernel, JupyterLab or the demo) exits and gives its memory back; the "
        "next request starts it again. 0 keeps it loaded. An engine started by hand with "
        "`codestral-engine serve` stays unless given --idle-timeout.",
    ).tag(config=True)
    protocol = Enum(
        list(PROTOCOLS),
        default_value="mistral",
        help="How to speak to the remote server (engine = 'remote'). 'mistral': Mistral's API "
        "(Mistral's hosted API, a team's `codestral-engine serve`). 'vllm': an "
        "OpenAI-compatible server that takes token-id prompts (vLLM, SGLang): FIM prompts go "
        "to /v1/completions as Codestral token ids. Needs url.",
    ).tag(config=True)

    # Each setting's default may come from the environment: one way that reaches a Jupyter
    # server and every kernel it starts (kernels inherit it), e.g. JupyterHub's
    # `c.Spawner.environment`. Configuration files and %config still win.
    @default("engine")
    def _engine_from_env(self) -> str:
        return from_env(self, "engine", "shared")

    @default("url")
    def _url_from_env(self) -> str:
        return from_env(self, "url", "")

    @default("protocol")
    def _protocol_from_env(self) -> str:
        return from_env(self, "protocol", "mistral")

    @default("remote_model")
    def _remote_model_from_env(self) -> str:
        return from_env(self, "remote_model", "codestral-latest")

    def where(self) -> Where:
        """Where requests go now (settings are read on every request); a wrong remote setting
        is a `CodestralError` that says what to set."""
        if self.engine == "remote":
            url, key = self.remote_endpoint()
            return Where("remote", self.remote_model, url, key, self.protocol)
        return Where(self.engine, self.model)

    def remote_endpoint(self) -> tuple[str, str]:
        """(url, api key) for engine = 'remote', by the rule in this module's docstring; with
        neither a key nor a url, a `CodestralError` that says which to set."""
        key, platform = self.api_key, False
        if not key:
            key = os.environ.get(CODESTRAL_KEY_ENV, "")
        if not key:
            key = os.environ.get(PLATFORM_KEY_ENV, "")
            platform = bool(key)
        if self.protocol == "vllm" and not self.url:
            raise CodestralError(
                "protocol = 'vllm' needs the url of the team's server.",
                kind="bad_request",
                fix="Set url to the vLLM server's address (e.g. http://gpu-box:8000), as its "
                "administrator gave it.",
            )
        if not key and not self.url:
            raise CodestralError(
                "engine = 'remote' with Mistral's API needs an API key.",
                kind="auth",
                fix=f"Set ${CODESTRAL_KEY_ENV} (a Codestral key) or ${PLATFORM_KEY_ENV} (a La "
                "Plateforme key) before starting Jupyter, or the api_key setting; or set url to "
                "a team server that needs none.",
            )
        url = self.url or (PLATFORM_URL if platform else CODESTRAL_URL)
        return url.rstrip("/"), key


ENV_SETTINGS = {
    "engine": "CODESTRAL_ENGINE",
    "url": "CODESTRAL_URL",
    "protocol": "CODESTRAL_PROTOCOL",
    "remote_model": "CODESTRAL_REMOTE_MODEL",
}


def from_env(settings: Configurable, name: str, fallback: str) -> str:
    variable = ENV_SETTINGS[name]
    value = os.environ.get(variable, "").strip()
    if not value:
        return fallback
    allowed = getattr(settings.traits()[name], "values", None)
    if allowed is not None and value not in allowed:
        raise CodestralError(
            f"${variable} is {value!r}, not a valid {name} setting.",
            kind="bad_request",
            fix=f"Set ${variable} to one of: {', '.join(allowed)} (or unset it).",
        )
    return value
