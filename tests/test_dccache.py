"""pybuild/dccache.py: dataclasses made with the compile cache are the same as without it.

Each case runs in a fresh interpreter (the cache patches `dataclasses` process-wide):
once without the cache, once filling it, once reading it; the classes must behave the
same in all three, and the last run must compile nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import inspect, json, sys
from pybuild import dccache

compiled = []
if sys.argv[1] != "-":
    assert dccache.install(sys.argv[1]) is True
    real = compile
    def counting(*a, **k):
        compiled.append(1)
        return real(*a, **k)
    dccache.compile = counting  # the module's global shadows the builtin

from dataclasses import FrozenInstanceError, dataclass, field

@dataclass(frozen=True)
class A:
    x: int
    y: tuple = ()
    z: list = field(default_factory=list, hash=False)

@dataclass(eq=False)
class B:
    "docs"
    n: "int" = 0

@dataclass(order=True, slots=True)
class C:
    a: int
    b: str = "b"

a = A(1, (2,))
try:
    a.x = 5
    frozen = False
except FrozenInstanceError:
    frozen = True
c1, c2 = C(1), C(2, "a")
out = {
    "repr": [repr(a), repr(B(3)), repr(c1)],
    "eq": [A(1) == A(1), A(1) == A(2), B(1) == B(1), c1 < c2, sorted([c2, c1]) == [c1, c2]],
    "hash": hash(A(1, (2,))) == hash(A(1, (2,))),
    "frozen": frozen,
    "factory": A(1).z is not A(1).z,
    "sig": [str(inspect.signature(X)) for X in (A, B, C)],
    "ann": [repr(X.__init__.__annotations__) for X in (A, B, C)],
    "doc": [A.__doc__, B.__doc__],
    "compiled": len(compiled),
}
print(json.dumps(out))
'''


def _run(cache: str, *, write: bool = True) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not write:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    p = subprocess.run([sys.executable, "-c", SCRIPT, cache], env=env, check=True,
                       capture_output=True, text=True)
    return json.loads(p.stdout)


def test_cached_dataclasses_behave_as_uncached(tmp_path):
    cache = str(tmp_path / "dc")
    plain = _run("-")
    first = _run(cache)
    shard = os.path.join(cache, "__main__.bin")  # the script's classes: its module's shard
    assert os.listdir(cache) == ["__main__.bin"]
    mtime = os.stat(shard).st_mtime_ns
    second = _run(cache)
    assert first["compiled"] > 0 and second["compiled"] == 0  # all from the cache
    assert os.stat(shard).st_mtime_ns == mtime  # nothing new: not rewritten
    for key in plain:
        if key != "compiled":
            assert plain[key] == first[key] == second[key], key
    assert plain["frozen"] and plain["eq"] == [True, False, False, True, True]


def test_no_bytecode_writing_reads_but_does_not_write(tmp_path):
    cache = str(tmp_path / "dc")
    assert _run(cache, write=False)["compiled"] > 0
    assert not os.path.exists(cache)
    _run(cache)  # written by a normal run
    assert _run(cache, write=False)["compiled"] == 0


def test_a_corrupt_cache_is_ignored(tmp_path):
    cache = tmp_path / "dc"
    cache.mkdir()
    (cache / "__main__.bin").write_bytes(b"\x00garbage")
    out = _run(str(cache))
    assert out["compiled"] > 0 and out["frozen"]
    assert _run(str(cache))["compiled"] == 0  # replaced by a good one


DEFERRED = r'''
import json, sys
from pybuild import dccache

if sys.argv[1] != "-":
    dccache.install(sys.argv[1])
from dataclasses import dataclass, field

@dataclass(frozen=True)
class Documented:
    "docs"
    x: int

before = "inspect" in sys.modules

@dataclass(frozen=True)
class Undocumented:
    x: int
    y: tuple = ()
    z: list = field(default_factory=list)

import dataclasses, inspect
print(json.dumps({"before": before, "docs": [Documented.__doc__, Undocumented.__doc__],
                  "same": dataclasses.inspect is inspect is sys.modules["inspect"],
                  "sig": str(inspect.signature(Undocumented))}))
'''


def test_inspect_is_imported_only_for_a_class_without_a_docstring(tmp_path):
    """dccache.install() imports dataclasses without inspect (3.11); the first class
    without a docstring imports it, and gets the docstring dataclasses always wrote."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = []
    for cache in ("-", str(tmp_path / "dc")):
        p = subprocess.run([sys.executable, "-S", "-c", DEFERRED, cache], env=env,
                           check=True, capture_output=True, text=True)
        out.append(json.loads(p.stdout))
    plain, cached = out
    assert plain["before"] is True  # plain dataclasses imports it first thing
    assert cached["before"] is (sys.version_info[:2] != (3, 11))
    assert cached["docs"] == plain["docs"] == [
        "docs", "Undocumented(x: int, y: tuple = (), z: list = <factory>)"]
    assert cached["same"] and plain["same"] and cached["sig"] == plain["sig"]
