"""Codestral's published weights: choose, download, verify, and find them again offline.

`pull` picks the checkpoint for the backend and the memory at hand (on Apple Silicon the
mlx-community 4-bit or 8-bit conversion, elsewhere Mistral's own bf16 release, which the torch
backend can also hold as int8 or int4), shows the model licence once and records the
acceptance, then downloads into the Hugging Face cache with `huggingface_hub`: resumable, with a
progress bar per file, safetensors only. Every file is then checked against the sha256 the hub
publishes.

`resolve` turns a model setting into a directory: a local path as is, a hub id from the cache
without touching the network (or an error that says to run `pull`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..backends.registry import REGISTRY
from ..backends.registry import resolve as resolve_spec
from ..errors import ModelLoadError
from .preflight import codestral_22b_plans
from .releases import MISTRAL_RELEASE as MISTRAL_RELEASE  # pull's default release
from .releases import RELEASES, releases_for

# The memory each choice needs (its release's plan), judged with an 8K window.
CHOICE_WINDOW = 8192
NATIVE_FILES = ("params.json", "consolidated.safetensors", "tokenizer.model.v3", "tekken.json")
HF_PATTERNS = (
    "config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.model*",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
)  # fmt: skip
LICENSE_NAME = "Mistral AI Non-Production License (MNPL)"
LICENSE_ID = "mnpl"
LICENSE_SUMMARY = f"""Codestral-22B is released under the {LICENSE_NAME}.
In short: you may use it for research, testing and personal evaluation; you may not use it,
or what it generates, in commercial production or any business activity without a commercial
licence from Mistral AI. Read the full text on the model's page before accepting."""


class HubError(ModelLoadError):
    """A download that cannot proceed; the message says what to do."""


@dataclass(frozen=True)
class Choice:
    repo: str
    quant: str
    backend: str
    note: str = ""


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "codestral-engine"


def _licenses_file() -> Path:
    return config_dir() / "licenses.json"


def license_accepted() -> bool:
    """Whether this user accepted Codestral's licence (once, for every Codestral download)."""
    path = _licenses_file()
    return path.is_file() and LICENSE_ID in json.loads(path.read_text())


def record_license(repo: str) -> None:
    path = _licenses_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[LICENSE_ID] = {"name": LICENSE_NAME, "accepted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "first_download": repo}  # fmt: skip
    path.write_text(json.dumps(data, indent=2))


def choose(backend: str, quant: str | None, memory_bytes: int | None) -> Choice:
    """The checkpoint to download: `quant` if given, else the largest that fits an 8K window."""
    if backend not in REGISTRY:
        raise HubError(f"Unknown backend {backend!r}; choose {' or '.join(REGISTRY)}.")
    releases = releases_for(backend)
    plans = codestral_22b_plans(CHOICE_WINDOW)

    def needs(q: str) -> int:
        return plans[releases[q].form].total

    if quant is None:
        automatic = [q for q, release in releases.items() if release.automatic]
        fits = [q for q in automatic if memory_bytes is None or needs(q) <= memory_bytes]
        quant = fits[0] if fits else automatic[-1]
    if quant not in releases:
        elsewhere = [r.backend for r in RELEASES if r.quant == quant]
        raise HubError(
            f"No {quant} checkpoint for the {backend} backend. Choose --quant "
            f"{' or '.join(releases)}"
            + (f" (or --backend {elsewhere[0]} for {quant})." if elsewhere else ".")
        )
    note = releases[quant].note
    if memory_bytes is not None and needs(quant) > memory_bytes:
        note += (
            f" Needs about {needs(quant) / 1e9:.0f} GB with an 8K window; this machine "
            f"can give {memory_bytes / 1e9:.0f} GB."
        )
    return Choice(releases[quant].repo, quant, backend, note.strip())


def pull(
    repo: str,
    *,
    accept_license: bool = False,
    ask: Callable[[str], str] | None = None,
    say: Callable[[str], None] = print,
    verify: bool = True,
) -> Path:
    """Download `repo` into the Hugging Face cache and return its local directory."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from huggingface_hub.utils import filter_repo_objects

    if "Codestral" in repo and not license_accepted():
        _ask_license(repo, accept_license, ask, say)
    api = HfApi()
    try:
        info = api.model_info(repo, files_metadata=True)
        names = [s.rfilename for s in info.siblings or []]
        patterns = _patterns(names)
        files = list(
            filter_repo_objects(
                info.siblings or [], allow_patterns=patterns, key=lambda s: s.rfilename
            )
        )
        total = sum(s.size or 0 for s in files)
        say(
            f"Downloading {repo} ({len(files)} files, {total / 1e9:.1f} GB) into the Hugging "
            "Face cache; an interrupted download resumes where it stopped."
        )
        path = Path(snapshot_download(repo, allow_patterns=patterns))
    except HfHubHTTPError as exc:
        raise _http_error(repo, exc) from exc
    except LocalEntryNotFoundError as exc:
        raise HubError(
            f"Cannot reach the model hub to download {repo} ({exc}). Check the network, or "
            "HF_ENDPOINT if you use a mirror."
        ) from exc
    if verify:
        _repair_corrupted(repo, path, files, say)
    say(f"Ready: {path}")
    return path


def _ask_license(
    repo: str, accept_license: bool, ask: Callable[[str], str] | None, say: Callable[[str], None]
) -> None:
    """Show the licence's summary and record its acceptance, or refuse to download."""
    say(LICENSE_SUMMARY)
    if not accept_license:
        try:
            answer = ask("Accept the licence and download? [y/N] ") if ask else ""
        except Exception:  # no way to ask here (a kernel without stdin, a closed pipe)
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            raise HubError(
                f"The {LICENSE_NAME} was not accepted, so nothing was downloaded. Run again "
                "and answer y, or pass --accept-license."
            )
    record_license(repo)


def _repair_corrupted(repo: str, path: Path, files: list, say: Callable[[str], None]) -> None:
    """Fetch each file that does not match its published sha256 once more, then refuse."""
    from huggingface_hub import snapshot_download

    bad = corrupted(path, files)
    if not bad:
        return
    for name in bad:  # fetch each again once, then check again
        say(f"{name} does not match its published sha256; downloading it again.")
        _forget(path / name)
    snapshot_download(repo, allow_patterns=bad)
    still = corrupted(path, [s for s in files if s.rfilename in bad])
    if still:
        raise HubError(
            f"{', '.join(still)} in {path} still does not match its published sha256 "
            "after a second download: the mirror or the disk corrupts it. Delete "
            f"{path} and run pull again, or check the disk."
        )


def corrupted(path: Path, files) -> list[str]:
    """Names of files whose sha256 differs from the hub's (LFS files; others are small)."""
    from tqdm import tqdm

    lfs = [s for s in files if s.lfs is not None]
    bad = []
    with tqdm(
        total=sum(s.lfs.size for s in lfs),
        unit="B",
        unit_scale=True,
        desc="Verifying",
        disable=not lfs,
        file=sys.stderr,
    ) as bar:
        for s in lfs:
            digest = hashlib.sha256()
            with open(path / s.rfilename, "rb") as f:
                while chunk := f.read(16 << 20):
                    digest.update(chunk)
                    bar.update(len(chunk))
            if digest.hexdigest() != s.lfs.sha256:
                bad.append(s.rfilename)
    return bad


def _forget(link: Path) -> None:
    """Remove a cached file (the snapshot's link and the blob it points to)."""
    target = link.resolve()
    link.unlink(missing_ok=True)
    if target != link:
        target.unlink(missing_ok=True)


def _patterns(names: list[str]) -> list[str]:
    if "consolidated.safetensors" in names and "params.json" in names:
        return [n for n in NATIVE_FILES if n in names]  # one layout, not both (44 GB each)
    if not any(n.endswith(".safetensors") for n in names):
        raise HubError("This repository has no safetensors weights; only safetensors are loaded.")
    return list(HF_PATTERNS)


def _http_error(repo: str, exc: Exception) -> HubError:
    from huggingface_hub import constants, get_token
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    page = f"{constants.ENDPOINT}/{repo}"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, GatedRepoError) or status in (401, 403):
        step = (
            "your token is set, so accept the licence on the model page"
            if get_token()
            else "log in first: `hf auth login` (or set HF_TOKEN to a read token)"
        )
        return HubError(
            f"{repo} is a gated repository and the hub refused the download ({status}): "
            f"{step}. The model page is {page}; accepting its licence there is needed once "
            "per account. Then run pull again."
        )
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(f"No repository {repo} on the hub ({page}). Check the name.")
    return HubError(f"The hub refused the download of {repo}: {exc}")


def is_hub_id(model: str) -> bool:
    return (
        model.count("/") == 1
        and not Path(model).expanduser().exists()
        and not model.startswith((".", "/", "~"))
    )


def cached_release() -> str | None:
    """The Codestral release `pull` downloaded, if one is in the local cache (no network)."""
    # What pull would choose here (largest first), then anything else this backend runs.
    releases = releases_for(resolve_spec("auto").name).values()
    candidates = list(
        dict.fromkeys([*(r.repo for r in releases if r.automatic), *(r.repo for r in releases)])
    )
    for repo in candidates:
        try:
            path = resolve(repo)
        except ModelLoadError:
            continue
        if any(path.glob("*.safetensors")):
            return repo
    return None


def resolve(model: str | os.PathLike) -> Path:
    """A local directory for `model`: a path as given, or a hub id found in the local cache."""
    text = str(model)
    if not is_hub_id(text):
        return Path(text).expanduser()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(text, local_files_only=True))
    except (LocalEntryNotFoundError, OSError) as exc:
        raise ModelLoadError(
            f"{text} is not downloaded yet. Run `codestral-engine pull --repo {text}` (or "
            "`%codestral pull` in a notebook), then try again."
        ) from exc
    return path
