"""BuildKit dockerfile2llb conformance: shared/conformance/buildkit/dockerfile2llb/
convert_cases.json and expose_cases.json (whole-file conversion, env helpers, proxy
args, healthcheck history, SOURCE_DATE_EPOCH, EXPOSE port specs)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from frontends.dockerfile import instructions as ins
from frontends.dockerfile.compile import (compile_dockerfile, proxy_env_from_build_args,
                                          resolve_source_date_epoch,
                                          source_only_stage_filename)
from frontends.dockerfile.history import healthcheck_created_by
from pybuild import graph
from pybuild.errors import DefinitionError

SHARED = Path(__file__).resolve().parents[1] / "shared"
D2L = SHARED / "conformance" / "buildkit" / "dockerfile2llb"

pytestmark = pytest.mark.skipif(not D2L.is_dir(), reason=f"conformance vectors not found at {D2L}")


def _load(name: str) -> dict:
    p = D2L / name
    return json.loads(p.read_bytes().decode("utf-8")) if p.is_file() else {}


CONVERT = _load("convert_cases.json")
EXPOSE = _load("expose_cases.json")

# Cases we cannot pass yet, with the reason (reported to the lead).
XFAIL: dict[str, str] = {}


class FakeResolver:
    def __init__(self):
        self.calls = []

    def resolve(self, ref, platform=None):
        self.calls.append(ref)
        return graph.ResolvedImage(ref=ref, manifest_digest="sha256:" + "1" * 64,
                                   config=graph.ImageConfig(env=("PATH=/bin",)))


def _convert_params():
    for c in CONVERT.get("convert", {}).get("cases", []):
        marks = [pytest.mark.xfail(reason=XFAIL[c["name"]], strict=True)] if c["name"] in XFAIL else []
        yield pytest.param(c, id=c["name"], marks=marks)


@pytest.mark.parametrize("case", _convert_params())
def test_convert(case):
    kwargs = {"target": case["target"]} if case.get("target") else {}
    if not case["ok"]:
        with pytest.raises(DefinitionError) as exc:
            compile_dockerfile(case["dockerfile"], resolver=FakeResolver(), **kwargs)
        if "error_equals" in case:
            assert exc.value.message == case["error_equals"]
        return
    res = compile_dockerfile(case["dockerfile"], resolver=FakeResolver(), **kwargs)
    if "expect_image_labels" in case:
        assert dict(res.target.config.labels) == case["expect_image_labels"]


@pytest.mark.parametrize("case", CONVERT.get("add_env", {}).get("cases", []),
                         ids=lambda c: f"{c['key']}={c['value']}")
def test_add_env(case):
    cfg = graph.ImageConfig(env=tuple(case["env"])).with_env(case["key"], case["value"])
    assert list(cfg.env) == case["expected"]


@pytest.mark.parametrize("case", CONVERT.get("parse_key_value", []), ids=lambda c: c["input"])
def test_parse_key_value(case):
    key, _, value = case["input"].partition("=")
    assert (key, value) == (case["key"], case["value"])


_PROXY_FIELDS = {"HTTPProxy": "HTTP_PROXY", "HTTPSProxy": "HTTPS_PROXY", "FTPProxy": "FTP_PROXY",
                 "NoProxy": "NO_PROXY", "AllProxy": "ALL_PROXY"}


@pytest.mark.parametrize("case", CONVERT.get("proxy_env_from_build_args", {}).get("cases", []))
def test_proxy_env(case):
    env = proxy_env_from_build_args(case["build_args"])
    if case["expected"] is None:
        assert env == ()
        return
    got = dict(e.split("=", 1) for e in env)
    for fld, name in _PROXY_FIELDS.items():
        want = case["expected"][fld]
        assert got.get(name, "") == want
        assert got.get(name.lower(), "") == want


@pytest.mark.parametrize("case", CONVERT.get("healthcheck_history", {}).get("cases", []))
def test_healthcheck_history(case):
    h = case["health"]
    hc = graph.Healthcheck(tuple(h["Test"]), ins.parse_go_duration(h["Interval"]),
                           ins.parse_go_duration(h["Timeout"]),
                           ins.parse_go_duration(h["StartPeriod"]),
                           ins.parse_go_duration(h["StartInterval"]), h["Retries"])
    assert healthcheck_created_by(hc) == case["created_by"]


@pytest.mark.parametrize("case", CONVERT.get("source_date_epoch_value", {}).get("cases", []),
                         ids=lambda c: c["value"])
def test_source_date_epoch_value(case):
    if "error_contains" in case:
        with pytest.raises(DefinitionError) as exc:
            resolve_source_date_epoch(case["value"])
        assert case["error_contains"] in exc.value.message
        return
    got = resolve_source_date_epoch(case["value"])
    assert got == case["expected_unix"]
    assert ("" if got is None else str(got)) == case["formatted"]


@pytest.mark.parametrize("case", CONVERT.get("source_date_epoch_stage", {}).get("cases", []))
def test_source_date_epoch_stage(case):
    if "source_date_epoch" in case:
        with pytest.raises(DefinitionError) as exc:
            compile_dockerfile(case["dockerfile"], resolver=FakeResolver(),
                               build_args={"SOURCE_DATE_EPOCH": case["source_date_epoch"]})
        assert case["error_contains"] in exc.value.message
        return
    if case.get("ok"):
        assert source_only_stage_filename(case["dockerfile"], case["stage_index"]) == \
            case["expect_http_filename"]
    else:
        with pytest.raises(DefinitionError) as exc:
            source_only_stage_filename(case["dockerfile"], case["stage_index"])
        assert case["error_contains"] in exc.value.message


# --------------------------------------------------------------------------- EXPOSE


@pytest.mark.parametrize("case", EXPOSE.get("parse_port", []), ids=lambda c: c["spec"] or "empty")
def test_parse_port(case):
    if "error_equals" in case:
        with pytest.raises(ins.FlagError) as exc:
            ins.parse_port_spec(case["spec"])
        assert str(exc.value) == case["error_equals"]
    else:
        assert ins.parse_port_spec(case["spec"]) == case["expected"]


@pytest.mark.parametrize("case", EXPOSE.get("parse_ports", []), ids=lambda c: " ".join(c["specs"]))
def test_parse_ports(case):
    if case.get("error"):
        with pytest.raises(ins.FlagError):
            ins.parse_port_specs(case["specs"])
    else:
        assert ins.parse_port_specs(case["specs"]) == case["expected"]
