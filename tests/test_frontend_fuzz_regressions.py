"""Inputs that fuzz/fuzz_parser.py (or its seed list) found crashing the Dockerfile
frontend with something other than a DefinitionError; each pinned here, named after its bug."""
from __future__ import annotations

import json

import pytest

from frontends.dockerfile.compile import compile_dockerfile
from frontends.dockerfile.parser import parse_json_array
from pybuild import graph
from pybuild.errors import DefinitionError


class Resolver:
    def resolve(self, ref, platform=None):
        return graph.ResolvedImage(ref, "sha256:" + "ab" * 32, graph.ImageConfig(),
                                   platform or "linux/amd64")


def compile_text(text: str):
    return compile_dockerfile(text, resolver=Resolver())


@pytest.mark.parametrize("src", ["http://[::1", "https://[::1/x.tar", "https://[::1/r.git"])
def test_add_of_an_unparsable_url_is_a_definition_error(src):
    """urlsplit raised ValueError("Invalid IPv6 URL") out of the compiler."""
    with pytest.raises(DefinitionError) as e:
        compile_text(f"FROM busybox\nADD {src} /x\n")
    assert e.value.line == 2


def test_lone_surrogate_escape_in_exec_form_becomes_replacement_char():
    """json decoded "\\ud800" to a lone surrogate, and hashing the op then raised
    UnicodeEncodeError; Go's decoder (BuildKit) yields U+FFFD."""
    assert parse_json_array('["\\ud800", "\\ud83d\\ude00"]') == ("\ufffd", "\U0001f600")
    res = compile_text('FROM busybox\nRUN ["echo", "\\udfff"]\nCMD ["\\ud800"]\n')
    assert [op.digest for op in res.target.root.walk()]
    assert res.target.root.args[-1] == "\ufffd"
    json.dumps(res.target.config.to_oci()).encode()
    assert res.target.config.cmd == ("\ufffd",)
