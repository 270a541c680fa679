"""Every dataclass of pybuild, its frontends and its cache has a docstring. On 3.11 a
dataclass without one makes `dataclasses` import `inspect` (with ast, dis, tokenize: ~7 ms
of every command's start-up, pybuild/dccache.py) and compute the class's signature."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_dataclass_has_a_docstring():
    missing = []
    for package in ("pybuild", "frontends", "cache"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and not ast.get_docstring(node) and any(
                        "dataclass" in ast.unparse(d) for d in node.decorator_list):
                    missing.append(f"{path.relative_to(REPO)}: {node.name}")
    assert not missing, "dataclasses without a docstring:\n" + "\n".join(missing)
