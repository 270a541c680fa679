"""BuildKit instruction-layer conformance: shared/conformance/buildkit/instructions/
instruction_cases.json (typed instructions, flag parsing, heredocs, errors)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from frontends.dockerfile import instructions as ins
from frontends.dockerfile.compile import compile_dockerfile
from frontends.dockerfile.parser import Node, parse
from pybuild import graph
from pybuild.errors import DefinitionError

SHARED = Path(__file__).resolve().parents[1] / "shared"
CASES_FILE = SHARED / "conformance" / "buildkit" / "instructions" / "instruction_cases.json"

pytestmark = pytest.mark.skipif(not CASES_FILE.is_file(),
                                reason=f"conformance vectors not found at {CASES_FILE}")


def _cases() -> dict:
    if not CASES_FILE.is_file():
        return {}
    return json.loads(CASES_FILE.read_bytes().decode("utf-8"))


CASES = _cases()


def _section(name: str, key: str | None = "cases") -> list:
    sec = CASES.get(name, {} if key else [])
    return sec.get(key, []) if key else sec


def _first(dockerfile: str):
    return ins.parse_instruction(parse(dockerfile).nodes[0])


class FakeResolver:
    def resolve(self, ref, platform=None):
        return graph.ResolvedImage(ref=ref, manifest_digest="sha256:" + "0" * 64,
                                   config=graph.ImageConfig(env=("PATH=/bin",)))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("case", _section("parse_instruction_errors"),
                         ids=lambda c: c["name"])
def test_parse_instruction_errors(case):
    node = parse(case["dockerfile"]).nodes[0]
    with pytest.raises(DefinitionError) as exc:
        ins.parse_instruction(node)
    msg = exc.value.message
    if "error_equals" in case:
        assert msg == case["error_equals"]
    else:
        assert case["error_contains"] in msg
    assert exc.value.line == node.start_line


@pytest.mark.parametrize("case", _section("node_level_cases"), ids=lambda c: c["name"])
def test_node_level_cases(case):
    node = Node(keyword=case["instruction"].lower(), flags=(), args=tuple(case["next_values"]),
                json_form=bool(case.get("json", False)), original=case.get("original", ""),
                start_line=1, end_line=1)
    if "error_equals" in case:
        with pytest.raises(DefinitionError) as exc:
            ins.parse_instruction(node)
        assert exc.value.message == case["error_equals"]
    else:
        cmd = ins.parse_instruction(node)
        assert list(cmd.health.test) == case["expect"]["health_test"]


@pytest.mark.parametrize("case", _section("healthcheck_interval"),
                         ids=lambda c: f"{c['flag']}={c['value']}")
def test_healthcheck_interval(case):
    df = f"HEALTHCHECK --{case['flag']}={case['value']} CMD true"
    if case.get("ok"):
        _first(df)
    else:
        with pytest.raises(DefinitionError) as exc:
            _first(df)
        assert case["error_contains"] in exc.value.message


def _must_not_crash_params():
    sec = CASES.get("must_not_crash", {})
    for name in sec.get("instructions", []):
        for tpl in sec.get("templates", []):
            yield pytest.param(name, tpl, id=f"{name}:{tpl}")


@pytest.mark.parametrize("name,template", _must_not_crash_params())
def test_must_not_crash(name, template):
    df = "FROM busybox\n" + template.format(cmd=name)
    try:
        compile_dockerfile(df, resolver=FakeResolver())
    except DefinitionError:
        pass


# --------------------------------------------------------------------------- typed values


def test_doc_comments():
    sec = CASES["doc_comments"]
    nodes = parse(sec["dockerfile"]).nodes
    cmds = [ins.parse_instruction(n) for n in nodes]
    meta, stage = cmds[0], cmds[1]
    exp = sec["expect"]
    assert stage.doc_comment == exp["stage0_doc_comment"]
    assert meta.args[0].key == exp["meta_arg0"]["key"]
    assert meta.args[0].comment == exp["meta_arg0"]["doc_comment"]
    stage_cmds = cmds[2:]
    for ec in exp["stage0_commands"]:
        cmd = stage_cmds[ec["index"]]
        assert [(a.key, a.comment) for a in cmd.args] == [
            (a["key"], a["doc_comment"]) for a in ec["args"]]


@pytest.mark.parametrize("case", _section("run_flags_used", None), ids=lambda c: c["dockerfile"])
def test_run_flags_used(case):
    cmd = _first(case["dockerfile"])
    assert list(cmd.flags_used) == case["flags_used"]


@pytest.mark.parametrize("case", _section("copy_heredoc"), ids=lambda c: c["dockerfile"])
def test_copy_heredoc(case):
    cmd = _first(case["dockerfile"])
    assert cmd.dest == case["dest_path"]
    assert list(cmd.sources) == case["source_paths"]
    assert [(c.path, c.data, c.expand) for c in cmd.contents] == [
        (c["path"], c["data"], c["expand"]) for c in case["source_contents"]]


@pytest.mark.parametrize("case", _section("run_heredoc"), ids=lambda c: c["dockerfile"])
def test_run_heredoc(case):
    cmd = _first(case["dockerfile"])
    assert cmd.prepend_shell == case["prepend_shell"]
    assert list(cmd.cmd_line) == case["cmd_line"]
    assert [(f.name, f.data, f.chomp) for f in cmd.files] == [
        (f["name"], f["data"], f["chomp"]) for f in case["files"]]


@pytest.mark.parametrize("case", _section("builder_flags"), ids=lambda c: " ".join(c["args"]) or "-")
def test_builder_flags(case):
    bf = ins.BFlags(case["args"])
    flags = {}
    for f in case["flags"]:
        if f["type"] == "string":
            flags[f["name"]] = bf.add_string(f["name"], f["default"])
        else:
            flags[f["name"]] = bf.add_bool(f["name"], f["default"])
    if not case["ok"]:
        with pytest.raises(ins.FlagError):
            bf.parse()
        return
    bf.parse()
    for name, exp in case.get("expect", {}).items():
        fl = flags[name]
        if "value" in exp:
            assert fl.value == exp["value"]
        if "true" in exp:
            assert fl.is_true == exp["true"]
        if "used" in exp:
            assert fl.used == exp["used"]
    if "expect_used_sorted" in case:
        assert bf.used() == case["expect_used_sorted"]


def test_builder_flag_messages():
    def err(args, *decl):
        bf = ins.BFlags(args)
        for kind, name in decl:
            getattr(bf, "add_" + kind)(name)
        with pytest.raises(ins.FlagError) as exc:
            bf.parse()
        return str(exc.value)

    assert err(["--x"]) == "unknown flag: --x"
    assert err(["x"]) == "arg should start with -- : x"
    assert err(["--s=1", "--s=2"], ("string", "s")) == "duplicate flag specified: --s"
    assert err(["--s"], ("string", "s")) == "missing a value on flag: --s"
    assert err(["--b="], ("bool", "b")) == "missing a value on flag: --b"
    assert err(["--b=yes"], ("bool", "b")) == "expecting boolean value for flag --b, not: yes"


@pytest.mark.parametrize("case", _section("handle_json_args"), ids=lambda c: c["name"])
def test_handle_json_args(case):
    assert ins.handle_json_args(case["args"], case["json"]) == case["expected"]


@pytest.mark.parametrize("case", _section("run_device"), ids=lambda c: c["input"])
def test_run_device(case):
    if case["error"] is not None:
        with pytest.raises(ins.FlagError) as exc:
            ins.parse_device(case["input"])
        assert str(exc.value) == case["error"]
    else:
        d = ins.parse_device(case["input"])
        assert (d.name, d.required) == (case["expect"]["name"], case["expect"]["required"])
