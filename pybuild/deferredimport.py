"""Importing a module without the imports it makes eagerly but needs only on rare paths.

Start-up time of every command: `dataclasses` imports `inspect` (with ast, dis, tokenize)
to write docstrings pybuild's classes already have; httpx imports `idna` (12 ms of Unicode
tables) for host names that are not ASCII, httpcore imports `anyio` and `trio` for async
use. `import_with()` imports a module while such names are either hidden (their import
fails, which the importing package expects and handles) or deferred (a `DeferredModule`
stands in, which imports the real module at its first use). Right after, sys.modules is as
it was, so anyone else importing them gets the real modules.
"""
from __future__ import annotations

import sys


class DeferredModule(type(sys)):  # type: ignore[misc]  (types.ModuleType, unimported)
    """Stands in for a module while others import it; the first attribute asked of it
    imports the real one, which then takes its place in every module that holds it."""

    def __getattr__(self, attr: str):
        name = self.__name__
        if sys.modules.get(name) is self:  # asked while the importer is still loading
            raise AttributeError(f"module {name!r} is not imported yet (asked for {attr!r})")
        __import__(name)  # the stand-in is out of sys.modules by now
        real = sys.modules[name]
        short = name.rpartition(".")[2]
        for module in list(sys.modules.values()):
            if getattr(module, short, None) is self:
                setattr(module, short, real)
        return getattr(real, attr)


def import_with(name: str, *, hidden: tuple[str, ...] = (), deferred: tuple[str, ...] = ()):
    """Import module `name` (and return it) with the modules in `hidden` failing to import
    and those in `deferred` stood in for by DeferredModules. Modules already imported are
    left as they are, and sys.modules is restored afterwards."""
    placed = {}
    for m in hidden:
        if m not in sys.modules:
            placed[m] = sys.modules[m] = None  # `import m` raises ImportError
    for m in deferred:
        if m not in sys.modules:
            placed[m] = sys.modules[m] = DeferredModule(m)
    try:
        __import__(name)
        return sys.modules[name]
    finally:
        for m, stand_in in placed.items():
            if sys.modules.get(m, stand_in) is stand_in:
                sys.modules.pop(m, None)
