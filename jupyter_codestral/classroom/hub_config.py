"""`configure_hub(c, ...)`: one call in `jupyterhub_config.py` that makes Codestral a class
service. It registers the managed service `codestral` (the only process that reads the class's
key, from a file), the role with the scopes the service needs (reading the two policy groups,
nothing more), creates those groups, lets users and their servers' tokens reach the service
(`access:services!service=codestral`), and points the students' servers and kernels at it with
the `mistral` protocol and their own hub token as the key.

Everything is appended to the admin's own settings, never put in their place; call it after
setting `c.JupyterHub.load_roles` / `c.Spawner.environment` yourself (a later `=` replaces).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..client.protocol import DEFAULT_MODEL, PROTOCOLS
from .policy import HINTS_GROUP, OFF_GROUP

SERVICE = "codestral"
ACCESS_SCOPE = f"access:services!service={SERVICE}"
# Who may read everyone's use at /usage (students read their own): hub admins, and the
# members of TEACHERS_GROUP through a role holding this scope (the hub's admin role is fixed).
USAGE_SCOPE = "custom:codestral:usage"
TEACHERS_GROUP = "codestral-teachers"
DEFAULT_PORT = 10350


def service_scopes() -> list[str]:
    """What the service's own token may do: read the members of the two policy groups."""
    return [f"read:groups!group={g}" for g in (OFF_GROUP, HINTS_GROUP)]


def configure_hub(
    c: Any,
    *,
    url: str,
    protocol: str = "vllm",
    api_key_file: str | Path | None = None,
    model: str = DEFAULT_MODEL,
    port: int = DEFAULT_PORT,
    data_dir: str | Path | None = None,
    slots: int = 8,
    running_per_student: int = 2,
    waiting_per_student: int = 4,
    ip: str = "127.0.0.1",
    student_url: str | None = None,
) -> None:
    """Make the hub run the classroom service for the upstream at `url` (spoken to in
    `protocol`: "vllm", or "mistral" for `codestral-engine serve` and Mistral's API) with the
    key read from `api_key_file` (none: an upstream without auth), serving `model`.

    The service listens on 127.0.0.1:`port`, keeps its usage database in `data_dir` (default:
    the hub's working directory), lets `slots` requests run upstream at once and each student
    `running_per_student` of them plus `waiting_per_student` queued.

    Students' servers reach the service at `student_url`, by default straight at
    http://`ip`:`port`/services/codestral (right where their servers run on the hub's machine,
    and the shortest path: the hub's proxy adds 15-140 ms per request). Where they run
    elsewhere (containers, Kubernetes), listen on an address they can reach (`ip`) or give the
    proxy's: e.g. student_url="http://proxy-public/services/codestral"."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    service_url = f"http://{ip}:{port}"
    command = [
        sys.executable, "-m", "jupyter_codestral.classroom",
        "--upstream", url, "--protocol", protocol, "--model", model,
        "--usage-db", str(Path(data_dir or Path.cwd()).resolve() / "codestral-usage.sqlite"),
        "--slots", str(slots), "--running", str(running_per_student),
        "--waiting", str(waiting_per_student),
    ]  # fmt: skip
    if api_key_file is not None:
        # The path, never the key: command lines are visible to every local user.
        command += ["--api-key-file", str(Path(api_key_file).resolve())]
    _register_service(c, service_url, command)
    _grant_scopes(c)
    _merge(
        c.Spawner,
        "environment",
        {
            "CODESTRAL_ENGINE": "remote",
            "CODESTRAL_URL": (student_url or f"{service_url}/services/{SERVICE}").rstrip("/"),
            "CODESTRAL_PROTOCOL": "mistral",
            "CODESTRAL_REMOTE_MODEL": model,
            "CODESTRAL_API_KEY": student_key,
        },
    )


def _register_service(c: Any, service_url: str, command: list[str]) -> None:
    """The managed service, and the role that lets it read the policy groups."""
    _append(
        c.JupyterHub,
        "services",
        {
            "name": SERVICE,
            "url": service_url,
            "command": command,
            "display": False,
            "oauth_no_confirm": True,
            # A teacher's browser login (usage.html) carries the usage scope, when they hold it.
            "oauth_client_allowed_scopes": [USAGE_SCOPE],
        },
    )
    _append(
        c.JupyterHub,
        "load_roles",
        {
            "name": f"{SERVICE}-service",
            "description": "The Codestral classroom service: reads the policy groups",
            "scopes": service_scopes(),
            "services": [SERVICE],
        },
    )


def _grant_scopes(c: Any) -> None:
    """Teachers read the usage; every user, and their servers' tokens, may use the service;
    the policy groups exist from the start."""
    _merge(
        c.JupyterHub,
        "custom_scopes",
        {
            USAGE_SCOPE: {
                "description": "Read every student's use of Codestral at the classroom service"
            }
        },
    )
    _append(
        c.JupyterHub,
        "load_roles",
        {
            "name": f"{SERVICE}-teacher",
            "description": "Read every student's use at the Codestral classroom service",
            "scopes": [USAGE_SCOPE],
            "groups": [TEACHERS_GROUP],
        },
    )
    # Every user may use the service; their servers' tokens (and so their kernels) too. The
    # hub ignores extra_user_scopes where the admin redefines the user role: extend theirs.
    if _defines_role(c.JupyterHub, "user"):
        _extend_role(c.JupyterHub, "user", [ACCESS_SCOPE])
    else:
        _append(c.JupyterHub, "extra_user_scopes", ACCESS_SCOPE, set_like=True)
    _extend_role(c.JupyterHub, "server", [ACCESS_SCOPE])
    groups = {name: {"users": []} for name in (OFF_GROUP, HINTS_GROUP, TEACHERS_GROUP)}
    _merge(c.JupyterHub, "load_groups", groups)


def student_key(spawner: Any) -> str:
    """A student's key for the service: their server's own hub token."""
    return spawner.api_token


def _default_scopes(role: str) -> list[str]:
    from jupyterhub.roles import get_default_roles  # the hub's own defaults, when overriding

    return next((r["scopes"] for r in get_default_roles() if r["name"] == role), [])


def _defines_role(section: Any, role: str) -> bool:
    roles = section.load_roles
    return isinstance(roles, list) and any(spec.get("name") == role for spec in roles)


def _extend_role(section: Any, role: str, scopes: list[str]) -> None:
    """Add `scopes` to the role `role` in load_roles: the admin's definition if there is one,
    else the hub's default definition of that role."""
    roles = section.load_roles
    for spec in roles if isinstance(roles, list) else []:
        if spec.get("name") == role:
            spec["scopes"] = [*spec.get("scopes", _default_scopes(role)), *scopes]
            return
    _append(section, "load_roles", {"name": role, "scopes": [*_default_scopes(role), *scopes]})


def _append(section: Any, name: str, value: Any, *, set_like: bool = False) -> None:
    """Append to a list (or add to a set) setting, keeping what the admin set; an unset one
    is traitlets' lazy value, merged with the setting's default when the hub reads it."""
    current = section[name]
    if isinstance(current, list) or not (set_like or isinstance(current, set)):
        current.append(value)
    else:
        current.add(value)


def _merge(section: Any, name: str, values: dict[str, Any]) -> None:
    """Add keys to a dict setting; the admin's own keys win."""
    current = section[name]
    if isinstance(current, dict):
        for key, value in values.items():
            current.setdefault(key, value)
    else:
        current.update(values)  # traitlets' lazy value, merged with the default
