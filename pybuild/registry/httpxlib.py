"""httpx, loaded without what a synchronous registry client never uses.

Start-up of every build that pulls: httpcore (httpx's transport) imports trio when it is
installed, only for async use under trio (70 ms here), and httpx imports its own command
line (`httpx._main`: click, pygments, rich; 55 ms). Both are hidden while httpx loads
(`import` of a module whose sys.modules entry is None fails, and both packages expect
that failure) and visible again right after, for anyone else. Import httpx from here:

    from pybuild.registry.httpxlib import httpx
"""
from __future__ import annotations

import sys

_hidden = [m for m in ("trio", "httpx._main") if m not in sys.modules]
for _m in _hidden:
    sys.modules[_m] = None  # type: ignore[assignment]
try:
    import httpcore  # noqa: F401  (loaded now: httpx imports it lazily, trio included)
    import httpx
finally:
    for _m in _hidden:
        del sys.modules[_m]

__all__ = ["httpx"]
