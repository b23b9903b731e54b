"""The browser's and the server's wire types agree: `labextension/src/client/wire.ts` mirrors
`jupyter_codestral/lab/wire.py` (and the status and usage models it carries) field for field:
names, which are optional, and each field's type."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from jupyter_codestral.lab import wire as lab_wire

WIRE_TS = Path(__file__).resolve().parent.parent / "labextension" / "src" / "client" / "wire.ts"
_INTERFACE = re.compile(r"export interface (\w+)(?: extends (\w+))? \{(.*?)\n\}", re.S)
_FIELD = re.compile(r"^\s+(\w+)(\??):\s*(.+?);", re.M)


def mirrored() -> dict[str, type[BaseModel]]:
    """Every model the lab's wire module defines, and the models their fields carry."""
    found: dict[str, type[BaseModel]] = {}

    def visit(model: type[BaseModel]) -> None:
        if model.__name__ in found:
            return
        found[model.__name__] = model
        for base in model.__bases__:  # an interface it extends
            if issubclass(base, BaseModel) and base is not BaseModel:
                visit(base)
        for info in model.model_fields.values():
            for inner in _models_in(info.annotation):
                visit(inner)

    for value in vars(lab_wire).values():
        defined = isinstance(value, type) and issubclass(value, BaseModel)
        if defined and value.__module__ == lab_wire.__name__:
            visit(value)
    return found


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def ts_type(annotation) -> set[str]:
    """The TypeScript spelling of a Python annotation, as a set of union members."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return ts_type(args[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(ts_type(a) for a in args))
    if origin is typing.Literal:
        return {f"'{a}'" for a in args}
    if origin is list:
        (inner,) = ts_type(args[0])
        return {f"{inner}[]"}
    if origin is dict:
        (value,) = ts_type(args[1])
        return {f"Record<string, {value}>"}
    if annotation is type(None):
        return {"null"}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation.__name__}
    simple = {str: "string", int: "number", float: "number", bool: "boolean"}
    return {simple[annotation]}


def typescript_interfaces(text: str) -> dict[str, dict[str, tuple[bool, set[str]]]]:
    """name -> field -> (optional, union members) for each exported interface, with the
    fields of the interfaces it extends."""
    found = {name: (base, body) for name, base, body in _INTERFACE.findall(text)}

    def fields(name: str) -> dict[str, tuple[bool, set[str]]]:
        base, body = found[name]
        own = {
            f: (opt == "?", {t.strip() for t in kind.split("|")})
            for f, opt, kind in _FIELD.findall(body)
        }
        return (fields(base) if base else {}) | own

    return {name: fields(name) for name in found}


def test_every_model_is_mirrored_field_for_field():
    models = mirrored()
    assert {"LabStatus", "Status", "EngineStatus", "LastRequest", "Usage", "RequestUsage"} <= set(
        models
    )
    interfaces = typescript_interfaces(WIRE_TS.read_text())
    for name, model in models.items():
        assert name in interfaces, f"wire.ts has no interface {name}"
        fields = interfaces[name]
        assert set(fields) == set(model.model_fields), (name, set(fields), set(model.model_fields))
        for field, info in model.model_fields.items():
            optional, kind = fields[field]
            if field == "type":  # the event's tag: the same literal on both sides
                assert kind == {f"'{info.default}'"}, (name, kind, info.default)
                continue
            assert optional == (not info.is_required()), f"{name}.{field}: optional differs"
            assert kind == ts_type(info.annotation), f"{name}.{field}: {kind} in wire.ts"


def test_the_stream_union_lists_every_event():
    union = re.search(r"export type StreamEvent = (.*?);", WIRE_TS.read_text()).group(1)
    assert {t.strip() for t in union.split("|")} == {e.__name__ for e in lab_wire.STREAM_EVENTS}


def test_the_parser_sees_a_drift():
    text = WIRE_TS.read_text()
    drifted = typescript_interfaces(text.replace("  cells_below: number;\n", ""))
    assert set(drifted["ContextEvent"]) != set(lab_wire.ContextEvent.model_fields)
    retyped = typescript_interfaces(text.replace("  pid?: number | null;", "  pid?: string;"))
    assert retyped["LabStatus"]["pid"][1] != ts_type(
        lab_wire.LabStatus.model_fields["pid"].annotation
    )
