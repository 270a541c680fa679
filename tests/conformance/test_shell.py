"""BuildKit shell-lexer conformance: envVarTest, wordsTest and lex_cases.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from frontends.dockerfile.shell import ShellExpansionError, ShellLexer

CONFORMANCE = Path(__file__).resolve().parents[1] / "shared" / "conformance"
SHELL_DIR = CONFORMANCE / "buildkit" / "shell"

pytestmark = pytest.mark.skipif(
    not SHELL_DIR.is_dir(),
    reason=f"conformance vectors not found at {CONFORMANCE} (clone shared/ beside the repo)")


def _read(name: str) -> str:
    return (SHELL_DIR / name).read_bytes().decode("utf-8")


def _lex_cases() -> dict:
    if not SHELL_DIR.is_dir():
        return {}
    return json.loads(_read("lex_cases.json"))


# --- envVarTest: ProcessWord ------------------------------------------------------

ENV_VAR_ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _env_var_cases():
    if not SHELL_DIR.is_dir():
        return
    for n, raw in enumerate(_read("envVarTest").split("\n"), 1):
        if raw.startswith("#"):
            continue
        line = raw.strip()
        if not line:
            continue
        fields = line.split("|")
        assert len(fields) == 3, f"envVarTest line {n}: {raw!r}"
        tag, inp, expected = (f.strip() for f in fields)
        if tag in ("A", "U"):
            yield pytest.param(inp, expected, id=f"L{n}:{inp}")


@pytest.mark.parametrize("inp,expected", list(_env_var_cases()))
def test_env_var(inp: str, expected: str) -> None:
    lex = ShellLexer("\\")
    if expected == "error":
        with pytest.raises(ShellExpansionError):
            lex.process_word(inp, ENV_VAR_ENV)
    else:
        assert lex.process_word(inp, ENV_VAR_ENV) == expected


# --- wordsTest: ProcessWords ------------------------------------------------------

def _words_cases():
    if not SHELL_DIR.is_dir():
        return
    env: dict[str, str] = {}
    for n, line in enumerate(_read("wordsTest").splitlines(), 1):
        if line.startswith("#"):
            continue
        if line.startswith("ENV "):
            key, _, value = line[3:].lstrip(" ").partition("=")
            env[key] = value
            continue
        fields = line.split("|")
        assert len(fields) == 2, f"wordsTest line {n}: {line!r}"
        yield pytest.param(fields[0].strip(), fields[1].lstrip(" ").split(","), dict(env),
                           id=f"L{n}:{fields[0].strip()}")


@pytest.mark.parametrize("inp,expected,env", list(_words_cases()))
def test_words(inp: str, expected: list[str], env: dict[str, str]) -> None:
    try:
        got = ShellLexer("\\").process_words(inp, env)
    except ShellExpansionError:
        got = ["error"]
    assert got == expected


# --- lex_cases.json ---------------------------------------------------------------

def _matches_cases():
    data = _lex_cases()
    for section in ("process_word_with_matches", "platform_release_name"):
        for i, case in enumerate(data.get(section, {}).get("cases", [])):
            yield pytest.param(case, id=f"{section}#{i}:{case['input']}")


@pytest.mark.parametrize("case", list(_matches_cases()))
def test_process_word_with_matches(case: dict) -> None:
    lex = ShellLexer("\\")
    if case.get("error"):
        with pytest.raises(ShellExpansionError):
            lex.process_word_with_matches(case["input"], case["envs"])
        return
    result, matched, unmatched = lex.process_word_with_matches(case["input"], case["envs"])
    assert result == case["expected"]
    if "matched" in case:
        assert matched == set(case["matched"])
    if "unmatched" in case:
        assert unmatched == set(case["unmatched"])


def _env_list_to_map(env: list[str]) -> dict[str, str]:
    # BuildKit's env list: KEY=VALUE, a bare KEY is set to "", the last one wins.
    out: dict[str, str] = {}
    for entry in env:
        key, _, value = entry.partition("=")
        out[key] = value
    return out


def _mandatory_cases():
    for i, case in enumerate(_lex_cases().get("mandatory_env_vars", {}).get("cases", [])):
        yield pytest.param(case, id=f"mandatory#{i}:{case['input']}")


@pytest.mark.parametrize("case", list(_mandatory_cases()))
def test_mandatory_env_vars(case: dict) -> None:
    lex = ShellLexer("\\")
    env = _env_list_to_map(case["env"])
    if "error_contains" in case:
        with pytest.raises(ShellExpansionError) as exc:
            lex.process_word(case["input"], env)
        assert case["error_contains"] in str(exc.value)
    else:
        assert lex.process_word(case["input"], env) == case["expected"]


def _get_env_cases():
    for i, case in enumerate(_lex_cases().get("get_env", {}).get("cases", [])):
        yield pytest.param(case, id=f"get_env#{i}")


@pytest.mark.parametrize("case", list(_get_env_cases()))
def test_get_env(case: dict) -> None:
    env = _env_list_to_map(case["env"])
    assert ShellLexer().process_word("${" + case["name"] + "}", env) == case["expected"]


def _regex_cases():
    for i, case in enumerate(_lex_cases().get("shell_pattern_to_regex", {}).get("cases", [])):
        yield pytest.param(case, id=f"regex#{i}:{case['pattern']}")


@pytest.mark.parametrize("case", list(_regex_cases()))
def test_shell_pattern_to_regex(case: dict) -> None:
    # The Go regex strings differ in spelling from Python's re.escape; check behaviour:
    # the pattern must match its own literal reading, anchored, and be greedy.
    from frontends.dockerfile.shell import _pattern_to_regex
    rx = _pattern_to_regex(case["pattern"], greedy=True, anchored=True)
    assert rx.pattern.startswith("^")
    go = case["regex"]
    # Go escapes with a backslash exactly the characters Python escapes (for these
    # ASCII punctuation cases), so unescaping both must give the same literal text.
    assert _unescape(rx.pattern) == _unescape(go)


def _unescape(rx: str) -> str:
    out, i = [], 0
    while i < len(rx):
        if rx[i] == "\\" and i + 1 < len(rx):
            out.append("\\" + rx[i + 1] if rx[i + 1] in "*?.\\" else rx[i + 1])
            i += 2
        else:
            out.append(rx[i])
            i += 1
    return "".join(out)


def _regex_invalid():
    for i, pat in enumerate(_lex_cases().get("shell_pattern_to_regex", {}).get("invalid", [])):
        yield pytest.param(pat, id=f"regex-invalid#{i}")


@pytest.mark.parametrize("pattern", list(_regex_invalid()))
def test_shell_pattern_to_regex_invalid(pattern: str) -> None:
    from frontends.dockerfile.shell import _Error, _pattern_to_regex
    with pytest.raises(_Error):
        _pattern_to_regex(pattern, greedy=True, anchored=True)


def _reverse_pattern_cases():
    for i, case in enumerate(_lex_cases().get("reverse_pattern", {}).get("cases", [])):
        yield pytest.param(case, id=f"reverse_pattern#{i}")


@pytest.mark.parametrize("case", list(_reverse_pattern_cases()))
def test_reverse_pattern(case: dict) -> None:
    from frontends.dockerfile.shell import _reverse_pattern
    assert _reverse_pattern(case["pattern"]) == case["expected"]


def _reverse_string_cases():
    for i, case in enumerate(_lex_cases().get("reverse_string", [])):
        yield pytest.param(case, id=f"reverse_string#{i}")


@pytest.mark.parametrize("case", list(_reverse_string_cases()))
def test_reverse_string(case: dict) -> None:
    assert case["input"][::-1] == case["expected"]


# --- behaviour beyond the vectors ---------------------------------------------------

def test_backtick_escape_token() -> None:
    lex = ShellLexer("`")
    assert lex.process_word("a`$b", {"b": "x"}) == "a$b"
    assert lex.process_word("C:\\path", {}) == "C:\\path"
    assert lex.process_word('"x`"y"', {}) == 'x"y'


def test_error_message_names_the_word() -> None:
    with pytest.raises(ShellExpansionError) as exc:
        ShellLexer().process_word("${a:?needs a value}", {})
    assert str(exc.value) == 'failed to process "${a:?needs a value}": a: needs a value'


def test_nested_default_records_all_names() -> None:
    _, matched, unmatched = ShellLexer().process_word_with_matches(
        "${A:-${B}}-$C", {"A": "1", "C": "3"})
    assert matched == {"A", "C"} and unmatched == {"B"}


def test_skip_unset_env_keeps_references() -> None:
    lex = ShellLexer(skip_unset_env=True)
    assert lex.process_word("$X ${Y} ${Z:-d} $W", {"W": "w"}) == "$X ${Y} ${Z:-d} w"


def test_skip_process_quotes_keeps_quotes() -> None:
    lex = ShellLexer(skip_process_quotes=True)
    assert lex.process_word("echo '$A' \"$A\"", {"A": "v"}) == "echo 'v' \"v\""


def test_empty_quoted_word_yields_no_word() -> None:
    assert ShellLexer().process_words('a "" b', {}) == ["a", "b"]
