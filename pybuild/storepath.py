"""Where the store is, without importing anything that knows what is in it (the CLI's
whole-build memo check needs the path before anything heavy is imported)."""
from __future__ import annotations

import os


def default_root() -> str:
    env = os.environ.get("PYBUILD_ROOT")
    if env:
        return env
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "pybuild")
