"""A compile cache for the methods `dataclasses` generates, so CLI start-up stays light.

pybuild defines ~100 frozen dataclasses. For each, `dataclasses` writes the source of
`__init__`, `__repr__`, `__eq__`, `__hash__`, `__setattr__`... and compiles it with `exec`:
two thirds of the ~0.5 ms a dataclass costs to create, ~30 ms of a build's start-up.
The source text depends only on the class's fields and options, so the compiled code can
be kept between runs, like a `.pyc`: `install()` swaps `dataclasses._create_fn` for a copy
that looks the text up in a dict of code objects, one per module that defines dataclasses
(so a command reads only the modules it imports), loaded with `marshal` from
`__pycache__/pybuild-dataclasses.<tag>/<module>.bin` next to this file and written back
(atomically, only when something was added) at exit. The methods are the same functions, built from
the same text by the same steps; only the compile is skipped.

Nothing is done on another Python than 3.11/3.12 (whose `_create_fn` this copies). As
with `.pyc` files, bytecode writing turned off (PYTHONDONTWRITEBYTECODE, `-B`) still reads
the cache but writes nothing.
"""
import atexit
import marshal
import os
import sys

_MAX_ENTRIES = 1000  # a module's cache that outgrows this (code changed often) starts over


def cache_dir() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__",
                        f"pybuild-dataclasses.{sys.implementation.cache_tag}")


def _import_dataclasses() -> None:
    """Import `dataclasses` without `inspect` (with ast, dis, tokenize: ~6 ms of start-up).
    On 3.11 `dataclasses` uses `inspect` only to write a docstring for a class that has
    none (`inspect.signature(cls)`), yet imports it first thing; so it gets a stand-in
    (pybuild/deferredimport.py) that imports the real module at its first use. A command
    whose dataclasses all have docstrings never imports it (tests/test_cli_startup.py,
    tests/test_dataclass_docstrings.py); one that needs it gets the same module."""
    if sys.version_info[:2] != (3, 11):
        return
    from pybuild.deferredimport import import_with

    import_with("dataclasses", deferred=("inspect",))


def install(path=None) -> bool:
    """Use the compile cache (directory `path`, default `cache_dir()`) for dataclasses
    created from now on; False when it does not apply here (see the module doc). Call it
    before the modules that define them."""
    if sys.version_info[:2] not in ((3, 11), (3, 12)):
        return False
    _import_dataclasses()
    import dataclasses

    original = getattr(dataclasses, "_create_fn", None)
    if original is None or getattr(original, "_pybuild_cached", False):
        return False
    path = path or cache_dir()
    shards = {}  # module name -> {text: code}, read when the module makes its first method
    changed = set()
    missing = dataclasses.MISSING

    def shard(module: str) -> dict:
        codes = shards.get(module)
        if codes is None:
            codes = shards[module] = {}
            try:
                with open(os.path.join(path, module + ".bin"), "rb") as f:
                    loaded = marshal.loads(f.read())
                if isinstance(loaded, dict):
                    codes.update(loaded)
            except (OSError, EOFError, ValueError, TypeError):
                pass  # none yet, or unreadable: compile as dataclasses does
        return codes

    def _create_fn(name, args, body, *, globals=None, locals=None, return_type=missing):
        # the text is built exactly as dataclasses._create_fn builds it
        if locals is None:
            locals = {}
        return_annotation = ""
        if return_type is not missing:
            locals["_return_type"] = return_type
            return_annotation = "->_return_type"
        args = ",".join(args)
        body = "\n".join(f"  {b}" for b in body)
        txt = f" def {name}({args}){return_annotation}:\n{body}"
        local_vars = ", ".join(locals.keys())
        txt = f"def __create_fn__({local_vars}):\n{txt}\n return {name}"
        module = str((globals or {}).get("__name__") or "_")
        codes = shard(module)
        code = codes.get(txt)
        if code is None:
            # dont_inherit: no __future__ flags of this module leak into the methods
            code = codes[txt] = compile(txt, "<string>", "exec", dont_inherit=True)
            changed.add(module)
        ns = {}
        exec(code, globals, ns)
        return ns["__create_fn__"](**locals)

    _create_fn._pybuild_cached = True  # type: ignore[attr-defined]
    dataclasses._create_fn = _create_fn

    def _save() -> None:
        if not changed or sys.dont_write_bytecode:
            return
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            return
        from cache.atomicfile import write_atomically

        for module in changed:
            codes = shards[module]
            try:  # readers see the old file or the new one, never half
                write_atomically(os.path.join(path, module + ".bin"),
                                 marshal.dumps(codes if len(codes) <= _MAX_ENTRIES else {}))
            except OSError:
                pass

    atexit.register(_save)
    return True
