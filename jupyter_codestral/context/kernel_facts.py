"""Live facts about a kernel's objects, for the model's context: DataFrame columns and dtypes,
array and tensor shapes, dict keys, a function's parameters, a module's name; and where the
project's own names come from (`origins`).

Safe by construction: only objects of exact, allow-listed types are described (pandas,
numpy and torch objects, builtins, modules, plain functions; subclasses are not), through
attributes those libraries implement themselves, so no user code runs: no `__repr__`,
`__len__`, properties, `__getattr__`, `__signature__` or `__wrapped__` of user objects. Labels
and keys are shown only when they are plain str, int or float. Everything is bounded: names,
columns, keys, characters, and time.

This file is also the probe the JupyterLab extension runs in a kernel after an execution
(a silent request, no history): it imports only the standard library, so kernels without
jupyter_codestral work too, and `facts()` is its entry point. The magic uses `describe()`.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import sys
import time
import types

MAX_NAMES = 40  # objects described per probe
MAX_COLUMNS = 25  # DataFrame columns (and dict keys) listed; the rest are counted
MAX_LINE = 300  # characters per description
TIME_BUDGET_S = 0.05  # a probe stops describing after this long (the next cell waits for it)


def describe(value: object) -> str | None:
    """One line about `value`, or None when its type is not one we may look into."""
    kind = type(value)
    if kind is _class("pandas", "DataFrame"):
        return _frame(value) if _pandas_owned(value) else None
    if kind is _class("pandas", "Series"):
        if not _pandas_owned(value):
            return None
        label = _label(value.name)
        named = f" {label}" if label is not None else ""
        return f"pandas.Series{named}, {value.shape[0]} values ({_dtype(value.dtype)})"
    if kind is _class("numpy", "ndarray"):
        return f"numpy.ndarray, shape {tuple(value.shape)}, dtype {_dtype(value.dtype)}"
    if kind is _class("torch", "Tensor"):
        return f"torch.Tensor, shape {tuple(value.shape)}, dtype {value.dtype}"
    if kind is dict:
        size = dict.__len__(value)
        keys = [_key(k) for k in itertools.islice(dict.keys(value), MAX_COLUMNS)]
        listed = [k for k in keys if k is not None]
        more = ", …" if size > MAX_COLUMNS else ""
        return f"dict of {size} items" + (f", keys {', '.join(listed)}{more}" if listed else "")
    if _one_of(kind, (list, tuple, set, frozenset)):
        return f"{kind.__name__} of {kind.__len__(value)} items"
    if kind is int:  # a huge int's repr is slow: its size instead
        bits = int.bit_length(value)
        return f"int = {int.__repr__(value)}" if bits <= 64 else f"int of {bits} bits"
    if _one_of(kind, (float, bool)):
        return f"{kind.__name__} = {kind.__repr__(value)}"
    if kind is str:
        return f"str of {str.__len__(value)} characters"
    if kind is types.ModuleType:
        name = value.__dict__.get("__name__")
        return f"module {_short(name, 80)}" if type(name) is str else "module"
    if kind is types.FunctionType:
        return f"function{_parameters(value)}"
    return None


def _one_of(kind: type, allowed: tuple[type, ...]) -> bool:
    # Identity, never ==: a metaclass may define __eq__.
    return any(kind is t for t in allowed)


def _own(cls: type) -> dict:
    """A class's own namespace, read past any metaclass (`type`'s own descriptor)."""
    return type.__dict__["__dict__"].__get__(cls)


def _pandas_owned(value: object) -> bool:
    """Whether a DataFrame's or Series' data and labels are numpy's or pandas' own arrays:
    a user's ExtensionArray would run its code on `.shape`, `.dtype` or slicing."""
    manager = getattr(value, "_mgr", None)  # pandas' block manager (pandas >= 1.1)
    arrays = getattr(manager, "arrays", None)
    if type(arrays) is not list:
        return False
    labels = [value.index] + ([value.columns] if hasattr(value, "columns") else [])
    arrays = arrays + [getattr(index, "_data", None) for index in labels]
    return all(_library_array(array) for array in arrays)


def _library_array(array: object) -> bool:
    kind = type(array)
    if kind is _class("numpy", "ndarray"):
        return True
    home = _own(kind).get("__module__")
    return type(home) is str and home.split(".")[0] == "pandas"


def facts(names: list[str], namespace: dict | None = None) -> list[str]:
    """`name: description` lines for the `names` (in order) that the namespace holds and that
    `describe` may look into; within the probe's time and size bounds."""
    return [_short(f"{name}: {line}", MAX_LINE) for name, line in _each(names, namespace, describe)]


def _each(names: list[str], namespace: dict | None, look):
    """(name, look(value)) for the `names` the namespace holds, in order, while `look` finds
    something for at most MAX_NAMES of them within TIME_BUDGET_S."""
    space = namespace if namespace is not None else vars(sys.modules["__main__"])
    started, found = time.perf_counter(), 0
    for name in names:
        if found >= MAX_NAMES or time.perf_counter() - started > TIME_BUDGET_S:
            break
        if type(name) is not str or name.startswith("_") or name not in space:
            continue
        try:
            seen = look(space[name])
        except Exception:  # a library object in a broken state: leave it out
            continue
        if seen:
            found += 1
            yield name, seen


def _frame(frame) -> str:
    rows, count = frame.shape
    head = f"pandas.DataFrame, {rows} rows x {count} columns: "
    columns, room = [], MAX_LINE - len(head) - 60  # left for the name and "… N more"
    labels = list(frame.columns[:MAX_COLUMNS])
    dtypes = list(frame.dtypes.iloc[:MAX_COLUMNS])
    for label, dtype in zip(labels, dtypes):  # noqa: B905 (kernels may run Python 3.9)
        shown = _label(label)
        column = f"{shown if shown is not None else '?'} ({_dtype(dtype)})"
        room -= len(column) + 2
        if room < 0:
            break
        columns.append(column)
    more = f", … {count - len(columns)} more" if count > len(columns) else ""
    return head + ", ".join(columns) + more


# pandas' own dtypes whose names depend on nothing a user defines.
_PANDAS_DTYPES = {
    "CategoricalDtype", "StringDtype", "BooleanDtype", "PeriodDtype", "Float32Dtype",
    "Float64Dtype", "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype", "UInt8Dtype",
    "UInt16Dtype", "UInt32Dtype", "UInt64Dtype",
}  # fmt: skip


def _dtype(dtype: object) -> str:
    """numpy's and pandas' own dtypes by name; others (a user's extension dtype, a time zone
    of a user's class) as "?"."""
    numpy_dtype = _class("numpy", "dtype")
    meta = type(numpy_dtype)
    if numpy_dtype is not None and (
        type(dtype) is numpy_dtype or (meta is not type and type(type(dtype)) is meta)
    ):
        return str(dtype)  # numpy's own classes (numpy >= 1.20 has a metaclass for them)
    kind = type(dtype)
    home = _own(kind).get("__module__")
    if type(home) is not str or home.split(".")[0] != "pandas":
        return "?"
    name = _own(kind).get("__qualname__") or kind.__name__
    if name in _PANDAS_DTYPES:
        return str(dtype)
    if name == "DatetimeTZDtype":  # its name holds the time zone: leave that out
        unit = getattr(dtype, "unit", "")
        return f"datetime64[{unit}, tz]" if type(unit) is str else "datetime64[tz]"
    return "?"


def _key(key: object) -> str | None:
    kind = type(key)
    if kind is str:
        return repr(_short(key, 40))
    if (kind is int and int.bit_length(key) <= 64) or kind is float:
        return kind.__repr__(key)
    return None


def _label(label: object) -> str | None:
    return _key(label)


def _parameters(function: types.FunctionType) -> str:
    """Parameter names from the code object alone (never `__signature__` or `__wrapped__`)."""
    code = function.__code__
    count = code.co_argcount + code.co_kwonlyargcount
    names = list(code.co_varnames[:count])
    extra = count
    if code.co_flags & 0x04:  # *args
        names.insert(code.co_argcount, "*" + code.co_varnames[extra])
        extra += 1
    if code.co_flags & 0x08:  # **kwargs
        names.append("**" + code.co_varnames[extra])
    return f"({', '.join(n for n in names if type(n) is str)})"


def _class(module: str, name: str):
    loaded = sys.modules.get(module)  # never imports: an object of it exists only if loaded
    return getattr(loaded, name, None) if loaded is not None else None


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def origins(names: list[str], namespace: dict | None = None) -> list[list[str]]:
    """`[name, file, qualname]` for the `names` that are functions, classes, modules or
    instances of classes defined in a file outside the Python installation: where the kernel
    got them (after `sys.path` edits, `%run`, editable installs), for the project context.
    `qualname` is "" for a module. Only exact types and own namespaces are read, so no user
    code runs (no `__getattr__`, properties or metaclass hooks)."""
    installed = tuple({os.path.join(p, "") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})

    def project_file(value: object) -> tuple[str, str] | None:
        where = _origin(value)
        if where is None or not where[0] or where[0].startswith(installed):
            return None
        folder = os.path.basename(os.path.dirname(where[0]))
        if "-packages" in where[0] or folder.startswith("ipykernel_"):  # a notebook's cell
            return None
        return where

    return [[name, *where] for name, where in _each(names, namespace, project_file)]


def _origin(value: object) -> tuple[str, str] | None:
    kind = type(value)
    if kind is types.FunctionType:
        # functools.wraps leaves the decorated function in the wrapper's own dict.
        own = value.__dict__
        wrapped = dict.get(own, "__wrapped__") if type(own) is dict else None
        if type(wrapped) is types.FunctionType:
            value = wrapped
        code, qualname = value.__code__, value.__qualname__
        if type(qualname) is not str or "<" in qualname:  # a lambda, a nested function
            return None
        return _file(code.co_filename), qualname
    if kind is types.ModuleType:
        return _file(value.__dict__.get("__file__")), ""
    cls = value if issubclass(kind, type) else kind  # a class, else an instance's class
    module = _own(cls).get("__module__")
    qualname = type.__dict__["__qualname__"].__get__(cls)  # past any metaclass
    if type(module) is not str or type(qualname) is not str or "<" in qualname:
        return None
    home = sys.modules.get(module)
    if type(home) is not types.ModuleType:
        return None
    return _file(home.__dict__.get("__file__")), qualname


def _file(path: object) -> str:
    return path if type(path) is str and path.endswith(".py") else ""


class _JSON(str):
    """Shows as its own text, so the probe's answer reaches the extension as JSON."""

    def __repr__(self) -> str:
        return str.__str__(self)


def probe(names: list[str], namespace: dict) -> _JSON:
    """The probe's entry point in a kernel: the facts as JSON."""
    return _JSON(json.dumps(facts(names, namespace)))


def probe_origins(names: list[str], namespace: dict) -> _JSON:
    """The probe's second answer: where the names come from, as JSON."""
    return _JSON(json.dumps(origins(names, namespace)))


PROBE_MODULE = "__codestral_facts_v2"  # one name in the user's namespace, versioned


@functools.lru_cache(maxsize=1)
def probe_request() -> dict[str, str]:
    """What the extension sends a kernel: `setup` (silent, no history) defines this module in
    the kernel once; `expression` and `origins` (user expressions, with NAMES replaced by a
    JSON list of names) answer with the facts and with where the names come from, as JSON."""
    source = open(__file__, encoding="utf-8").read()  # noqa: SIM115 (read once per server)
    setup = (
        f"if {PROBE_MODULE!r} not in globals():\n"
        f"    {PROBE_MODULE} = __import__('types').ModuleType({PROBE_MODULE!r})\n"
        f"    exec(compile({source!r}, '<codestral probe>', 'exec'), {PROBE_MODULE}.__dict__)\n"
    )
    return {
        "setup": setup,
        "expression": f"{PROBE_MODULE}.probe(NAMES, globals())",
        "origins": f"{PROBE_MODULE}.probe_origins(NAMES, globals())",
    }
