"""`pybuild build --explain`: why a step missed the cache, one test per reason kind.

The pure diffing (pybuild.explain) is tested on records; the end-to-end tests check that
the solver records the right components under a stable step identity."""
from __future__ import annotations

import os
import uuid

import pytest

from conftest import needs_root
from pybuild.explain import StepRecord, explain, step_position


def rec(**kw) -> StepRecord:
    base = dict(key="k1", instruction="RUN make", kind="exec",
                settings={"args": ["/bin/sh", "-c", "make"], "env": ["A=1"], "user": ""},
                parent="p1", base=("busybox:local", "sha256:aa"), inputs={},
                files=None, files_digest="")
    base.update(kw)
    return StepRecord(**base)


def kinds(why) -> list[str]:
    return [r.kind for r in why.reasons]


def test_no_earlier_build():
    assert kinds(explain("RUN make", rec(), None)) == ["no-history"]


def test_no_cache_and_pruned():
    assert kinds(explain("s", rec(), rec(), no_cache=True)) == ["no-cache"]
    assert kinds(explain("s", rec(), rec())) == ["pruned"]  # same key, still a miss


def test_instruction_text():
    why = explain("s", rec(key="k2", instruction="RUN make all",
                           settings={"args": ["/bin/sh", "-c", "make all"], "env": ["A=1"],
                                     "user": ""}), rec())
    assert kinds(why) == ["instruction", "setting"]
    assert "'RUN make' -> 'RUN make all'" in why.reasons[0].message


def test_env_or_arg_value():
    why = explain("s", rec(key="k2", settings={"args": ["/bin/sh", "-c", "make"],
                                               "env": ["A=2", "B=x"], "user": ""}), rec())
    assert kinds(why) == ["env", "env"]
    assert why.reasons[0].message == "ENV/ARG A changed: '1' -> '2'"
    assert why.reasons[1].message == "ENV/ARG B changed: (unset) -> 'x'"


def test_copied_file_named_by_path():
    old = rec(files={"src/a.py": "1", "src/b.py": "2"}, files_digest="d1")
    new = rec(key="k2", files={"src/a.py": "1", "src/b.py": "3", "src/c.py": "4"},
              files_digest="d2")
    why = explain("COPY src /src", new, old)
    assert [r.message for r in why.reasons] == ["file changed: src/b.py", "file added: src/c.py"]
    too_many = explain("s", rec(key="k2", files=None, files_digest="d2"), old)
    assert kinds(too_many) == ["file"]


def test_base_image_digest_and_earlier_step():
    why = explain("s", rec(key="k2", parent="p2", base=("busybox:local", "sha256:bb")), rec())
    assert kinds(why) == ["base"]
    assert "busybox:local@sha256:aa -> busybox:local@sha256:bb" in why.reasons[0].message
    assert kinds(explain("s", rec(key="k2", parent="p2"), rec())) == ["parent"]


def test_other_inputs_and_round_trip():
    old = rec(inputs={"actions[0].source": "x"})
    new = rec(key="k2", inputs={"actions[0].source": "y"})
    assert kinds(explain("s", new, old)) == ["input"]
    assert StepRecord.from_json(old.to_json()) == old


def test_position_ignores_text():
    assert step_position(["RUN", "COPY"], 1) == "FROM>RUN>COPY#1"


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def project(tmp_path, fresh_cli):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("one\n")
    (ctx / "b.txt").write_text("bee\n")
    return ctx, fresh_cli.root


def build(ctx, store, **kw):
    from pybuild import api

    result = api.build(str(ctx), progress="quiet", root=str(store), explain=True, **kw)
    return {e.step: e for e in result.explanations}


def messages(why) -> list[str]:
    return [r.message for r in why.reasons]


@needs_root
def test_explain_end_to_end(project):
    ctx, store = project
    token = uuid.uuid4().hex
    (ctx / "Dockerfile").write_text(
        f"FROM busybox:local\nARG V=1\nCOPY *.txt /src/\nRUN echo {token} $V > /v\n")
    first = build(ctx, store)
    assert [messages(w) for w in first.values()] == [["no earlier build of this step"]] * 2

    assert build(ctx, store) == {}  # all cached: nothing to explain

    (ctx / "b.txt").write_text("changed\n")
    again = build(ctx, store)
    assert messages(again["COPY *.txt /src/"]) == ["file changed: b.txt"]
    assert [r.kind for r in again[f"RUN echo {token} 1 > /v"].reasons] == ["parent"]

    arg = build(ctx, store, build_args={"V": "2"})
    assert list(arg) == [f"RUN echo {token} 2 > /v"]
    assert "ENV/ARG V changed: '1' -> '2'" in messages(arg[f"RUN echo {token} 2 > /v"])

    nocache = build(ctx, store, no_cache=True)
    assert all(w.reasons[0].kind == "no-cache" for w in nocache.values())


@needs_root
def test_explain_base_image_digest(project, tmp_path):
    from pybuild import api

    ctx, store = project
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "version").write_text("1\n")
    api.import_rootfs(str(rootfs), "tiny:local", root=str(store))
    (ctx / "Dockerfile").write_text("FROM tiny:local\nCOPY a.txt /a\n")
    build(ctx, store)
    (rootfs / "etc" / "version").write_text("2\n")
    api.import_rootfs(str(rootfs), "tiny:local", root=str(store))
    why = build(ctx, store)["COPY a.txt /a"]
    assert [r.kind for r in why.reasons] == ["base"]
    assert why.reasons[0].message.startswith("base image changed: tiny:local@sha256:")


@needs_root
def test_no_cache_filter_reruns_only_that_stage(project):
    ctx, store = project
    token = uuid.uuid4().hex
    (ctx / "Dockerfile").write_text(
        f"FROM busybox:local AS dep\nRUN echo {token} dep > /d\n"
        f"FROM busybox:local AS app\nRUN echo {token} app > /x\nCOPY --from=dep /d /d\n")
    from pybuild import api

    api.build(str(ctx), progress="quiet", root=str(store))
    again = api.build(str(ctx), progress="quiet", root=str(store), no_cache_filter=["app"])
    ran = sorted(s.name for s in again.steps if not s.cached and s.name != "scratch"
                 and not s.name.startswith("[internal]"))
    assert ran == ["COPY --from=dep /d /d", f"RUN echo {token} app > /x"]
    # the dep stage re-runs its RUN, which writes the same bytes... except mtimes: so
    # its users are rebuilt (the input's result is part of their keys)
    dep = api.build(str(ctx), progress="quiet", root=str(store), no_cache_filter=["dep"])
    assert f"RUN echo {token} dep > /d" in {s.name for s in dep.steps if not s.cached}
    assert api.build(str(ctx), progress="quiet", root=str(store)).run_steps == 0
