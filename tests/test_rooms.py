"""Each package's rooms (its sub-packages) import only what README's Development map allows,
lazy imports included, and the rooms' import graph has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine" / "codestral_engine"
JUPYTER = ROOT / "jupyter_codestral"

# The engine's rooms, stacked one way, and which each may import (besides itself and `errors`).
ENGINE_ROOMS = {
    "errors": set(),
    "weights": set(),  # checkpoints as data: imports no other room
    "core": {"weights"},  # the backend contract and the loop that runs on it; a checkpoint's facts
    "backends": {"core", "weights"},  # implement core's contract over the checkpoints
    "assembly": {"backends", "core", "weights"},  # hub, pull, preflight, model choice, `load`
    "serving": {"assembly", "core", "weights"},  # HTTP knows the engine and `load`, no backend
}
ENGINE_ENTRY_POINTS = {"__init__", "__main__", "cli", "commands"}  # may import every room

# The Jupyter side's rooms and which each may import (besides itself and `errors`).
JUPYTER_ROOMS = {
    "client": set(),  # the wire protocol, the engine clients, settings, the local engine
    "context": set(),  # what the model is told: notebook, kernel, project, a traceback
    "magic": {"client", "context"},  # %%codestral in the kernel
    "lab": {"client", "context"},  # the Jupyter server's ghost-text and fix routes
    "classroom": {"client", "context"},  # the JupyterHub service in front of a shared engine
    "errors": set(),
}
JUPYTER_ENTRY_POINTS = {"__init__", "demo"}  # may import every room


def room_imports(package: Path, path: Path) -> set[str]:
    """The rooms (or top-level modules) of `package` that `path` imports, lazily too."""
    here = list(path.relative_to(package.parent).with_suffix("").parts[:-1])
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
            rooms |= {name[1] for name in names if name[0] == package.name and len(name) > 1}
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = here[: len(here) - (node.level - 1)]
            targets = (
                [base + node.module.split(".")]
                if node.module
                else [[*base, alias.name] for alias in node.names]
            )
        elif node.module and node.module.split(".")[0] == package.name:
            targets = [node.module.split(".")]
        else:
            continue
        rooms |= {target[1] for target in targets if len(target) > 1}
    return rooms


def import_graph(package: Path, entry_points: set[str]) -> dict[str, set[str]]:
    """Room -> the other rooms its modules import, as the code stands."""
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).parts
        room = parts[0] if len(parts) > 1 else path.stem
        if room in entry_points or room == "labextension":
            continue
        graph.setdefault(room, set()).update(room_imports(package, path) - {room})
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path of rooms, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for after in sorted(graph.get(node, ())):
            if found := visit(after, [*path, node]):
                return found
        done.add(node)
        return None

    return next((found for room in sorted(graph) if (found := visit(room, []))), None)


SIDES = [
    (ENGINE, ENGINE_ROOMS, ENGINE_ENTRY_POINTS),
    (JUPYTER, JUPYTER_ROOMS, JUPYTER_ENTRY_POINTS),
]


@pytest.mark.parametrize(("package", "rooms", "entry_points"), SIDES)
def test_each_room_imports_only_what_the_map_allows(package, rooms, entry_points):
    for room, imports in import_graph(package, entry_points).items():
        assert room in rooms, f"{package.name}/{room} is in no room of the map (README)"
        extra = imports - rooms[room] - {"errors"}
        assert not extra, f"{package.name}/{room} imports {sorted(extra)}, which the map forbids"


@pytest.mark.parametrize(("package", "rooms", "entry_points"), SIDES)
def test_rooms_import_each_other_one_way(package, rooms, entry_points):
    assert cycle({room: set(allowed) for room, allowed in rooms.items()}) is None
    assert cycle(import_graph(package, entry_points)) is None


def test_a_cycle_is_found():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
