"""What the pure build checker (`frontends.dockerfile.checks`) asks of the real world.

Whether a COPY source is excluded by `.dockerignore` (with the context-root rule), base
image configs from the local store (never pulled), and the text `pybuild build --check`
prints. `pybuild.api` wires these into the checker (pybuild reaches frontends only
through api/cli).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from pybuild.patternmatcher import PatternMatcher

__all__ = ["ignore_checker", "format_warnings", "format_report", "LocalImageResolver"]

# Names that every pattern which excludes "all of the root" must match: used to tell
# `*`/`**` (the whole context is excluded) from `.*` (only dotfiles are).
_ROOT_PROBES = ("probe", ".probe", "probe.txt")


def ignore_checker(patterns: Sequence[str]) -> Optional[Callable[[str], bool]]:
    """`is_ignored(path)` for the checker, or None without patterns.

    A path is ignored when it or a parent matches (last match wins, `!` re-includes).
    The context root `.` is special (BuildKit fixed `COPY . .` warning under `.*`): it
    counts as ignored only when a catch-all pattern excludes every root entry and no
    later `!` pattern brings anything back.
    """
    if not patterns:
        return None
    matcher = PatternMatcher(patterns)
    if not matcher:
        return None

    def root_ignored() -> bool:
        ignored = False
        for pat in matcher.patterns:
            if pat.exclusion:
                ignored = False
            elif all(pat.match(name) for name in _ROOT_PROBES):
                ignored = True
        return ignored

    def is_ignored(path: str) -> bool:
        if path in (".", "/", ""):
            return root_ignored()
        return matcher.matches_or_parent_matches(path)

    return is_ignored


def format_warnings(warnings: Sequence, filename: str = "Dockerfile",
                    lines: Sequence[str] = ()) -> str:
    """Each warning as `WARNING: <Rule>: <detail> (line N)`, its description and URL,
    and the offending lines."""
    out: list[str] = []
    for w in warnings:
        out.append(f"WARNING: {w.short}")
        out.append(f"  {w.description}")
        out.append(f"  {w.url}")
        if w.line > 0 and lines:
            out.append(f"  {filename}:{w.line}")
            for n in range(w.line, max(w.end_line, w.line) + 1):
                if 0 < n <= len(lines):
                    out.append(f"  {n:>4} | >>> {lines[n - 1]}")
        out.append("")
    return "\n".join(out)


def format_report(warnings: Sequence, filename: str = "Dockerfile",
                  lines: Sequence[str] = ()) -> str:
    """What `pybuild build --check` prints."""
    if not warnings:
        return "Check complete, no warnings found.\n"
    n = len(warnings)
    head = f"Check complete, {n} warning{'s' if n != 1 else ''} {'have' if n != 1 else 'has'} been found!\n\n"
    return head + format_warnings(warnings, filename, lines)


class LocalImageResolver:
    """Base image configs from the local store only: checks never pull (a build resolves
    its base images itself; an image not in the store just counts as unknown)."""

    def __init__(self, store):
        self.store = store

    def resolve(self, ref: str, platform: str | None = None):
        from pybuild.errors import ImageNotFound
        from pybuild.graph import ResolvedImage

        image = self.store.images.lookup(ref)
        if image is None:
            raise ImageNotFound(ref)
        cfg = image.config
        plat = f"{cfg.os}/{cfg.architecture}" + (f"/{cfg.variant}" if cfg.variant else "")
        return ResolvedImage(ref, image.manifest_digest, cfg.config, plat)
