"""End to end: the Dockerfile language features in examples/ built for real, run with
`pybuild run --rm`, and their image config read back with `pybuild inspect`.

Heredocs, ONBUILD, ARG scoping and its cache behaviour, `--target` stage selection,
SHELL, and the config-only instructions. Needs root (namespaces, overlayfs).
"""
from __future__ import annotations

import json
import uuid

from conftest import EXAMPLES, needs_root

pytestmark = needs_root


def build(cli, example: str, *args: str, check: bool = True):
    """`pybuild build --progress=plain ARGS EXAMPLE_DIR`."""
    return cli("build", "--progress=plain", *args, str(EXAMPLES / example), check=check)


def steps(result) -> tuple[int, int]:
    """(steps run, steps cached) from the plain progress summary line."""
    for line in result.stderr.splitlines():
        if " steps: " in line and " run, " in line:
            parts = line.split()
            return int(parts[2]), int(parts[4])
    raise AssertionError(f"no summary line in:\n{result.stderr}")


def layers(cli, ref: str) -> list[str]:
    return [d["digest"] for d in json.loads(cli("inspect", ref).stdout)["Manifest"]["layers"]]


def config(cli, ref: str) -> dict:
    return json.loads(cli("inspect", ref).stdout)["Config"]


def run_lines(cli, ref: str, *command: str) -> list[str]:
    return cli("run", "--rm", ref, *command).stdout.splitlines()


# --------------------------------------------------------------------------- heredocs


def test_heredocs(cli):
    build(cli, "heredoc", "-t", "lang-heredoc:1")
    out = dict(line.split(": ", 1) for line in run_lines(cli, "lang-heredoc:1"))
    # one shell ran the whole RUN <<EOF script (the loop's count survived), ARG visible
    assert out["run.txt"] == "script counted 3 words for world|"
    # COPY <<EOF expands ARG and ENV; COPY <<'EOF' keeps the text as written
    assert out["copied.txt"] == "copied for world who is happy|"
    assert out["literal.txt"] == "literal ${WHO} and $MOOD|"
    # <<- strips leading tabs from the body and lets the closing delimiter be indented
    assert out["chomped.txt"] == "tab-indented line|two tabs in|"
    assert out["run-chomped.txt"] == "tabs stripped from the script|"
    # two heredocs on one line: both bodies reach the shell; the quoted one unexpanded
    assert out["first.txt"] == "first body for world|"
    assert out["second.txt"] == "second body keeps $WHO|"
    assert len(out) == 7


def test_heredoc_build_arg_reaches_copy_and_run(cli):
    who = f"user-{uuid.uuid4().hex[:8]}"
    build(cli, "heredoc", "-t", "lang-heredoc:arg", "--build-arg", f"WHO={who}")
    out = dict(line.split(": ", 1) for line in run_lines(cli, "lang-heredoc:arg"))
    assert out["run.txt"] == f"script counted 3 words for {who}|"
    assert out["copied.txt"] == f"copied for {who} who is happy|"
    assert out["literal.txt"] == "literal ${WHO} and $MOOD|"


def test_heredoc_with_shebang_runs_as_a_file(cli, tmp_path):
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox:local\n"
        "RUN <<EOF\n#!/bin/sh\necho \"shebang script ran as $0\" > /shebang.txt\nEOF\n")
    cli("build", "-t", "lang-shebang:1", str(tmp_path))
    assert run_lines(cli, "lang-shebang:1", "cat", "/shebang.txt") == \
        ["shebang script ran as /dev/pipes/EOF"]


# --------------------------------------------------------------------------- ONBUILD


def test_onbuild_triggers_run_in_the_child_build(cli):
    parent = build(cli, "onbuild/parent", "-t", "onbuild-parent:1")
    ran = [line for line in parent.stderr.splitlines() if line.startswith("#")]
    assert not any("trigger" in line for line in ran), "the parent only records its triggers"
    pconf = config(cli, "onbuild-parent:1")
    assert pconf["config"]["OnBuild"] == [
        "COPY trigger.txt /app/",
        'RUN echo "trigger saw: $(cat /app/trigger.txt)" > /app/onbuild.txt',
        "ENV FROM_TRIGGER=yes",
    ]
    assert run_lines(cli, "onbuild-parent:1", "ls", "/app") == ["parent.txt"]

    child = build(cli, "onbuild/child", "-t", "onbuild-child:1")
    assert "COPY trigger.txt /app/" in child.stderr
    assert run_lines(cli, "onbuild-child:1") == [
        "made by the parent",
        "trigger saw: from the child context",  # COPY ran in the child's context
        "child saw FROM_TRIGGER=yes",  # ENV from a trigger reaches later steps
    ]
    cconf = config(cli, "onbuild-child:1")["config"]
    assert "OnBuild" not in cconf or not cconf["OnBuild"], "triggers run once, not inherited"
    assert "FROM_TRIGGER=yes" in cconf["Env"]


# --------------------------------------------------------------------------- ARG


def test_arg_scoping_defaults_and_platform_args(cli):
    build(cli, "args", "-t", "lang-args:1")
    assert run_lines(cli, "lang-args:1") == [
        "before-redeclare=[]",  # a global ARG is not visible in a stage until redeclared
        "after-redeclare=[1.0]",  # redeclared without a value: the global default
        "local=[local-default]",
        "undeclared-targetarch=[]",  # automatic args too need an ARG line in the stage
        "targetarch=[amd64] targetos=[linux] buildplatform=[linux/amd64]",
        "env=[local-default]",
    ]


def test_arg_build_arg_overrides(cli):
    local = f"override-{uuid.uuid4().hex[:8]}"
    r = build(cli, "args", "-t", "lang-args:2", "--build-arg", "VERSION=2.5",
              "--build-arg", f"LOCAL={local}")
    assert steps(r)[0] >= 4  # every RUN after `ARG VERSION` saw a new value
    assert run_lines(cli, "lang-args:2") == [
        "before-redeclare=[]",
        "after-redeclare=[2.5]",
        f"local=[{local}]",
        "undeclared-targetarch=[]",
        "targetarch=[amd64] targetos=[linux] buildplatform=[linux/amd64]",
        f"env=[{local}]",
    ]
    assert f"FROM_ARG={local}" in config(cli, "lang-args:2")["config"]["Env"]


def test_arg_global_arg_feeds_from(cli):
    r = build(cli, "args", "--build-arg", "BASE_IMAGE=lang-no-such-image:1", check=False)
    assert r.returncode == 1
    assert "lang-no-such-image:1" in r.stderr and "Traceback" not in r.stderr


def test_unused_args_do_not_bust_the_cache(cli):
    build(cli, "args", "-t", "lang-args:1")
    tag = uuid.uuid4().hex[:8]
    for arg in (f"LATE_UNUSED={tag}",  # declared after the last RUN
                f"GLOBAL_UNUSED={tag}",  # global, never redeclared in the stage
                f"NEVER_DECLARED={tag}"):  # no ARG line at all: a warning, no rerun
        r = build(cli, "args", "--build-arg", arg)
        assert steps(r)[0] == 0, f"--build-arg {arg} reran steps:\n{r.stderr}"
    assert "NEVER_DECLARED" in r.stderr and "not consumed" in r.stderr
    # ... while one a RUN sees does rerun it
    r = build(cli, "args", "--build-arg", f"LOCAL={tag}")
    assert steps(r)[0] > 0


# --------------------------------------------------------------------------- --target


def test_target_case_insensitive_and_only_needed_stages(cli):
    r = build(cli, "target", "-t", "lang-target:1", "--target", "app")
    assert "the broken stage ran" not in r.stderr
    assert "exit 3" not in r.stderr, "a stage the target does not need must not run"
    assert run_lines(cli, "lang-target:1") == ["from base", "from helper", "from app"]
    # the same stage named in another case is the same image, all cached
    again = build(cli, "target", "-t", "lang-target:2", "--target", "APP")
    assert steps(again)[0] == 0
    assert layers(cli, "lang-target:2") == layers(cli, "lang-target:1")


def test_target_default_is_last_stage_which_runs_the_failing_one(cli):
    # the control for the test above: the broken stage does fail when it is needed
    r = build(cli, "target", check=False)
    assert r.returncode == 1
    assert "the broken stage ran" in r.stderr and "exit code: 3" in r.stderr


def test_target_unknown_stage_is_a_clean_error(cli):
    r = build(cli, "target", "--target", "nope", check=False)
    assert r.returncode == 1
    assert 'target stage "nope" could not be found' in r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- SHELL


def test_shell_changes_run_and_cmd(cli):
    build(cli, "shell", "-t", "lang-shell:1")
    cfg = config(cli, "lang-shell:1")["config"]
    assert cfg["Shell"] == ["/bin/myshell", "-c"]
    assert cfg["Cmd"] == ["/bin/myshell", "-c", "cat /marker.txt /after.txt /shell.log"]
    assert run_lines(cli, "lang-shell:1") == [
        "built-through-myshell",
        "plain sh, log has 1 line(s)",  # the RUN after `SHELL ["/bin/sh", "-c"]` bypassed it
        "myshell got: -c echo built-through-myshell > /marker.txt",
        "myshell got: -c cat /marker.txt /after.txt /shell.log",  # the CMD, at run time
    ]


# --------------------------------------------------------------------------- config


def test_config_instructions_in_image_config(cli):
    build(cli, "config", "-t", "lang-config:1")
    cfg = config(cli, "lang-config:1")
    c = cfg["config"]
    env = dict(e.split("=", 1) for e in c["Env"])
    assert env["APP_HOME"] == "/srv/app" and env["APP_MODE"] == "production mode"
    assert env["DERIVED"] == "/srv/app/bin" and env["PATH"]
    assert c["Labels"] == {"org.example.name": "config demo", "org.example.version": "2",
                           "org.example.home": "/srv/app"}
    assert c["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}, "9000/tcp": {}}
    assert c["Volumes"] == {"/data": {}, "/cache": {}, "/logs": {}}
    assert c["StopSignal"] == "SIGUSR1"
    assert c["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q -O- http://localhost:8080/ || exit 1"],
        "Interval": 30_000_000_000, "Timeout": 5_000_000_000,
        "StartPeriod": 2_000_000_000, "Retries": 4}
    assert c["User"] == "app"
    assert c["WorkingDir"] == "/srv/app/sub"
    created = [h["created_by"] for h in cfg["history"]]
    assert "STOPSIGNAL SIGUSR1" in created and "USER app" in created
    assert sum(1 for h in cfg["history"] if not h.get("empty_layer")) == \
        len(cfg["rootfs"]["diff_ids"])
    # the running container sees the same: env, workdir, user; a RUN after USER ran as app
    assert run_lines(cli, "lang-config:1") == \
        ["production mode|/srv/app/bin|/srv/app/sub|app|app"]
