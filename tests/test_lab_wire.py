"""The browser's and the server's wire types agree: `labextension/src/client/wire.ts` mirrors
`jupyter_codestral/lab/wire.py` field for field (names, which are optional, the event tags)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from jupyter_codestral.lab import wire as lab_wire

WIRE_TS = Path(__file__).resolve().parent.parent / "labextension" / "src" / "client" / "wire.ts"
MIRRORED = [  # every model the module defines
    name for name, value in vars(lab_wire).items()
    if isinstance(value, type) and issubclass(value, BaseModel)
    and value.__module__ == lab_wire.__name__
]  # fmt: skip
_INTERFACE = re.compile(r"export interface (\w+)(?: extends (\w+))? \{(.*?)\n\}", re.S)
_FIELD = re.compile(r"^\s+(\w+)(\??):\s*(.+?);", re.M)


def typescript_interfaces(text: str) -> dict[str, dict[str, tuple[bool, str]]]:
    """name -> field -> (optional, type) for each exported interface, with the fields of the
    interface it extends."""
    found = _INTERFACE.findall(text)
    own = {
        name: {f: (opt == "?", kind) for f, opt, kind in _FIELD.findall(body)}
        for name, _, body in found
    }
    return {name: own.get(base, {}) | own[name] for name, base, _ in found}


def test_every_model_is_mirrored_field_for_field():
    assert len(MIRRORED) == 12
    interfaces = typescript_interfaces(WIRE_TS.read_text())
    for name in MIRRORED:
        model = getattr(lab_wire, name)
        assert name in interfaces, f"wire.ts has no interface {name}"
        fields = interfaces[name]
        assert set(fields) == set(model.model_fields), (name, set(fields), set(model.model_fields))
        for field, info in model.model_fields.items():
            optional, kind = fields[field]
            if field == "type":  # the event's tag: the same literal on both sides
                assert kind == f"'{info.default}'", (name, kind, info.default)
            else:
                assert optional == (not info.is_required()), f"{name}.{field}: optional differs"


def test_the_stream_union_lists_every_event():
    union = re.search(r"export type StreamEvent = (.*?);", WIRE_TS.read_text()).group(1)
    assert {t.strip() for t in union.split("|")} == {e.__name__ for e in lab_wire.STREAM_EVENTS}


def test_the_parser_sees_a_drift():
    drifted = WIRE_TS.read_text().replace("  cells_below: number;\n", "")
    assert set(typescript_interfaces(drifted)["ContextEvent"]) != set(
        lab_wire.ContextEvent.model_fields
    )
