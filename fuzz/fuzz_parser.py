"""Fuzz the Dockerfile frontend: any text in, a CompileResult or a DefinitionError out.

Not part of the test suite (CI does not run it): `make fuzz` runs it for FUZZ_SECONDS
(default 180), or `python3 fuzz/fuzz_parser.py --seconds 60`. Needs the `fuzz` extra
(`pip install -e '.[fuzz]'`, i.e. hypothesis).

Hypothesis builds Dockerfile-like text from pieces that reach deep into the frontend
(instructions in any case, flags, JSON and shell forms, `$VAR` expansions, line
continuations, heredocs, parser directives, comments), mixes in arbitrary text, and
checks one property: `compile_dockerfile` (parse, instruction conversion, stage
resolution, dispatch) returns or raises `DefinitionError`. Anything else is a crash.

Hypothesis stops at the first failure of a run; this driver records it (shrunk, with
its traceback), remembers where it was raised so the same bug is not reported twice,
and starts another run until the time is up. Exit status 1 if anything crashed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from frontends.dockerfile.compile import compile_dockerfile  # noqa: E402
from pybuild import graph  # noqa: E402
from pybuild.errors import DefinitionError  # noqa: E402

DIGEST = "sha256:" + "cd" * 32


class FuzzResolver:
    """Every base image exists, so compilation goes past FROM into the stages; one
    of them carries ONBUILD triggers so those paths are fuzzed too."""

    def resolve(self, ref: str, platform: str | None = None) -> graph.ResolvedImage:
        config = graph.ImageConfig(env=("PATH=/usr/bin:/bin",), working_dir="/srv",
                                   cmd=("sh",))
        if "trigger" in ref:
            config = graph.ImageConfig(on_build=tuple(TRIGGERS))
        return graph.ResolvedImage(ref, DIGEST, config, platform or "linux/amd64")


TRIGGERS = ["RUN echo hi", "COPY a b", "ENV X=1", "ONBUILD RUN x", "FROM x", "MAINTAINER m",
            "ARG A=$B", "WORKDIR /w", "RUN --mount=type=cache,target=/c true"]

# --------------------------------------------------------------------------- strategies

KEYWORDS = ["FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
            "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
            "HEALTHCHECK", "SHELL", "from", "Run", "copy", "FOO", "onbuild"]
FLAG_NAMES = ["from", "chown", "chmod", "link", "parents", "exclude", "platform", "mount",
              "network", "security", "interval", "timeout", "start-period", "start-interval",
              "retries", "checksum", "keep-git-dir", "unpack", "device", "bogus", ""]
FLAG_VALUES = ["", "0", "1", "true", "false", "x", "0:0", "755", "u+x", "linux/amd64",
               "$BUILDPLATFORM", "${TARGETPLATFORM}", "30s", "1m30s", "-1s", "0s",
               "type=cache,target=/c", "type=bind,source=/,target=/m,from=stage0",
               "type=secret,id=s", "type=ssh", "type=tmpfs,target=/t,size=1k",
               "type=bind,target=/x,rw=true", "target", "type=", "none", "host",
               "insecure", "sandbox", "stage0", "1", "-1", "99", "**", "*.go",
               "sha256:" + "0" * 64, '"a b"', "'x'", "a=b=c", "type=cache,id=a,sharing=locked"]
WORDS = ["busybox", "alpine:3", "scratch", "trigger-image", "stage0", "Stage0", "AS", "as",
         "base", "/", ".", "..", "/app", "a", "b", "*", "**/*", "src/", "/dst/", "x y",
         "$A", "${A}", "${A:-def}", "${A:+alt}", "${A?err}", "${A:?}", "${A#p}", "${A%%p*}",
         "${A/x/y}", "${", "$", "${A", "}", "$(echo)", "`echo`", "\\", "\\$A", "'$A'",
         '"$A"', '"', "'", "=", "A=1", "A=", "=1", "A=\"q v\"", "8080", "80/udp", "1-3/tcp",
         "SIGTERM", "9", "KILL", "root", "1000:1000", "#", "# c", "--", "-", "[", "]",
         "[]", '["a"]', '["a", "b"]', '["a", 1]', '[1]', "{", "<<EOF", "<<-EOF", "<<'EOF'",
         '<<"EOF"', "2<<EOF", "<<E\"O\"F", "<<", "<<-", "http://example.com/f.tar",
         "https://example.com/r.git#main:sub", "git@github.com:a/b.git", "\t", "\x00",
         "http://[::1", "https://[::1]:99999/x.git", "http://x:abc/a", "git://[/r.git",
         "https://e.com/a.git?ref=main&subdir=x", "https://e.com/%zz", "http://",
         "\u00e9", "\ufeff", "CMD", "NONE", "none"]
DIRECTIVES = ["# syntax=docker/dockerfile:1", "# escape=`", "# escape=\\", "# escape=x",
              "# check=skip=all", "# check=error=true", "#syntax=x", "# ESCAPE=`",
              "# escape=", "#!/usr/bin/env x", "// syntax=y", "# unknown=1"]
HEREDOC_NAMES = ["EOF", "END", "E", "eof", "X1"]


@st.composite
def flag(draw) -> str:
    name = draw(st.sampled_from(FLAG_NAMES))
    if draw(st.booleans()):
        return f"--{name}"
    return f"--{name}={draw(st.sampled_from(FLAG_VALUES) | st.text(max_size=8))}"


@st.composite
def word(draw) -> str:
    return draw(st.sampled_from(WORDS) | st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="\n"), max_size=6))


@st.composite
def json_args(draw) -> str:
    items = draw(st.lists(st.sampled_from(["a", "b", "$A", "sh", "-c", "echo hi", "", "\\n"])
                          | st.text(max_size=5), max_size=4))
    quoted = ['"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items]
    # raw JSON tokens: escapes (lone surrogates too), non-strings, nesting
    quoted += draw(st.lists(st.sampled_from([
        '"\\ud800"', '"\\udfff x"', '"\\ud83d\\ude00"', '"\\u0000"', '"\\n\\t"', '"\\/"',
        '"\\x"', "null", "true", "1e999", "{}", "[]", '["a"]', "NaN", '"a" "b"']), max_size=2))
    body = ", ".join(quoted)
    return "[" + body + draw(st.sampled_from(["]"] * 8 + ["", "]]", ",]", ", 1]"]))


@st.composite
def heredoc_body(draw, name: str, chomp: bool) -> str:
    lines = draw(st.lists(st.sampled_from(["echo hi", "set -e", "$A ${A}", "", "\tTAB",
                                           "#!/bin/sh", "EOF", "\tEOF", "\\", "'", '"'])
                          | st.text(alphabet=st.characters(codec="utf-8",
                                                           exclude_characters="\n"),
                                    max_size=10), max_size=4))
    terminator = ("\t" if chomp and draw(st.booleans()) else "") + name
    if draw(st.integers(0, 9)) == 0:  # sometimes never closed
        terminator = ""
    return "".join(line + "\n" for line in lines) + terminator


@st.composite
def instruction(draw) -> str:
    parts = [draw(st.sampled_from(KEYWORDS))]
    parts += draw(st.lists(flag(), max_size=3))
    docs: list[str] = []
    form = draw(st.integers(0, 5))
    if form == 0:
        parts.append(draw(json_args()))
    else:
        for _ in range(draw(st.integers(0, 5))):
            if draw(st.integers(0, 6)) == 0:
                name = draw(st.sampled_from(HEREDOC_NAMES))
                chomp = draw(st.booleans())
                quote = draw(st.sampled_from(["", "'", '"']))
                prefix = draw(st.sampled_from(["", "", "2", "cat "]))
                parts.append(f"{prefix}<<{'-' if chomp else ''}{quote}{name}{quote}")
                docs.append(draw(heredoc_body(name, chomp)))
            else:
                parts.append(draw(word()))
    sep = draw(st.sampled_from([" ", " ", "  ", "\t", " \\\n ", "\\\n", " \\\n\n ",
                                " \\\n# comment\n ", " \\ \n"]))
    line = sep.join(parts)
    if docs:
        line += "\n" + "\n".join(docs)
    return line


VALUE = st.sampled_from(["1", "x", "$A", "${A:-d}", "${B}", '"q v"', "'s q'", "a\\ b",
                         "${A:+-${B}}", "", "${IMG##*/}", "/p/$A"])
SAFE_WORD = st.sampled_from(["a", "b", "/app", "/app/", ".", "*.txt", "src/", "$A", "${A}",
                             "dir/$B", '"spaced name"', "x.tar.gz", "/"])
STAGE_REF = st.sampled_from(["stage0", "STAGE0", "base", "0", "1", "busybox", "$A", "nope",
                             "trigger-image"])


@st.composite
def sane_instruction(draw) -> str:
    """Mostly valid instructions, so that compilation reaches dispatch and ops."""
    kw = draw(st.sampled_from(["RUN", "COPY", "ADD", "ENV", "ARG", "LABEL", "WORKDIR", "USER",
                               "CMD", "ENTRYPOINT", "SHELL", "EXPOSE", "VOLUME", "STOPSIGNAL",
                               "HEALTHCHECK", "ONBUILD", "FROM", "MAINTAINER"]))
    pick = lambda strat, n=3: draw(st.lists(strat, min_size=1, max_size=n))  # noqa: E731
    if kw == "RUN":
        flags = draw(st.lists(st.sampled_from([
            "--mount=type=cache,target=/c", "--mount=type=bind,from=stage0,target=/m",
            "--mount=type=tmpfs,target=/t", "--mount=type=secret,id=s,target=/s",
            "--mount=target=/x,from=base", "--network=none", "--network=host",
            "--security=insecure", "--mount=type=bind,source=$A,target=/b",
            "--mount=type=cache,target=/c,sharing=private,mode=0700,uid=1"]), max_size=2))
        if draw(st.integers(0, 3)) == 0:
            name = draw(st.sampled_from(HEREDOC_NAMES))
            chomp = draw(st.booleans())
            q = draw(st.sampled_from(["", "'"]))
            head = draw(st.sampled_from(["", "cat ", "sh ", "python3 "]))
            body = draw(heredoc_body(name, chomp))
            return " ".join(["RUN", *flags, f"{head}<<{'-' if chomp else ''}{q}{name}{q}"]) \
                + "\n" + body
        body = draw(json_args()) if draw(st.booleans()) else " ".join(pick(SAFE_WORD | VALUE))
        return " ".join(["RUN", *flags, body])
    if kw in ("COPY", "ADD"):
        flags = draw(st.lists(st.sampled_from([
            "--from=stage0", "--from=0", "--from=base", "--from=$A", "--chown=1:1",
            "--chown=$A", "--chmod=755", "--chmod=u+rwx", "--link", "--parents",
            "--exclude=*.md", "--checksum=sha256:" + "0" * 64, "--keep-git-dir",
            "--unpack=false"] if kw == "ADD" else [
            "--from=stage0", "--from=0", "--from=base", "--from=$A", "--chown=1:1",
            "--chown=$A", "--chmod=755", "--chmod=u+rwx", "--link", "--parents",
            "--exclude=*.md", "--from=trigger-image"]), max_size=2))
        if draw(st.integers(0, 4)) == 0:
            name = draw(st.sampled_from(HEREDOC_NAMES))
            chomp = draw(st.booleans())
            body = draw(heredoc_body(name, chomp))
            return " ".join([kw, *flags, f"<<{'-' if chomp else ''}{name}",
                             draw(SAFE_WORD)]) + "\n" + body
        srcs = pick(SAFE_WORD | st.sampled_from(["http://e.com/a", "https://e.com/r.git#v1",
                                                   "git@e.com:r.git", "http://[::1/a",
                                                   "https://e.com/r.git?ref=v1&subdir=d",
                                                   "https://e.com/r.git#v1:sub?x"]))
        if draw(st.booleans()):
            return f"{kw} {' '.join(flags)} {draw(json_args())}"
        return " ".join([kw, *flags, *srcs, draw(SAFE_WORD)])
    if kw in ("ENV", "LABEL"):
        pairs = pick(st.tuples(st.sampled_from(["A", "B", "PATH", "x.y", "$A", "lbl"]), VALUE)
                     .map(lambda kv: f"{kv[0]}={kv[1]}"))
        if draw(st.integers(0, 5)) == 0:
            return f"{kw} A {draw(VALUE)} more"  # legacy `ENV key value` form
        return f"{kw} {' '.join(pairs)}"
    if kw == "ARG":
        return "ARG " + " ".join(pick(st.sampled_from([
            "A", "B=busybox", "IMG=trigger-image", "TARGETARCH", "BUILDPLATFORM", "A=$B",
            "SOURCE_DATE_EPOCH", "C=${A:-x}", "HTTP_PROXY"])))
    if kw == "FROM":
        plat = draw(st.sampled_from(["", "--platform=linux/arm64 ", "--platform=$BUILDPLATFORM ",
                                     "--platform=${TARGETPLATFORM} ", "--platform=bad "]))
        return f"FROM {plat}{draw(STAGE_REF)}" + draw(st.sampled_from(
            ["", " AS stage0", " AS base", " AS Other", " AS 0"]))
    if kw in ("CMD", "ENTRYPOINT"):
        return f"{kw} " + (draw(json_args()) if draw(st.booleans())
                           else " ".join(pick(SAFE_WORD | VALUE)))
    if kw == "SHELL":
        return "SHELL " + draw(json_args())
    if kw == "EXPOSE":
        return "EXPOSE " + " ".join(pick(st.sampled_from(
            ["80", "80/tcp", "53/udp", "1000-1002", "$A", "8080/sctp", "x", "0", "65536"])))
    if kw == "VOLUME":
        return "VOLUME " + (draw(json_args()) if draw(st.booleans())
                            else " ".join(pick(SAFE_WORD)))
    if kw == "HEALTHCHECK":
        flags = draw(st.lists(st.sampled_from(["--interval=5s", "--timeout=1m", "--retries=2",
                                               "--start-period=0s", "--start-interval=1ms",
                                               "--interval=bad", "--retries=-1"]), max_size=2))
        tail = draw(st.sampled_from(["NONE", "CMD true", "CMD [\"true\"]", "CMD", "x"]))
        return " ".join(["HEALTHCHECK", *flags, tail])
    if kw == "ONBUILD":
        return "ONBUILD " + draw(sane_instruction())
    return f"{kw} " + " ".join(pick(SAFE_WORD | VALUE, 2))


@st.composite
def dockerfile(draw) -> str:
    lines: list[str] = []
    if draw(st.integers(0, 3)) == 0:
        lines += draw(st.lists(st.sampled_from(DIRECTIVES), max_size=2))
    if draw(st.booleans()):
        lines.append(f"ARG {draw(st.sampled_from(['A', 'B=busybox', 'IMG=trigger-image']))}")
    if draw(st.integers(0, 9)):
        base = draw(st.sampled_from(["busybox"] * 4 + ["scratch", "trigger-image", "$B",
                                                       "${IMG}", "stage0", ""]))
        alias = draw(st.sampled_from(["", " AS stage0", " as Base", " AS base"] * 4
                                     + [" AS", " AS a b", " AS $A"]))
        lines.append(f"FROM {base}{alias}")
    chaos = draw(st.integers(0, 3))  # how wild this file is: 0 = only sane instructions
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 19))
        if kind < chaos:
            lines.append(draw(st.text(max_size=30)))  # arbitrary text, any code point
        elif kind < 2 * chaos:
            lines.append(draw(instruction()))
        elif kind < 2 * chaos + 2:
            lines.append(draw(st.sampled_from(["", "# comment", "   ", "\\", "\t# x"])))
        else:
            lines.append(draw(sane_instruction()))
    end = draw(st.sampled_from(["\n", "", "\n\n", "\\", " \\\n", "\r\n"]))
    return "\n".join(lines) + end


@st.composite
def raw_bytes_text(draw) -> str:
    """Arbitrary bytes read as UTF-8 the way a lenient reader would."""
    return draw(st.binary(max_size=200)).decode("utf-8", errors="replace")


BUILD_ARGS = st.dictionaries(st.sampled_from(["A", "B", "IMG", "TARGETPLATFORM", "HTTP_PROXY",
                                              "SOURCE_DATE_EPOCH", "BUILDKIT_X", "Z"]),
                             st.sampled_from(["", "1", "busybox", "linux/arm64", "x y",
                                              "$A", "${A", "nope/nope/nope", "-1"]),
                             max_size=3)
TARGETS = st.sampled_from([None] * 6 + ["stage0", "STAGE0", "base", "nope", "1", ""])

# --------------------------------------------------------------------------- property


@dataclass
class Counter:
    examples: int = 0
    ok: int = 0
    errors: int = 0
    known: int = 0


COUNT = Counter()
KNOWN: set[tuple[str, str, int]] = set()  # crashes found by earlier runs of this process


def check_one(text: str, build_args: dict[str, str], target: str | None) -> None:
    COUNT.examples += 1
    try:
        result = compile_dockerfile(text, resolver=FuzzResolver(), build_args=build_args,
                                    target=target)
        # what the solver and the image writer do next with the result must work too
        for op in result.target.root.walk():
            op.digest
        json.dumps(result.target.config.to_oci())
    except DefinitionError as e:
        str(e)
        e.render()  # rendering the message must not crash either
        COUNT.errors += 1
        return
    except Exception as e:
        if _where(e) in KNOWN:  # already reported: keep looking for other bugs
            COUNT.known += 1
            return
        raise
    COUNT.ok += 1


# weighted towards Dockerfile-like text: plain random text rarely gets past line one
@given(text=st.one_of(dockerfile(), dockerfile(), dockerfile(), raw_bytes_text(),
                      st.text(max_size=300)),
       build_args=BUILD_ARGS, target=TARGETS)
def fuzz_frontend(text: str, build_args: dict[str, str], target: str | None) -> None:
    check_one(text, build_args, target)


def test_fuzz_frontend() -> None:
    """So that `pytest fuzz/fuzz_parser.py` also works (with hypothesis' default budget)."""
    fuzz_frontend()


# --------------------------------------------------------------------------- seeds

# Hand-picked edge cases checked before the generated ones: numbers out of range or in
# other scripts, URL and JSON oddities, deep nesting, directives, heredoc corners.
_F = "FROM busybox\n"
SEEDS = [
    _F + "RUN ${A:-${B:-${C:-x}}}\n", "# escape=`\nFROM busybox\nRUN echo `\n hi\n",
    _F + "ONBUILD RUN <<EOF\nx\nEOF\n", _F + "COPY <<EOF\nx\nEOF\n",
    _F + "COPY <<EOF <<EOF2 /d/\nx\nEOF\ny\nEOF2\n", _F + "RUN <<EOF <<EOF2\nx\nEOF\ny\nEOF2\n",
    _F + "RUN\x0b echo\n", _F + "RUN echo\r\nRUN x\r\n", "FROM busybox\fRUN\n",
    _F + "WORKDIR ${A:?missing}\n", _F + "USER ${A/[/x}\n", _F + "ENV A=x\nLABEL b=${A%\\}\n",
    _F + "ENV A=abc\nLABEL b=${A/#a/x} c=${A/%c/y} d=${A//?/z} e=${A/[a-/q}\n",
    _F + "EXPOSE 1-0\n", _F + "EXPOSE 99999999999999999999\n", _F + "EXPOSE 1.2.3.4:80:80\n",
    _F + "EXPOSE \u0661\u0662\n", _F + "STOPSIGNAL \u0661\n", _F + "STOPSIGNAL RTMIN+99999999999\n",
    _F + "HEALTHCHECK --interval=99999999999999999999h CMD x\n",
    _F + "HEALTHCHECK --retries=99999999999999999999999 CMD x\n",
    _F + "HEALTHCHECK --interval=1e5s CMD x\n", _F + "HEALTHCHECK --interval=\u0661s CMD x\n",
    _F + "COPY --chmod=\u0667\u0665\u0665 a b\n", _F + "COPY --chown=\u0661:\u0661 a b\n",
    _F + "RUN --mount=type=cache,target=/c,mode=9999999999999999999 x\n",
    _F + "RUN --mount=type=tmpfs,target=/c,size=1e999 x\n", _F + "RUN --mount=\"type=bind x\n",
    "FROM busybox AS a\nFROM a AS b\nRUN --mount=from=b,target=/x x\n",
    "FROM --platform=/ busybox\n", "FROM --platform=a/b/c/d busybox\n",
    "ARG SOURCE_DATE_EPOCH=99999999999999999999999\nFROM busybox\n",
    _F + "COPY --from=99999999999999999999 a b\n", _F + "COPY --from=-1 a b\n",
    _F + "ADD --checksum=sha256:zz http://x/a b\n", _F + "ADD https://x/a.git#a:b:c /x\n",
    _F + "ADD http://[::1 /x\n", _F + "ADD https://[::1/x.tar /x\n", _F + "ADD http://x:99999/a /x\n",
    _F + "COPY --exclude=[ a b\n", _F + "COPY --parents a/../../b c\n", _F + "WORKDIR \x00\n",
    _F + 'RUN ["\\ud800"]\n', _F + 'CMD ["\\udfff", "\\u0000"]\n', _F + "SHELL []\nRUN x\n",
    _F + 'HEALTHCHECK CMD [""]\n', _F + "ONBUILD ONBUILD x\n", _F + 'ONBUILD ["RUN"]\n',
    "FROM trigger-image AS t\nFROM t\n", _F + "USER a:\n",
    "ARG A=$A$A\nARG A=$A$A\nFROM ${A}busybox\n",
    _F + "ARG =x\n", _F + "LABEL =\n", "\ufeff# escape=`\nFROM busybox\n",
    "#!x\n# syntax=a\nFROM busybox\n", "# check=skip=all;error=true\nFROM busybox\n",
    _F + "RUN x \\", "\\", _F + "RUN " + "a" * 70000 + "\n", "FROM " + "$" * 1000 + "\n",
    _F + "LABEL " + "${A:-" * 3000 + "}" * 3000 + "\n",
    _F + "RUN 99999999999999999999<<EOF\nx\nEOF\n", _F + "RUN <<''\nx\n\n",
]
SEED_BUILD_ARGS = [{}, {"A": "x"}, {"SOURCE_DATE_EPOCH": "99999999999999999999999"}]


def run_seeds(seen: dict) -> None:
    for text in SEEDS:
        for build_args in SEED_BUILD_ARGS:
            try:
                check_one(text, build_args, None)
            except Exception as exc:  # noqa: BLE001 - reported like a generated crash
                key = _where(exc)
                if key not in seen:
                    seen[key] = f"seed {text[:200]!r} {build_args}\n" + "".join(
                        traceback.format_exception(exc))
                    KNOWN.add(key)
                    print(f"\n=== CRASH {key[0]} at {key[1]}:{key[2]}\n{seen[key]}",
                          file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- driver


def _where(exc: BaseException) -> tuple[str, str, int]:
    """Identity of a crash: exception type and the innermost frame in our code."""
    tb = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in tb if "/frontends/" in f.filename or "/pybuild/" in f.filename] or tb
    last = ours[-1] if ours else None
    return (type(exc).__name__, last.filename if last else "?", last.lineno if last else 0)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("FUZZ_SECONDS", 180)))
    ap.add_argument("--batch", type=int, default=2000, help="examples per hypothesis run")
    a = ap.parse_args(argv)

    deadline = time.monotonic() + a.seconds
    seen: dict[tuple[str, str, int], str] = {}  # keys mirror KNOWN
    runs = 0
    run_seeds(seen)
    run = settings(max_examples=a.batch, deadline=None, database=None, derandomize=False,
                   suppress_health_check=list(HealthCheck), print_blob=True,
                   report_multiple_bugs=True)(fuzz_frontend)
    while time.monotonic() < deadline:
        runs += 1
        try:
            run()
        except BaseException as exc:  # noqa: BLE001 - a fuzzer reports whatever escaped
            if isinstance(exc, KeyboardInterrupt):
                break
            for leaf in _leaves(exc):
                key = _where(leaf)
                if key not in seen:
                    seen[key] = "".join(traceback.format_exception(leaf))
                    KNOWN.add(key)
                    print(f"\n=== CRASH {key[0]} at {key[1]}:{key[2]}\n{seen[key]}",
                          file=sys.stderr, flush=True)
    print(f"fuzz_parser: {COUNT.examples} examples in {runs} runs "
          f"({COUNT.ok} compiled, {COUNT.errors} DefinitionError, "
          f"{COUNT.known} hit an already-reported crash), "
          f"{len(seen)} distinct crash(es)")
    return 1 if seen else 0


if __name__ == "__main__":
    sys.exit(main())
