"""The kernel-facts probe in a real kernel, sent as the extension sends it (a silent request
without history, answered through a user expression): what it describes, and that it runs no
user code, stays bounded and leaves the kernel as it was."""

from __future__ import annotations

import json
import os

import pytest
from jupyter_client.manager import start_new_kernel

from jupyter_codestral.context.kernel_facts import MAX_LINE, PROBE_MODULE, probe_request
from jupyter_codestral.magic.modes import Notebook

from .helpers import run_in_kernel

USER_CODE = '''
import numpy as np
import pandas as pd

sales = pd.DataFrame({"region": ["north", "south"], "amount": [1.5, 2.5]})
grid = np.zeros((3, 4), dtype="float32")
config = {"lr": 0.1, "epochs": 3}
def train(frame, epochs=3, *args, verbose=False, **options):
    return frame
wide = pd.DataFrame(np.zeros((2, 10_000)))

touched = []
class Trap:
    """Every way of looking at it that could run user code is recorded."""
    def __repr__(self): touched.append("repr"); return "trap"
    def __str__(self): touched.append("str"); return "trap"
    def __len__(self): touched.append("len"); return 1
    def __getattr__(self, name): touched.append(name); raise RuntimeError("no")
    @property
    def shape(self): touched.append("shape"); return (1,)
class SneakyFrame(pd.DataFrame):
    @property
    def shape(self): touched.append("subclass shape"); return (0, 0)
class Label:
    def __str__(self): touched.append("label str"); return "x"
    def __repr__(self): touched.append("label repr"); return "x"
    def __hash__(self): return 1

trap = Trap()
sneaky = SneakyFrame({"a": [1]})
labelled = pd.DataFrame({Label(): [1], "ok": [2]})
keyed = {Label(): 1, "plain": 2}
def wrapped(a, b):
    return a
wrapped.__wrapped__ = trap
wrapped.__signature__ = trap

import datetime
class Meta(type):
    def __eq__(cls, other): touched.append("metaclass eq"); return False
    __hash__ = type.__hash__
class Odd(metaclass=Meta): pass
class UserArray(pd.arrays.IntegerArray):
    @property
    def dtype(self): touched.append("array dtype"); return super().dtype
    def __len__(self): touched.append("array len"); return super().__len__()
class UserZone(datetime.tzinfo):
    def utcoffset(self, dt): return datetime.timedelta(0)
    def dst(self, dt): return datetime.timedelta(0)
    def tzname(self, dt): return "U"
    def __str__(self): touched.append("zone str"); return "U"
    def __repr__(self): touched.append("zone repr"); return "U"
odd = Odd()
odd_keys = {Odd: 1, "fine": 2}
user_array = pd.Series(UserArray(np.array([1, 2]), np.array([False, False])))
zoned = pd.Series(pd.date_range("2020", periods=2, tz=UserZone()))
huge = 10 ** 100_000
for i in range(60):
    globals()[f"number_{i}"] = i
touched.clear()  # building the objects above may touch them; the probe must not
'''
NAMES = ["sales", "grid", "config", "train", "np", "wide", "trap", "sneaky", "labelled",
         "keyed", "wrapped", "missing_name", "odd", "odd_keys", "user_array", "zoned",
         "huge"]  # fmt: skip


@pytest.fixture(scope="module")
def kernel():
    km, kc = start_new_kernel(kernel_name="python3", env=dict(os.environ))
    reply, _ = run_in_kernel(kc, USER_CODE)
    assert reply["status"] == "ok", reply
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def probe(kc, names: list[str], answer: str = "expression") -> tuple[list, dict]:
    """Run the probe exactly as the extension does; one of its answers (the facts, or the
    names' `origins`) and the reply."""
    request = probe_request()
    expression = request[answer].replace("NAMES", json.dumps(names))
    msg_id = kc.execute(
        request["setup"], silent=True, store_history=False, user_expressions={answer: expression}
    )
    reply = kc.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg_id
    found = reply["content"]["user_expressions"][answer]
    assert found["status"] == "ok", found
    return json.loads(found["data"]["text/plain"]), reply


def test_the_probe_describes_live_objects_and_runs_no_user_code(kernel):
    facts, _ = probe(kernel, NAMES)
    by_name = {line.split(":")[0]: line for line in facts}
    assert by_name["sales"].startswith("sales: pandas.DataFrame, 2 rows x 2 columns: 'region' (")
    assert by_name["sales"].endswith(", 'amount' (float64)")  # region: object or str (pandas 3)
    assert by_name["grid"] == "grid: numpy.ndarray, shape (3, 4), dtype float32"
    assert by_name["config"] == "config: dict of 2 items, keys 'lr', 'epochs'"
    assert by_name["train"] == "train: function(frame, epochs, *args, verbose, **options)"
    assert by_name["np"] == "np: module numpy"
    assert by_name["wrapped"] == "wrapped: function(a, b)"  # not __signature__ / __wrapped__
    assert "10000 columns: 0 (float64), 1 (float64)" in by_name["wide"]
    assert by_name["wide"].endswith(" more")
    assert len(by_name["wide"]) <= MAX_LINE
    assert "labelled: pandas.DataFrame, 1 rows x 2 columns: ? (int64), 'ok' (int64)" in facts
    assert by_name["keyed"] == "keyed: dict of 2 items, keys 'plain'"
    assert by_name["odd_keys"] == "odd_keys: dict of 2 items, keys 'fine'"
    assert by_name["zoned"].startswith("zoned: pandas.Series, 2 values (datetime64[")
    assert by_name["zoned"].endswith(", tz])")  # the zone's own text is not asked for
    assert by_name["huge"] == "huge: int of 332193 bits"  # not a 100,000-digit repr
    for absent in ("trap", "sneaky", "missing_name", "odd", "user_array"):  # not allow-listed
        assert absent not in by_name
    touched, _ = run_in_kernel(kernel, "assert touched == [], touched")
    assert touched["status"] == "ok", touched  # no user code ran


def test_the_probe_leaves_no_trace_and_is_bounded(kernel):
    run_in_kernel(kernel, "n_before = len(In)")
    probe(kernel, NAMES)
    many, _ = probe(kernel, [f"number_{i}" for i in range(60)] + NAMES)  # bounded in names
    assert len(many) == 40 and many[0] == "number_0: int = 0"
    check, _ = run_in_kernel(
        kernel,
        f"assert len(In) == n_before + 1, len(In)\n"
        f"assert [n for n in globals() if 'codestral' in n] == [{PROBE_MODULE!r}]",
    )
    assert check["status"] == "ok", check


def test_the_magic_header_follows_the_same_rules():
    import pandas as pd

    touched = []

    class Trap:
        def __repr__(self):
            touched.append("repr")
            return "trap"

        def __len__(self):
            touched.append("len")
            return 1

    namespace = {"trap": Trap(), "df": pd.DataFrame({"a": [1]}), "items": [1, 2]}
    header = Notebook(namespace, 6000, 1000).headers("use trap, df and items")
    assert "# df: pandas.DataFrame, 1 rows x 1 columns: 'a' (int64)" in header
    assert "# items: list of 2 items" in header
    assert "trap" not in header and touched == []


def test_the_kernel_says_where_project_names_come_from(kernel, tmp_path):
    """A package put on sys.path by a path computed at run time: static reading cannot find
    it, the kernel can; library names and the traps are left alone."""
    package = tmp_path / "project" / "src" / "shop"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "pricing.py").write_text(
        "def net_price(gross, vat_rate=0.2):\n    return gross\n"
        "class Basket:\n    def add(self, item, quantity=1):\n        pass\n"
        "from .deco import traced\n@traced\ndef fetch(url, timeout=30):\n    pass\n"
    )
    (package / "deco.py").write_text(
        "import functools\ndef traced(f):\n    @functools.wraps(f)\n"
        "    def wrapper(*a, **k):\n        return f(*a, **k)\n    return wrapper\n"
    )
    code = (
        "import sys, pathlib\n"
        f"sys.path.insert(0, str(pathlib.Path({str(tmp_path)!r}) / 'project' / 'src'))\n"
        "from shop.pricing import net_price, Basket, fetch\nimport shop.pricing as pricing\n"
        "basket = Basket()\n"
    )
    reply, _ = run_in_kernel(kernel, code)
    assert reply["status"] == "ok", reply
    names = ["net_price", "Basket", "basket", "pricing", "fetch", "np", "sales", *NAMES]
    answer, _ = probe(kernel, names, "origins")
    found = {name: (file, qualname) for name, file, qualname in answer}
    module = str(package / "pricing.py")
    assert found["net_price"] == (module, "net_price")
    assert found["Basket"] == found["basket"] == (module, "Basket")
    assert found["pricing"] == (module, "")
    assert found["fetch"] == (module, "fetch")  # the decorated function, not its wrapper
    assert "np" not in found and "sales" not in found  # installed packages
    touched, _ = run_in_kernel(kernel, "assert touched == [], touched")
    assert touched["status"] == "ok", touched  # no user code ran


def test_origins_leave_out_what_is_not_a_project_file_and_run_no_user_code(kernel):
    code = (
        "import math, itertools\n"
        "class Local:\n    pass\n"
        "locals_ = [Local() for _ in range(50)]\n"
        "def cell_function(x):\n    return x\n"
        "class Name(str):\n"
        "    def __contains__(self, item):\n        touched.append('qualname'); return False\n"
        "def renamed(x):\n    return x\n"
        "renamed.__qualname__ = Name('renamed')\n"
    )
    reply, _ = run_in_kernel(kernel, code)
    assert reply["status"] == "ok", reply
    names = ["math", "itertools", "Local", "cell_function", "renamed"]
    names += [f"locals_{i}" for i in range(50)]
    answer, _ = probe(kernel, names, "origins")
    assert answer == []  # no file, or a notebook cell's own: nothing for the project context
    touched, _ = run_in_kernel(kernel, "assert touched == [], touched")
    assert touched["status"] == "ok", touched
