"""Go's `path.Clean`, which BuildKit applies to Dockerfile paths and .dockerignore
patterns. `posixpath.normpath` differs (it keeps a leading "//"), so the frontend uses
this one everywhere. (pybuild.patternmatcher keeps its own copy: it sits below the
frontend and may not import it.)"""
from __future__ import annotations


def go_clean(p: str) -> str:
    """Lexical clean: no "." or empty segments, ".." folded, "/" kept when rooted."""
    if p == "":
        return "."
    rooted = p.startswith("/")
    parts: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(seg)
    out = "/".join(parts)
    if rooted:
        return "/" + out
    return out or "."
