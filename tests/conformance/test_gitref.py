"""BuildKit dfgitutil conformance: shared/conformance/buildkit/dfgitutil/git_ref_cases.json
(which strings are git references, and how they split into remote, ref and subdir)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from frontends.dockerfile.gitref import GitRefError, fragment_format, parse_git_ref

CASES_FILE = (Path(__file__).resolve().parents[1] / "shared" / "conformance"
              / "buildkit" / "dfgitutil" / "git_ref_cases.json")

pytestmark = pytest.mark.skipif(not CASES_FILE.is_file(),
                                reason=f"conformance vectors not found at {CASES_FILE}")

CASES = json.loads(CASES_FILE.read_bytes().decode("utf-8")) if CASES_FILE.is_file() else {}

# GitRef field (upstream name) -> (attribute, zero value)
FIELDS = {
    "Remote": ("remote", ""), "ShortName": ("short_name", ""), "Ref": ("ref", ""),
    "Checksum": ("checksum", ""), "SubDir": ("subdir", ""),
    "IndistinguishableFromLocal": ("indistinguishable_from_local", False),
    "UnencryptedTCP": ("unencrypted_tcp", False), "KeepGitDir": ("keep_git_dir", None),
    "Submodules": ("submodules", None), "MTime": ("mtime", ""),
    "FetchByCommit": ("fetch_by_commit", False),
}


def test_field_table_covers_upstream():
    assert {f["name"] for f in CASES["gitref_fields"]} == set(FIELDS)


@pytest.mark.parametrize("case", CASES.get("parse_git_ref", []), ids=lambda c: c["ref"])
def test_parse_git_ref(case):
    if case["expected"] is None:
        with pytest.raises(GitRefError) as exc:
            parse_git_ref(case["ref"])
        if case.get("error_contains"):
            assert case["error_contains"] in str(exc.value)
        return
    got = parse_git_ref(case["ref"])
    for name, (attr, zero) in FIELDS.items():
        assert getattr(got, attr) == case["expected"].get(name, zero), name


def _fragment_cases(section: str, keep: bool):
    for c in CASES.get(section, {}).get("cases", []):
        yield pytest.param(c, keep, id=f"{'subdir-' if keep else ''}{c['ref']}")


@pytest.mark.parametrize("case,keep", [*_fragment_cases("fragment_format", False),
                                       *_fragment_cases("fragment_format_with_subdir", True)])
def test_fragment_format(case, keep):
    assert fragment_format(case["ref"], keep) == (case["expected"], case["ok"])
