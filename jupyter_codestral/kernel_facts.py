"""Live facts about a kernel's objects, for the model's context: DataFrame columns and dtypes,
array and tensor shapes, dict keys, a function's parameters, a module's name.

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

import itertools
import json
import sys
import time
import types

MAX_NAMES = 40  # objects described per probe
MAX_COLUMNS = 25  # DataFrame columns (and dict keys) listed; the rest are counted
MAX_LINE = 300  # characters per description
TIME_BUDGET_S = 0.05  # a probe stops describing after this long (the next cell waits for it)
_PLAIN = (str, int, float)


def describe(value: object) -> str | None:
    """One line about `value`, or None when its type is not one we may look into."""
    kind = type(value)
    if kind is _class("pandas", "DataFrame"):
        return _frame(value)
    if kind is _class("pandas", "Series"):
        label = _label(value.name)
        named = f" {label}" if label is not None else ""
        return f"pandas.Series{named}, {value.shape[0]} values ({_dtype(value.dtype)})"
    if kind is _class("numpy", "ndarray"):
        return f"numpy.ndarray, shape {tuple(value.shape)}, dtype {value.dtype}"
    if kind is _class("torch", "Tensor"):
        return f"torch.Tensor, shape {tuple(value.shape)}, dtype {value.dtype}"
    if kind is dict:
        size = dict.__len__(value)
        keys = [repr(k) for k in itertools.islice(dict.keys(value), MAX_COLUMNS)
                if type(k) in _PLAIN]  # fmt: skip
        more = ", …" if size > MAX_COLUMNS else ""
        return f"dict of {size} items" + (f", keys {', '.join(keys)}{more}" if keys else "")
    if kind in (list, tuple, set, frozenset):
        return f"{kind.__name__} of {kind.__len__(value)} items"
    if kind in (int, float, bool):
        return f"{kind.__name__} = {_short(repr(value))}"
    if kind is str:
        return f"str of {str.__len__(value)} characters"
    if kind is types.ModuleType:
        name = value.__dict__.get("__name__")
        return f"module {name}" if type(name) is str else "module"
    if kind is types.FunctionType:
        return f"function{_parameters(value)}"
    return None


def facts(names: list[str], namespace: dict | None = None) -> list[str]:
    """`name: description` lines for the `names` (in order) that the namespace holds and that
    `describe` may look into; within the probe's time and size bounds."""
    space = namespace if namespace is not None else vars(sys.modules["__main__"])
    started, lines = time.perf_counter(), []
    for name in names:
        if len(lines) >= MAX_NAMES or time.perf_counter() - started > TIME_BUDGET_S:
            break
        if type(name) is not str or name.startswith("_") or name not in space:
            continue
        try:
            line = describe(space[name])
        except Exception:  # a library object in a broken state: leave it out
            continue
        if line:
            lines.append(_short(f"{name}: {line}", MAX_LINE))
    return lines


def _frame(frame) -> str:
    rows, count = frame.shape
    head = f"pandas.DataFrame, {rows} rows x {count} columns: "
    columns, room = [], MAX_LINE - len(head) - 60  # left for the name and "… N more"
    dtypes = list(frame.dtypes.iloc[:MAX_COLUMNS])
    for label, dtype in zip(list(frame.columns[:MAX_COLUMNS]), dtypes, strict=True):
        shown = _label(label)
        column = f"{shown if shown is not None else '?'} ({_dtype(dtype)})"
        room -= len(column) + 2
        if room < 0:
            break
        columns.append(column)
    more = f", … {count - len(columns)} more" if count > len(columns) else ""
    return head + ", ".join(columns) + more


def _dtype(dtype: object) -> str:
    """numpy's and pandas' own dtypes by name; a third-party extension dtype is not asked."""
    numpy_dtype = _class("numpy", "dtype")
    if numpy_dtype is not None and type(type(dtype)) is type(numpy_dtype):  # numpy's metaclass
        return str(dtype)
    home = type(dtype).__dict__.get("__module__") or ""  # a class's own, no lookup
    return str(dtype) if type(home) is str and home.split(".")[0] == "pandas" else "?"


def _label(label: object) -> str | None:
    if type(label) is str:
        return repr(_short(label, 60))
    if type(label) in (int, float):
        return repr(label)
    return None


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


class _JSON(str):
    """Shows as its own text, so the probe's answer reaches the extension as JSON."""

    def __repr__(self) -> str:
        return str.__str__(self)


def probe(names: list[str], namespace: dict) -> _JSON:
    """The probe's entry point in a kernel: the facts as JSON."""
    return _JSON(json.dumps(facts(names, namespace)))


PROBE_MODULE = "__codestral_facts_v1"  # one name in the user's namespace, versioned


def probe_request() -> dict[str, str]:
    """What the extension sends a kernel: `setup` (silent, no history) defines this module in
    the kernel once; `expression` (a user expression, with NAMES replaced by a JSON list of
    names) answers with the facts as JSON."""
    source = open(__file__, encoding="utf-8").read()  # noqa: SIM115 (read once per server)
    setup = (
        f"if {PROBE_MODULE!r} not in globals():\n"
        f"    {PROBE_MODULE} = __import__('types').ModuleType({PROBE_MODULE!r})\n"
        f"    exec(compile({source!r}, '<codestral probe>', 'exec'), {PROBE_MODULE}.__dict__)\n"
    )
    return {"setup": setup, "expression": f"{PROBE_MODULE}.probe(NAMES, globals())"}
