"""BuildKit build checks (linter) conformance: shared/conformance/buildkit/lint/check_cases.json.

Every case runs in both modes of the README:
- lint mode (`--check`): all stages, expected `lint_warnings` or `warnings`, compared on
  rule/description/url/detail after sorting by (line, detail); `build_error` must equal
  the error text exactly;
- build mode: only what the target needs, the default build args of the harness, and the
  warnings compared on short text, description, url and level (lines included). Real
  builds (pulling busybox/alpine, checksumming the context) are not run here: a build
  error that only a solve produces (`build_error_regexp`) is out of scope for the linter.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from frontends.dockerfile.checks import RULES, Warning, rule_url, run_checks, CheckConfig
from frontends.dockerfile.dockerignore import read_dockerignore
from pybuild.buildcheck import ignore_checker

SHARED = Path(__file__).resolve().parents[1] / "shared"
CASES_FILE = SHARED / "conformance" / "buildkit" / "lint" / "check_cases.json"

pytestmark = pytest.mark.skipif(not CASES_FILE.is_file(),
                                reason=f"conformance vectors not found at {CASES_FILE}")

CASES = json.loads(CASES_FILE.read_text("utf-8"))["cases"] if CASES_FILE.is_file() else []


def _params():
    for c in CASES:
        yield pytest.param(c, id=c["id"] + (f"-{c['subtest']}" if c.get("subtest") else ""))


def _build_args(attrs: dict) -> dict[str, str]:
    return {k[len("build-arg:"):]: v for k, v in attrs.items() if k.startswith("build-arg:")}


def _run(case: dict, all_stages: bool):
    attrs = case.get("frontend_attrs") or {}
    patterns = read_dockerignore(case["dockerignore"]) if "dockerignore" in case else []
    platform = attrs.get("platform", "linux/amd64").split(",")[0]
    return run_checks(case["dockerfile"], build_args=_build_args(attrs), all_stages=all_stages,
                      is_ignored=ignore_checker(patterns), platform=platform,
                      build_platform="linux/amd64")


def _key(w) -> tuple:
    if isinstance(w, Warning):
        return (w.line, w.detail)
    return (w["line"], w["detail"])


@pytest.mark.parametrize("case", _params())
def test_lint_mode(case):
    result = _run(case, all_stages=True)
    expected = case.get("lint_warnings") or case["warnings"]
    got = sorted(result.warnings, key=_key)
    want = sorted(expected, key=_key)
    assert [(w.rule, w.description, w.url, w.detail) for w in got] == \
        [(w["rule"], w["description"], w["url"], w["detail"]) for w in want]
    violation = result.violation()
    text = result.error_text or (violation.message if violation is not None else "")
    assert text == case.get("build_error", "")


@pytest.mark.parametrize("case", _params())
def test_build_mode(case):
    result = _run(case, all_stages=False)
    got = sorted(result.warnings, key=lambda w: (w.line, w.short))
    want = sorted(case["warnings"], key=lambda w: (w["line"], _short(w)))
    assert [(w.short, w.description, w.url, w.level) for w in got] == \
        [(_short(w), w["description"], w["url"], w["level"]) for w in want]
    err = case.get("build_error")
    violation = result.violation()
    text = result.error_text or (violation.message if violation is not None else "")
    if err:
        assert err in text
    elif not case.get("build_error_regexp"):
        assert text == ""


def _short(w: dict) -> str:
    return f"{w['rule']}: {w['detail']}" + (f" (line {w['line']})" if w["line"] > 0 else "")


# ---------------------------------------------------------------------------- unit tests


def test_rule_urls_are_kebab_case():
    assert rule_url("JSONArgsRecommended").endswith("/rule/json-args-recommended/")
    assert rule_url("FromAsCasing") == "https://docs.docker.com/go/dockerfile/rule/from-as-casing/"
    for name, rule in RULES.items():
        assert rule.url.startswith("https://docs.docker.com/go/dockerfile/rule/") and "--" not in rule.url


def test_check_options():
    cfg = CheckConfig.parse(" skip = A, B ; error = true ; experimental=all")
    assert cfg.skip == {"A", "B"} and cfg.error and cfg.experimental_all
    with pytest.raises(Exception, match="invalid check option"):
        CheckConfig.parse("skip")
    with pytest.raises(Exception, match="invalid check option"):
        CheckConfig.parse("bogus=1")


def test_base_image_env_and_platform_from_resolver():
    from pybuild import graph

    class Resolver:
        def resolve(self, ref, platform=None):
            return graph.ResolvedImage(ref, "sha256:" + "0" * 64,
                                       graph.ImageConfig(env=("GOPATH=/go",), shell=("/bin/bash", "-c")),
                                       "linux/arm64")

    text = "FROM golang\nCOPY $GOPATH/x $GOPTH/y\nCMD run\n"
    result = run_checks(text, resolver=Resolver(), platform="linux/amd64")
    shorts = sorted(w.short for w in result.warnings)
    assert shorts == [
        'InvalidBaseImagePlatform: Base image golang was pulled with platform "linux/arm64", '
        'expected "linux/amd64" for current build (line 1)',
        "UndefinedVar: Usage of undefined variable '$GOPTH' (did you mean $GOPATH?) (line 2)",
    ]  # no JSONArgsRecommended: the base image has its own SHELL


def test_per_instruction_skip_is_local():
    text = "FROM scratch\n# check=skip=MaintainerDeprecated\nMAINTAINER a\nMAINTAINER b\n"
    assert [w.line for w in run_checks(text).warnings] == [4]
