"""Why a step missed the cache: diffing a step's key components against its last build.

The solver records, for every step it solves, a small `StepRecord` under a stable step
identity (the Dockerfile and target, plus the step's position: its chain of instruction
kinds from FROM, see `step_position`). On a miss, `explain()` compares the step's current
components with the recorded ones and names what changed: the instruction text, an
ENV/ARG value, another setting (USER, WORKDIR, network, mounts), a copied file, the base
image digest, an earlier step -- or says there was no earlier build.

Everything here is pure: values in, values out. The solver does the I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

EXPLAIN_RECORD = "explain"
MAX_FILES = 5000  # per step: beyond this only the aggregate checksum is kept
FILE_DIGEST_CHARS = 16  # a prefix is plenty to notice a change, and keeps records small
MAX_LISTED = 5  # changed paths named per reason


@dataclass(frozen=True)
class StepRecord:
    """What a step's cache key was made of, as recorded at its last build."""

    key: str
    instruction: str
    kind: str
    settings: Mapping[str, Any]  # the op's own definition fields (env, args, user, ...)
    parent: str | None  # cache key of the filesystem the step starts from
    base: tuple[str, str] | None  # (ref, manifest digest) of the chain's base image
    inputs: Mapping[str, str]  # other inputs (COPY --from, mounts): description -> key
    files: Mapping[str, str] | None  # context path -> digest prefix; None when too many
    files_digest: str = ""  # aggregate of every context checksum the step read

    def to_json(self) -> dict:
        return {"key": self.key, "instruction": self.instruction, "kind": self.kind,
                "settings": dict(self.settings), "parent": self.parent,
                "base": list(self.base) if self.base else None, "inputs": dict(self.inputs),
                "files": dict(self.files) if self.files is not None else None,
                "files_digest": self.files_digest}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "StepRecord":
        base = d.get("base")
        files = d.get("files")
        return cls(str(d.get("key", "")), str(d.get("instruction", "")), str(d.get("kind", "")),
                   dict(d.get("settings") or {}), d.get("parent"),
                   (str(base[0]), str(base[1])) if base else None, dict(d.get("inputs") or {}),
                   dict(files) if isinstance(files, dict) else None,
                   str(d.get("files_digest", "")))


@dataclass(frozen=True)
class Reason:
    """One reason a step missed the cache: its `kind` and a message for the user."""

    kind: str  # no-history | no-cache | pruned | instruction | env | setting | file | base | parent | input
    message: str


@dataclass(frozen=True)
class Explanation:
    """Why one step ran instead of coming from the cache."""

    step: str  # the step's description
    reasons: tuple[Reason, ...] = field(default_factory=tuple)

    def render(self) -> str:
        lines = [f"{self.step}:"]
        lines.extend(f"  - {r.message}" for r in self.reasons)
        return "\n".join(lines)


def step_position(kinds: list[str], ordinal: int) -> str:
    """A step's place in a build that survives edits to its text: the instruction words
    from its stage's FROM up to it (`FROM>RUN>COPY`), and which of the same-looking
    chains in the build it is (stages with identical shapes get #1, #2, ...)."""
    return ">".join(["FROM", *kinds]) + f"#{ordinal}"


def explain(step: str, current: StepRecord, previous: StepRecord | None, *,
            no_cache: bool = False) -> Explanation:
    """Name what differs between the current key components and the last build's."""
    if no_cache:
        return Explanation(step, (Reason("no-cache", "cache disabled for this step "
                                         "(--no-cache or --no-cache-filter)"),))
    if previous is None:
        return Explanation(step, (Reason("no-history", "no earlier build of this step"),))
    if previous.key == current.key:
        return Explanation(step, (Reason("pruned", "the key is unchanged but its cached "
                                         "result is gone (pruned or never stored)"),))
    reasons: list[Reason] = []
    if previous.instruction != current.instruction:
        reasons.append(Reason("instruction", f"instruction changed: {previous.instruction!r} "
                                             f"-> {current.instruction!r}"))
    reasons.extend(_settings_reasons(previous.settings, current.settings))
    reasons.extend(_file_reasons(previous, current))
    if previous.base != current.base and current.base is not None:
        old = f"{previous.base[0]}@{previous.base[1]}" if previous.base else "none"
        reasons.append(Reason("base", f"base image changed: {old} -> "
                                      f"{current.base[0]}@{current.base[1]}"))
    elif previous.parent != current.parent:
        reasons.append(Reason("parent", "an earlier step of this stage changed "
                                        "(it was rebuilt or its result differs)"))
    for name in sorted(set(previous.inputs) | set(current.inputs)):
        if previous.inputs.get(name) != current.inputs.get(name):
            reasons.append(Reason("input", "a stage, image or source it reads changed "
                                           f"(COPY --from or a mount: {name})"))
    if not reasons:
        reasons.append(Reason("other", "the cache key changed (pybuild version or an "
                                       "option not shown here)"))
    return Explanation(step, tuple(reasons))


_SETTING_NAMES = {"args": "command", "user": "USER", "cwd": "WORKDIR", "network": "network",
                  "mounts": "RUN --mount options", "security": "security mode",
                  "hostname": "hostname", "actions": "file actions"}


def _settings_reasons(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Reason]:
    out: list[Reason] = []
    if old.get("env") != new.get("env"):
        a, b = _env_dict(old.get("env")), _env_dict(new.get("env"))
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out.append(Reason("env", f"ENV/ARG {k} changed: {_show(a.get(k))} -> "
                                         f"{_show(b.get(k))}"))
    for name in sorted((set(old) | set(new)) - {"env"}):
        if old.get(name) != new.get(name):
            out.append(Reason("setting", f"{_SETTING_NAMES.get(name, name)} changed"))
    return out


def _file_reasons(old: StepRecord, new: StepRecord) -> list[Reason]:
    if old.files_digest == new.files_digest:
        return []
    if old.files is None or new.files is None:
        return [Reason("file", "copied files changed (too many files to name them)")]
    changed = sorted(p for p in set(old.files) & set(new.files) if old.files[p] != new.files[p])
    added = sorted(set(new.files) - set(old.files))
    removed = sorted(set(old.files) - set(new.files))
    out = []
    for label, paths in (("file changed", changed), ("file added", added),
                         ("file removed", removed)):
        for p in paths[:MAX_LISTED]:
            out.append(Reason("file", f"{label}: {p}"))
        if len(paths) > MAX_LISTED:
            out.append(Reason("file", f"... and {len(paths) - MAX_LISTED} more {label}"))
    if not out:
        out.append(Reason("file", "copied files changed"))
    return out


def _env_dict(items: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        k, _, v = str(item).partition("=")
        out[k] = v
    return out


def _show(value: str | None) -> str:
    return "(unset)" if value is None else repr(value)
