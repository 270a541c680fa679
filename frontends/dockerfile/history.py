"""History `created_by` text, byte-for-byte as BuildKit writes it.

BuildKit formats most history lines with Go's fmt verbs (`%q` and `%v` of string slices,
`%+v` of the healthcheck struct); this module reproduces those formats so images built
by pybuild show the same `docker history` as images built by BuildKit.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

from frontends.dockerfile.shell import go_quote
from pybuild.graph import Healthcheck

HISTORY_COMMENT = "buildkit.dockerfile.v0"
LAYER_SUFFIX = " # buildkit"  # BuildKit marks history lines of steps that ran on a state


def go_q_list(items: Optional[Sequence[str]]) -> str:
    """Go `%q` of a []string: `["a" "b c"]` (nil -> `[]`)."""
    return "[" + " ".join(go_quote(i) for i in (items or ())) + "]"


def go_v_list(items: Optional[Sequence[str]]) -> str:
    """Go `%v` of a []string: `[a b c]`."""
    return "[" + " ".join(items or ()) + "]"


def go_duration(ns: int) -> str:
    from frontends.dockerfile.instructions import format_go_duration
    return format_go_duration(ns)


def healthcheck_created_by(h: Healthcheck) -> str:
    """`HEALTHCHECK {Test:[CMD-SHELL curl x] Interval:30s Timeout:0s StartPeriod:0s
    StartInterval:0s Retries:3}` (Go `%+v` of docker's HealthcheckConfig)."""
    return ("HEALTHCHECK {Test:" + go_v_list(h.test)
            + f" Interval:{go_duration(h.interval_ns)} Timeout:{go_duration(h.timeout_ns)}"
            + f" StartPeriod:{go_duration(h.start_period_ns)}"
            + f" StartInterval:{go_duration(h.start_interval_ns)} Retries:{h.retries}}}")


def run_created_by(args: Sequence[str], build_args: Iterable[tuple[str, Optional[str]]],
                   env: Mapping[str, str]) -> str:
    """`RUN |2 A=1 B= /bin/sh -c cmd # buildkit`: the stage's declared ARGs (value from the
    environment when set there, else the ARG's own value), de-duplicated by name keeping
    the first position and the last value, then the command."""
    order: list[str] = []
    values: dict[str, str] = {}
    for key, value in build_args:
        v = env[key] if key in env else (value or "")
        if key not in values:
            order.append(key)
        values[key] = f"{key}={v}"
    parts = [f"|{len(order)}"] + [values[k] for k in order] if order else []
    return "RUN " + " ".join(parts + list(args)) + LAYER_SUFFIX


def copy_created_by(add: bool, sources: Sequence[str], heredoc_names: Sequence[str], dest: str,
                    chown: str = "", chmod: str = "", parents: bool = False) -> str:
    out = ["ADD" if add else "COPY"]
    if parents:
        out.append("--parents")
    if chown:
        out.append("--chown=" + chown)
    if chmod:
        out.append("--chmod=" + chmod)
    out.extend(sources)
    out.extend("<<" + n for n in heredoc_names)
    out.append(dest)
    return " ".join(out) + LAYER_SUFFIX
