"""Dockerfile parser: text -> instruction nodes, with BuildKit's AST semantics.

Owns everything below typed instructions: parser directives (`# syntax=`,
`# escape=`, `# check=`) and their placement rules, the UTF-8 BOM, line
continuations (escape-token aware, comments and blank lines inside them), heredoc
bodies, line numbers, and splitting each logical line into keyword, `--flags` and
arguments exactly as BuildKit's `Node.Dump()` shows them (the conformance vectors in
`shared/conformance/buildkit/parser/` pin this down).

Two stages:
  1. a hand-written pre-lexer walks physical lines (it must: directives, the escape
     token and heredoc bodies change how the *following* lines are read);
  2. a small lark LALR grammar splits each logical line into keyword, flags and rest;
     per-instruction line parsers then shape the rest (JSON form, words, key=value).

Unknown instructions parse fine (`FOO bar` dumps as `(foo "")`); rejecting them is
the instruction layer's job.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Callable

from pybuild.errors import DefinitionError

from .shell import ShellExpansionError, ShellLexer, go_quote, is_go_space

__all__ = [
    "Heredoc", "Node", "Warning", "ParseResult", "Directive", "DockerfileError",
    "parse", "split_command", "parse_words", "parse_json_array", "parse_name_val",
    "parse_heredoc_word", "heredocs_from_line", "chomp_heredoc_content",
    "parse_directives", "detect_syntax", "parse_directive",
    "DEFAULT_ESCAPE_TOKEN", "MAX_LINE_BYTES",
]

DEFAULT_ESCAPE_TOKEN = "\\"
MAX_LINE_BYTES = 65535  # bufio.Scanner's limit in BuildKit, newline excluded
_MAX_SHOWN_LINES = 10
_MAX_SHOWN_CHARS = 200

HEREDOC_INSTRUCTIONS = frozenset({"run", "copy", "add"})
_HEREDOC_COMPOUND = frozenset({"onbuild"})
_VALID_DIRECTIVES = frozenset({"syntax", "escape", "check"})

NO_EMPTY_CONTINUATION_URL = "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/"


# --- values ----------------------------------------------------------------------

@dataclass(frozen=True)
class Heredoc:
    """A heredoc attached to RUN/COPY/ADD. `content` is the raw body (every line with
    its newline, tabs not stripped even for `<<-`; see `chomp_heredoc_content`)."""
    name: str
    content: str
    expand: bool           # False when any part of the delimiter word was quoted
    chomp: bool            # `<<-`: strip leading tabs from the body
    file_descriptor: int   # N of `N<<WORD`, 0 when absent


@dataclass(frozen=True)
class Node:
    """One instruction.

    `args` is the argument list as BuildKit's AST dump shows it (README §1): the JSON
    strings in exec form, one trimmed string in shell form, `key value sep` triples for
    ENV/LABEL, words for FROM/ARG/EXPOSE/..., `("",)` for an unknown instruction. For
    ONBUILD, `args` is `(the nested instruction text,)` and `next` is that instruction
    parsed. `comments` are the comment lines right above the instruction (`#` and
    surrounding blanks removed), used for stage and ARG descriptions.
    """
    keyword: str
    flags: tuple[str, ...]
    args: tuple[str, ...]
    json_form: bool
    original: str
    start_line: int
    end_line: int
    heredocs: tuple[Heredoc, ...] = ()
    next: "Node | None" = None
    comments: tuple[str, ...] = ()

    def _dump_inner(self) -> str:
        out = self.keyword
        if self.flags:
            out += " [" + " ".join(go_quote(f) for f in self.flags) + "]"
        if self.next is not None:
            out += " (" + self.next._dump_inner() + ")"
        else:
            for arg in self.args:
                out += " " + go_quote(arg)
        return out.strip()

    def dump(self) -> str:
        """BuildKit's dump of this instruction: `(run "a")`."""
        return "(" + self._dump_inner() + ")"


@dataclass(frozen=True)
class Warning:  # noqa: A001 - the name BuildKit uses; shadows the builtin only here
    """A non-fatal finding of the parser (today: empty continuation lines)."""
    short: str
    detail: tuple[str, ...]
    line: int
    rule: str = ""
    url: str = ""

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line > 0 else ""
        return (f"{self.rule}: " if self.rule else "") + self.short + where


@dataclass(frozen=True)
class Directive:
    """A parser directive from the top of the file, e.g. `# syntax=docker/dockerfile:1`."""
    name: str    # lowercased: syntax | escape | check
    value: str
    line: int    # 1-based


@dataclass(frozen=True)
class ParseResult:
    """A parsed Dockerfile: its instruction nodes, escape token, directives, warnings and
    source lines."""
    nodes: tuple[Node, ...]
    escape_token: str
    directives: tuple[tuple[str, str], ...]
    warnings: tuple[Warning, ...]
    lines: tuple[str, ...]   # source lines (no newlines) for error display

    def dump(self) -> str:
        """BuildKit's `Node.Dump()` of the root, whitespace-trimmed."""
        return "\n".join(n.dump() for n in self.nodes).strip()

    def directive(self, name: str) -> str | None:
        for key, value in self.directives:
            if key == name:
                return value
        return None


class DockerfileError(DefinitionError):
    """The Dockerfile cannot be parsed. Carries the line span and the offending lines."""

    def __init__(self, message: str, filename: str = "Dockerfile", line: int = 0,
                 source_lines: tuple[str, ...] = (), end_line: int = 0):
        super().__init__(message, filename=filename, line=line,
                         source_lines=source_lines, end_line=end_line)


class _LineError(Exception):
    """Internal: a line parser failed; `parse` adds the location."""


# --- small Go-compatible helpers ---------------------------------------------------

_GO_RE_SPACE = "[\\t\\n\\f\\r ]"  # RE2's \s (ASCII, no \v)
_RE_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_RE_HEREDOC = re.compile(r"^([0-9]*)<<(-?)" + _GO_RE_SPACE + r"*([^<]*)\Z")
_RE_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)


def _directive_regex(comment: str) -> re.Pattern[str]:
    s = _GO_RE_SPACE
    return re.compile("^" + re.escape(comment) + s + "*([a-zA-Z][a-zA-Z0-9]*)" + s + "*=" + s
                      + r"*(.+?)" + s + r"*\Z")


_RE_DIRECTIVE_HASH = _directive_regex("#")
_RE_DIRECTIVE_SLASH = _directive_regex("//")


def _go_trim_space(s: str) -> str:
    start, end = 0, len(s)
    while start < end and is_go_space(s[start]):
        start += 1
    while end > start and is_go_space(s[end - 1]):
        end -= 1
    return s[start:end]


def _go_trim_left_space(s: str) -> str:
    i = 0
    while i < len(s) and is_go_space(s[i]):
        i += 1
    return s[i:]


def _trim_newline(s: str) -> str:
    return s.rstrip("\r\n")


def _is_comment(line: str) -> bool:
    return _go_trim_left_space(line).startswith("#")


def _continuation_regex(escape: str) -> re.Pattern[str]:
    # The escape token as the last non-blank character continues the line, unless it
    # is itself escaped (`\\` at the end of a line does not continue).
    e = re.escape(escape)
    return re.compile(f"([^{e}]){e}[ \\t]*\\Z|^{e}[ \\t]*\\Z")


def _split_physical_lines(text: str) -> list[str]:
    """Lines with their "\\n" kept, split on "\\n" only (as bufio with a keep-newline
    split function does: a lone "\\r" is not a line break)."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _line_too_long(line: str) -> bool:
    body = _trim_newline(line) if line.endswith("\n") else line
    # cheap test first: UTF-8 is at most 4 bytes per character
    return len(body) > MAX_LINE_BYTES // 4 and len(body.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES


# --- the instruction-line grammar (lark) -------------------------------------------

# KEYWORD, then builder flags (words starting with `--`, quotes removed and `\`
# escapes applied later, `--` ends them), then the rest of the line as one token. The
# contextual lexer tries FLAG before REST, so a word is a flag exactly when it starts
# with `--` and only flags precede it.
_GRAMMAR = r"""
start: KEYWORD (_KWSEP _args)?
_args: _WS? _flags
_flags: FLAG (_WS _flags)?
      | REST

KEYWORD: /[^\t\v\f\r ]+/
_KWSEP: /[\t\v\f\r ]+/
_WS: /[\t\n\v\f\r ]+/
FLAG.2: /--(?:[^\t\n\v\f\r '"\\]|\\[\s\S]|\\\Z|'(?:[^'\\]|\\[\s\S]|\\\Z)*(?:'|\Z)|"(?:[^"\\]|\\[\s\S]|\\\Z)*(?:"|\Z))*/
REST.1: /[^\t\n\v\f\r ][\s\S]*/
"""

_LINE_PARSER = None


def _line_parser():
    """The lark parser for one logical instruction line, built once."""
    global _LINE_PARSER
    if _LINE_PARSER is None:
        import sys

        # lazily: importing this module stays cheap. lark imports the `regex` package
        # whenever it is installed (~9 ms), though a grammar without \p{..} classes, like
        # this one, is compiled and lexed with `re` alone: keep it out while lark loads
        hide = "regex" not in sys.modules
        if hide:
            sys.modules["regex"] = None  # type: ignore[assignment]  (import fails)
        try:
            import lark
        finally:
            if hide:
                del sys.modules["regex"]
        # cache=True: lark keeps the built LALR tables in the temp dir, keyed by the grammar's
        # hash, which saves ~40 ms of every CLI start after the first
        _LINE_PARSER = lark.Lark(_GRAMMAR, parser="lalr", lexer="contextual", cache=True)
    return _LINE_PARSER


def _unquote_flag(word: str) -> str:
    """A flag word with quotes removed and `\\x` -> `x` (inside quotes too)."""
    out: list[str] = []
    quote = ""
    i, n = 0, len(word)
    while i < n:
        ch = word[i]
        i += 1
        if ch == "\\":
            if i < n:
                out.append(word[i])
                i += 1
            continue
        if quote:
            if ch == quote:
                quote = ""
            else:
                out.append(ch)
        elif ch in "'\"":
            quote = ch
        else:
            out.append(ch)
    return "".join(out)


def split_command(line: str) -> tuple[str, tuple[str, ...], str]:
    """Split a logical line into (keyword as written, flags, rest) like BuildKit."""
    line = _go_trim_space(line)
    if not line:
        return "", (), ""
    line_parser = _line_parser()
    import lark  # loaded by _line_parser
    try:
        tree = line_parser.parse(line)
    except lark.exceptions.LarkError as e:  # the grammar accepts any non-empty line
        raise _LineError(f"cannot split instruction line: {e}") from None
    keyword = ""
    flags: list[str] = []
    rest = ""
    for tok in tree.children:
        if tok.type == "KEYWORD":
            keyword = str(tok)
        elif tok.type == "FLAG":
            value = _unquote_flag(str(tok))
            if value == "--":  # end of flags: everything after it is the rest
                rest = line[tok.end_pos:]
                break
            flags.append(value)
        elif tok.type == "REST":
            rest = str(tok)
    return keyword, tuple(flags), _go_trim_space(rest)


# --- argument parsers (one per instruction kind) -----------------------------------

@dataclass(frozen=True)
class _Parsed:
    """An instruction's arguments as its parser splits them: the args, whether they were
    JSON (exec form), and the nested node of an ONBUILD."""
    args: tuple[str, ...] = ()
    json_form: bool = False
    next: Node | None = None


_ERR_NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"


def _reject_constant(name: str):
    raise ValueError(f"invalid JSON constant {name}")  # Go rejects NaN/Infinity


_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json_array(rest: str) -> tuple[str, ...] | None:
    """Exec form: the decoded strings if `rest` starts with a JSON array (text after
    the array is ignored, as Go's json.Decoder does), None if it is not valid JSON.
    Raises DockerfileError if the array holds anything but strings."""
    try:
        return _parse_json(rest)
    except _LineError as e:
        raise DockerfileError(str(e)) from None


def _parse_json(rest: str) -> tuple[str, ...] | None:
    rest = _go_trim_left_space(rest)
    if not rest.startswith("["):
        return None
    try:
        value, _ = _JSON_DECODER.raw_decode(rest)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise _LineError(_ERR_NOT_STRING_ARRAY)
    # a lone "\ud800" escape decodes to a surrogate that cannot be encoded (cache keys,
    # config JSON); Go's decoder turns it into U+FFFD, and so do we
    return tuple(_LONE_SURROGATE.sub("\ufffd", v) for v in value)


def parse_words(rest: str, escape_token: str = DEFAULT_ESCAPE_TOKEN) -> list[str]:
    """Split at unquoted, unescaped whitespace; quotes and escapes stay in the words."""
    words: list[str] = []
    word: list[str] = []
    blank_ok = False
    in_word = False
    quote = ""
    i, n = 0, len(rest)
    while i < n:
        ch = rest[i]
        i += 1
        if not in_word:
            if is_go_space(ch):
                continue
            in_word = True
        if not quote:
            if is_go_space(ch):
                if blank_ok or word:
                    words.append("".join(word))
                word, blank_ok, in_word = [], False, False
                continue
            if ch in "'\"":
                quote, blank_ok = ch, True
            elif ch == escape_token:
                if i == n:
                    continue  # an escape at the very end is dropped
                word.append(ch)
                ch = rest[i]
                i += 1
            word.append(ch)
        else:
            if ch == quote:
                quote = ""
            elif ch == escape_token and quote != "'":
                if i == n:
                    quote = ""
                    continue
                word.append(ch)
                ch = rest[i]
                i += 1
            word.append(ch)
    if in_word and (blank_ok or word):
        words.append("".join(word))
    return words


def parse_name_val(rest: str, instruction: str,
                   escape_token: str = DEFAULT_ESCAPE_TOKEN) -> tuple[str, ...]:
    """ENV/LABEL arguments as flat `key value sep` triples (sep "=" or "" for the
    legacy `KEY value` form). Raises DockerfileError on a malformed line."""
    try:
        return _parse_name_val(rest, instruction, escape_token)
    except _LineError as e:
        raise DockerfileError(str(e)) from None


def _parse_name_val(rest: str, instruction: str, escape_token: str) -> tuple[str, ...]:
    words = parse_words(rest, escape_token)
    if not words:
        return ()
    if "=" not in words[0]:
        # legacy form: the first word is the key, the rest of the line the value
        parts = _RE_WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise _LineError(f"{instruction.upper()} must have two arguments")
        return (parts[0], parts[1], "")
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise _LineError(f"Syntax error - can't find = in {go_quote(word)}. "
                             "Must be of the form: name=value")
        key, _, value = word.partition("=")
        out += [key, value, "="]
    return tuple(out)


def _p_ignore(rest: str, esc: str, _d: str) -> _Parsed:
    return _Parsed(args=("",))


def _p_string(rest: str, esc: str, _d: str) -> _Parsed:
    return _Parsed(args=(rest,) if rest else ())


def _p_whitespace_words(rest: str, esc: str, _d: str) -> _Parsed:
    return _Parsed(args=tuple(_RE_WHITESPACE.split(rest)) if rest else ())


def _p_maybe_json(rest: str, esc: str, _d: str) -> _Parsed:
    if not rest:
        return _Parsed()
    values = _parse_json(rest)
    if values is not None:
        return _Parsed(args=values, json_form=True)
    return _Parsed(args=(rest,))


def _p_maybe_json_to_list(rest: str, esc: str, d: str) -> _Parsed:
    values = _parse_json(rest)
    if values is not None:
        return _Parsed(args=values, json_form=True)
    return _p_whitespace_words(rest, esc, d)


def _p_name_or_name_val(rest: str, esc: str, _d: str) -> _Parsed:
    return _Parsed(args=tuple(parse_words(rest, esc)))


def _p_env(rest: str, esc: str, _d: str) -> _Parsed:
    return _Parsed(args=_parse_name_val(rest, "ENV", esc))


def _p_label(rest: str, esc: str, _d: str) -> _Parsed:
    return _Parsed(args=_parse_name_val(rest, "LABEL", esc))


def _p_healthcheck(rest: str, esc: str, d: str) -> _Parsed:
    # HEALTHCHECK TYPE [cmd...]: the type as written, then the rest like CMD
    sep = 0
    while sep < len(rest) and not is_go_space(rest[sep]):
        sep += 1
    if sep == 0:
        return _Parsed()
    nxt = sep
    while nxt < len(rest) and is_go_space(rest[nxt]):
        nxt += 1
    cmd = _p_maybe_json(rest[nxt:], esc, d)
    return _Parsed(args=(rest[:sep],) + cmd.args, json_form=cmd.json_form)


def _p_onbuild(rest: str, esc: str, _d: str) -> _Parsed:
    if not rest:
        return _Parsed()
    return _Parsed(args=(rest,), next=_node_from_line(rest, esc, (), 0, 0))


_DISPATCH: dict[str, Callable[[str, str, str], _Parsed]] = {
    "add": _p_maybe_json_to_list,
    "arg": _p_name_or_name_val,
    "cmd": _p_maybe_json,
    "copy": _p_maybe_json_to_list,
    "entrypoint": _p_maybe_json,
    "env": _p_env,
    "expose": _p_whitespace_words,
    "from": _p_whitespace_words,
    "healthcheck": _p_healthcheck,
    "label": _p_label,
    "maintainer": _p_string,
    "onbuild": _p_onbuild,
    "run": _p_maybe_json,
    "shell": _p_maybe_json,
    "stopsignal": _p_string,
    "user": _p_string,
    "volume": _p_maybe_json_to_list,
    "workdir": _p_string,
}


def _node_from_line(line: str, escape_token: str, comments: tuple[str, ...],
                    start: int, end: int) -> Node:
    keyword, flags, rest = split_command(line)
    keyword = keyword.lower()
    parsed = _DISPATCH.get(keyword, _p_ignore)(rest, escape_token, keyword)
    return Node(keyword=keyword, flags=flags, args=parsed.args, json_form=parsed.json_form,
                original=line, start_line=start, end_line=end, next=parsed.next,
                comments=comments)


def _can_contain_heredoc(node: Node) -> bool:
    if node.keyword in _HEREDOC_COMPOUND and node.next is not None:
        node = node.next
    return node.keyword in HEREDOC_INSTRUCTIONS and not node.json_form


# --- heredocs ----------------------------------------------------------------------

def parse_heredoc_word(word: str) -> Heredoc | None:
    """A heredoc opener such as `<<EOF`, `<<-'EOF'`, `3<<EOF` as one word; None when
    the word is not one. Raises DockerfileError on unbalanced quotes. The returned
    heredoc has no content yet."""
    try:
        return _heredoc_from_word(word)
    except _LineError as e:
        raise DockerfileError(str(e)) from None


_HEREDOC_LEX = ShellLexer("\\", skip_unset_env=True)
_HEREDOC_LEX_RAW = ShellLexer("\\", skip_unset_env=True, raw_quotes=True)
_LINE_LEX = ShellLexer("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True,
                       heredoc_words=True)


def _heredoc_from_word(word: str) -> Heredoc | None:
    m = _RE_HEREDOC.match(word)
    if not m:
        return None
    fd = int(m.group(1)) if m.group(1) else 0
    chomp = m.group(2) == "-"
    rest = m.group(3)
    if not rest:
        return None
    try:
        words = _HEREDOC_LEX.process_words(rest, {})
        if len(words) != 1:
            return None
        raw = _HEREDOC_LEX_RAW.process_words(rest, {})
    except ShellExpansionError as e:
        raise _LineError(str(e)) from None
    if len(raw) != len(words):
        raise _LineError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    # Quote characters that survive quote removal were escaped; any other quote in the
    # raw word was real quoting, which turns expansion of the body off.
    name = words[0]
    expand = _count_quotes(name) == _count_quotes(raw[0])
    return Heredoc(name=name, content="", expand=expand, chomp=chomp, file_descriptor=fd)


def _count_quotes(s: str) -> int:
    return s.count("'") + s.count('"')


def heredocs_from_line(line: str) -> tuple[Heredoc, ...]:
    """The heredoc openers of one instruction line, in order (without content)."""
    try:
        return _heredocs_from_line(line)
    except _LineError as e:
        raise DockerfileError(str(e)) from None


def _heredocs_from_line(line: str) -> tuple[Heredoc, ...]:
    try:
        words = _LINE_LEX.process_words(line, {})
    except ShellExpansionError:
        return ()  # BuildKit ignores lexing errors here: no heredocs
    docs = []
    for word in words:
        doc = _heredoc_from_word(word)
        if doc is not None:
            docs.append(doc)
    return tuple(docs)


def chomp_heredoc_content(s: str) -> str:
    """`<<-` bodies: leading tabs removed from every line."""
    return _RE_LEADING_TABS.sub("", s)


# --- directives --------------------------------------------------------------------

class _DirectiveParser:
    """Reads directives from consecutive lines at the top; stops for good at the first
    line that is not a `<comment> name=value` with a known name."""

    def __init__(self, regex: re.Pattern[str] = _RE_DIRECTIVE_HASH, line: int = 0):
        self.regex = regex
        self.line = line
        self.seen: set[str] = set()
        self.done = False

    def parse_line(self, text: str) -> Directive | None:
        self.line += 1
        if self.done:
            return None
        m = self.regex.match(text)
        if not m:
            self.done = True
            return None
        name = m.group(1).lower()
        if name not in _VALID_DIRECTIVES:
            self.done = True
            return None
        if name in self.seen:
            raise _LineError(f"only one {name} parser directive can be used")
        self.seen.add(name)
        return Directive(name=name, value=m.group(2), line=self.line)

    def parse_all(self, text: str, strict: bool = True) -> list[Directive]:
        """Directives from the top of `text`. A repeated directive raises, or with
        `strict=False` ends the scan keeping what was found (as DetectSyntax does)."""
        found: list[Directive] = []
        for raw in text.split("\n"):
            if self.done:
                break
            try:
                d = self.parse_line(raw[:-1] if raw.endswith("\r") else raw)
            except _LineError:
                if strict:
                    raise
                break
            if d is not None:
                found.append(d)
        return found


def parse_directives(text: str) -> tuple[Directive, ...]:
    """All parser directives at the top of `text` (`#` comment form). Raises
    DockerfileError when one is repeated."""
    parser = _DirectiveParser()
    try:
        return tuple(parser.parse_all(text))
    except _LineError as e:
        raise DockerfileError(str(e), line=parser.line) from None


def _strip_bom_and_shebang(text: str) -> tuple[str, int]:
    if text.startswith("\ufeff"):
        text = text[1:]
    first, _, rest = text.partition("\n")
    if first.startswith("#!"):
        return rest, 1
    return text, 0


def _find_directive(key: str, text: str, regex: re.Pattern[str], line: int
                    ) -> tuple[str, str, int] | None:
    for d in _DirectiveParser(regex, line).parse_all(text, strict=False):
        if d.name == key:
            return d.value.split(" ", 1)[0], d.value, d.line
    return None


def parse_directive(key: str, text: str) -> tuple[str, str, int] | None:
    """Directive `key` in its `#` form: (value up to the first space, full value,
    1-based line), or None. A BOM and a `#!` first line are skipped."""
    body, line = _strip_bom_and_shebang(text)
    return _find_directive(key, body, _RE_DIRECTIVE_HASH, line)


def detect_syntax(text: str) -> tuple[str, str, int] | None:
    """The frontend reference of `# syntax=` (also `//syntax=`, or a whole-file JSON
    object with a "syntax" key): (ref, full value, line) or None."""
    body, line = _strip_bom_and_shebang(text)
    for regex in (_RE_DIRECTIVE_HASH, _RE_DIRECTIVE_SLASH):
        found = _find_directive("syntax", body, regex, line)
        if found is not None:
            return found
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(obj, dict) and isinstance(obj.get("syntax"), str):
        return obj["syntax"], obj["syntax"], line
    return None


# --- the parser --------------------------------------------------------------------

class _Source:
    """Physical lines with the scanner's line-length limit."""

    def __init__(self, text: str, filename: str):
        self.lines = _split_physical_lines(text)
        if self.lines and self.lines[0].startswith("\ufeff"):
            self.lines[0] = self.lines[0][1:]
        self.display = tuple(_trim_newline(line) if line.endswith("\n") else line
                             for line in self.lines)
        self.filename = filename
        self.pos = 0

    def read(self) -> str | None:
        if self.pos >= len(self.lines):
            return None
        line = self.lines[self.pos]
        self.pos += 1
        if _line_too_long(line):
            raise self.error(f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES}",
                             self.pos, self.pos)
        return line

    def error(self, message: str, start: int, end: int = 0) -> DockerfileError:
        end = max(end, start)
        shown = tuple(
            text if len(text) <= _MAX_SHOWN_CHARS else text[:_MAX_SHOWN_CHARS] + "…"
            for text in self.display[max(start, 1) - 1:min(end, start + _MAX_SHOWN_LINES - 1)])
        return DockerfileError(message, filename=self.filename, line=start,
                               source_lines=shown if start > 0 else (), end_line=end)


# the last text parsed and its result: a build parses its Dockerfile for the checks and
# again for the compiler, and a ParseResult is immutable, so the second is this lookup
_last_parse: tuple | None = None


def parse(text: str, filename: str = "Dockerfile") -> ParseResult:
    """Parse Dockerfile text. Raises DockerfileError with the line span on failure."""
    global _last_parse
    last = _last_parse
    if last is not None and last[0] == text and last[1] == filename:
        return last[2]
    result = _parse(text, filename)
    _last_parse = (text, filename, result)
    return result


def _parse(text: str, filename: str) -> ParseResult:
    src = _Source(text, filename)
    directives = _DirectiveParser()
    escape = DEFAULT_ESCAPE_TOKEN
    continuation = _continuation_regex(escape)
    found_directives: list[tuple[str, str]] = []
    nodes: list[Node] = []
    warnings: list[Warning] = []
    comments: list[str] = []
    current = 0

    def check_directive(token: str) -> None:
        nonlocal escape, continuation
        try:
            d = directives.parse_line(token)
        except _LineError as e:
            raise src.error(str(e), current + 1) from None
        if d is None:
            return
        found_directives.append((d.name, d.value))
        if d.name == "escape":
            if d.value not in ("`", "\\"):
                raise src.error(f"invalid escape token '{d.value}' does not match ` or \\",
                                current + 1)
            escape = d.value
            continuation = _continuation_regex(escape)

    def trim_continuation(line: str) -> tuple[str, bool]:
        if continuation.search(line):
            return continuation.sub(lambda m: m.group(1) or "", line), False
        return line, True

    while (raw := src.read()) is not None:
        if _is_comment(raw):
            # BuildKit drops only the first byte: "  # x" is recorded as "# x"
            comment = _go_trim_space(raw[1:])
            comments = comments + [comment] if comment else []
        token = _go_trim_left_space(_trim_newline(raw))
        check_directive(token)
        current += 1
        start = current
        processed = "" if _is_comment(token) else token
        line, eol = trim_continuation(processed)
        if eol and not line:
            continue

        parts = [line]
        has_empty = False
        while not eol and (raw := src.read()) is not None:
            token = _trim_newline(raw)
            check_directive(token)
            current += 1
            if _is_comment(raw):
                continue
            if not _go_trim_left_space(token):
                has_empty = True
                continue
            piece, eol = trim_continuation(token)
            parts.append(piece)
        line = "".join(parts)

        if has_empty:
            warnings.append(Warning(
                short="Empty continuation line found in: " + line,
                detail=("Empty continuation lines will become errors in a future release",),
                line=current, rule="NoEmptyContinuation", url=NO_EMPTY_CONTINUATION_URL))

        try:
            node = _node_from_line(line, escape, tuple(comments), start, current)
            heredocs = (_heredocs_from_line(line)
                        if _can_contain_heredoc(node) and "<<" in line else ())
        except _LineError as e:
            raise src.error(str(e), start, current) from None

        bodies: list[Heredoc] = []
        for doc in heredocs:
            content: list[str] = []
            while True:
                raw = src.read()
                if raw is None:
                    raise src.error("unterminated heredoc", start, current)
                current += 1
                candidate = _trim_newline(raw)
                if doc.chomp:
                    candidate = candidate.lstrip("\t")
                if candidate == doc.name:
                    break
                content.append(raw)
            bodies.append(dataclasses.replace(doc, content="".join(content)))

        nested = node.next
        if nested is not None:
            nested = dataclasses.replace(nested, start_line=start, end_line=current)
        nodes.append(dataclasses.replace(node, end_line=current, heredocs=tuple(bodies),
                                         next=nested))
        comments = []

    if not nodes:
        raise src.error("file with no instructions", current)
    return ParseResult(nodes=tuple(nodes), escape_token=escape,
                       directives=tuple(found_directives), warnings=tuple(warnings),
                       lines=src.display)
