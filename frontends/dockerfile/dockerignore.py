"""Reading `.dockerignore` files: where the file is, and its text -> a pattern list.

The patterns are matched by `pybuild.patternmatcher` (via `pybuild.context`); this module
only reads them, exactly like moby/patternmatcher's `ignorefile.ReadAll`:
UTF-8 BOM stripped, `#` in column 1 is a comment, blanks trimmed, empty lines dropped,
`!` split off and the rest trimmed again, path-cleaned, a leading `/` removed.

A frontend imports nothing of pybuild but the graph and the errors, so the small Go
`path.Clean` used here is local on purpose.
"""
from __future__ import annotations

import os

from frontends.dockerfile.gopath import go_clean
from pybuild.errors import PybuildError

__all__ = ["read_dockerignore", "find_ignore_file", "load_dockerignore", "DockerignoreError"]

# Go's unicode.IsSpace (str.strip() would also drop \x1c-\x1f, which Go keeps)
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007" \
            "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"

# bufio.Scanner's default token limit: a longer line makes ReadAll fail
_MAX_LINE = 64 * 1024


class DockerignoreError(PybuildError):
    """The ignore file cannot be read."""


def read_dockerignore(text: str | bytes | None) -> list[str]:
    """The patterns of a `.dockerignore` file, in file order (None -> [])."""
    if text is None:
        return []
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last line does not start another
    out: list[str] = []
    for line in lines:
        if line.endswith("\r"):
            line = line[:-1]
        if len(line.encode("utf-8", errors="surrogateescape")) >= _MAX_LINE:
            raise DockerignoreError("error reading .dockerignore: token too long")
        if line.startswith("#"):
            continue
        pattern = line.strip(_GO_SPACE)
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip(_GO_SPACE)
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        if invert:
            pattern = "!" + pattern
        out.append(pattern)
    return out


def find_ignore_file(context_dir: str, dockerfile_path: str | None = None) -> str | None:
    """The ignore file that applies to a build, or None.

    `<Dockerfile name>.dockerignore` next to the Dockerfile (e.g. `app.Dockerfile.dockerignore`)
    wins over `<context>/.dockerignore`, as in BuildKit.
    """
    if dockerfile_path:
        candidate = dockerfile_path + ".dockerignore"
        if os.path.isfile(candidate):
            return candidate
    candidate = os.path.join(context_dir, ".dockerignore")
    if os.path.isfile(candidate):
        return candidate
    return None


def load_dockerignore(context_dir: str, dockerfile_path: str | None = None) -> list[str]:
    """find_ignore_file + read_dockerignore ([] when there is no ignore file)."""
    path = find_ignore_file(context_dir, dockerfile_path)
    if path is None:
        return []
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DockerignoreError(f"failed to read {path}: {e.strerror}") from None
    return read_dockerignore(data)
